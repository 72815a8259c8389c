"""Offline token counting and whole-group trimming."""

from __future__ import annotations

import pytest

from bot.history import StoredMessage
from bot.prompting import drop_oldest_groups
from bot.tokens import count_text


def test_counts_with_the_real_o200k_encoding_offline() -> None:
    # Known o200k_base counts (the encoding gpt-4o uses).
    assert count_text("hello world") == 2
    assert count_text("") == 0


def entries(*groups: tuple[str, int]) -> list[StoredMessage]:
    """(role, group) pairs -> stored messages of 10 tokens each, ids from 1."""
    return [StoredMessage(i, role, f"m{i}", 10, group) for i, (role, group) in enumerate(groups, 1)]


@pytest.mark.parametrize(
    ("count", "budget", "kept"),
    [(3, 30, 3), (3, 29, 2), (3, 5, 1), (4, 20, 2)],
)
def test_the_oldest_groups_go_until_the_rest_fits(count: int, budget: int, kept: int) -> None:
    history = entries(*[("user", i) for i in range(1, count + 1)])
    assert len(drop_oldest_groups(history, budget, 100)) == kept


def test_a_tool_call_group_is_dropped_whole_and_the_rest_starts_at_a_user() -> None:
    # user | assistant tool call + two results (one group) | assistant | user
    history = entries(("user", 1), ("assistant", 2), ("tool", 2), ("tool", 2),
                      ("assistant", 5), ("user", 6))  # fmt: skip
    assert [m.id for m in drop_oldest_groups(history, 55, 100)] == [6]
    assert [m.id for m in drop_oldest_groups(history, 60, 100)] == [1, 2, 3, 4, 5, 6]


def test_a_message_count_bound_drops_too_and_the_newest_group_stays() -> None:
    history = entries(*[("user", i) for i in range(1, 7)])
    assert [m.id for m in drop_oldest_groups(history, 1000, 2)] == [5, 6]
    assert [m.id for m in drop_oldest_groups(history, 0, 100)] == [6]

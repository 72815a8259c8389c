"""Offline token counting and whole-group trimming."""

from __future__ import annotations

from typing import NamedTuple

import pytest

from bot.tokens import count_text, newest_that_fit


class Entry(NamedTuple):
    tokens: int
    group_id: int


def test_counts_with_the_real_o200k_encoding_offline() -> None:
    # Known o200k_base counts (the encoding gpt-4o uses).
    assert count_text("hello world") == 2
    assert count_text("") == 0


@pytest.mark.parametrize(
    ("tokens", "budget", "expected"),
    [
        ([10, 10, 10], 30, 3),
        ([10, 10, 10], 29, 2),
        ([10, 10, 10], 5, 0),
        ([50, 1, 1], 10, 2),
    ],
)
def test_newest_that_fit(tokens: list[int], budget: int, expected: int) -> None:
    entries = [Entry(t, group_id=i) for i, t in enumerate(tokens)]
    assert newest_that_fit(entries, budget) == expected


def test_a_tool_call_group_is_kept_or_dropped_whole() -> None:
    # user(1) | assistant tool call + two results (group 2) | user(5)
    entries = [Entry(10, 1), Entry(10, 2), Entry(10, 2), Entry(10, 2), Entry(10, 5)]
    assert newest_that_fit(entries, 39) == 1  # the group of 30 does not fit after 10
    assert newest_that_fit(entries, 40) == 4

"""The store's guarantees, the same assertions on SQLite and on a real PostgreSQL."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from pathlib import Path

import pytest

from bot.config import ConfigError
from bot.messages import ConversationKey
from bot.store import Answer, Store, UsageRecord, UserLimits, open_store, parse_store_url
from bot.store.sqlite import SqliteStore

KEY = ConversationKey("s", "w", "c")
ROOT = Path(__file__).resolve().parent.parent


def contents(rows: list[dict[str, object]]) -> list[object]:
    return [row["content"] for row in rows]


def usage(user: str = "s:u", prompt: int = 10, cost: float | None = 0.5, at: float = 1000.0,
          status: str = "ok") -> UsageRecord:  # fmt: skip
    return UsageRecord("s", "w", "c", user, "m", prompt, 5, 2, 1, cost, 3.0, status, at)


# -- history and search ------------------------------------------------------------------


async def test_search_sees_messages_stored_after_an_earlier_search(store: Store) -> None:
    await store.append(KEY, "user", "the first kiwi", 3)
    assert contents(await store.search_channel("s", "w", "c", "kiwi", 5)) == ["the first kiwi"]
    await store.append(KEY, "user", "a second kiwi", 3)
    found = contents(await store.search_channel("s", "w", "c", "kiwi", 5))
    assert sorted(found) == ["a second kiwi", "the first kiwi"]  # type: ignore[type-var]


async def test_forget_removes_a_channel_and_its_threads_only(store: Store) -> None:
    await store.append(KEY, "user", "secret mango", 3)
    await store.append(ConversationKey("s", "w", "c", "t1"), "user", "thread mango", 3)
    await store.append(ConversationKey("s", "w", "other"), "user", "other mango", 3)
    await store.append(ConversationKey("s", "w", "c2"), "user", "prefix mango", 3)
    assert await store.forget_channel("s", "w", "c") == 2
    assert await store.search_channel("s", "w", "c", "mango", 5) == []
    assert contents(await store.search_channel("s", "w", "other", "mango", 5)) == ["other mango"]
    assert contents(await store.search_channel("s", "w", "c2", "mango", 5)) == ["prefix mango"]


async def test_sqlite_index_stays_consistent_after_forget(tmp_path: Path) -> None:
    store = SqliteStore(tmp_path / "s.db")
    await store.append(KEY, "user", "secret mango", 3)
    await store.forget_channel("s", "w", "c")
    store.db.execute("INSERT INTO messages_fts (messages_fts) VALUES ('integrity-check')")
    await store.close()


@pytest.mark.parametrize("query", ['"unbalanced', "NOT", "a OR b", "col:value", "*", "a & b"])
async def test_search_queries_are_words_not_syntax(store: Store, query: str) -> None:
    await store.append(KEY, "user", "plain words", 2)
    assert await store.search_channel("s", "w", "c", query, 5) == []


async def test_ids_reused_after_forget_are_searchable_and_forgettable(store: Store) -> None:
    await store.append(ConversationKey("s", "w", "keep"), "user", "old papaya", 3)
    await store.append(ConversationKey("s", "w", "gone"), "user", "newest papaya", 3)
    await store.search_channel("s", "w", "gone", "papaya", 5)  # index everything so far
    await store.forget_channel("s", "w", "gone")  # SQLite may reuse the newest id
    await store.append(ConversationKey("s", "w", "gone"), "user", "fresh papaya", 3)
    assert contents(await store.search_channel("s", "w", "gone", "papaya", 5)) == ["fresh papaya"]
    assert await store.forget_channel("s", "w", "gone") == 1
    assert contents(await store.search_channel("s", "w", "keep", "papaya", 5)) == ["old papaya"]


async def test_window_counts_reset_and_trim_notice(store: Store) -> None:
    for number in range(5):
        await store.append(KEY, "user", f"m{number}", 1, user="s:u")
    window = await store.recent(KEY, 3)
    assert [m.content for m in window.messages] == ["m2", "m3", "m4"]
    assert window.dropped_older and not window.trim_noticed
    assert window.messages[0].user == "s:u"
    assert await store.claim_trim_notice(KEY)
    assert not await store.claim_trim_notice(KEY)
    assert (await store.recent(KEY, 3)).trim_noticed
    assert await store.count_messages(KEY) == 5 and await store.has_history(KEY)
    await store.reset(KEY)
    window = await store.recent(KEY, 3)
    assert window.messages == [] and not window.dropped_older and not window.trim_noticed
    assert await store.count_messages(KEY) == 5  # kept, just out of the context
    assert await store.claim_trim_notice(KEY)  # a reset clears the notice


# -- deliveries and turns -----------------------------------------------------------------


async def test_a_delivery_is_claimed_once(store: Store) -> None:
    assert await store.claim_delivery(("slack:event:E1", "slack:msg:1"))
    assert not await store.claim_delivery(("slack:msg:1", "slack:event:E2"))  # one seen
    assert await store.claim_delivery(())
    assert await store.begin_turn(("slack:event:E1",), KEY, "me", 10, "") is None


async def test_turns_go_in_order_and_a_dead_ones_lease_runs_out(store: Store) -> None:
    first = await store.begin_turn(("k1",), KEY, "replica-a", 60, "")
    second = await store.begin_turn(("k2",), KEY, "replica-b", 60, "")
    elsewhere = await store.begin_turn(("k3",), ConversationKey("s", "w", "x"), "b", 60, "")
    assert first is not None and second is not None and elsewhere is not None
    assert first.first and not second.first and elsewhere.first
    assert not await store.is_first_turn(KEY, second.id)
    await store.end_turn(first.id, "replica-a")
    assert await store.is_first_turn(KEY, second.id)
    # A turn whose process died (its lease not renewed) stops blocking once it runs out.
    dead = await store.begin_turn(("k4",), KEY, "dead", 0.2, "")
    after = await store.begin_turn(("k5",), KEY, "live", 60, "")
    assert dead is not None and after is not None
    await store.end_turn(second.id, "replica-b")
    assert not await store.is_first_turn(KEY, after.id)
    await asyncio.sleep(0.3)
    assert await store.is_first_turn(KEY, after.id)
    assert not (first.behind_stale or second.behind_stale or after.behind_stale)
    # A turn taken behind the dead one says so: its question is to be taken over first.
    behind = await store.begin_turn(("k6",), KEY, "live", 60, "")
    assert behind is not None and behind.behind_stale and not behind.first


async def test_renewing_keeps_a_live_replicas_turn(store: Store) -> None:
    held = await store.begin_turn(("k1",), KEY, "live", 0.3, "")
    waiting = await store.begin_turn(("k2",), KEY, "other", 60, "")
    assert held is not None and waiting is not None
    for _ in range(3):
        await asyncio.sleep(0.15)
        await store.renew_turns("live", 0.3)
    assert not await store.is_first_turn(KEY, waiting.id)


async def test_finish_call_stores_answer_usage_and_ends_the_turn(store: Store) -> None:
    turn = await store.begin_turn(("k1",), KEY, "me", 60, "")
    waiting = await store.begin_turn(("k2",), KEY, "me", 60, "")
    assert turn is not None and waiting is not None
    verdict = await store.admit_message(KEY, "s:u", UserLimits(), 1000.0, "question", 2)
    assert not verdict.refused
    await store.finish_call(usage(), KEY, Answer("the answer", 3), turn.id, "me")
    stored = (await store.recent(KEY, 5)).messages
    assert [(m.role, m.content) for m in stored] == [
        ("user", "question"),
        ("assistant", "the answer"),
    ]
    assert await store.is_first_turn(KEY, waiting.id)
    assert await store.today("s:u", 1000.0) == (15, 0.5)


# -- limits and usage -----------------------------------------------------------------------


async def test_admission_counts_the_window_and_stores_only_what_it_admits(store: Store) -> None:
    limits = UserLimits(requests_per_minute=2)
    for second in (0.0, 1.0):
        assert not (await store.admit_message(KEY, "s:u", limits, 1000 + second, "q", 1)).refused
    refused = await store.admit_message(KEY, "s:u", limits, 1002.0, "not stored", 1)
    assert refused.refused == "requests_per_minute" and refused.retry_at == 1060.0
    assert await store.count_messages(KEY) == 2
    assert not (await store.admit_message(KEY, "s:u", limits, 1060.5, "q", 1)).refused
    assert not (await store.admit_message(KEY, "s:u", None, 1060.6, "exempt", 1)).refused
    assert await store.refusal_counts(0) == {"requests_per_minute": 1}


async def test_token_and_cost_limits_and_blocks(store: Store) -> None:
    defaults = UserLimits(tokens_per_day=100)
    await store.record_usage(usage(prompt=95, cost=0.2))
    assert (await store.admit("s:u", defaults, 1000.0)).refused == "tokens_per_day"
    assert not (await store.admit("s:other", defaults, 1000.0)).refused
    await store.set_user_limit("s:u", "tokens_per_day", 0)
    await store.set_user_limit("s:u", "cost_per_day_usd", 0.1)
    assert (await store.admit("s:u", defaults, 1000.0)).refused == "cost_per_day"
    await store.set_user_limit("s:u", "blocked", 1)
    assert (await store.admit("s:u", defaults, 1000.0)).refused == "blocked"
    assert await store.user_limits("s:u", defaults) == UserLimits(None, 0, 0.1, True)
    await store.set_user_limit("s:u", "tokens_per_day", None)  # back to the default
    assert await store.overridden_limits(defaults) == [("s:u", UserLimits(None, 100, 0.1, True))]
    with pytest.raises(ValueError, match="unknown limit"):
        await store.set_user_limit("s:u", "anything; DROP TABLE limits", 1)


async def test_usage_report_has_one_shape_on_every_store(store: Store) -> None:
    await store.record_usage(usage("s:a", prompt=10, cost=0.5))
    await store.record_usage(usage("s:a", prompt=20, cost=None, status="timeout"))
    await store.record_usage(usage("s:b", prompt=1, cost=0.25))
    rows = await store.usage_report(0, "user")
    assert rows == [
        {"key": "s:a", "requests": 2, "prompt_tokens": 30, "completion_tokens": 10,
         "total_tokens": 40, "cached_tokens": 4, "tool_calls": 2, "cost_usd": None,
         "errors": 1},
        {"key": "s:b", "requests": 1, "prompt_tokens": 1, "completion_tokens": 5,
         "total_tokens": 6, "cached_tokens": 2, "tool_calls": 1, "cost_usd": 0.25,
         "errors": 0},
    ]  # fmt: skip
    assert [type(value) for value in rows[1].values()] == [str, *[int] * 6, float, int]
    assert [row["key"] for row in await store.usage_report(0, "channel", limit=1)] == ["s:w:c"]
    assert [row["key"] for row in await store.usage_report(0, "day")] == ["1970-01-01"]
    assert await store.usage_report(2000.0, "user") == []


async def test_channel_settings(store: Store) -> None:
    assert await store.channel_settings("s", "w", "c") == {"system_prompt": "", "model": ""}
    await store.set_channel_setting("s", "w", "c", "model", "gpt-x")
    await store.set_channel_setting("s", "w", "c", "system_prompt", "Be brief.")
    await store.set_channel_setting("s", "w", "c", "model", "")
    assert await store.channel_settings("s", "w", "c") == {
        "system_prompt": "Be brief.",
        "model": "",
    }
    with pytest.raises(ValueError, match="unknown channel setting"):
        await store.set_channel_setting("s", "w", "c", "owner", "x")


async def test_prune_drops_old_deliveries_and_admissions(store: Store) -> None:
    import time

    now = time.time()
    await store.claim_delivery(("old",))
    await store.admit("s:u", UserLimits(requests_per_minute=1), now - 120)
    await store.prune(now + 8 * 24 * 3600)
    assert await store.claim_delivery(("old",))  # forgotten: claimable again
    assert not (await store.admit("s:u", UserLimits(requests_per_minute=1), now)).refused


async def test_a_healthy_store_is_writable(store: Store) -> None:
    assert await store.writable()


# -- opening ----------------------------------------------------------------------------------


async def test_reopening_applies_no_migration_twice(store_url: str) -> None:
    for _ in range(2):
        reopened = await open_store(store_url)
        await reopened.close()
    again = await open_store(store_url)
    if isinstance(again, SqliteStore):
        names = [row[0] for row in again.db.execute("SELECT name FROM _sqlite_migrations")]
        assert again.db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    else:
        names = [row[0] for row in await again.pool.fetch("SELECT name FROM parley_migrations")]  # type: ignore[attr-defined]
    assert len(names) == len(set(names)) >= 3 and "turns" in names
    await again.close()


OPEN_ONE = "import asyncio, sys; from bot.store import open_store\n" \
    "async def main():\n    store = await open_store(sys.argv[1]); await store.close()\n" \
    "asyncio.run(main()); print('ok')"  # fmt: skip


def test_two_processes_starting_at_once_both_migrate_safely(store_url: str) -> None:
    processes = [
        subprocess.Popen([sys.executable, "-c", OPEN_ONE, store_url], cwd=ROOT,
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for _ in range(3)
    ]  # fmt: skip
    results = [process.communicate(timeout=60) for process in processes]
    assert [out for out, _ in results] == ["ok\n"] * 3, [err for _, err in results]


@pytest.mark.parametrize(
    ("value", "kind", "target"),
    [
        ("data/parley.db", "sqlite", "data/parley.db"),
        ("sqlite:///data/parley.db", "sqlite", "data/parley.db"),
        ("sqlite:////var/lib/parley.db", "sqlite", "/var/lib/parley.db"),
        ("postgresql://u@db:5432/parley", "postgresql", "postgresql://u@db:5432/parley"),
        ("postgres://u@db/parley", "postgresql", "postgres://u@db/parley"),
    ],
)
def test_store_urls(value: str, kind: str, target: str) -> None:
    address = parse_store_url(value)
    assert (address.kind, address.target) == (kind, target)


@pytest.mark.parametrize("value", ["mysql://u@h/db", "redis://h", "sqlite://", " "])
def test_other_schemes_are_refused_in_one_line(value: str) -> None:
    with pytest.raises(ConfigError, match="PARLEY_DB") as caught:
        parse_store_url(value)
    assert "\n" not in str(caught.value)


def test_a_password_is_never_shown() -> None:
    address = parse_store_url("postgresql://parley:hunter2@db.internal:5432/parley")
    assert address.shown == "postgresql://parley:***@db.internal:5432/parley"


async def test_an_unreachable_postgresql_is_one_line_without_the_password() -> None:
    with pytest.raises(ConfigError) as caught:
        await open_store("postgresql://parley:hunter2@127.0.0.1:1/parley")
    text = str(caught.value)
    assert "hunter2" not in text and "127.0.0.1:1" in text and "\n" not in text


async def test_a_nul_character_is_stored_not_refused(store: Store) -> None:
    # A user (or a model) can send one; PostgreSQL's text cannot hold it.
    await store.append(KEY, "user", "before\x00after", 3)
    [stored] = [message.content for message in (await store.recent(KEY, 5)).messages]
    assert stored in ("before\x00after", "before\ufffdafter")

"""Summaries, cached answers and usage kinds: the same assertions on SQLite and PostgreSQL."""

from __future__ import annotations

from bot.messages import ConversationKey
from bot.store import ConversationSummary, Store, UsageRecord

KEY = ConversationKey("s", "w", "c")
THREAD = ConversationKey("s", "w", "c", "t1")
OTHER = ConversationKey("s", "w", "c2")


async def test_a_summary_is_kept_per_conversation_and_replaced(store: Store) -> None:
    assert await store.summary(KEY) is None
    await store.save_summary(KEY, ConversationSummary("they met", 4, 4, 10.0))
    await store.save_summary(KEY, ConversationSummary("they met, then parted", 9, 12, 20.0))
    assert await store.summary(KEY) == ConversationSummary("they met, then parted", 9, 12, 20.0)
    assert await store.summary(THREAD) is None


async def test_reset_clears_the_summary_and_forget_deletes_the_channels(store: Store) -> None:
    for key in (KEY, THREAD, OTHER):
        await store.append(key, "user", "hello", 2)
        await store.save_summary(key, ConversationSummary(f"about {key}", 1, 1, 1.0))
    last = await store.append(THREAD, "user", "the newest", 2)
    await store.reset(THREAD)
    cleared = await store.summary(THREAD)  # nothing up to the reset may come back
    assert cleared is not None and cleared.text == ""
    assert cleared.covers_up_to == cleared.starts_after == last
    assert await store.summary(KEY) is not None
    await store.forget_channel("s", "w", "c")
    assert await store.summary(KEY) is None
    assert await store.summary(OTHER) == ConversationSummary(f"about {OTHER}", 1, 1, 1.0)


async def test_history_between_reads_an_id_range_oldest_first(store: Store) -> None:
    ids = [await store.append(KEY, "user", f"m{n}", 2) for n in range(6)]
    await store.append(OTHER, "user", "elsewhere", 2)
    between = await store.history_between(KEY, ids[0], ids[4], 10)
    assert [m.content for m in between] == ["m1", "m2", "m3", "m4"]
    newest = await store.history_between(KEY, ids[0], ids[4], 2)
    assert [m.content for m in newest] == ["m3", "m4"]


async def test_cached_answers_expire_and_forget_deletes_them(store: Store) -> None:
    channel = str(ConversationKey("s", "w", "c", ""))
    await store.save_answer("q1", channel, "forty-two", expires_at=100.0)
    await store.save_answer("q2", str(ConversationKey("s", "w", "c2", "")), "seven", 100.0)
    assert await store.cached_answer("q1", now=50.0) == "forty-two"
    assert await store.cached_answer("q1", now=100.0) is None
    assert await store.cached_answer("nope", now=50.0) is None
    await store.forget_channel("s", "w", "c")
    assert await store.cached_answer("q1", now=50.0) is None
    assert await store.cached_answer("q2", now=50.0) == "seven"
    await store.prune(200.0)
    assert await store.cached_answer("q2", now=50.0) is None


async def test_usage_rows_keep_their_kind_and_cached_tokens(store: Store) -> None:
    def record(kind: str, prompt: int, cached: int) -> UsageRecord:
        return UsageRecord(
            "s", "w", "c", "s:u", "m", prompt, 5, cached, 0, 0.1, 3.0, "ok", 1000.0, kind
        )

    await store.record_usage(record("chat", 2000, 1536))
    await store.record_usage(record("chat", 2100, 1920))
    await store.record_usage(record("summary", 800, 0))
    rows = {row["key"]: row for row in await store.usage_report(0, "kind")}
    assert rows["chat"]["requests"] == 2
    assert rows["chat"]["prompt_tokens"] == 4100
    assert rows["chat"]["cached_tokens"] == 3456
    assert rows["summary"]["cached_tokens"] == 0
    assert rows["summary"]["requests"] == 1


async def test_reset_drops_the_answers_cached_within_that_conversation_only(store: Store) -> None:
    await store.save_answer("in thread", str(THREAD), "drawn from its history", 100.0)
    await store.save_answer("in other", str(OTHER), "another conversation's", 100.0)
    await store.reset(THREAD)
    assert await store.cached_answer("in thread", now=50.0) is None
    assert await store.cached_answer("in other", now=50.0) == "another conversation's"


async def test_a_summary_made_before_a_reset_or_forget_is_not_saved_after_it(store: Store) -> None:
    first, second, _ = [await store.append(THREAD, "user", "hello", 2) for _ in range(3)]
    made = ConversationSummary("what they said", first, first, 1.0)
    await store.save_summary(THREAD, made, replacing=0)  # nothing came between
    assert await store.summary(THREAD) == made

    later = ConversationSummary("more of what they said", second, second, 2.0)
    await store.reset(THREAD)
    await store.save_summary(THREAD, later, replacing=first)  # the reset moved the mark
    reset = await store.summary(THREAD)
    assert reset is not None and reset.text == ""

    await store.append(OTHER, "user", "hello", 2)
    first = await store.append(OTHER, "user", "again", 2)
    await store.forget_channel("s", "w", "c2")
    await store.save_summary(OTHER, ConversationSummary("gone", first, first, 3.0), replacing=0)
    assert await store.summary(OTHER) is None  # its messages were deleted meanwhile

"""The engine through its public interface, with the real SDK against the fake model."""

from __future__ import annotations

import asyncio
import sqlite3
from types import SimpleNamespace

import pytest

from bot.engine import EMPTY_MESSAGE, UNEXPECTED
from bot.messages import ConversationKey, ReplyKind
from bot.prompting import TRIM_NOTICE
from tests.conftest import EngineFactory, collect, final_text, message
from tests.fakes import eventually
from tests.fakes.openai_server import FakeOpenAI, Malformed, Status, Text


def user_texts(request: dict[str, object]) -> list[str]:
    messages = request["messages"]
    assert isinstance(messages, list)
    return [m["content"] for m in messages if m["role"] == "user"]


async def test_answer_streams_deltas_then_final(
    make_engine: EngineFactory, fake_openai: FakeOpenAI
) -> None:
    # Words 50 ms apart: the first is read (and shown) at once, later ones in batches;
    # the last batch, read with the end of the stream, comes only with the FINAL event.
    fake_openai.script(Text("Hello there, friend", interval=0.05))
    events = await collect(make_engine(), message("hi"))
    kinds = [event.kind for event in events]
    assert kinds[0] is ReplyKind.STATUS
    assert events[1].kind is ReplyKind.DELTA and events[1].text == "Hello "
    assert kinds[-1] is ReplyKind.FINAL and kinds.count(ReplyKind.FINAL) == 1
    streamed = "".join(e.text for e in events if e.kind is ReplyKind.DELTA)
    assert "Hello there, friend".startswith(streamed)
    assert final_text(events) == "Hello there, friend"


async def test_history_is_sent_in_order(
    make_engine: EngineFactory, fake_openai: FakeOpenAI
) -> None:
    engine = make_engine(system_prompt="Be brief.")
    for text in ("one", "two", "three"):
        await collect(engine, message(text))
    last = fake_openai.requests[-1]["messages"]
    assert last[0] == {"role": "system", "content": "Be brief."}
    assert [m["content"] for m in last[1:]] == [
        "one", "echo: one", "two", "echo: two", "three",
    ]  # fmt: skip


@pytest.mark.parametrize(
    "other",
    [
        {"channel": "c2"},
        {"workspace": "w2"},
        {"thread": "t1"},
        {"platform": "other"},
    ],
)
async def test_conversations_never_share_history(
    make_engine: EngineFactory, fake_openai: FakeOpenAI, other: dict[str, str]
) -> None:
    engine = make_engine()
    await collect(engine, message("secret plan"))
    await collect(engine, message("what did I say?", **other))
    assert user_texts(fake_openai.requests[-1]) == ["what did I say?"]


async def test_history_survives_a_new_engine_on_the_same_file(
    make_engine: EngineFactory, fake_openai: FakeOpenAI
) -> None:
    await collect(make_engine(), message("remember me"))
    await collect(make_engine(), message("still there?"))
    assert user_texts(fake_openai.requests[-1]) == ["remember me", "still there?"]


async def test_reset_leaves_messages_stored_but_out_of_context(
    make_engine: EngineFactory, fake_openai: FakeOpenAI
) -> None:
    engine = make_engine()
    await collect(engine, message("old topic"))
    reply = await collect(engine, message("/reset"))
    assert "reset" in final_text(reply).lower()
    await collect(engine, message("new topic"))
    assert user_texts(fake_openai.requests[-1]) == ["new topic"]
    assert await engine.store.count_messages(message("x").conversation) == 4


async def test_trimming_keeps_newest_that_fit_and_tells_once(
    make_engine: EngineFactory, fake_openai: FakeOpenAI
) -> None:
    engine = make_engine(context_tokens=400, reply_tokens=100, tools=(), summary_enabled=False)
    for number in range(12):
        await collect(engine, message(f"message number {number} " + "word " * 20))
    sent = fake_openai.requests[-1]["messages"]
    texts = [m["content"] for m in sent]
    assert texts[-1].startswith("message number 11")
    assert not any(text.startswith("message number 0 ") for text in texts)
    notices = [e for e in await collect(engine, message("and now?")) if e.kind is ReplyKind.NOTICE]
    assert notices == []  # told once only, earlier
    all_requests = len(fake_openai.requests)
    assert all_requests == 13


@pytest.mark.parametrize("reset_first", [False, True])
async def test_trim_notice_is_given_when_history_first_overflows(
    make_engine: EngineFactory, reset_first: bool
) -> None:
    engine = make_engine(context_tokens=300, reply_tokens=100, tools=(), summary_enabled=False)
    if reset_first:
        # Messages out by the user's /reset are not out for want of room: no notice
        # for them, only for the trim that comes later.
        await collect(engine, message("a short question"))
        await collect(engine, message("/reset"))
    seen = []
    for number in range(10):
        events = await collect(engine, message(f"note {number} " + "word " * 20))
        seen.append([e.text for e in events if e.kind is ReplyKind.NOTICE])
    assert seen[0] == []
    assert sum(len(notices) for notices in seen) == 1
    assert [TRIM_NOTICE] in seen


@pytest.mark.parametrize("text", ["", "   ", "\n\t"])
async def test_empty_input_gets_a_clear_message_and_nothing_is_stored(
    make_engine: EngineFactory, fake_openai: FakeOpenAI, text: str
) -> None:
    engine = make_engine()
    events = await collect(engine, message(text))
    assert final_text(events) == EMPTY_MESSAGE
    assert await engine.store.count_messages(message(text).conversation) == 0
    assert fake_openai.request_count == 0


async def test_over_long_input_is_refused_without_a_model_call(
    make_engine: EngineFactory, fake_openai: FakeOpenAI
) -> None:
    engine = make_engine(max_input_chars=100)
    events = await collect(engine, message("x" * 101))
    assert "101 characters" in final_text(events)
    assert "100" in final_text(events)
    assert fake_openai.request_count == 0
    assert await engine.store.count_messages(message("x").conversation) == 0


async def test_model_failure_keeps_the_user_message_and_stores_no_reply(
    make_engine: EngineFactory, fake_openai: FakeOpenAI
) -> None:
    engine = make_engine(max_attempts=2)
    fake_openai.script(Status(500), Status(500))
    events = await collect(engine, message("please answer"))
    assert final_text(events) == "The model is unavailable right now. Please try again shortly."
    assert events[-1].kind is ReplyKind.ERROR
    window = await engine.store.recent(message("x").conversation, 10)
    assert [(m.role, m.content) for m in window.messages] == [("user", "please answer")]
    # The next turn works and still sees the stored question.
    await collect(engine, message("again"))
    assert user_texts(fake_openai.requests[-1]) == ["please answer", "again"]


async def test_malformed_model_output_is_a_clear_error(
    make_engine: EngineFactory, fake_openai: FakeOpenAI
) -> None:
    fake_openai.script(Malformed())
    events = await collect(make_engine(), message("hi"))
    assert final_text(events) == "The model sent an answer Parley could not read. Please try again."


async def test_empty_model_answer_is_not_stored(
    make_engine: EngineFactory, fake_openai: FakeOpenAI
) -> None:
    engine = make_engine()
    fake_openai.script(Text(""))
    events = await collect(engine, message("hi"))
    assert events[-1].kind is ReplyKind.ERROR
    roles = [m.role for m in (await engine.store.recent(message("x").conversation, 10)).messages]
    assert roles == ["user"]


async def test_one_conversation_is_handled_in_order_under_concurrency(
    make_engine: EngineFactory, fake_openai: FakeOpenAI
) -> None:
    engine = make_engine()
    texts = [f"m{i}" for i in range(8)]
    await asyncio.gather(*(collect(engine, message(text)) for text in texts))
    stored = (await engine.store.recent(message("x").conversation, 100)).messages
    users = [m.content for m in stored if m.role == "user"]
    assert users == texts
    # Each request saw every earlier turn: nothing ran out of order.
    for index, request in enumerate(fake_openai.requests):
        assert user_texts(request) == texts[: index + 1]


async def test_different_conversations_run_concurrently(
    make_engine: EngineFactory, fake_openai: FakeOpenAI
) -> None:
    from tests.fakes.openai_server import Delay

    engine = make_engine()
    fake_openai.script(*(Delay(2, Text("slow")) for _ in range(4)))
    tasks = [asyncio.create_task(collect(engine, message("hi", channel=f"c{i}"))) for i in range(4)]
    # In sequence, the second call could only start once the first had finished.
    await eventually(lambda: fake_openai.request_count == 4)
    assert not any(task.done() for task in tasks)
    await asyncio.gather(*tasks)


async def test_global_cap_bounds_calls_in_flight(
    make_engine: EngineFactory, fake_openai: FakeOpenAI
) -> None:
    from tests.fakes.openai_server import Delay

    engine = make_engine(max_concurrent_calls=2)
    fake_openai.script(*(Delay(0.2, Text("ok")) for _ in range(4)))
    peak = 0

    async def watch() -> None:
        nonlocal peak
        while True:
            in_flight = 2 - engine.model_calls._value
            peak = max(peak, in_flight)
            await asyncio.sleep(0.01)

    watcher = asyncio.create_task(watch())
    await asyncio.gather(*(collect(engine, message("hi", channel=f"c{i}")) for i in range(4)))
    watcher.cancel()
    assert peak == 2


async def test_duplicate_delivery_is_answered_once(
    make_engine: EngineFactory, fake_openai: FakeOpenAI
) -> None:
    engine = make_engine()
    first = await collect(engine, message("hi", dedupe_keys=("event:1", "ts:1")))
    second = await collect(engine, message("hi", dedupe_keys=("event:2", "ts:1")))
    assert final_text(first) == "echo: hi"
    assert second == []
    assert fake_openai.request_count == 1


async def test_usage_is_recorded_per_call_with_reported_tokens(
    make_engine: EngineFactory, fake_openai: FakeOpenAI
) -> None:
    engine = make_engine()
    fake_openai.script(Text("answer", prompt_tokens=120, completion_tokens=30, cached_tokens=20))
    await collect(engine, message("hi"))
    [row] = await engine.store.usage_report(0, "user")
    assert row["key"] == "test:alice"
    assert (row["prompt_tokens"], row["completion_tokens"], row["cached_tokens"]) == (120, 30, 20)
    # gpt-4o-mini: 100 uncached at 0.15, 20 cached at 0.075, 30 out at 0.60 per million
    assert row["cost_usd"] == pytest.approx((100 * 0.15 + 20 * 0.075 + 30 * 0.60) / 1e6)


def test_conversation_key_parts_cannot_alias() -> None:
    assert str(ConversationKey("p", "w", "a/b", "")) != str(ConversationKey("p", "w", "a", "b"))


async def test_old_delivery_keys_are_pruned(make_engine: EngineFactory) -> None:
    from bot.store.records import DEDUPE_KEEP_SECONDS

    now = [1_800_000_000.0]
    engine = make_engine(clock=lambda: now[0])
    await collect(engine, message("hi", dedupe_keys=("event:old",)))
    now[0] += DEDUPE_KEEP_SECONDS + 7200
    await collect(engine, message("later", dedupe_keys=("event:new",)))
    keys = {row[0] for row in engine.store.db.execute("SELECT key FROM deliveries").fetchall()}
    assert keys == {"event:new"}


async def test_a_consumer_that_stops_early_releases_the_conversation(
    make_engine: EngineFactory, fake_openai: FakeOpenAI
) -> None:
    engine = make_engine()
    replies = engine.handle(message("first"))
    async for event in replies:
        assert event.kind is ReplyKind.STATUS
        break
    await replies.aclose()  # type: ignore[attr-defined]
    events = await asyncio.wait_for(collect(engine, message("second")), timeout=5)
    assert final_text(events) == "echo: second"
    assert not engine.turns._waiting  # nothing left behind for that conversation


async def test_engine_time_metric_excludes_the_adapters_time(
    make_engine: EngineFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    engine = make_engine()
    now = [0.0]
    monkeypatch.setattr("bot.engine.time", SimpleNamespace(perf_counter=lambda: now[0]))
    async for _ in engine.handle(message("hi")):
        now[0] += 10  # an adapter spends ten "seconds" posting each event
    histogram = engine.metrics.engine_seconds.collect()[0]
    total = next(s.value for s in histogram.samples if s.name.endswith("_sum"))
    assert total < 10


async def test_an_abandoned_model_call_is_recorded_as_cancelled(
    make_engine: EngineFactory, fake_openai: FakeOpenAI
) -> None:
    from tests.fakes.openai_server import Delay

    engine = make_engine()
    fake_openai.script(Delay(5, Text("slow")))
    task = asyncio.create_task(collect(engine, message("hi")))
    for _ in range(500):  # until the request reaches the fake model
        if fake_openai.request_count:
            break
        await asyncio.sleep(0.01)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    statuses = [row[0] for row in engine.store.db.execute("SELECT status FROM usage").fetchall()]
    assert statuses == ["cancelled"]
    assert engine.last_model_success == 0.0


async def test_text_cut_short_is_still_counted(
    make_engine: EngineFactory, fake_openai: FakeOpenAI
) -> None:
    engine = make_engine()
    fake_openai.script(Text("one two three four five six", interval=0.05))
    replies = engine.handle(message("count"))
    async for event in replies:
        if event.kind is ReplyKind.DELTA:
            break
    await replies.aclose()  # type: ignore[attr-defined]
    [row] = engine.store.db.execute(
        "SELECT status, prompt_tokens, completion_tokens FROM usage"
    ).fetchall()
    assert row[0] == "cancelled"
    assert row[1] > 0 and row[2] > 0  # estimated: the user saw text that was billed


async def test_a_fault_of_parleys_own_gets_a_reply_and_keeps_the_message(
    make_engine: EngineFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    engine = make_engine()

    def broken(*_: object) -> dict[str, str]:
        raise sqlite3.OperationalError("disk I/O error")

    monkeypatch.setattr(engine.store, "channel_settings", broken)
    events = await collect(engine, message("still here?"))
    assert (events[-1].kind, events[-1].text) == (ReplyKind.ERROR, UNEXPECTED)
    monkeypatch.undo()
    stored = (await engine.store.recent(message("x").conversation, 10)).messages
    assert [m.content for m in stored] == ["still here?"]
    assert final_text(await collect(engine, message("and now?"))) == "echo: and now?"

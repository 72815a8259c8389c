"""Attacks on "answered exactly once, in order, never dropped", on both real stores:
replicas recovering the same turn at once, a process that stalls past its lease and
then carries on, clocks that disagree between machines."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from bot.engine import Engine
from bot.llm import ModelClient
from bot.messages import ConversationKey, Message, ReplyEvent
from bot.store import Answer, Store, UsageRecord, UserLimits, open_store
from tests.conftest import collect, final_text, message, settings_for_tests
from tests.fakes import eventually
from tests.fakes.openai_server import FakeOpenAI, Text
from tests.replicas import WAIT

KEY = ConversationKey("slack", "w", "c", "t")


def usage() -> UsageRecord:
    return UsageRecord("slack", "w", "c", "slack:u", "m", 10, 5, 0, 0, 0.0, 3.0, "ok", 1000.0)


@pytest.fixture
async def replica(store_url: str) -> AsyncIterator[Store]:
    """A second process's connection to the same database."""
    opened = await open_store(store_url)
    yield opened
    await opened.close()


async def test_two_replicas_recovering_at_once_take_each_stale_turn_once(
    store: Store, replica: Store
) -> None:
    for number in range(12):
        turn = await store.begin_turn((f"ev:{number}",), KEY, "dead", 0.0, "{}")
        assert turn is not None
    claims = await asyncio.gather(
        *(
            (store if n % 2 else replica).claim_stale_turns(f"r{n}", 30.0, ("slack",), 5)
            for n in range(8)
        )
    )
    taken = [turn.id for claim in claims for turn in claim]
    assert len(taken) == 12 and len(set(taken)) == 12


async def test_a_turn_is_recovered_only_where_its_platform_runs(store: Store) -> None:
    turn = await store.begin_turn(("ev:d",), KEY, "dead", 0.0, "{}")
    assert turn is not None
    assert await store.claim_stale_turns("web-only", 30.0, ("web", "discord"), 5) == []
    [taken] = await store.claim_stale_turns("slack-here", 30.0, ("slack",), 5)
    assert taken.id == turn.id


async def test_a_process_that_stalled_past_its_lease_does_not_answer_a_taken_turn_again(
    store: Store, replica: Store
) -> None:
    turn = await store.begin_turn(("ev:s",), KEY, "stalled", 0.05, "{}")
    later = await store.begin_turn(("ev:s2",), KEY, "stalled", 60.0, "{}")
    assert turn is not None and later is not None
    await asyncio.sleep(0.1)  # the process froze: its lease ran out
    [taken] = await replica.claim_stale_turns("rescuer", 60.0, ("slack",), 5)
    assert taken.id == turn.id
    # The stalled process carries on and finishes its (now second) answer.
    await store.finish_call(usage(), KEY, Answer("the stalled answer", 3), turn.id, "stalled")
    # It must neither store a second answer nor end the rescuer's turn under it:
    # the conversation's next message still waits for the rescuer.
    assert (await replica.recent(KEY, 10)).messages == []
    assert not await replica.is_first_turn(KEY, later.id)
    # Stopping now, it lets go of its turns: not of the one the rescuer holds, which
    # a third process would then answer once more.
    await store.release_turn(turn.id, "stalled")
    await store.end_turn(turn.id, "stalled")
    assert await store.claim_stale_turns("third", 60.0, ("slack",), 5) == []
    await replica.finish_call(usage(), KEY, Answer("the rescued answer", 3), turn.id, "rescuer")
    assert [m.content for m in (await replica.recent(KEY, 10)).messages] == ["the rescued answer"]
    assert await replica.is_first_turn(KEY, later.id)


@pytest.mark.parametrize("skew", [+60.0, -60.0])
async def test_a_replica_whose_clock_is_off_neither_steals_live_turns_nor_jumps_the_queue(
    store_url: str, store: Store, replica: Store, skew: float, monkeypatch: pytest.MonkeyPatch
) -> None:
    if store.kind == "sqlite":
        pytest.skip("a SQLite file is shared only by processes of one machine: one clock")
    real = time.time
    monkeypatch.setattr(time, "time", lambda: real() + skew)  # the first replica's clock
    held = await store.begin_turn(("ev:c1",), KEY, "live", 30.0, "{}")
    assert held is not None
    await store.renew_turns("live", 30.0)
    monkeypatch.setattr(time, "time", real)  # the second replica's clock is right
    waiting = await replica.begin_turn(("ev:c2",), KEY, "other", 30.0, "{}")
    assert waiting is not None and not waiting.first
    assert not await replica.is_first_turn(KEY, waiting.id)
    assert await replica.claim_stale_turns("other", 30.0, ("slack",), 5) == []


# -- recovery through the engine, on both stores ---------------------------------------


@pytest.fixture
async def engine(store: Store, fake_openai: FakeOpenAI, tmp_path: Path) -> AsyncIterator[Engine]:
    settings = settings_for_tests(tmp_path, lease_seconds=0.3, admins=frozenset({"test:root"}))
    model = ModelClient(
        api_key="test",
        base_url=fake_openai.base_url,
        timeout_seconds=5.0,
        max_attempts=1,
        retry_max_wait_seconds=0.05,
    )
    built = Engine(settings, store, model)
    yield built
    await built.close()
    await model.close()


async def left_behind(engine: Engine, text: str, key: str) -> Message:
    """A question claimed and stored by a process that died before answering it."""
    asked = message(text, dedupe_keys=(key,))
    turn = await engine.store.begin_turn(
        asked.dedupe_keys, asked.conversation, "dead", 0.0, asked.to_payload()
    )
    assert turn is not None
    await engine.store.admit_message(
        asked.conversation, asked.user_key, UserLimits(), time.time(), text, 3, turn.id
    )
    return asked


async def recovered(engine: Engine) -> list[list[ReplyEvent]]:
    seen: list[list[ReplyEvent]] = []

    async def deliver(_: Message, events: AsyncIterator[ReplyEvent]) -> None:
        seen.append([event async for event in events])

    engine.recover_for("test", deliver)
    await eventually(lambda: seen, within=WAIT)
    await asyncio.sleep(0.5)  # looks for stale turns again meanwhile: still once
    return seen


async def test_a_question_recovered_after_reset_is_answered_in_the_fresh_conversation(
    engine: Engine,
) -> None:
    asked = await left_behind(engine, "what is a kiwi?", "ev:r")
    await collect(engine, message("/reset"))
    [events] = await recovered(engine)
    assert final_text(events) == "echo: what is a kiwi?"
    history = (await engine.store.recent(asked.conversation, 10)).messages
    assert [m.content for m in history] == ["what is a kiwi?", "echo: what is a kiwi?"]


async def test_a_question_of_a_forgotten_channel_is_not_answered_later(
    engine: Engine, fake_openai: FakeOpenAI
) -> None:
    asked = await left_behind(engine, "my secret plan", "ev:f")
    root = {"user": "root"}
    await collect(engine, message("/forget", **root))
    assert "Deleted" in final_text(await collect(engine, message("/forget confirm", **root)))
    # Nothing of the forgotten question (its text is in the turn) is left for any
    # process to take over and answer.
    assert await engine.store.claim_stale_turns("any", 1.0, ("test",), 5) == []
    assert fake_openai.requests == []
    assert (await engine.store.recent(asked.conversation, 10)).messages == []


async def test_a_later_message_waits_for_an_earlier_one_left_by_a_dead_process(
    store_url: str, fake_openai: FakeOpenAI, tmp_path: Path
) -> None:
    # Leases long enough that the process looks for stale turns only at start.
    settings = settings_for_tests(tmp_path, lease_seconds=30.0, db_path=store_url)
    model = ModelClient(
        api_key="test", base_url=fake_openai.base_url, timeout_seconds=5.0, max_attempts=1,
        retry_max_wait_seconds=0.05,
    )  # fmt: skip
    store = await open_store(store_url)
    engine = Engine(settings, store, model)
    seen: list[str] = []

    async def deliver(_: Message, events: AsyncIterator[ReplyEvent]) -> None:
        seen.append(final_text([event async for event in events]))

    try:
        engine.recover_for("test", deliver)
        await asyncio.sleep(0.2)  # its first look found nothing stale
        await left_behind(engine, "first question", "ev:o1")  # its process just died
        answer = final_text(await collect(engine, message("second question")))
        assert seen == ["echo: first question"]  # the earlier one was answered first
        assert answer == "echo: second question"
        history = (await store.recent(message("").conversation, 10)).messages
        assert [m.content for m in history] == [
            "first question", "echo: first question", "second question", "echo: second question"
        ]  # fmt: skip
    finally:
        await engine.close()
        await model.close()
        await store.close()


async def test_a_platform_retry_arriving_while_recovery_answers_gets_nothing(
    engine: Engine, fake_openai: FakeOpenAI
) -> None:
    asked = await left_behind(engine, "slow one", "ev:retry")
    fake_openai.script(Text("a b c d e f", interval=0.1))
    seen: list[list[ReplyEvent]] = []

    async def deliver(_: Message, events: AsyncIterator[ReplyEvent]) -> None:
        seen.append([event async for event in events])

    engine.recover_for("test", deliver)
    await eventually(lambda: fake_openai.requests, within=WAIT)  # recovery is answering
    assert await collect(engine, asked) == []  # Slack's retry of the same event
    await eventually(lambda: seen, within=WAIT)
    assert final_text(seen[0]) == "a b c d e f"
    assert len(fake_openai.requests) == 1


@pytest.mark.xfail(
    strict=True,
    reason="not fixed: the answer is stored and the turn ended in one transaction before "
    "the adapter posts it; a crash in between loses the answer (see the review report)",
)
async def test_an_answer_stored_but_never_posted_is_delivered_after_a_crash(
    engine: Engine,
) -> None:
    events = engine.handle(message("hello", dedupe_keys=("ev:post",)))
    async for event in events:
        if event.text == "echo: hello":
            break  # the process dies here: the answer stored, never posted
    await engine.turns.close()  # dead: it renews nothing any more
    await asyncio.sleep(0.4)  # its lease runs out
    try:
        # A restarted process must find the question still to be delivered.
        assert await engine.store.claim_stale_turns("restarted", 30.0, ("test",), 5) != []
    finally:
        await events.aclose()  # type: ignore[attr-defined]


async def test_a_recovered_answer_the_platform_refused_does_not_block_the_conversation(
    engine: Engine,
) -> None:
    await left_behind(engine, "first", "ev:b1")
    attempts: list[str] = []

    async def refused(_: Message, events: AsyncIterator[ReplyEvent]) -> None:
        async for event in events:
            attempts.append(event.text)
            raise ConnectionError("the platform is down")

    engine.recover_for("test", refused)
    await eventually(lambda: attempts, within=WAIT)
    # The turn is let go of (to be tried again until recovery.max_age), not held by
    # this process for ever with every later message of the conversation behind it.
    answer = await asyncio.wait_for(collect(engine, message("second")), WAIT)
    assert final_text(answer) == "echo: second"


async def test_a_message_behind_a_live_turn_and_a_dead_one_waits_for_both(
    store_url: str, fake_openai: FakeOpenAI, tmp_path: Path
) -> None:
    settings = settings_for_tests(tmp_path, lease_seconds=30.0, db_path=store_url)
    model = ModelClient(
        api_key="test", base_url=fake_openai.base_url, timeout_seconds=5.0, max_attempts=1,
        retry_max_wait_seconds=0.05,
    )  # fmt: skip
    store = await open_store(store_url)
    engine = Engine(settings, store, model)
    seen: list[str] = []

    async def deliver(_: Message, events: AsyncIterator[ReplyEvent]) -> None:
        seen.append(final_text([event async for event in events]))

    try:
        engine.recover_for("test", deliver)
        await asyncio.sleep(0.2)  # its first look found nothing stale
        conversation = message("").conversation
        live = await store.begin_turn(("ev:l0",), conversation, "another-replica", 30.0, "{}")
        assert live is not None
        await left_behind(engine, "first question", "ev:l1")  # its process just died
        second = asyncio.create_task(collect(engine, message("second question")))
        await asyncio.sleep(0.3)
        assert not second.done()  # behind the other replica's live turn
        await store.end_turn(live.id, "another-replica")
        assert final_text(await second) == "echo: second question"
        assert seen == ["echo: first question"]
        history = (await store.recent(conversation, 10)).messages
        assert [m.content for m in history] == [
            "first question", "echo: first question", "second question", "echo: second question"
        ]  # fmt: skip
    finally:
        await engine.close()
        await model.close()
        await store.close()


async def test_a_lost_answer_note_the_platform_refuses_is_logged_not_an_orphan_traceback(
    engine: Engine, caplog: pytest.LogCaptureFixture
) -> None:
    await left_behind(engine, "long ago", "ev:lost")
    later = time.time() + 3600
    engine.clock = lambda: later  # type: ignore[method-assign]
    tried: list[str] = []

    async def refused(_: Message, events: AsyncIterator[ReplyEvent]) -> None:
        async for event in events:
            tried.append(event.text)
            raise ConnectionError("the platform is down")

    engine.recover_for("test", refused)
    await eventually(lambda: tried, within=WAIT)
    await eventually(lambda: "delivering a recovered answer failed" in caplog.text, within=WAIT)
    assert "lost the answer" in tried[0] and len(tried) == 1  # told once, not retried

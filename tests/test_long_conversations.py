"""Long conversations: stable prefixes, trimming in steps, rolling summaries, cached
tokens, through the engine and the real SDK against the fake model."""

from __future__ import annotations

import asyncio
import itertools
from pathlib import Path
from typing import Any

import pytest

from bot.engine import Engine
from bot.messages import ReplyKind
from bot.prompting import SUMMARY_HEADING, SUMMARY_NOTICE, cache_key
from bot.response_cache import CACHED_NOTICE
from bot.summaries import NO_SUMMARY
from bot.tokens import count_message, count_text
from tests.conftest import EngineFactory, collect, final_text, message
from tests.fakes import eventually
from tests.fakes.openai_server import Delay, FakeOpenAI, Status, Text
from tests.test_console import run_chat

SUMMARIZER = "summarizer"
# Room for history: 1,200 - 200 = 1,000 tokens; each turn adds about 60.
SMALL = {
    "context_tokens": 1200, "reply_tokens": 200, "tools": (), "summary_model": SUMMARIZER,
    "summary_tokens": 60, "admins": ("test:alice",),
}  # fmt: skip


def chat_requests(fake: FakeOpenAI) -> list[dict[str, Any]]:
    return [r for r in fake.requests if r["model"] != SUMMARIZER]


def summary_requests(fake: FakeOpenAI) -> list[dict[str, Any]]:
    return [r for r in fake.requests if r["model"] == SUMMARIZER]


def tokens(request: dict[str, Any]) -> int:
    return sum(count_message(m["content"]) for m in request["messages"])


async def talk(engine: Engine, turns: int, start: int = 0) -> None:
    for number in range(start, start + turns):
        text = f"message number {number} about topic {number} " + "word " * 20
        events = await collect(engine, message(text))
        assert final_text(events).startswith("echo: message number")


async def test_prompts_share_their_prefix_until_a_trim_which_drops_to_the_fraction(
    make_engine: EngineFactory, fake_openai: FakeOpenAI
) -> None:
    fake_openai.stop_at_max_tokens = True  # the summaries echo their input, cut here
    engine = make_engine(**SMALL)
    await talk(engine, 40)
    sent = chat_requests(fake_openai)
    room = 1200 - 200
    trims = 0
    for before, after in itertools.pairwise(sent):
        if after["messages"][: len(before["messages"])] == before["messages"]:
            continue  # append-only: the whole previous prompt is the next one's prefix
        trims += 1
        assert tokens(before) > 0.6 * room  # it had grown past the point it is cut to
        # Cut to 60% of the room (the new summary, at most 60 tokens, comes on top).
        assert tokens(after) <= 0.6 * room + 60 + 10
        assert after["messages"][0]["role"] == "system"
        assert after["messages"][1]["role"] == "user"
    assert 2 <= trims <= 6  # in steps, not one message a turn
    assert len(summary_requests(fake_openai)) == trims
    key = cache_key(message("x").conversation)
    assert {r.get("prompt_cache_key") for r in sent} == {key}


async def test_the_summary_follows_the_system_prompt_grows_and_is_shown_and_reset(
    make_engine: EngineFactory, fake_openai: FakeOpenAI
) -> None:
    fake_openai.stop_at_max_tokens = True  # the summaries echo their input, cut here
    engine = make_engine(**SMALL)
    conversation = message("x").conversation
    await talk(engine, 20)
    first = await engine.store.summary(conversation)
    assert first is not None and first.text  # the fake echoes what it was asked to summarise
    assert "message number 0 " in summary_requests(fake_openai)[0]["messages"][1]["content"]
    system = chat_requests(fake_openai)[-1]["messages"][0]["content"]
    assert system == engine.settings.system_prompt + SUMMARY_HEADING + first.text

    await talk(engine, 20, start=20)
    second = await engine.store.summary(conversation)
    assert second is not None and second.covers_up_to > first.covers_up_to
    inputs = [r["messages"][1]["content"] for r in summary_requests(fake_openai)]
    assert len(inputs) >= 2
    for earlier, later in itertools.pairwise(inputs):
        # Each summary extends the one before (the fake's: its input echoed, cut at 60
        # tokens of four characters).
        previous = ("echo: " + earlier)[: 60 * 4].strip()
        assert later.startswith("Summary so far:\n" + previous + "\n")

    shown = final_text(await collect(engine, message("/summary")))
    assert second.text in shown
    await collect(engine, message("/reset"))
    assert final_text(await collect(engine, message("/summary"))) == NO_SUMMARY
    await collect(engine, message("fresh start"))
    assert chat_requests(fake_openai)[-1]["messages"][0]["content"] == (
        engine.settings.system_prompt
    )
    before_reset = len(summary_requests(fake_openai))
    await talk(engine, 20, start=100)  # a new long conversation after the reset
    after = [r["messages"][1]["content"] for r in summary_requests(fake_openai)[before_reset:]]
    assert after and "message number 10" in after[0]  # 100, 101, ...
    assert all(f"message number {n} " not in text for text in after for n in range(40))


async def test_the_user_is_told_once_that_a_summary_is_kept(
    make_engine: EngineFactory, fake_openai: FakeOpenAI
) -> None:
    fake_openai.stop_at_max_tokens = True  # the summaries echo their input, cut here
    engine = make_engine(**SMALL)
    notices = []
    for number in range(30):
        events = await collect(engine, message(f"note {number} " + "word " * 20))
        notices += [e.text for e in events if e.kind is ReplyKind.NOTICE]
    assert notices == [SUMMARY_NOTICE]


async def test_a_failing_summary_call_still_answers_and_is_tried_at_the_next_trim(
    make_engine: EngineFactory, fake_openai: FakeOpenAI
) -> None:
    fake_openai.stop_at_max_tokens = True  # the summaries echo their input, cut here
    engine = make_engine(**SMALL)
    conversation = message("x").conversation
    fake_openai.by_model[SUMMARIZER] = Status(400)
    await talk(engine, 20)  # every turn answered (talk checks)
    failed = await engine.store.summary(conversation)
    assert failed is not None and failed.text == "" and failed.covers_up_to == 0
    assert failed.starts_after > 0  # the trim happened all the same
    rows = {row["key"]: row for row in await engine.store.usage_report(0, "kind")}
    assert rows["summary"]["errors"] == rows["summary"]["requests"] >= 1

    del fake_openai.by_model[SUMMARIZER]
    await talk(engine, 20, start=20)
    caught_up = await engine.store.summary(conversation)
    assert caught_up is not None and caught_up.text
    # The retry read everything since the last good summary: the first messages too.
    assert "message number 0 " in summary_requests(fake_openai)[-1]["messages"][1]["content"]
    assert caught_up.covers_up_to == caught_up.starts_after


async def test_summary_enabled_false_trims_without_summaries(
    make_engine: EngineFactory, fake_openai: FakeOpenAI
) -> None:
    fake_openai.stop_at_max_tokens = True
    engine = make_engine(**{**SMALL, "summary_enabled": False})
    await talk(engine, 30)
    assert summary_requests(fake_openai) == []
    assert all(SUMMARY_HEADING not in r["messages"][0]["content"] for r in fake_openai.requests)
    assert "turned off" in final_text(await collect(engine, message("/summary")))


async def test_cached_tokens_reach_usage_rows_usage_and_metrics(
    make_engine: EngineFactory, fake_openai: FakeOpenAI
) -> None:
    # Turns long enough for the prompt to pass the 1,024 tokens a cache hit needs.
    fake_openai.stop_at_max_tokens = True
    engine = make_engine(**{**SMALL, "context_tokens": 6000})
    for number in range(12):
        await collect(engine, message(f"long message {number} " + "lorem ipsum " * 120))
    rows = {row["key"]: row for row in await engine.store.usage_report(0, "kind")}
    assert rows["chat"]["cached_tokens"] > 0.5 * rows["chat"]["prompt_tokens"]
    table = final_text(await collect(engine, message("/usage 7d kind")))
    chat_line = next(line for line in table.splitlines() if line.startswith("chat"))
    assert chat_line.split()[3] == str(rows["chat"]["cached_tokens"])
    exposition = engine.metrics.exposition().decode()
    assert f'parley_tokens_total{{kind="cached"}} {float(rows["chat"]["cached_tokens"])}' in (
        exposition
    )
    share = next(
        line for line in exposition.splitlines() if line.startswith("parley_prompt_cached_share")
    )
    assert 0.5 < float(share.split()[1]) < 1


async def test_no_prompt_cache_key_when_turned_off(
    make_engine: EngineFactory, fake_openai: FakeOpenAI
) -> None:
    engine = make_engine(prompt_cache_key=False)
    await collect(engine, message("hello"))
    assert "prompt_cache_key" not in fake_openai.requests[-1]


async def test_the_response_cache_answers_an_identical_single_turn_question_from_the_store(
    make_engine: EngineFactory, fake_openai: FakeOpenAI
) -> None:
    engine = make_engine(response_cache_seconds=600.0, tools=())
    first = await collect(engine, message("what is our deploy policy?", thread="t1"))
    assert final_text(first) == "echo: what is our deploy policy?"
    calls = fake_openai.request_count

    again = await collect(engine, message("what is our deploy policy?", thread="t2"))
    assert final_text(again) == "echo: what is our deploy policy?"
    assert [e.text for e in again if e.kind is ReplyKind.NOTICE] == [CACHED_NOTICE]
    assert fake_openai.request_count == calls  # no model call

    other = await collect(engine, message("what is our release policy?", thread="t3"))
    elsewhere = await collect(engine, message("what is our deploy policy?", channel="c9"))
    follow_up = await collect(engine, message("what is our deploy policy?", thread="t1"))
    assert fake_openai.request_count == calls + 3  # a different question, channel, or turn
    assert all(CACHED_NOTICE not in [e.text for e in events]
               for events in (other, elsewhere, follow_up))  # fmt: skip

    rows = {row["key"]: row for row in await engine.store.usage_report(0, "kind")}
    assert rows["cached"]["requests"] == 1 and rows["cached"]["total_tokens"] == 0
    assert "parley_cached_answers_total 1.0" in engine.metrics.exposition().decode()
    history = await engine.store.recent(message("x", thread="t2").conversation, 10)
    assert [m.role for m in history.messages] == ["user", "assistant"]


async def test_no_response_cache_by_default(
    make_engine: EngineFactory, fake_openai: FakeOpenAI
) -> None:
    engine = make_engine()
    for thread in ("t1", "t2"):
        await collect(engine, message("same question", thread=thread))
    assert fake_openai.request_count == 2


async def test_a_full_message_window_is_trimmed_in_steps_too(
    make_engine: EngineFactory, fake_openai: FakeOpenAI
) -> None:
    """model.history_messages bounds the prompt too: reaching it trims to trim_to of it,
    not one message a turn (that would move the prompt's start every turn)."""
    engine = make_engine(history_messages=10, tools=(), summary_enabled=False)
    for number in range(20):
        await collect(engine, message(f"short {number}"))
    counts = [len(r["messages"]) - 1 for r in fake_openai.requests]  # without the system
    # 1, 3, 5, 7, 9, then cut to 6 messages or fewer: 5, 7, 9, 5, ...
    assert max(counts) <= 10
    cuts = [b for a, b in itertools.pairwise(counts) if b < a]
    assert cuts and all(cut <= 6 for cut in cuts)
    assert len(cuts) <= 5  # 20 turns, a cut every few turns, not every turn


def test_a_user_sees_the_summary_in_the_terminal_chat(tmp_path: Path) -> None:
    """python -m bot chat as a user runs it: a long chat, then /summary and /reset."""
    config = tmp_path / "parley.toml"
    config.write_text(
        "[model]\ncontext_tokens = 1200\nreply_tokens = 200\n[summary]\nmax_tokens = 60\n"
    )
    lines = "".join(f"line {n} about the kiwi harvest " + "word " * 20 + "\n" for n in range(20))
    with FakeOpenAI().run_in_thread() as fake:
        fake.stop_at_max_tokens = True
        result = run_chat(fake, tmp_path, lines + "/summary\n/reset\n/summary\n",
                          PARLEY_CONFIG=str(config))  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert "Traceback" not in result.stderr
    out = result.stdout
    assert out.count(SUMMARY_NOTICE) == 1
    shown = out.split("What I keep of the earlier conversation:\n", 1)[1]
    assert "line 0 about the kiwi harvest" in shown  # the fake's summary echoes its input
    assert out.rstrip().endswith(NO_SUMMARY)


async def test_a_summary_longer_than_its_budget_is_cut_to_it(
    make_engine: EngineFactory, fake_openai: FakeOpenAI
) -> None:
    """A provider that ignores max_tokens (here the fake echoes the whole input) must
    not grow the summary past summary.max_tokens: it sits in every later prompt, and an
    oversized one would leave no room for any question."""
    engine = make_engine(**SMALL)
    await talk(engine, 60)  # every turn answered (talk checks)
    state = await engine.store.summary(message("x").conversation)
    assert state is not None and state.text
    assert count_text(state.text) <= SMALL["summary_tokens"]


async def test_a_conversational_question_is_never_answered_from_another_conversations_cache(
    make_engine: EngineFactory, fake_openai: FakeOpenAI
) -> None:
    """A Discord /ask carries its conversation's history (README: the channel is the
    conversation); its answer, cached, must not reach another conversation (a thread's
    answer, drawn from that thread's history, given in its parent channel), nor come back
    after /reset."""
    engine = make_engine(response_cache_seconds=600.0, tools=())
    secret = message("the launch code is kiwi-42", thread="private", single_turn=True)
    await collect(engine, secret)
    fake_openai.script(Text("You told me the launch code is kiwi-42."))
    question = message("what did I tell you?", thread="private", single_turn=True)
    assert "kiwi-42" in final_text(await collect(engine, question))

    elsewhere = await collect(engine, message("what did I tell you?", single_turn=True))
    assert "kiwi-42" not in final_text(elsewhere)
    await collect(engine, message("/reset", thread="private", single_turn=True))
    after_reset = await collect(engine, question)
    assert "kiwi-42" not in final_text(after_reset)


async def test_summaries_are_billed_even_when_the_provider_reports_no_usage(
    make_engine: EngineFactory, fake_openai: FakeOpenAI
) -> None:
    """As for answers, Parley counts the tokens itself: a summary recorded as free would
    slip past per-user token limits and spend caps."""
    fake_openai.stop_at_max_tokens = True
    fake_openai.send_usage = False
    engine = make_engine(**{**SMALL, "summary_model": "gpt-4o-mini"})
    await talk(engine, 20)
    rows = {row["key"]: row for row in await engine.store.usage_report(0, "kind")}
    assert rows["chat"]["prompt_tokens"] > 0  # the answers' own estimate
    assert rows["summary"]["requests"] >= 1
    assert rows["summary"]["prompt_tokens"] > 0 and rows["summary"]["completion_tokens"] > 0
    assert rows["summary"]["cost_usd"] > 0


async def test_after_failed_summaries_the_next_one_still_fits_the_context(
    make_engine: EngineFactory, fake_openai: FakeOpenAI
) -> None:
    """Each failed summary leaves more messages for the next one: its input must still
    fit model.context_tokens beside its answer, or it fails for ever (a local model
    refuses a prompt past its context)."""
    fake_openai.stop_at_max_tokens = True
    engine = make_engine(**SMALL)
    fake_openai.by_model[SUMMARIZER] = Status(400)
    await talk(engine, 60)
    del fake_openai.by_model[SUMMARIZER]
    await talk(engine, 20, start=60)
    made = await engine.store.summary(message("x").conversation)
    assert made is not None and made.text
    for request in summary_requests(fake_openai):
        assert tokens(request) + SMALL["summary_tokens"] <= SMALL["context_tokens"]


async def test_one_message_too_big_for_the_context_does_not_cost_the_conversation_its_history(
    make_engine: EngineFactory, fake_openai: FakeOpenAI
) -> None:
    fake_openai.stop_at_max_tokens = True
    engine = make_engine(**{**SMALL, "max_input_chars": 100_000})
    await talk(engine, 5)
    refused = await collect(engine, message("paste " * 1500))
    assert final_text(refused) == "Your message does not fit in the model's context."
    assert summary_requests(fake_openai) == []  # nothing was trimmed for it

    await talk(engine, 1, start=5)
    sent = [m["content"] for m in chat_requests(fake_openai)[-1]["messages"]]
    assert sent[1].startswith("message number 0 ")  # the earlier turns are all still there
    assert not any(text.startswith("paste") for text in sent)


@pytest.mark.parametrize("command", ["/reset", "/forget"])
async def test_a_summary_still_being_made_when_the_user_resets_or_forgets_is_not_kept(
    make_engine: EngineFactory, fake_openai: FakeOpenAI, command: str
) -> None:
    """Commands do not wait for the turn in progress: a summary of the old messages
    that comes back after /reset or /forget must not be stored (it would bring back,
    or keep, what the user just cleared or deleted)."""
    fake_openai.stop_at_max_tokens = True
    fake_openai.by_model[SUMMARIZER] = Delay(0.5)
    engine = make_engine(**SMALL)
    conversation = message("x").conversation
    for number in itertools.count():
        assert number < 40, "no trim happened"
        turn = asyncio.create_task(collect(engine, message(f"message number {number} " * 10)))
        await eventually(lambda turn=turn: turn.done() or summary_requests(fake_openai))
        if summary_requests(fake_openai):
            break
        await turn
    if command == "/forget":
        await collect(engine, message("/forget"))
    await collect(engine, message(f"{command} confirm".strip()))
    await turn  # the turn, and its summary, end after the command
    state = await engine.store.summary(conversation)
    assert state is None or state.text == ""


async def test_an_answer_finished_after_a_reset_is_not_cached_for_later(
    make_engine: EngineFactory, fake_openai: FakeOpenAI
) -> None:
    engine = make_engine(response_cache_seconds=600.0, tools=())
    await collect(engine, message("the launch code is kiwi-42", single_turn=True))
    fake_openai.script(Delay(0.5, Text("You told me the launch code is kiwi-42.")))
    question = message("what did I tell you?", single_turn=True)
    answering = asyncio.create_task(collect(engine, question))
    await eventually(lambda: fake_openai.request_count == 2)
    await collect(engine, message("/reset"))  # while the model answers
    assert "kiwi-42" in final_text(await answering)
    assert "kiwi-42" not in final_text(await collect(engine, question))


async def test_turning_summaries_off_stops_sending_the_one_kept(
    make_engine: EngineFactory, fake_openai: FakeOpenAI
) -> None:
    """/summary says summaries are off: no summary the user cannot see is sent either."""
    fake_openai.stop_at_max_tokens = True
    await talk(make_engine(**SMALL), 20)
    engine = make_engine(**{**SMALL, "summary_enabled": False})  # the same database
    await talk(engine, 1, start=20)
    assert SUMMARY_HEADING not in chat_requests(fake_openai)[-1]["messages"][0]["content"]

"""/summarize: read what people wrote from the platform and summarise it, on Slack (a
mention in a thread, the message shortcut), Discord (the slash command), and the
terminal and web chat (their own conversation)."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from adapters.discord_context import USER_CANNOT_READ
from bot.summarize import INSTRUCTION, NOTHING
from tests.conftest import EngineFactory, collect, final_text, message
from tests.discord_helpers import BotFactory, start_bot
from tests.fakes import eventually
from tests.fakes.discord_payloads import ADA_ID, ALICE_ID, CHANNEL_ID
from tests.fakes.discord_server import FakeDiscord
from tests.fakes.openai_server import FakeOpenAI, Text
from tests.slack_helpers import Start, mention, start
from tests.test_console import run_chat

__all__ = ["start", "start_bot"]  # the fixtures, for pytest to find here


def _asked(request: dict[str, Any]) -> str:
    """The summary request's user message, without the instruction."""
    messages = request["messages"]
    assert [m["role"] for m in messages] == ["system", "user"]
    text = str(messages[1]["content"])
    assert text.startswith(INSTRUCTION)
    return text[len(INSTRUCTION) :].strip()


# -- the terminal and web chat: their own conversation ------------------------------


async def test_summarize_reads_the_conversation_and_is_billed(
    make_engine: EngineFactory, fake_openai: FakeOpenAI
) -> None:
    engine = make_engine(requests_per_minute=3)
    for text in ("plan the offsite", "book the venue"):
        await collect(engine, message(text))
    fake_openai.script(Text("You planned an offsite and a venue."))
    events = await collect(engine, message("/summarize"))
    assert final_text(events) == "You planned an offsite and a venue."
    assert _asked(fake_openai.requests[-1]).splitlines() == [
        "User: plan the offsite", "Parley: echo: plan the offsite",
        "User: book the venue", "Parley: echo: book the venue",
    ]  # fmt: skip
    assert "tools" not in fake_openai.requests[-1]
    rows = await engine.store.usage_report(0, "user")
    assert rows[0]["requests"] == 3  # billed like any request
    # It follows the limits: a fourth request this minute is refused.
    refused = final_text(await collect(engine, message("/summarize")))
    assert "limit of 3 requests per minute" in refused
    assert fake_openai.request_count == 3


async def test_summarize_last_n_and_bad_arguments(
    make_engine: EngineFactory, fake_openai: FakeOpenAI
) -> None:
    engine = make_engine()
    assert final_text(await collect(engine, message("/summarize"))) == NOTHING
    for text in ("one", "two", "three"):
        await collect(engine, message(text))
    await collect(engine, message("/summarize 2"))
    assert _asked(fake_openai.requests[-1]).splitlines() == ["User: three", "Parley: echo: three"]
    bad = final_text(await collect(engine, message("/summarize lots")))
    assert "is not understood" in bad and "Usage: /summarize" in bad


# -- Slack ---------------------------------------------------------------------------


async def test_slack_summarize_in_a_thread_reads_conversations_replies(start: Start) -> None:
    h = await start()
    thread = h.slack.say("C1", "Shall we ship on Friday?", user="U2", ts="1700000001.000100")
    h.slack.say("C1", "Only if QA signs off.", user="U3", ts="1700000001.000200",
                thread_ts=thread["ts"])  # fmt: skip
    h.model.script(Text("U2 asked to ship Friday; U3 wants QA first."))
    await h.event(mention("summarize", ts="1700000009.000100", thread_ts=thread["ts"]))
    replies = h.slack.calls_to("conversations.replies")
    assert [(c.params["channel"], c.params["ts"]) for c in replies] == [("C1", thread["ts"])]
    assert _asked(h.model.requests[0]).splitlines() == [
        "u2: Shall we ship on Friday?",
        "u3: Only if QA signs off.",
    ]
    assert h.texts(thread=thread["ts"]) == ["U2 asked to ship Friday; U3 wants QA first."]


async def test_slack_summarize_outside_a_thread_reads_the_channel_period(start: Start) -> None:
    h = await start()
    old = f"{time.time() - 3 * 86400:.6f}"
    h.slack.say("C1", "ancient news", user="U2", ts=old)
    h.slack.say("C1", "fresh news", user="U2", ts=f"{time.time() - 60:.6f}")
    h.slack.say("C1", "<@U4> has joined the channel", user="U4",
                ts=f"{time.time() - 30:.6f}", subtype="channel_join")  # fmt: skip
    await h.event(mention("summarize 24h"))
    history = h.slack.calls_to("conversations.history")[0].params
    assert history["channel"] == "C1" and float(history["oldest"]) > float(old)
    assert _asked(h.model.requests[0]).splitlines() == ["u2: fresh news"]


async def test_slack_channel_the_bot_cannot_read_gets_a_sentence_and_no_model_call(
    start: Start,
) -> None:
    h = await start()
    h.slack.fail("conversations.history", "not_in_channel")
    await h.event(mention("summarize"))
    assert h.model.request_count == 0
    assert any("invite me first" in text for text in h.texts())


async def test_slack_message_shortcut_summarizes_the_thread(start: Start) -> None:
    h = await start()
    parent = h.slack.say("C1", "Incident: the API is down", user="U2", ts="1700000002.000100")
    h.slack.say("C1", "Rolled back, all good.", user="U3", ts="1700000002.000200",
                thread_ts=parent["ts"])  # fmt: skip
    h.model.script(Text("The API went down and was rolled back."))
    status, _ = await h.send.shortcut(
        "summarize_thread", user="U1", channel="C1", message=parent,
        response_url=h.slack.response_url(),
    )  # fmt: skip
    await h.adapter.drain()
    assert status == 200
    assert _asked(h.model.requests[0]).splitlines() == [
        "u2: Incident: the API is down",
        "u3: Rolled back, all good.",
    ]
    assert h.texts(thread=parent["ts"]) == ["The API went down and was rolled back."]


def test_manifest_has_the_shortcut_and_interactivity() -> None:
    with open("config/slack-manifest.yml", encoding="utf-8") as manifest:
        lines = [line.split("#")[0].strip() for line in manifest]
    assert "callback_id: summarize_thread" in lines
    assert "- name: Summarize thread" in lines and "type: message" in lines
    assert "is_enabled: true" in lines


# -- Discord -------------------------------------------------------------------------


async def test_discord_summarize_reads_the_channel_history(start_bot: BotFactory) -> None:
    bot = await start_bot()
    await bot.fake.send_message("Lunch at noon?", author=ADA_ID)
    await bot.fake.send_message("Make it 1pm.", author=ALICE_ID)
    bot.model.script(Text("Lunch moved to 1pm."))
    await bot.fake.send_interaction("summarize", options={"last": "10"})
    await eventually(lambda: bot.model.request_count == 1)
    assert bot.fake.calls_to("GET", r"/channels/\d+/messages")[0].query["limit"] == "10"
    assert _asked(bot.model.requests[0]).splitlines() == [
        "ada: Lunch at noon?",
        "alice: Make it 1pm.",
    ]
    answered = await eventually(
        lambda: [m for m in bot.fake.originals.values() if m["content"] == "Lunch moved to 1pm."]
    )
    assert answered[0]["flags"] & (1 << 6)  # ephemeral: only the asker sees it


async def test_discord_summarize_needs_the_asker_to_read_the_history(
    start_bot: BotFactory,
) -> None:
    fake = FakeDiscord()
    deny_history = {"id": str(ALICE_ID), "type": 1, "allow": "0", "deny": str(1 << 16)}
    fake.channels[CHANNEL_ID]["permission_overwrites"] = [deny_history]
    bot = await start_bot(fake=fake)
    await bot.fake.send_message("secret plans", author=ADA_ID)
    payload = await bot.fake.send_interaction("summarize")
    edits = await eventually(
        lambda: bot.fake.calls_to("PATCH", rf"/webhooks/\d+/{payload['token']}/.*")
    )
    assert USER_CANNOT_READ in str(edits[-1].body["content"])
    assert bot.model.request_count == 0
    assert not bot.fake.calls_to("GET", r"/channels/\d+/messages")


def test_terminal_summarize_over_its_own_conversation(tmp_path: Path) -> None:
    with FakeOpenAI().run_in_thread() as fake:
        fake.script(Text("Noted."), Text("You said the budget is 5k."))
        result = run_chat(fake, tmp_path, "the budget is 5k\n/summarize\n", "--user", "ann")
        asked = _asked(fake.requests[-1])
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().splitlines()[-1].endswith("You said the budget is 5k.")
    assert asked.splitlines() == ["User: the budget is 5k", "Parley: Noted."]
    assert "Traceback" not in result.stderr


async def test_a_summary_is_never_answered_from_the_response_cache(
    make_engine: EngineFactory, fake_openai: FakeOpenAI
) -> None:
    engine = make_engine(response_cache_seconds=600)
    await collect(engine, message("first point"))
    await collect(engine, message("/summarize", single_turn=True))
    await collect(engine, message("second point"))
    await collect(engine, message("/summarize", single_turn=True))
    assert fake_openai.request_count == 4
    assert "second point" in _asked(fake_openai.requests[-1])

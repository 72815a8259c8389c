"""The Slack adapter through real slack-bolt and slack-sdk, against a fake Slack and model.

Commands, admins and usage charts are in test_slack_commands.py.
"""

from __future__ import annotations

import json
import logging
from typing import Any

import pytest
from slack_sdk.web.async_client import AsyncWebClient

from adapters.slack import create
from adapters.slack_format import to_mrkdwn
from bot.config import ConfigError
from tests.conftest import EngineFactory
from tests.fakes import eventually
from tests.fakes.openai_server import Call, Status, Text, ToolCalls
from tests.fakes.slack_server import BOT_USER_ID, FakeSlack
from tests.slack_helpers import (
    MENTION_TS,
    SECRET,
    TOKEN,
    Start,
    mention,
    message,
    start,
    user_turns,
)

__all__ = ["start"]  # the fixture, for pytest to find here


# -- the Events API endpoint ---------------------------------------------------------


async def test_url_verification_is_answered(start: Start) -> None:
    h = await start()
    status, body = await h.send.url_verification("challenge-123")
    assert status == 200
    assert "challenge-123" in body


async def test_bad_signature_is_refused(start: Start) -> None:
    h = await start()
    status = await h.event(mention(), signature="v0=" + "0" * 64)
    assert status == 401
    assert h.model.request_count == 0
    assert h.texts() == []


# -- what gets answered ----------------------------------------------------------------


async def test_mention_gets_a_threaded_reply(start: Start) -> None:
    h = await start()
    h.model.script(Text("Hello **there**"))
    assert await h.event(mention("what is up?")) == 200
    assert h.texts() == ["Hello **there**"]
    # The bot's own mention is not part of what the model reads.
    assert user_turns(h.model.requests[0]) == [("user", "what is up?")]
    status = h.slack.calls_to("assistant.threads.setStatus")[0].params
    assert (status["channel_id"], status["thread_ts"]) == ("C1", MENTION_TS)
    assert status["status"] == "is thinking…"


async def test_thread_follow_up_continues_without_mention(start: Start) -> None:
    h = await start()
    h.model.script(Text("Paris."), Text("About two million."))
    await h.event(mention("capital of France?"))
    await h.event(message("and its population?", ts="1699999999.000200", thread_ts=MENTION_TS))
    assert h.texts() == ["Paris.", "About two million."]
    assert user_turns(h.model.requests[1]) == [
        ("user", "capital of France?"),
        ("assistant", "Paris."),
        ("user", "and its population?"),
    ]


async def test_unmentioned_message_in_unknown_thread_is_ignored(start: Start) -> None:
    h = await start()
    await h.event(message("chatter", ts="1699999999.000300", thread_ts="1699999990.000001"))
    await h.event(message("top-level chatter", ts="1699999999.000400"))
    assert h.model.request_count == 0
    assert h.slack.calls_to("chat.postMessage") == []


async def test_direct_message_is_answered(start: Start) -> None:
    h = await start()
    h.model.script(Text("Hi in private"))
    await h.event(message("hello bot", ts="1699999999.000500", channel="D1"))
    assert h.texts("D1", "") == ["Hi in private"]
    assert user_turns(h.model.requests[0]) == [("user", "hello bot")]


async def test_retry_and_double_delivery_get_exactly_one_answer(start: Start) -> None:
    h = await start()
    h.model.script(Text("only once"), Text("twice!"))
    dispatched: list[str] = []
    dispatch = h.adapter.app.async_dispatch

    async def counted(request: Any) -> Any:
        dispatched.append(request.body.get("event_id", ""))
        return await dispatch(request)

    h.adapter.app.async_dispatch = counted  # type: ignore[method-assign]
    text = f"<@{BOT_USER_ID}> hi"
    await h.send.event(mention("hi"), event_id="EvMention")
    await h.send.event(message(text, ts=MENTION_TS), event_id="EvMessage")
    await h.send.event(mention("hi"), event_id="EvMention", retry_num=1)
    await h.adapter.drain()
    assert h.model.request_count == 1
    assert h.texts() == ["only once"]
    # Taken already: the second event and the retry are acknowledged before bolt.
    assert dispatched == ["EvMention"]


async def test_events_without_an_event_id_are_not_taken_for_repeats(start: Start) -> None:
    h = await start()
    h.model.script(Text("first"), Text("second"))
    await h.event(mention("one"), event_id=None)
    await h.event(mention("two", ts="1699999999.000150"), event_id=None)
    assert h.texts() == ["first"]
    assert h.texts(thread="1699999999.000150") == ["second"]


@pytest.mark.parametrize(
    "event",
    [
        pytest.param({"user": BOT_USER_ID, "bot_id": "BBOT"}, id="own-message"),
        pytest.param({"user": "U9", "bot_id": "B2", "subtype": "bot_message"}, id="other-bot"),
        pytest.param({"subtype": "message_changed"}, id="edit"),
        pytest.param({"subtype": "message_deleted"}, id="deletion"),
        pytest.param({"subtype": "channel_join"}, id="join"),
    ],
)
async def test_bots_and_non_user_messages_are_ignored(start: Start, event: dict[str, Any]) -> None:
    h = await start()
    await h.event(message(f"<@{BOT_USER_ID}> hi", ts="1699999999.000600", channel="D1") | event)
    assert h.model.request_count == 0
    assert h.slack.calls_to("chat.postMessage") == []


async def test_other_bots_are_answered_when_allowed(start: Start) -> None:
    h = await start(slack_allow_bots=True)
    h.model.script(Text("hello, fellow bot"))
    bot = {"user": "", "bot_id": "B2", "subtype": "bot_message"}
    await h.event(message("ping", ts="1699999999.000700", channel="D1") | bot)
    assert h.texts("D1", "") == ["hello, fellow bot"]


# -- how answers look ------------------------------------------------------------------


async def test_broadcast_mentions_in_model_output_are_neutralised(start: Start) -> None:
    h = await start()
    h.model.script(Text("Attention <!channel> and @here and <!everyone|everyone>!"))
    await h.event(mention())
    [text] = h.texts()
    assert "<!" not in text and "@here" not in text
    assert "@\u200bhere" in text and "@\u200bchannel" in text
    sent = [json.dumps(call.params) for call in h.slack.calls if call.method.startswith("chat.")]
    assert not any("<!channel>" in s or "@here" in s for s in sent)


async def test_user_and_group_mentions_in_model_output_do_not_ping(start: Start) -> None:
    h = await start()
    h.model.script(Text("Ask <!subteam^S123|@oncall> or <@U999> about it."))
    await h.event(mention())
    [text] = h.texts()
    assert "@\u200boncall" in text and "@\u200bU999" in text  # still readable
    sent = [json.dumps(call.params) for call in h.slack.calls if call.method.startswith("chat.")]
    assert sent
    assert not any("<!subteam" in s or "<@U999" in s for s in sent)


def long_answer(prose_chars: int, code_lines: int) -> str:
    """Prose, then one long fenced code block, then a last line."""
    sentences = "".join(f"Sentence number {i} says something. " for i in range(prose_chars))
    code = "".join(f"print({i})  # line {i}\n" for i in range(code_lines))
    return f"{sentences[:prose_chars]}\n\n```python\n{code}```\nThe end."


@pytest.mark.parametrize(
    ("native", "limit", "prose", "lines"), [(False, 4000, 3000, 300), (True, 12000, 10000, 900)]
)
async def test_long_answer_is_split_with_fences_intact(
    start: Start, native: bool, limit: int, prose: int, lines: int
) -> None:
    h = await start()
    if not native:
        h.slack.fail("chat.startStream")
    answer = long_answer(prose, lines)  # about 10,000 and 30,000 characters
    # Paced, so that it is streamed (an answer that comes whole is posted whole).
    h.model.script(Text(answer, chunks=40, interval=0.005))
    await h.event(mention())
    texts = h.texts()
    assert len(texts) >= 3
    assert all(len(text) <= limit for text in texts)
    assert all(text.count("```") % 2 == 0 for text in texts)  # every part's fences close
    streams = len(h.slack.calls_to("chat.startStream"))
    assert streams == (len(texts) if native else 1)  # one failed attempt when not native
    joined = "".join(texts)
    assert all(f"print({i})  # line {i}\n" in joined for i in range(lines))
    assert all(text.startswith("```python") for text in texts[1:-1] if "print(" in text[:30])
    assert joined.endswith("The end.")


async def test_native_streaming_is_used_when_available(start: Start) -> None:
    h = await start()
    h.model.script(Text("one two three four five six", chunks=6, interval=0.05))
    await h.event(mention())
    [start_call] = h.slack.calls_to("chat.startStream")
    assert start_call.params["thread_ts"] == MENTION_TS
    assert start_call.params["recipient_user_id"] == "U1"
    assert h.slack.calls_to("chat.stopStream")
    assert h.slack.calls_to("chat.update") == []
    [posted] = h.slack.thread("C1", MENTION_TS)
    assert (posted.text, posted.streaming) == ("one two three four five six", False)


async def test_a_streamed_answer_takes_three_web_api_calls(start: Start) -> None:
    # Status, start, and a stop that carries the rest of the text: no append before it.
    h = await start()
    h.model.script(Text("one two three four five six", chunks=6, interval=0.05))
    await h.event(mention())
    methods = [call.method for call in h.slack.calls if call.method.startswith(("chat.", "as"))]
    assert methods == ["assistant.threads.setStatus", "chat.startStream", "chat.stopStream"]
    [stop] = h.slack.calls_to("chat.stopStream")
    assert stop.params["markdown_text"] == "two three four five six"
    [posted] = h.slack.thread("C1", MENTION_TS)
    assert (posted.text, posted.streaming) == ("one two three four five six", False)


async def test_an_answer_in_one_piece_takes_two_web_api_calls(start: Start) -> None:
    # Nothing shown before the whole answer is there: one post, no stream to open and close.
    h = await start()
    h.model.script(Text("one two three four five six", chunks=1))
    await h.event(mention())
    methods = [call.method for call in h.slack.calls if call.method.startswith(("chat.", "as"))]
    assert methods == ["assistant.threads.setStatus", "chat.postMessage"]
    [post] = h.slack.calls_to("chat.postMessage")
    assert post.params["thread_ts"] == MENTION_TS
    assert h.texts() == ["one two three four five six"]


async def test_the_model_is_asked_while_slack_sets_the_status(start: Start) -> None:
    # The status is not waited for before the model is called (one Slack round trip
    # less before the first words), yet nothing is posted before it is set.
    h = await start()
    h.model.script(Text("one two three", chunks=1))
    status_set = h.slack.hold("assistant.threads.setStatus")
    await h.send.event(mention())
    await eventually(lambda: h.model.requests)  # asked, the status still unanswered
    assert not h.slack.calls_to("chat.postMessage")
    status_set.set()
    await h.adapter.drain()
    methods = [call.method for call in h.slack.calls if call.method.startswith(("chat.", "as"))]
    assert methods == ["assistant.threads.setStatus", "chat.postMessage"]
    assert h.texts() == ["one two three"]


async def test_a_status_that_fails_unexpectedly_costs_no_answer(
    start: Start, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    # The status is set aside while the model answers: its failure (here the client's
    # session closed under it, as at shutdown) must not surface as the answer's.
    async def closed(*args: object, **kwargs: object) -> None:
        raise RuntimeError("Session is closed")

    h = await start()
    monkeypatch.setattr(AsyncWebClient, "assistant_threads_setStatus", closed)
    h.model.script(Text("still answered", chunks=1))
    await h.event(mention())
    assert h.texts() == ["still answered"]
    assert "setting the status failed" in caplog.text


@pytest.mark.parametrize("native", [True, False])
async def test_final_text_replaces_a_streamed_tool_preamble(start: Start, native: bool) -> None:
    h = await start()
    if not native:
        h.slack.fail("chat.startStream")
    h.model.script(
        ToolCalls([Call("calculate", {"expression": "6*7"})], content="Let me work it out. "),
        Text("It is 42."),
    )
    await h.event(mention("what is 6*7?"))
    sent = json.dumps([call.params for call in h.slack.calls])
    assert '"markdown_text": "Let' in sent  # the preamble was shown (its first words)...
    assert h.texts() == ["It is 42."]  # ...and the final answer replaced it
    assert "42" in json.dumps(h.model.requests[1]["messages"])  # the tool result went back


async def test_falls_back_to_chat_update_when_streaming_fails(start: Start) -> None:
    h = await start()
    h.slack.fail("chat.startStream", "unknown_method")
    h.model.script(Text("first answer", chunks=4, interval=0.05), Text("second answer"))
    await h.event(mention())
    assert h.texts() == ["first answer"]
    assert h.slack.calls_to("chat.postMessage")
    # Once Slack says the method is unknown, the next answer does not try it again.
    await h.event(mention("again", ts="1699999999.000900"))
    assert h.texts(thread="1699999999.000900") == ["second answer"]
    assert len(h.slack.calls_to("chat.startStream")) == 1


async def test_placeholder_when_thread_status_is_unavailable(start: Start) -> None:
    h = await start()
    h.slack.fail("assistant.threads.setStatus", "missing_scope")
    h.model.script(Text("the answer"))
    await h.event(mention())
    first = h.slack.calls_to("chat.postMessage")[0].params
    assert first["markdown_text"] == "_thinking…_"
    assert h.texts() == ["the answer"]  # the placeholder became the answer
    assert h.slack.calls_to("chat.update")


@pytest.mark.parametrize("status_works", [True, False])
async def test_model_failure_gives_a_short_error_in_the_thread(
    start: Start, status_works: bool
) -> None:
    h = await start()
    if not status_works:
        h.slack.fail("assistant.threads.setStatus", "missing_scope")
    h.model.script(Status(500), Status(500), Status(500))
    await h.event(mention())
    [text] = h.texts()
    assert text.startswith(":warning:")
    assert len(text) < 300
    assert h.model.request_count == 3


async def test_rate_limited_post_is_retried(start: Start) -> None:
    h = await start()
    h.slack.rate_limit("chat.postMessage", times=1, retry_after=0)
    h.model.script(Text("after a pause"))
    await h.event(message("hi", ts="1699999999.001000", channel="D1"))
    assert h.texts("D1", "") == ["after a pause"]
    assert len(h.slack.calls_to("chat.postMessage")) == 2


async def test_failed_post_is_logged_and_conversation_kept(
    start: Start, caplog: pytest.LogCaptureFixture
) -> None:
    h = await start()
    h.slack.fail("chat.postMessage", "channel_not_found")
    h.model.script(Text("lost in transit"), Text("second try"))
    with caplog.at_level(logging.WARNING):
        await h.event(message("hi", ts="1699999999.001100", channel="D1"))
    logged = caplog.text
    assert "chat_postMessage failed (channel D1" in logged and "channel_not_found" in logged
    assert TOKEN not in logged
    h.slack.fail("chat.postMessage", times=0)
    await h.event(message("again", ts="1699999999.001200", channel="D1"))
    assert ("assistant", "lost in transit") in user_turns(h.model.requests[1])


# -- starting up ---------------------------------------------------------------------


async def test_refused_token_stops_start_with_a_clear_error(
    make_engine: EngineFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with FakeSlack() as slack:
        slack.fail("auth.test", "invalid_auth")
        monkeypatch.setenv("SLACK_BOT_TOKEN", TOKEN)
        monkeypatch.setenv("SLACK_SIGNING_SECRET", SECRET)
        monkeypatch.delenv("SLACK_APP_TOKEN", raising=False)
        monkeypatch.setenv("PARLEY_SLACK_API_URL", slack.api_url)
        engine = make_engine()
        adapter = create(engine, engine.settings)
        with pytest.raises(ConfigError, match="invalid_auth") as raised:
            await adapter.start()
        await adapter.stop()
    assert TOKEN not in str(raised.value)
    assert not adapter.connected()


@pytest.mark.parametrize(
    ("variables", "missing"),
    [({}, "SLACK_BOT_TOKEN"), ({"SLACK_BOT_TOKEN": TOKEN}, "SLACK_SIGNING_SECRET")],
)
def test_create_names_the_missing_secret(
    make_engine: EngineFactory, monkeypatch: pytest.MonkeyPatch,
    variables: dict[str, str], missing: str,
) -> None:  # fmt: skip
    for name in ("SLACK_BOT_TOKEN", "SLACK_SIGNING_SECRET", "SLACK_APP_TOKEN"):
        monkeypatch.delenv(name, raising=False)
    for name, value in variables.items():
        monkeypatch.setenv(name, value)
    engine = make_engine()
    with pytest.raises(ConfigError, match=missing):
        create(engine, engine.settings)


async def test_http_mode_is_connected_once_authenticated(start: Start) -> None:
    h = await start()
    assert h.adapter.connected()
    assert h.slack.calls_to("auth.test")[0].headers["Authorization"] == f"Bearer {TOKEN}"


# -- Socket Mode -----------------------------------------------------------------------


async def test_socket_mode_receives_and_acknowledges_events(start: Start) -> None:
    h = await start(socket_mode=True)
    assert h.adapter.connected()
    h.model.script(Text("over the socket"))
    await h.slack.send_socket_event(h.send.envelope(mention()), envelope_id="env-42")
    await eventually(lambda: h.slack.socket_acks)
    await h.adapter.drain()
    assert h.slack.socket_acks[0]["envelope_id"] == "env-42"
    assert h.texts() == ["over the socket"]
    await h.adapter.stop()
    assert not h.adapter.connected()


# -- formatting ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("markdown", "mrkdwn"),
    [
        ("**bold** and ~~gone~~", "*bold* and ~gone~"),
        ("# Title", "*Title*"),
        ("see [docs](https://example.com/a)", "see <https://example.com/a|docs>"),
        ("`**not bold**` stays", "`**not bold**` stays"),
        ("```\n**code**\n```", "```\n**code**\n```"),
    ],
)
def test_markdown_to_mrkdwn(markdown: str, mrkdwn: str) -> None:
    assert to_mrkdwn(markdown) == mrkdwn

"""The Slack adapter through real slack-bolt and slack-sdk, against a fake Slack and model."""

from __future__ import annotations

import contextlib
import json
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from adapters.slack import SlackAdapter, create
from adapters.slack_format import to_mrkdwn
from bot.config import ConfigError
from tests.conftest import EngineFactory
from tests.fakes.openai_server import Call, FakeOpenAI, Status, Text, ToolCalls
from tests.fakes.slack_server import BOT_USER_ID, EventSender, FakeSlack

SECRET = "test-signing-secret"
TOKEN = "xoxb-test-token"
MENTION_TS = "1699999999.000100"


@dataclass
class Harness:
    adapter: SlackAdapter
    slack: FakeSlack
    send: EventSender
    model: FakeOpenAI

    async def event(self, event: dict[str, Any], **options: Any) -> int:
        """Deliver an event and wait until the adapter has finished answering it."""
        status = await self.send.event(event, **options)
        await self.adapter.drain()
        return status

    def texts(self, channel: str = "C1", thread: str = MENTION_TS) -> list[str]:
        return [posted.text for posted in self.slack.thread(channel, thread)]


Start = Callable[..., Awaitable[Harness]]


@pytest.fixture
async def start(
    make_engine: EngineFactory, fake_openai: FakeOpenAI, monkeypatch: pytest.MonkeyPatch
) -> AsyncIterator[Start]:
    """start(socket_mode=False, **settings) -> a running adapter on a fake Slack."""
    stack = contextlib.AsyncExitStack()

    async def run(socket_mode: bool = False, **overrides: Any) -> Harness:
        slack = await stack.enter_async_context(FakeSlack())
        monkeypatch.setenv("SLACK_BOT_TOKEN", TOKEN)
        monkeypatch.setenv("SLACK_SIGNING_SECRET", SECRET)
        monkeypatch.setenv("PARLEY_SLACK_API_URL", slack.api_url)
        if socket_mode:
            monkeypatch.setenv("SLACK_APP_TOKEN", "xapp-test")
        else:
            monkeypatch.delenv("SLACK_APP_TOKEN", raising=False)
        engine = make_engine(**overrides)
        adapter = create(engine, engine.settings)
        app = web.Application()
        adapter.add_routes(app)
        server = TestServer(app, host="127.0.0.1")
        await server.start_server()
        stack.push_async_callback(server.close)
        await adapter.start()
        stack.push_async_callback(adapter.stop)
        url = str(server.make_url("/slack/events"))
        return Harness(adapter, slack, EventSender(url, SECRET), fake_openai)

    yield run
    await stack.aclose()


def mention(
    text: str = "hello", *, ts: str = MENTION_TS, user: str = "U1", **extra: Any
) -> dict[str, Any]:
    return {"type": "app_mention", "user": user, "text": f"<@{BOT_USER_ID}> {text}", "ts": ts,
            "channel": "C1", "team": "T1", "event_ts": ts, **extra}  # fmt: skip


def message(text: str, *, ts: str, channel: str = "C1", **extra: Any) -> dict[str, Any]:
    kind = "im" if channel.startswith("D") else "channel"
    return {"type": "message", "user": "U1", "text": text, "ts": ts, "channel": channel,
            "channel_type": kind, "team": "T1", "event_ts": ts, **extra}  # fmt: skip


def user_turns(request: dict[str, Any]) -> list[tuple[str, str]]:
    return [(m["role"], m["content"]) for m in request["messages"] if m["role"] != "system"]


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
    text = f"<@{BOT_USER_ID}> hi"
    await h.send.event(mention("hi"), event_id="EvMention")
    await h.send.event(message(text, ts=MENTION_TS), event_id="EvMessage")
    await h.send.event(mention("hi"), event_id="EvMention", retry_num=1)
    await h.adapter.drain()
    assert h.model.request_count == 1
    assert h.texts() == ["only once"]


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
    h.model.script(Text(answer, chunks=40))
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
    h.model.script(Text("one two three four five six", chunks=6))
    await h.event(mention())
    [start_call] = h.slack.calls_to("chat.startStream")
    assert start_call.params["thread_ts"] == MENTION_TS
    assert start_call.params["recipient_user_id"] == "U1"
    assert h.slack.calls_to("chat.stopStream")
    assert h.slack.calls_to("chat.update") == []
    [posted] = h.slack.thread("C1", MENTION_TS)
    assert (posted.text, posted.streaming) == ("one two three four five six", False)


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
    h.model.script(Text("first answer", chunks=4), Text("second answer"))
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


# -- commands and admins ---------------------------------------------------------------


async def test_slash_command_as_admin_gets_usage_privately(start: Start) -> None:
    h = await start(admins=("slack:UADMIN",))
    await h.event(mention("hello"))  # some usage to report
    status, _ = await h.send.slash_command(
        "usage 7d", user="UADMIN", channel="C1", response_url=h.slack.response_url()
    )
    await h.adapter.drain()
    assert status == 200
    [response] = h.slack.responses
    assert response["response_type"] == "ephemeral"
    assert "Usage over the last 7d" in response["text"]
    assert "slack:U1" in response["text"]


async def test_slash_command_as_non_admin_is_refused_without_figures(start: Start) -> None:
    h = await start(admins=("slack:UADMIN",))
    await h.event(mention("hello"))
    await h.send.slash_command(
        "usage", user="U2", channel="C1", response_url=h.slack.response_url()
    )
    await h.adapter.drain()
    [response] = h.slack.responses
    assert response["response_type"] == "ephemeral"
    assert "only Parley admins" in response["text"]
    assert "slack:U1" not in response["text"] and "Usage over" not in response["text"]


async def test_workspace_admin_is_a_platform_admin(start: Start) -> None:
    h = await start()
    h.slack.admins.add("UWS")
    for user in ("UWS", "UWS"):
        await h.send.slash_command("usage", user=user, channel="C1",
                                   response_url=h.slack.response_url())  # fmt: skip
        await h.adapter.drain()
    assert all("only Parley admins" not in r["text"] for r in h.slack.responses)
    assert len(h.slack.calls_to("users.info")) == 1  # cached per user


@pytest.mark.parametrize("workspace_admin", [False, True])
async def test_mention_command_reaches_the_router_ephemerally(
    start: Start, workspace_admin: bool
) -> None:
    h = await start()
    if workspace_admin:
        h.slack.admins.add("U2")
    await h.event(mention("usage 7d", user="U2"))
    assert h.model.request_count == 0
    [reply] = h.slack.ephemerals("U2")
    assert reply.thread_ts == MENTION_TS
    refused = "only Parley admins can use /usage" in reply.text
    assert refused is not workspace_admin
    assert h.texts() == []


# -- usage charts ----------------------------------------------------------------------

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
CHART_TS = "1699999999.002000"


async def ask_for_chart(h: Harness, form: str, user: str, channel: str = "C1") -> None:
    """An admin command in either form: /parley usage chart, or @Parley usage chart."""
    if form == "slash":
        await h.send.slash_command(
            "usage chart", user=user, channel=channel, response_url=h.slack.response_url()
        )
        await h.adapter.drain()
    else:
        await h.event(mention("usage chart", user=user, ts=CHART_TS))


def notes_to(h: Harness, form: str, user: str) -> list[str]:
    """What the user was told privately: response_url replies, or ephemerals."""
    if form == "slash":
        return [response["text"] for response in h.slack.responses]
    return [posted.text for posted in h.slack.ephemerals(user)]


@pytest.mark.parametrize("form", ["slash", "mention"])
async def test_usage_chart_is_uploaded_into_the_admins_dm(start: Start, form: str) -> None:
    h = await start(admins=("slack:UADMIN",))
    await h.event(mention("hello"))  # some usage, so there is a chart to draw
    await ask_for_chart(h, form, "UADMIN")
    [opened] = h.slack.calls_to("conversations.open")
    assert opened.params["users"] == "UADMIN"
    [chart] = h.slack.shared_files(h.slack.dm_for("UADMIN"))
    assert chart.data.startswith(PNG_SIGNATURE) and len(chart.data) > 1000
    assert (chart.filename, chart.title) == ("usage.png", "Usage chart, last 7d")
    assert chart.initial_comment == "Usage chart, last 7d"
    assert notes_to(h, form, "UADMIN") == ["I sent you the chart in a DM."]
    if form == "mention":
        assert [p.thread_ts for p in h.slack.ephemerals("UADMIN")] == [CHART_TS]
        assert h.texts(thread=CHART_TS) == []  # nothing public in the channel
    else:
        assert h.slack.responses[0]["response_type"] == "ephemeral"


@pytest.mark.parametrize("form", ["slash", "message"])
async def test_usage_chart_asked_in_the_dm_is_uploaded_there(start: Start, form: str) -> None:
    h = await start(admins=("slack:UADMIN",))
    await h.event(mention("hello"))
    dm = h.slack.dm_for("UADMIN")
    if form == "slash":
        await ask_for_chart(h, "slash", "UADMIN", channel=dm)
    else:
        await h.event(message("/usage chart 30d", ts=CHART_TS, channel=dm, user="UADMIN"))
        assert h.slack.calls_to("conversations.open") == []  # a DM event is the DM already
    [chart] = h.slack.shared_files()
    assert chart.channel == dm and chart.data.startswith(PNG_SIGNATURE)
    # The file's comment carries the text; a second message would only repeat it.
    assert h.slack.responses == [] and h.texts(dm, "") == []


@pytest.mark.parametrize("form", ["slash", "mention"])
async def test_usage_chart_is_refused_to_non_admins(start: Start, form: str) -> None:
    h = await start(admins=("slack:UADMIN",))
    await h.event(mention("hello"))
    await ask_for_chart(h, form, "U2")
    [note] = notes_to(h, form, "U2")
    assert "only Parley admins can use /usage" in note
    assert h.slack.files == {}
    assert h.slack.calls_to("conversations.open") == []
    assert h.slack.calls_to("files.getUploadURLExternal") == []


@pytest.mark.parametrize(
    ("method", "named", "scope"),
    [
        pytest.param("files.getUploadURLExternal", True, "files:write", id="files-write"),
        pytest.param("conversations.open", False, "im:write", id="im-write"),
    ],
)
async def test_failed_chart_upload_names_the_missing_scope(
    start: Start, method: str, named: bool, scope: str
) -> None:
    h = await start(admins=("slack:UADMIN",))
    await h.event(mention("hello"))
    if named:  # Slack names the scope; the adapter knows it otherwise
        h.slack.fail(method, "missing_scope", needed=scope, provided="chat:write,commands")
    else:
        h.slack.fail(method, "missing_scope")
    await ask_for_chart(h, "mention", "UADMIN")
    [note] = notes_to(h, "mention", "UADMIN")
    assert note.startswith("Usage chart, last 7d\n:warning:")
    assert f"lacks the {scope} scope" in note
    assert h.slack.shared_files() == []


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
    await h.slack.wait_for(lambda: h.slack.socket_acks)
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

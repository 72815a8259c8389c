"""Property-based tests: whatever Slack, Discord, a browser or a user sends, Parley
answers without an unhandled exception or a 5xx, and goes on answering.

Each test starts one running adapter on the fakes and feeds it many generated inputs
(hypothesis); the examples share it, as a long-running process shares its state. Kept
small so the suite stays fast; PARLEY_PROPERTY_EXAMPLES=500 searches longer.
"""

from __future__ import annotations

import itertools
import json
import logging
import os
from collections.abc import AsyncIterator
from typing import Any

import pytest
from aiohttp import ClientWebSocketResponse
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from adapters.discord_delivery import Backoff
from adapters.web import create as create_web
from bot.engine import UNEXPECTED, Engine
from bot.messages import ReplyKind
from tests.conftest import EngineFactory, collect, message
from tests.discord_helpers import Bot, BotFactory, start_bot
from tests.fakes import eventually
from tests.fakes.discord_payloads import ADA_ID, ALICE_ID, DM_CHANNEL_ID
from tests.fakes.openai_server import Text
from tests.slack_helpers import Harness, Start, mention, start
from tests.test_web_helpers import ask, browser_like, receive, serve

__all__ = ["start", "start_bot"]  # the fixtures, for pytest to find here

examples = settings(
    max_examples=int(os.environ.get("PARLEY_PROPERTY_EXAMPLES", "25")),
    deadline=None,
    # One running adapter serves every example, as one process serves every request.
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)

# Any JSON value, nested a little.
json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(), inner, max_size=3),
    max_leaves=8,
)
words = st.text(min_size=0, max_size=40)


def faults(records: list[logging.LogRecord]) -> list[str]:
    """Log lines that mean something went wrong inside Parley (not the input)."""
    return [
        f"{r.name}: {r.getMessage()}"
        for r in records
        if r.exc_info or r.levelno >= logging.ERROR or "Traceback" in r.getMessage()
    ]


# --- Slack ---------------------------------------------------------------------------

SLACK_FIELDS = ("text", "user", "ts", "thread_ts", "channel", "channel_type", "subtype",
                "team", "bot_id", "type")  # fmt: skip
slack_ts = st.from_regex(r"\A17[0-9]{8}\.[0-9]{6}\Z")
barrier_numbers = itertools.count(1)  # a fresh thread for each check that Parley answers


@st.composite
def slack_bodies(draw: st.DrawFn) -> str:
    """A signed Events API body: a mention with some fields replaced by anything."""
    event: dict[str, Any] = mention(draw(words), ts=draw(slack_ts))
    for name in draw(st.lists(st.sampled_from(SLACK_FIELDS), max_size=3, unique=True)):
        event[name] = draw(json_values | words)
    envelope: dict[str, Any] = {"type": "event_callback", "team_id": "T1", "event": event,
                                "event_id": draw(st.text(max_size=12))}  # fmt: skip
    if draw(st.booleans()):
        envelope[draw(st.sampled_from(["type", "team_id", "authorizations", "event"]))] = draw(
            json_values
        )
    return json.dumps(envelope) if draw(st.integers(0, 9)) else json.dumps(draw(json_values))


@pytest.fixture
async def slack(start: Start) -> Harness:
    return await start()


@examples
@given(body=slack_bodies())
async def test_slack_events_never_fail_the_endpoint(
    slack: Harness, caplog: pytest.LogCaptureFixture, body: str
) -> None:
    caplog.clear()
    with caplog.at_level(logging.INFO):
        status, _ = await slack.send.post(body, "application/json")
        await slack.adapter.drain()
    assert status < 500
    assert faults(caplog.records) == []
    # And the next mention is still answered (a fresh thread: nothing else is in it).
    barrier_ts = f"1800000000.{next(barrier_numbers):06d}"
    slack.model.script(Text("still here"))
    assert await slack.event(mention("ping", ts=barrier_ts)) == 200
    assert "still here" in slack.texts(thread=barrier_ts)


# --- Discord -------------------------------------------------------------------------

COMMANDS = ("ask", "chat", "reset", "help", "usage", "limits", "system", "model", "block",
            "unblock", "forget")  # fmt: skip
OPTION_NAMES = ("prompt", "period", "by", "chart", "action", "user", "limit", "value", "text",
                "name", "confirm")  # fmt: skip
# Discord's gateway sends JSON: no NaN or Infinity (discord.py parses it with orjson).
finite = st.floats(allow_nan=False, allow_infinity=False)
option_values = st.text(max_size=30) | st.integers() | st.booleans() | finite
options = st.dictionaries(st.sampled_from(OPTION_NAMES) | words, option_values, max_size=3)


@pytest.fixture
async def discord_bot(start_bot: BotFactory) -> Bot:
    bot = await start_bot(admins=(f"discord:{ADA_ID}",))
    bot.adapter.backoff = Backoff(retries=1, first_wait=0.01)
    return bot


@examples
@given(
    name=st.sampled_from(COMMANDS) | st.text(min_size=1, max_size=20),
    chosen=options,
    user=st.sampled_from([ALICE_ID, ADA_ID]),
)
async def test_every_discord_interaction_is_answered(
    discord_bot: Bot, caplog: pytest.LogCaptureFixture, name: str, chosen: dict[str, Any],
    user: int,
) -> None:  # fmt: skip
    bot = discord_bot
    caplog.clear()
    with caplog.at_level(logging.INFO):
        payload = await bot.fake.send_interaction(name, options=chosen, user_id=user)
        callback = rf"/interactions/\d+/{payload['token']}/callback"
        await eventually(lambda: bot.fake.calls_to("POST", callback))
        await eventually(lambda: not bot.adapter.in_flight.tasks)
    assert faults(caplog.records) == []


@examples
@given(text=words, mentioned=st.booleans(), direct=st.booleans())
async def test_discord_messages_never_break_the_bot(
    discord_bot: Bot, caplog: pytest.LogCaptureFixture, text: str, mentioned: bool,
    direct: bool,
) -> None:  # fmt: skip
    bot = discord_bot
    caplog.clear()
    where: dict[str, Any] = {"channel_id": DM_CHANNEL_ID, "guild_id": None} if direct else {}
    with caplog.at_level(logging.INFO):
        if mentioned:
            await bot.mention(text, **where)
        else:
            await bot.fake.send_message(text, **where)
        bot.model.script(Text("still here"))
        barrier = await bot.mention("ping")
        await bot.replies_to(barrier)
        await eventually(lambda: not bot.adapter.in_flight.tasks)
    assert faults(caplog.records) == []


# --- the web chat's socket -------------------------------------------------------------

ANSWER_FRAMES = {"status", "delta", "final", "notice", "error", "done"}
frames = (
    st.text(max_size=200)
    | json_values.map(json.dumps)
    | st.builds(lambda text: json.dumps({"type": "message", "text": text}), json_values)
    | st.integers(2_000, 40_000).map(lambda depth: "[" * depth)  # past json's recursion
    | st.binary(max_size=100)
)


@pytest.fixture
async def web_socket(
    make_engine: EngineFactory, monkeypatch: pytest.MonkeyPatch
) -> AsyncIterator[ClientWebSocketResponse]:
    """One open chat socket; unlimited, so the checks between examples are not refused."""
    monkeypatch.delenv("PARLEY_WEB_TOKEN", raising=False)
    engine = make_engine(web_rpm_per_address=0, web_rpm_total=0)
    async with serve(engine, create_web(engine, engine.settings)) as url, browser_like() as client:
        async with client.get(url + "/") as page:
            assert page.status == 200
        async with client.ws_connect(url + "/ws", origin=url) as socket:
            await receive(socket)  # history
            yield socket


@examples
@given(frame=frames)
async def test_web_socket_frames_never_drop_the_socket(
    web_socket: ClientWebSocketResponse, caplog: pytest.LogCaptureFixture, frame: str | bytes
) -> None:
    caplog.clear()
    with caplog.at_level(logging.INFO):
        if isinstance(frame, bytes):
            await web_socket.send_bytes(frame)
        else:
            await web_socket.send_str(frame)
        # Whatever that was, the socket still answers what follows, in order.
        seen = await ask(web_socket, "/help")
        while "Parley commands" not in str(seen[-2].get("text")):
            seen = await ask(web_socket, "/help")
    assert {f["type"] for f in seen} <= ANSWER_FRAMES
    assert not web_socket.closed
    assert faults(caplog.records) == []


# --- chat commands -------------------------------------------------------------------

COMMAND_WORDS = ("help", "reset", "usage", "usage chart", "limits", "limits show", "limits set",
                 "block", "unblock", "forget", "forget confirm", "system", "model")  # fmt: skip
commands = st.builds(
    lambda name, rest: f"/{name} {rest}".strip(),
    st.sampled_from(COMMAND_WORDS) | words,
    st.text(max_size=40) | st.sampled_from(["7d", "400d", "401d", "user", "test:bob rpm 5"]),
)


@pytest.fixture
def admin_engine(make_engine: EngineFactory) -> Engine:
    return make_engine(admins=("test:root",))


@examples
@given(text=commands, admin=st.booleans())
async def test_chat_commands_always_get_a_proper_answer(
    admin_engine: Engine, caplog: pytest.LogCaptureFixture, text: str, admin: bool
) -> None:
    engine = admin_engine
    caplog.clear()
    with caplog.at_level(logging.INFO):
        events = await collect(engine, message(text, user="root" if admin else "alice"))
    assert events and events[-1].kind in (ReplyKind.FINAL, ReplyKind.ERROR)
    assert all(event.text != UNEXPECTED for event in events)
    assert faults(caplog.records) == []

"""What the Slack adapter tests share: a running adapter on a fake Slack, and events."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from adapters.slack import SlackAdapter, create
from tests.conftest import EngineFactory
from tests.fakes.openai_server import FakeOpenAI
from tests.fakes.slack_server import BOT_USER_ID, TEAM_ID, EventSender, FakeSlack

SECRET = "test-signing-secret"
TOKEN = "xoxb-test-token"
MENTION_TS = "1699999999.000100"
# platform_admin_workspaces that trusts the fake's workspace admins.
TRUSTED = (f"slack:{TEAM_ID}",)


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

    async def slash(self, text: str, *, user: str = "U1", channel: str = "C1",
                    **options: Any) -> int:  # fmt: skip
        """Run /parley <text> and wait until the adapter has finished answering it."""
        url = self.slack.response_url()
        status, _ = await self.send.slash_command(
            text, user=user, channel=channel, response_url=url, **options
        )
        await self.adapter.drain()
        return status

    def texts(self, channel: str = "C1", thread: str = MENTION_TS) -> list[str]:
        return [posted.text for posted in self.slack.thread(channel, thread)]


Start = Callable[..., Awaitable[Harness]]


@contextlib.asynccontextmanager
async def slack_harnesses(
    make_engine: EngineFactory, fake_openai: FakeOpenAI, monkeypatch: pytest.MonkeyPatch
) -> AsyncIterator[Start]:
    """Yields start(socket_mode=False, **settings) -> a running adapter on a fake Slack.

    Test modules wrap this in their own `start` fixture: importing a fixture into a
    module that then takes it as an argument reads as a redefinition to linters.
    """
    async with contextlib.AsyncExitStack() as stack:

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


def mention(
    text: str = "hello", *, ts: str = MENTION_TS, user: str = "U1", **extra: Any
) -> dict[str, Any]:
    return {"type": "app_mention", "user": user, "text": f"<@{BOT_USER_ID}> {text}", "ts": ts,
            "channel": "C1", "team": TEAM_ID, "event_ts": ts, **extra}  # fmt: skip


def message(text: str, *, ts: str, channel: str = "C1", **extra: Any) -> dict[str, Any]:
    kind = "im" if channel.startswith("D") else "channel"
    return {"type": "message", "user": "U1", "text": text, "ts": ts, "channel": channel,
            "channel_type": kind, "team": TEAM_ID, "event_ts": ts, **extra}  # fmt: skip


def user_turns(request: dict[str, Any]) -> list[tuple[str, str]]:
    return [(m["role"], m["content"]) for m in request["messages"] if m["role"] != "system"]


@pytest.fixture
async def start(
    make_engine: EngineFactory, fake_openai: FakeOpenAI, monkeypatch: pytest.MonkeyPatch
) -> AsyncIterator[Start]:
    """start(**settings) -> a Harness: the adapter serving signed events, on the fakes."""
    async with slack_harnesses(make_engine, fake_openai, monkeypatch) as run:
        yield run

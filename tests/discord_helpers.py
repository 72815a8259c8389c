"""Shared by the Discord tests: a started bot (the real discord.py client against a fake
Discord and a fake model) and ways to read what it did. No tests live here.

The test modules import `start_bot` so pytest finds the fixture there.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import pytest

import adapters.discord as discord_adapter
from adapters.discord_reply import STREAMING_MARK
from bot.engine import Engine
from bot.messages import ConversationKey
from tests.conftest import EngineFactory
from tests.fakes import eventually
from tests.fakes.discord_payloads import BOT_ID, CHANNEL_ID, GUILD_ID
from tests.fakes.discord_server import FakeDiscord, RestCall
from tests.fakes.openai_server import FakeOpenAI

TOKEN = "test-bot-token-never-logged"
CHANNEL_KEY = ConversationKey("discord", str(GUILD_ID), str(CHANNEL_ID))
# Manage Server makes an admin only in servers the operator trusts (bot.commands.is_admin).
TRUSTED_GUILD = (f"discord:{GUILD_ID}",)


@dataclass
class Bot:
    fake: FakeDiscord
    model: FakeOpenAI
    adapter: discord_adapter.DiscordAdapter
    engine: Engine

    async def mention(self, text: str, **options: Any) -> dict[str, Any]:
        payload = await self.fake.send_message(f"<@{BOT_ID}> {text}", mentions=[BOT_ID], **options)
        return dict(payload)

    async def replies_to(self, message: dict[str, Any]) -> list[RestCall]:
        """Wait for the bot's reply to a message; return the calls made for it."""

        def posted() -> list[RestCall]:
            return [
                call
                for call in self.fake.calls_to("POST", r"/channels/\d+/messages")
                if str((call.body.get("message_reference") or {}).get("message_id"))
                == message["id"]
            ]

        return list(await eventually(posted))

    async def final_text(self, channel_id: int = CHANNEL_ID, *, contains: str = "") -> str:
        """The newest message in a channel, once it contains `contains` and is no longer
        a streaming preview (which ends with the streaming mark)."""

        def newest() -> str:
            contents = self.fake.channel_contents(channel_id)
            last = contents[-1] if contents else ""
            done = contains in last and not last.endswith(STREAMING_MARK)
            return last if done else ""

        return str(await eventually(newest))


BotFactory = Callable[..., Awaitable[Bot]]


@pytest.fixture
async def start_bot(
    make_engine: EngineFactory, fake_openai: FakeOpenAI, monkeypatch: pytest.MonkeyPatch
) -> AsyncIterator[BotFactory]:
    """start_bot(guild_ids=..., fake=..., **settings) -> a connected Bot."""
    started: list[Bot] = []

    async def start(
        *,
        guild_ids: str | None = str(GUILD_ID),
        fake: FakeDiscord | None = None,
        **settings: Any,
    ) -> Bot:
        fake = fake or FakeDiscord()
        await fake.start()
        monkeypatch.setenv("DISCORD_BOT_TOKEN", TOKEN)
        monkeypatch.setenv("PARLEY_DISCORD_API_URL", fake.api_url)
        monkeypatch.setenv("PARLEY_DISCORD_GATEWAY_URL", fake.gateway_url + "?v=10&encoding=json")
        if guild_ids is None:
            monkeypatch.delenv("DISCORD_GUILD_IDS", raising=False)
        else:
            monkeypatch.setenv("DISCORD_GUILD_IDS", guild_ids)
        engine = make_engine(**settings)
        adapter = discord_adapter.create(engine, engine.settings)
        bot = Bot(fake, fake_openai, adapter, engine)
        started.append(bot)
        await adapter.start()
        await eventually(lambda: adapter.connected() and _guilds_ready(adapter, fake))
        return bot

    yield start
    for bot in started:
        await bot.adapter.stop()
        await bot.fake.stop()


def _guilds_ready(adapter: discord_adapter.DiscordAdapter, fake: FakeDiscord) -> bool:
    client = adapter.client
    return client is not None and all(client.get_guild(g) for g in fake.guild_ids)


def content(call: RestCall) -> str:
    return str((call.body or {}).get("content") or "")

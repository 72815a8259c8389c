"""The fakes of bench/platform_bench.py, each run in a process of its own.

    python bench/platform_fakes.py model|slack|discord

Each prints one JSON line with its addresses, then takes one JSON command per line on
stdin and answers each with one JSON line on stdout. Slack's and Discord's sides also
play the users: they send a message, wait until the bot's answer is complete on the
platform, and time it, so the bot's process does nothing but answer. None of this
process's CPU is the bot's.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

import aiohttp

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests.fakes import eventually
from tests.fakes.discord_payloads import GUILD_ID
from tests.fakes.discord_server import FakeDiscord
from tests.fakes.openai_server import FakeOpenAI, Text
from tests.fakes.slack_server import BOT_USER_ID, TEAM_ID, EventSender, FakeSlack, blocks_of

JSON = dict[str, Any]
SIGNING_SECRET = "bench-signing-secret"
# Discord guilds, one per conversation the bench keeps (each has its own text channel);
# `discord N` makes N of them (read only when run as that script: soak.py imports this).
_GUILD_COUNT = int(sys.argv[2]) if __name__ == "__main__" and sys.argv[2:] else 40
GUILDS = [GUILD_ID + index for index in range(_GUILD_COUNT)]
STREAMING_MARK = " …"  # adapters/discord_reply.py's, not imported: no bot code here
SUMMARY_MARK = "You keep the running summary"  # how bot/summaries.py's instructions begin


async def lines() -> Any:
    loop = asyncio.get_running_loop()
    while line := await loop.run_in_executor(None, sys.stdin.readline):
        yield json.loads(line)


def say(value: JSON) -> None:
    print(json.dumps(value), flush=True)


# -- the model -----------------------------------------------------------------------


async def model() -> None:
    async with FakeOpenAI() as fake:
        say({"url": fake.base_url})
        async for command in lines():
            if command.get("op") == "summaries":  # how many rolling summaries were asked for
                say({"summaries": sum(map(_asks_for_summary, fake.requests))})
                continue
            # interval 0: the whole answer in one chunk; else one word per chunk, paced.
            interval = float(command["interval"])
            chunks = 1 if interval == 0 else None
            fake.default = Text(command["text"], chunks=chunks, interval=interval)
            say({"ok": True})


def _asks_for_summary(body: JSON) -> bool:
    messages = body.get("messages") or [{}]
    return str(messages[0].get("content", "")).startswith(SUMMARY_MARK)


# -- Slack -----------------------------------------------------------------------------


class WatchedSlack(FakeSlack):
    """Tells when an answer is complete: its stream stopped, or a message posted."""

    def __init__(self) -> None:
        super().__init__()
        self.done = asyncio.Event()

    def _chat_stopStream(self, params: JSON) -> JSON:
        self.done.set()
        return super()._chat_stopStream(params)

    def _chat_postMessage(self, params: JSON) -> JSON:
        # An answer in one piece, an error, or the fallback without native streaming;
        # not a notice beside the answer (a context block: "earlier messages left out").
        blocks = blocks_of(params)
        if not (blocks and blocks[0].get("type") == "context"):
            self.done.set()
        return super()._chat_postMessage(params)


class SignedEvents:
    """Slack's side of the Events API over one kept-alive connection, as Slack does:
    signed event envelopes, each thread a new timestamp."""

    def __init__(self, session: aiohttp.ClientSession, secret: str = SIGNING_SECRET) -> None:
        self.session = session
        self.sender = EventSender("", secret)
        self.ts = itertools.count(1)

    def new_ts(self) -> str:
        return f"1700000000.{next(self.ts):06d}"

    async def post(self, url: str, event: JSON) -> None:
        body = json.dumps(self.sender.envelope(event))
        timestamp = str(int(time.time()))
        signature = self.sender.verifier.generate_signature(timestamp=timestamp, body=body)
        headers = {
            "Content-Type": "application/json", "X-Slack-Request-Timestamp": timestamp,
            "X-Slack-Signature": signature or "",
        }  # fmt: skip
        async with self.session.post(url, data=body.encode(), headers=headers) as response:
            await response.read()
            if response.status != 200:
                raise SystemExit(f"the bot answered an event with HTTP {response.status}")


class SlackUsers(SignedEvents):
    """Users asking in threads, each answer awaited on the watched fake Slack."""

    def __init__(self, slack: WatchedSlack, session: aiohttp.ClientSession) -> None:
        super().__init__(session)
        self.slack = slack

    async def ask(self, command: JSON) -> JSON:
        """`count` mentions in one thread, each sent as Slack sends it (app_mention and
        message), waiting for the answer before the next."""
        url, thread, walls = command["url"], command["thread"], []
        before = len(self.slack.calls)
        for index in range(int(command["count"])):
            ts = self.new_ts()
            event = {
                "user": f"U{index % 5 + 1}", "text": f"<@{BOT_USER_ID}> {command['text']}",
                "ts": ts, "thread_ts": thread, "channel": command["channel"], "team": TEAM_ID,
                "channel_type": "channel", "event_ts": ts,
            }  # fmt: skip
            self.slack.done.clear()
            started = time.perf_counter()
            await self.post(url, {"type": "app_mention", **event})
            if command.get("duplicate", True):
                await self.post(url, {"type": "message", **event})
            await asyncio.wait_for(self.slack.done.wait(), 60)
            walls.append(time.perf_counter() - started)
        calls = Counter(call.method for call in self.slack.calls[before:])
        return {"walls": walls, "calls": dict(calls)}


async def slack() -> None:
    async with WatchedSlack() as fake, aiohttp.ClientSession() as session:
        users = SlackUsers(fake, session)
        say({"api_url": fake.api_url, "secret": SIGNING_SECRET})
        async for command in lines():
            if command["op"] == "thread":
                say({"thread": users.new_ts()})
            else:
                say(await users.ask(command))


# -- Discord ---------------------------------------------------------------------------


class WatchedDiscord(FakeDiscord):
    """Tells when an /ask is answered: its response edited to a text not streaming."""

    def __init__(self) -> None:
        super().__init__(GUILDS)
        self.done = asyncio.Event()

    async def _edit_hook(self, *args: Any, body: JSON, **options: Any) -> JSON:
        result = await super()._edit_hook(*args, body=body, **options)
        content = str(body.get("content") or "")
        if content and not content.endswith(STREAMING_MARK) and not content.startswith("*"):
            self.done.set()
        return result


async def ask_discord(fake: WatchedDiscord, command: JSON) -> JSON:
    guild = GUILDS[int(command["conversation"])]
    walls, before = [], len(fake.calls)
    for _ in range(int(command["count"])):
        fake.done.clear()
        started = time.perf_counter()
        await fake.send_interaction(
            "ask", options={"prompt": command["text"]}, channel_id=fake.channel_for(guild),
            guild_id=guild,
        )  # fmt: skip
        await asyncio.wait_for(fake.done.wait(), 60)
        walls.append(time.perf_counter() - started)
    calls = Counter(f"{call.method} {_route(call.path)}" for call in fake.calls[before:])
    return {"walls": walls, "calls": dict(calls)}


def _route(path: str) -> str:
    return "/".join("{id}" if part.isdigit() or part.startswith("token-") else part
                    for part in path.split("/"))  # fmt: skip


def synced(fake: FakeDiscord) -> int:
    return len(fake.calls_to("PUT", r"/applications/\d+/guilds/\d+/commands"))


async def discord() -> None:
    fake = WatchedDiscord()
    await fake.start()
    say({"api_url": fake.api_url, "gateway_url": fake.gateway_url, "guilds": GUILDS})
    try:
        async for command in lines():
            if command["op"] == "ready":
                # Commands synced to every guild and every guild sent: /ask can be used.
                await eventually(lambda: synced(fake) == len(GUILDS), 900)
                await asyncio.sleep(0.5)
                say({"ok": True})
            else:
                say(await ask_discord(fake, command))
    finally:
        await fake.stop()


if __name__ == "__main__":
    asyncio.run({"model": model, "slack": slack, "discord": discord}[sys.argv[1]]())

"""What every chat adapter needs: splitting long answers, throttled streaming edits,
and keeping model output from pinging a crowd."""

from __future__ import annotations

import asyncio
import logging
import re
import time
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any

log = logging.getLogger(__name__)

FENCE = "```"
# Pings in any platform's syntax: Slack's <!channel>, <!here>, <!everyone> and user
# groups <!subteam^S123|@oncall> (optionally with a |label), Slack user mentions
# <@U123>, and the plain @channel/@here/@everyone that Slack and Discord both turn into
# pings. (Discord's own <@id> and <@&role> are disarmed by allowed_mentions=none.)
_SLACK_BROADCAST = re.compile(r"<!(channel|here|everyone)(\|[^>]*)?>", re.IGNORECASE)
_SLACK_GROUP = re.compile(r"<!subteam\^[A-Z0-9]+(?:\|@?([^>]*))?>", re.IGNORECASE)
_SLACK_USER = re.compile(r"<@([UW][A-Z0-9]+)(?:\|[^>]*)?>")
_PLAIN_BROADCAST = re.compile(r"@(channel|here|everyone)\b", re.IGNORECASE)
ZERO_WIDTH_SPACE = "\u200b"


def neutralise_broadcasts(text: str) -> str:
    """Make crowd pings (@channel, @here, @everyone, user groups) and Slack user
    mentions plain, unpinging text."""
    text = _SLACK_BROADCAST.sub(lambda m: f"@{ZERO_WIDTH_SPACE}{m.group(1)}", text)
    text = _SLACK_GROUP.sub(lambda m: f"@{ZERO_WIDTH_SPACE}{m.group(1) or 'group'}", text)
    text = _SLACK_USER.sub(lambda m: f"@{ZERO_WIDTH_SPACE}{m.group(1)}", text)
    return _PLAIN_BROADCAST.sub(lambda m: f"@{ZERO_WIDTH_SPACE}{m.group(1)}", text)


def _cut_point(text: str, limit: int) -> int:
    """Where to cut text to at most `limit` chars: a blank line, a line end, a space."""
    for separator in ("\n\n", "\n", " "):
        index = text.rfind(separator, 0, limit)
        if index > limit // 2:
            return index + len(separator)
    return limit


def _open_fence(text: str) -> str | None:
    """The fence to reopen ("```" and its language) if text ends inside a code block."""
    opening: str | None = None
    for line in text.splitlines():
        stripped = line.strip()
        if stripped.startswith(FENCE):
            # Only the language word is carried over: the rest of a long opening line
            # would be repeated in every part and could stop the split progressing.
            words = stripped[len(FENCE) :].split(maxsplit=1)
            language = words[0][:20] if words else ""
            opening = None if opening is not None else FENCE + language
    return opening


def split_message(text: str, limit: int) -> list[str]:
    """Split text into parts of at most `limit` characters.

    Cuts at paragraph, line or word boundaries; a code block cut in two is closed
    at the end of one part and reopened (with its language) at the start of the next.
    """
    # Each pass consumes over limit/2 characters and re-adds at most a fence line
    # (under 30), so from 100 up the split always progresses.
    if limit < 100:
        raise ValueError("limit too small to split with code fences")
    parts: list[str] = []
    rest = text
    while len(rest) > limit:
        # Leave room to close a fence we may cut inside.
        cut = _cut_point(rest, limit - len(FENCE) - 1)
        part, rest = rest[:cut], rest[cut:]
        fence = _open_fence(part)
        if fence is not None:
            part = part.rstrip("\n") + "\n" + FENCE
            rest = fence + "\n" + rest
        parts.append(part.rstrip() or part)
    if rest.strip():
        parts.append(rest)
    return parts or [""]


class Throttle:
    """Coalesces streamed text into edits at most once every `interval` seconds.

    Chat platforms rate-limit message edits; an answer streaming in at 50 tokens a
    second must become roughly one edit a second, not fifty. A delta costs a list
    append and a clock read: the text is joined only when an edit is due, so nothing
    proportional to the whole answer happens per chunk.
    """

    def __init__(
        self,
        edit: Callable[[str], Awaitable[None]],
        interval: float,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.edit = edit
        self.interval = interval
        self.clock = clock
        self._joined = ""
        self._pending: list[str] = []
        self.shown = ""
        self.next_edit = float("-inf")

    @property
    def text(self) -> str:
        """Everything added so far (or set since)."""
        if self._pending:
            self._joined += "".join(self._pending)
            self._pending.clear()
        return self._joined

    @text.setter
    def text(self, value: str) -> None:
        self._pending.clear()
        self._joined = value

    async def add(self, delta: str) -> None:
        self._pending.append(delta)
        if self.clock() >= self.next_edit:
            await self.flush()

    async def flush(self) -> None:
        text = self.text
        if text and text != self.shown:
            self.next_edit = self.clock() + self.interval
            self.shown = text
            await self.edit(text)


class InFlight:
    """The answers an adapter is working on, and how it stops: take no new messages,
    give those in progress up to a grace period, then cancel what is left (the engine
    lets go of their turns, and the next process to start answers them)."""

    def __init__(self) -> None:
        self.tasks: set[asyncio.Task[Any]] = set()
        self.accepting = True

    def spawn(self, work: Coroutine[Any, Any, None]) -> None:
        task = asyncio.create_task(work)
        self.tasks.add(task)  # a strong reference: the loop keeps only weak ones
        task.add_done_callback(self.tasks.discard)

    async def track(self, work: Awaitable[None]) -> None:
        """Run work in the current task, counted among the answers in progress."""
        task = asyncio.current_task()
        assert task is not None
        self.tasks.add(task)
        try:
            await work
        finally:
            self.tasks.discard(task)

    async def wait(self) -> None:
        """Until every answer in progress is done (tests)."""
        while self.tasks:
            await asyncio.gather(*list(self.tasks), return_exceptions=True)

    @staticmethod
    async def finish(task: asyncio.Task[Any], grace_seconds: float) -> None:
        """Give one answer the grace period, then cancel it (its turn is let go of)."""
        if not (await asyncio.wait({task}, timeout=grace_seconds))[0]:
            task.cancel()
            await asyncio.wait({task}, timeout=5)
            log.warning("stopped with an answer unfinished: left to recovery")

    async def drain(self, grace_seconds: float) -> int:
        """Stop accepting, wait up to the grace period, cancel the rest; how many were
        cancelled."""
        self.accepting = False
        current = asyncio.current_task()
        pending = {task for task in self.tasks if task is not current}
        if pending:
            _, pending = await asyncio.wait(pending, timeout=grace_seconds)
        for task in pending:
            task.cancel()
        if pending:
            # Cancelled answers release their turns on the way out: give them a moment.
            await asyncio.wait(pending, timeout=5)
            log.warning("stopped with %d answers unfinished: left to recovery", len(pending))
        return len(pending)

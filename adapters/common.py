"""What every chat adapter needs: splitting long answers, throttled streaming edits,
and keeping model output from pinging a crowd."""

from __future__ import annotations

import re
import time
from collections.abc import Awaitable, Callable

FENCE = "```"
# Broadcast mentions in any platform's syntax: Slack's <!channel>, <!here>,
# <!everyone> (optionally with a |label), and the plain @channel/@here/@everyone
# that Slack and Discord both turn into pings.
_SLACK_BROADCAST = re.compile(r"<!(channel|here|everyone)(\|[^>]*)?>", re.IGNORECASE)
_PLAIN_BROADCAST = re.compile(r"@(channel|here|everyone)\b", re.IGNORECASE)
ZERO_WIDTH_SPACE = "\u200b"


def neutralise_broadcasts(text: str) -> str:
    """Make @channel, @here and @everyone (in any syntax) plain, unpinging text."""
    text = _SLACK_BROADCAST.sub(lambda m: f"@{ZERO_WIDTH_SPACE}{m.group(1)}", text)
    return _PLAIN_BROADCAST.sub(lambda m: f"@{ZERO_WIDTH_SPACE}{m.group(1)}", text)


def _cut_point(text: str, limit: int) -> int:
    """Where to cut text to at most `limit` chars: a blank line, a line end, a space."""
    for separator in ("\n\n", "\n", " "):
        index = text.rfind(separator, 0, limit)
        if index > limit // 2:
            return index + len(separator)
    return limit


def _open_fence(text: str) -> str | None:
    """The opening line of a code fence left open at the end of text, if any."""
    opening: str | None = None
    for line in text.splitlines():
        stripped = line.strip()
        if stripped.startswith(FENCE):
            opening = None if opening is not None else stripped
    return opening


def split_message(text: str, limit: int) -> list[str]:
    """Split text into parts of at most `limit` characters.

    Cuts at paragraph, line or word boundaries; a code block cut in two is closed
    at the end of one part and reopened (with its language) at the start of the next.
    """
    if limit < 2 * len(FENCE) + 20:
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
    second must become roughly one edit a second, not fifty.
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
        self.text = ""
        self.shown = ""
        self.last_edit = float("-inf")

    async def add(self, delta: str) -> None:
        self.text += delta
        if self.clock() - self.last_edit >= self.interval:
            await self.flush()

    async def flush(self) -> None:
        if self.text and self.text != self.shown:
            self.last_edit = self.clock()
            self.shown = self.text
            await self.edit(self.text)

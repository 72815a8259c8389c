"""/summarize: a summary of what people wrote, read from the platform itself.

`/summarize` covers the thread it is asked in (or, outside a thread, the channel's
newest messages), `/summarize 50` the last 50 messages, `/summarize 24h` the last day.
Adapters that can read their platform's history register a HistoryReader (Slack:
conversations.replies / conversations.history; Discord: the channel's or thread's
history); everywhere else (web chat, terminal) Parley's own stored conversation is
summarised. A reader reads only the channel or thread the request was made in, and
only where the bot and the asking user can both read it; it raises SummaryError with
a sentence for the user otherwise. A summary is a model call like any other: it
passes the access lists and limits, and its usage is recorded and billed.
"""

from __future__ import annotations

import re
import shlex
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

from bot.commands import command_name, is_command
from bot.config import Settings
from bot.messages import Message
from bot.store import Store
from bot.tokens import count_recurring, count_text
from bot.usage import parse_period

DEFAULT_MESSAGES = 50
INSTRUCTION = (
    "Summarise the conversation below for someone catching up: the main points, "
    "decisions, open questions and who is doing what. Name people as they appear. "
    "Be concise. The conversation follows, one message per line, oldest first."
)
USAGE = "Usage: /summarize, /summarize 50 (the last 50 messages) or /summarize 24h."
NOTHING = "There is nothing to summarise here yet."
_MENTION = re.compile(r"<@[^>]+>|@Parley\b", re.IGNORECASE)


class SummaryError(Exception):
    """Why no summary can be made; the text is for the user."""


@dataclass(frozen=True, slots=True)
class Said:
    author: str  # a display name
    text: str


@dataclass(frozen=True, slots=True)
class Span:
    count: int  # at most this many messages, the newest
    since: float | None = None  # only messages after this time (epoch seconds)


class HistoryReader(Protocol):
    async def read_history(self, message: Message, span: Span) -> list[Said]:
        """What people wrote where `message` was said, oldest first."""
        ...


def is_summary(text: str) -> bool:
    return is_command(text.strip()) and command_name(text) == "summarize"


def _is_request(text: str) -> bool:
    """A /summarize request itself (with or without a mention) is left out."""
    stripped = _MENTION.sub("", text).strip()
    return command_name(stripped) == "summarize" if stripped else False


def parse_span(text: str, now: float, max_messages: int) -> Span:
    try:
        words = shlex.split(text.strip()[1:])[1:]
    except ValueError:
        words = text.split()[1:]
    if not words:
        return Span(min(DEFAULT_MESSAGES, max_messages))
    if len(words) > 1:
        raise SummaryError(USAGE)
    word = words[0].lower()
    if word.isdigit() and int(word) > 0:
        return Span(min(int(word), max_messages))
    try:
        return Span(max_messages, now - parse_period(word))
    except ValueError as error:
        raise SummaryError(f"{error}. {USAGE}") from None


class StoredHistory:
    """Parley's own record of a conversation: the web chat and the terminal."""

    def __init__(self, store: Store) -> None:
        self.store = store

    async def read_history(self, message: Message, span: Span) -> list[Said]:
        window = await self.store.recent(message.conversation, span.count + 1)
        names = {"user": "User", "assistant": "Parley"}
        return [Said(names[m.role], m.content) for m in window.messages
                if m.role in names and m.content]  # fmt: skip


class Summaries:
    def __init__(
        self, store: Store, settings: Callable[[], Settings], clock: Callable[[], float]
    ) -> None:
        self.settings = settings
        self.clock = clock
        self.fallback = StoredHistory(store)
        self.readers: dict[str, HistoryReader] = {}

    def register(self, platform: str, reader: HistoryReader) -> None:
        self.readers[platform] = reader

    async def prompt(self, message: Message, system_prompt: str) -> list[dict[str, Any]]:
        """The prompt that asks for the summary; raises SummaryError."""
        settings = self.settings()
        span = parse_span(message.text, self.clock(), settings.summarize_max_messages)
        reader = self.readers.get(message.platform, self.fallback)
        said = [s for s in await reader.read_history(message, span) if not _is_request(s.text)]
        budget = (
            settings.context_tokens - settings.reply_tokens
            - count_recurring(system_prompt) - count_text(INSTRUCTION) - 16
        )  # fmt: skip
        lines: list[str] = []
        for one in reversed(said[-span.count :]):  # the newest that fit
            line = f"{one.author}: {one.text}"
            budget -= count_text(line) + 1
            if budget < 0:
                break
            lines.append(line)
        if not lines:
            raise SummaryError(NOTHING)
        transcript = "\n".join(reversed(lines))
        return [
            {"role": "system", "content": system_prompt},
            {"role": "user", "content": f"{INSTRUCTION}\n\n{transcript}"},
        ]

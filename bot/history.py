"""Stored history as the engine reads it, and the in-memory copy of recent windows.

No SQL here: the store reads and writes the database and keeps HistoryCache in step.
"""

from __future__ import annotations

import json
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any, NamedTuple

# What the cached windows may hold in all, in characters of message text and
# HELD_MESSAGE_OVERHEAD per message (about as many bytes); the least recently used
# conversations are dropped beyond it.
CACHE_MAX_CHARS = 8_000_000


class StoredMessage(NamedTuple):
    # A named tuple rather than a frozen dataclass: a prompt holds up to a hundred of
    # these per message, and a tuple is built several times faster.
    id: int
    role: str  # user | assistant | tool
    content: str
    tokens: int
    group_id: int
    user: str = ""
    tool_calls: list[dict[str, Any]] | None = None
    tool_call_id: str = ""
    # A user message with images: its content parts as JSON, images included (what the
    # model saw); "" for plain text. bot/attachments.py writes it.
    parts: str = ""

    def as_chat(self, images: bool = True) -> dict[str, Any]:
        """The message as the chat completions API takes it; without images for a
        model that cannot see them (the text names each image)."""
        content: Any = json.loads(self.parts) if self.parts and images else self.content
        message: dict[str, Any] = {"role": self.role, "content": content}
        if self.tool_calls:
            message["tool_calls"] = self.tool_calls
        if self.tool_call_id:
            message["tool_call_id"] = self.tool_call_id
        return message


@dataclass(frozen=True, slots=True)
class Window:
    """The newest history that fits, and how much older history was left out."""

    messages: list[StoredMessage]
    dropped_older: bool
    trim_noticed: bool = False
    # Where the store holds the window in memory: each message's as_chat(), built once
    # when it was read or stored rather than for every prompt (a thousand messages
    # carried whole took 0.2 ms a prompt to build and as long to free). Shared: never
    # to be changed; prompts copy the list, not the dicts.
    chats: list[dict[str, Any]] | None = None


class Held(NamedTuple):
    """What HistoryCache.get gives: the newest messages, trim_noticed, and each
    message's as_chat() (the same length as messages; None if one has images)."""

    messages: list[StoredMessage]
    trim_noticed: bool
    chats: list[dict[str, Any]] | None


@dataclass(slots=True)
class _Cached:
    # The newest stored messages since the conversation's last reset, oldest first:
    # all of them when there are fewer than `capacity`, else the newest `capacity`.
    messages: list[StoredMessage]
    capacity: int
    trim_noticed: bool
    chars: int
    chats: list[dict[str, Any]]  # as_chat() of each of messages, or _NOT_HELD
    with_images: int  # how many of messages have images (content parts)


# What a held message costs beside its text (the tuple, its chat form's dict), counted
# as characters: many short messages must not hold far more memory than the limit says.
HELD_MESSAGE_OVERHEAD = 400
# The chat form of a message with images is not held: it would be a second copy of its
# images, of use only to a model that sees them. A window holding one is built message
# by message, as before.
_NOT_HELD: dict[str, Any] = {}


def _size(message: StoredMessage) -> int:
    return len(message.content) + len(message.parts) + HELD_MESSAGE_OVERHEAD


def _chat_form(message: StoredMessage) -> dict[str, Any]:
    return _NOT_HELD if message.parts else message.as_chat()


class HistoryCache:
    """The newest messages of recently active conversations, kept between messages.

    Reading a conversation's window back from SQLite (a hundred rows) cost more than
    the store's other work for a message together; the window is read once and then
    extended as the store appends. The store must tell it of every write to history
    and clear it whenever another connection may have written.
    """

    def __init__(self, max_chars: int = CACHE_MAX_CHARS) -> None:
        self._entries: OrderedDict[str, _Cached] = OrderedDict()
        self._chars = 0
        self.max_chars = max_chars

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, conversation: str, count: int) -> Held | None:
        """The newest `count` messages (fewer if that is all), or None when this
        conversation's window is not held or held too short."""
        entry = self._entries.get(conversation)
        if entry is None or entry.capacity < count:
            return None
        self._entries.move_to_end(conversation)
        chats = None if entry.with_images else entry.chats[-count:]
        return Held(entry.messages[-count:], entry.trim_noticed, chats)

    def put(
        self, conversation: str, messages: list[StoredMessage], capacity: int, noticed: bool
    ) -> None:
        """Hold a window just read: the newest `capacity` messages, or all if fewer.
        A window larger than the whole limit is not held (nor others dropped for it)."""
        self.drop(conversation)
        chars = sum(_size(m) for m in messages)
        if chars > self.max_chars:
            return
        chats = [_chat_form(m) for m in messages]
        images = sum(1 for m in messages if m.parts)
        entry = _Cached(list(messages), capacity, noticed, chars, chats, images)
        self._entries[conversation] = entry
        self._chars += chars
        self._evict()

    def append(self, conversation: str, message: StoredMessage) -> None:
        """A message was stored in this conversation: extend its window if held."""
        entry = self._entries.get(conversation)
        if entry is None:
            return
        entry.messages.append(message)
        entry.chats.append(_chat_form(message))
        entry.with_images += bool(message.parts)
        added = _size(message)
        if len(entry.messages) > entry.capacity:
            oldest = entry.messages.pop(0)
            entry.chats.pop(0)
            entry.with_images -= bool(oldest.parts)
            added -= _size(oldest)
        entry.chars += added
        self._chars += added
        self._evict()

    def drop(self, conversation: str) -> None:
        entry = self._entries.pop(conversation, None)
        if entry is not None:
            self._chars -= entry.chars

    def clear(self) -> None:
        self._entries.clear()
        self._chars = 0

    def _evict(self) -> None:
        while self._chars > self.max_chars and self._entries:
            _, entry = self._entries.popitem(last=False)
            self._chars -= entry.chars

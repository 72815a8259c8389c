"""The only types adapters and the engine exchange.

An adapter turns a platform event into a `Message`, hands it to `Engine.handle`, and
turns the `ReplyEvent`s it gets back into platform calls. Nothing platform-specific
lives here.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field, fields
from enum import Enum
from typing import Any


@dataclass(frozen=True, slots=True)
class ConversationKey:
    """Where a conversation lives. History never crosses two different keys."""

    platform: str
    workspace: str
    channel: str
    thread: str = ""

    def __str__(self) -> str:
        # "/" separates the parts, so it is escaped inside them: a channel can never
        # pass for a prefix of another one.
        parts = (self.platform, self.workspace, self.channel, self.thread)
        return "/".join(part.replace("%", "%25").replace("/", "%2F") for part in parts)


# Downloads a file's bytes, reading at most the given number of bytes; supplied by the
# adapter (it alone knows the platform's hosts and tokens). Raises bot.attachments.FetchError.
Fetch = Callable[[int], Awaitable[bytes]]


@dataclass(frozen=True, slots=True)
class Attachment:
    """A file sent with a message, as the platform describes it; fetched only if used."""

    name: str
    mime_type: str
    size: int  # bytes, as the platform reports it (0: unknown)
    fetch: Fetch | None = field(default=None, compare=False, repr=False)


@dataclass(frozen=True, slots=True)
class Message:
    """One thing a user said, in neutral form."""

    platform: str
    workspace: str
    channel: str
    user: str
    text: str
    thread: str = ""
    # Keys that identify this delivery; the engine answers a message only if none of
    # its keys was seen before (Slack delivers one mention twice, and retries).
    dedupe_keys: tuple[str, ...] = ()
    # The platform itself says this user administers the workspace (Discord's
    # Manage Server, a Slack workspace admin); honoured only where config allows.
    platform_admin: bool = False
    # What the adapter needs to answer this message later, in another process if need
    # be (after a crash): channel and thread ids, never secrets or tokens.
    route: Mapping[str, str] = field(default_factory=dict)
    # What access lists check (bot/access.py), where the platform has it: the user's
    # role ids (Discord), the channel's category, a thread's parent channel, a DM.
    roles: tuple[str, ...] = ()
    category: str = ""
    parent_channel: str = ""
    is_direct: bool = False
    # A question asked on its own (Discord's /ask): the response cache may answer it.
    single_turn: bool = False
    attachments: tuple[Attachment, ...] = ()

    def to_payload(self) -> str:
        """The message as the store keeps it until it is answered. Attachments keep
        their description only: a fetch cannot outlive the process that got it."""
        # Field by field, not dataclasses.asdict(): its deep copy of every value was
        # most of this method's cost, on every message (the values are str, bool,
        # tuples of str and one mapping of str, which json takes as they are).
        values = {name: getattr(self, name) for name in MESSAGE_FIELDS}
        values["route"] = dict(self.route)
        values["attachments"] = [[a.name, a.mime_type, a.size] for a in self.attachments]
        return json.dumps(values)

    @classmethod
    def from_payload(cls, payload: str) -> Message:
        """Raises ValueError for a payload that is not a stored message."""
        try:
            values: Any = json.loads(payload)
            values["dedupe_keys"] = tuple(values["dedupe_keys"])
            values["roles"] = tuple(values.get("roles", ()))
            files = values.get("attachments", [])
            values["attachments"] = tuple(Attachment(str(n), str(m), int(s)) for n, m, s in files)
            return cls(**values)
        except (TypeError, KeyError, ValueError) as error:
            raise ValueError(f"not a stored message: {error}") from None

    @property
    def conversation(self) -> ConversationKey:
        return ConversationKey(self.platform, self.workspace, self.channel, self.thread)

    @property
    def channel_id(self) -> str:
        """The channel as config and reports name it: platform:workspace:channel."""
        return f"{self.platform}:{self.workspace}:{self.channel}"

    @property
    def user_key(self) -> str:
        """The id admins and limits use: platform:user."""
        return f"{self.platform}:{self.user}"


MESSAGE_FIELDS = tuple(f.name for f in fields(Message))  # in the class's order


# The STATUS every answer starts with; a platform that shows its own (a deferred
# Discord interaction: "Parley is thinking…") need not show it again.
THINKING = "thinking…"


class ReplyKind(Enum):
    STATUS = "status"  # progress such as "thinking…" or "running calculate…"
    DELTA = "delta"  # a piece of streamed answer text
    FINAL = "final"  # the whole answer; adapters replace what they streamed with it
    NOTICE = "notice"  # a short note alongside the answer (older messages dropped...)
    ERROR = "error"  # a short message saying why there is no answer


@dataclass(frozen=True, slots=True)
class ReplyEvent:
    kind: ReplyKind
    text: str
    # Admin command replies: shown only to the asking user where the platform allows.
    private: bool = False
    # A PNG to attach (usage charts), with its file name.
    image: bytes | None = None
    image_name: str = ""

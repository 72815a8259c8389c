"""What a Discord message brings beside its text: who and where for the access lists,
and the chain of messages it replies to.

A mention that replies to a message carries that message, and the one it replied to,
up to `discord.reply_chain_depth`, into the prompt with the authors' display names,
so people can ask about a specific message. Each message of a chain is fetched once
(GET /channels/{id}/messages/{id}) and kept in a bounded cache; a chain is followed
only within the channel the question was asked in, where the asker can read.
"""

from __future__ import annotations

import asyncio
import logging
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import discord

from adapters.discord_reply import SendErrors, describe_error
from bot.messages import Message
from bot.summarize import Said, Span, SummaryError

log = logging.getLogger(__name__)

CHAIN_CACHE_SIZE = 2048
QUOTE_CHARS = 1500  # of each replied-to message
HEADER = "[The message below replies to these earlier messages, oldest first]"
FOOTER = "[The message]"
UNREADABLE = "I could not read this channel's history just now; please try again."
USER_CANNOT_READ = "You cannot read this channel's history, so I will not summarise it for you."
BOT_CANNOT_READ = "I cannot read this channel's history: I need Read Message History here."


@dataclass(frozen=True, slots=True)
class Quoted:
    author: str  # display name
    author_id: int
    text: str
    replies_to: int | None  # the message this one replies to, in the same channel


def access_fields(author: Any, channel: Any, direct: bool) -> dict[str, Any]:
    """Message fields the access lists check: roles, category, parent, DM."""
    if direct:
        return {"is_direct": True}
    # The role ids as Discord sent them: Member.roles leaves out roles not cached.
    roles = tuple(str(role) for role in getattr(author, "_roles", ()))
    parent = getattr(channel, "parent_id", None) if isinstance(channel, discord.Thread) else None
    try:
        category = getattr(channel, "category_id", None)
    except discord.ClientException:  # a thread whose parent is not cached
        category = None
    return {
        "roles": roles,
        "parent_channel": str(parent) if parent else "",
        "category": str(category) if category else "",
    }


def _reference_in(message: discord.Message) -> int | None:
    """The id of the message this one replies to, if it is in the same channel."""
    reference = message.reference
    if reference is None or reference.message_id is None:
        return None
    if reference.channel_id != message.channel.id:
        return None
    return reference.message_id


def _quote(message: discord.Message) -> Quoted:
    text = message.content or ("(an attachment)" if message.attachments else "(no text)")
    if len(text) > QUOTE_CHARS:
        text = text[: QUOTE_CHARS - 1] + "…"
    return Quoted(message.author.display_name, message.author.id, text, _reference_in(message))


class ReplyChains:
    """Replied-to messages, fetched once each and cached (bounded)."""

    def __init__(self, size: int = CHAIN_CACHE_SIZE) -> None:
        self.size = size
        # Keyed by (channel, message): a reference naming another channel's message
        # under this channel's id never finds it here.
        self.cache: OrderedDict[tuple[int, int], Quoted | None] = OrderedDict()
        # Lookups in flight: two messages replying to one message fetch it once.
        self._pending: dict[tuple[int, int], asyncio.Task[Quoted | None]] = {}

    def _keep(self, message_id: tuple[int, int], quoted: Quoted | None) -> None:
        self.cache[message_id] = quoted
        self.cache.move_to_end(message_id)
        while len(self.cache) > self.size:
            self.cache.popitem(last=False)

    def forget(self, channel_id: int, message_id: int) -> None:
        """A message deleted or edited: fetched again if a reply names it."""
        self.cache.pop((channel_id, message_id), None)

    async def _get(self, message: discord.Message, message_id: int) -> Quoted | None:
        key = (message.channel.id, message_id)
        if key in self.cache:
            self.cache.move_to_end(key)
            return self.cache[key]
        reference = message.reference
        resolved = reference.resolved if reference is not None else None
        if isinstance(resolved, discord.Message) and resolved.id == message_id:
            quoted = _quote(resolved) if resolved.channel.id == key[0] else None
            self._keep(key, quoted)  # the gateway sent it along
            return quoted
        task = self._pending.get(key)
        if task is None:
            task = asyncio.create_task(self._fetch(message.channel, key))
            self._pending[key] = task
            task.add_done_callback(lambda _: self._pending.pop(key, None))
        return await asyncio.shield(task)

    async def _fetch(self, channel: Any, key: tuple[int, int]) -> Quoted | None:
        try:
            found = await channel.fetch_message(key[1])
        except (*SendErrors, discord.InvalidData) as error:
            log.info("replied-to message %s not read: %s", key[1], describe_error(error))
            found = None
        same_channel = isinstance(found, discord.Message) and found.channel.id == key[0]
        quoted = _quote(found) if same_channel else None
        self._keep(key, quoted)
        return quoted

    async def replies_to(self, message: discord.Message, user_id: int) -> bool:
        """True if the message replies to one by this user (Parley: a follow-up)."""
        first = _reference_in(message)
        if first is None:
            return False
        quoted = await self._get(message, first)
        return quoted is not None and quoted.author_id == user_id

    async def chain(self, message: discord.Message, depth: int) -> list[Quoted]:
        """The replied-to messages, oldest first, at most `depth` of them."""
        chain: list[Quoted] = []
        next_id = _reference_in(message)
        seen: set[int] = set()
        while next_id is not None and len(chain) < depth and next_id not in seen:
            seen.add(next_id)
            quoted = await self._get(message, next_id)
            if quoted is None:
                break
            chain.append(quoted)
            next_id = quoted.replies_to
        return chain[::-1]

    async def with_chain(self, message: discord.Message, text: str, depth: int, limit: int) -> str:
        """The question with the messages it replies to in front of it; the oldest are
        left out when all would be longer than `limit` characters."""
        chain = await self.chain(message, depth) if depth else []
        while chain:
            quoted = "\n".join(f"{q.author}: {q.text}" for q in chain)
            whole = f"{HEADER}\n{quoted}\n{FOOTER}\n{text}"
            if len(whole) <= limit:
                return whole
            chain.pop(0)
        return text


class DiscordHistory:
    """/summarize on Discord: the channel's or thread's newest messages, read only when
    both the asking member and Parley may read the channel's history."""

    def __init__(self, client: Callable[[], discord.Client | None]) -> None:
        self.client = client

    async def read_history(self, message: Message, span: Span) -> list[Said]:
        client = self.client()
        if client is None:
            raise SummaryError(UNREADABLE)
        channel = await self._readable_channel(client, message)
        said: list[Said] = []
        try:
            async for item in channel.history(limit=span.count):
                if span.since is not None and item.created_at.timestamp() < span.since:
                    break
                if item.content or item.attachments:  # not a "thinking…" placeholder
                    text = item.content or "(an attachment)"
                    said.append(Said(item.author.display_name, text))
        except (*SendErrors, discord.InvalidData) as error:
            log.warning("reading history of %s failed: %s", channel.id, describe_error(error))
            raise SummaryError(UNREADABLE) from None
        return said[::-1]

    async def _readable_channel(self, client: discord.Client, message: Message) -> Any:
        channel_id = int(message.thread or message.channel)
        try:
            channel = client.get_channel(channel_id) or await client.fetch_channel(channel_id)
            if message.workspace == "dm" or not isinstance(
                channel, discord.abc.GuildChannel | discord.Thread
            ):
                return channel  # a DM: both are in it
            guild = channel.guild
            member = guild.get_member(int(message.user)) or await guild.fetch_member(
                int(message.user)
            )
        except (*SendErrors, discord.InvalidData, ValueError) as error:
            log.warning("cannot check who reads %s: %s", channel_id, describe_error(error))
            raise SummaryError(UNREADABLE) from None
        if not channel.permissions_for(member).read_message_history:
            raise SummaryError(USER_CANNOT_READ)
        if not channel.permissions_for(guild.me).read_message_history:
            raise SummaryError(BOT_CANNOT_READ)
        return channel

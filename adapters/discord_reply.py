"""Showing one answer on Discord as the engine produces it.

A `Reply` turns ReplyEvents into a list of message texts ("parts", at most 2,000
characters each) and makes the visible messages match them: the first part edits the
placeholder, later parts are extra messages. Streaming and the final answer go through
the same path, so the final edit only touches messages whose text changed.

Where the messages go is a `Transport`: a channel (mentions, threads, DMs) or an
interaction (slash commands: the deferred original response and followups, falling back
to the channel once the interaction token's 15 minutes are over).

An image (a usage chart) goes in a message of its own after the text, as a file
attachment: the text above may still be edited (a late notice) without uploading the
file again.

A failed send or edit is logged with its context and never stops the answer: the engine
keeps running, so the reply is stored and usage recorded even when Discord refuses.
"""

from __future__ import annotations

import datetime
import io
import logging
import time
from collections.abc import Awaitable, Callable

import aiohttp
import discord

from adapters.common import Throttle, neutralise_broadcasts, split_message
from bot.messages import THINKING, ReplyEvent, ReplyKind

log = logging.getLogger(__name__)

MESSAGE_LIMIT = 2000
EDIT_INTERVAL_SECONDS = 1.5
# Stop using the interaction token a little before its 15 minutes are up: an edit
# that starts at 14:59 must not fail half-way.
TOKEN_MARGIN = datetime.timedelta(seconds=30)
STREAMING_MARK = " …"
IMAGE_FAILED = "The picture could not be attached."
NO_MENTIONS = discord.AllowedMentions.none()
Clock = Callable[[], datetime.datetime]
# What a send or edit may raise: Discord's refusals, and the network failing on the way.
SendErrors = (discord.HTTPException, discord.RateLimited, aiohttp.ClientError, TimeoutError)


class Undeliverable(Exception):
    """There is no place left to show this message (a private reply past its token)."""


def describe_error(error: Exception) -> str:
    """What went wrong, for the log: status and Discord's error code, never a URL."""
    if isinstance(error, discord.RateLimited):
        return f"rate limited for {error.retry_after:.1f}s"
    if isinstance(error, discord.HTTPException):
        return f"HTTP {error.status} (code {error.code}): {error.text}"
    return str(error) or type(error).__name__


class Transport:
    """Where one answer's messages go. Subclasses send; handles are discord Messages."""

    private = False

    async def send(self, text: str, first: bool) -> discord.Message:
        raise NotImplementedError

    async def send_file(self, file: discord.File) -> discord.Message:
        raise NotImplementedError

    async def edit(self, handle: discord.Message, text: str) -> discord.Message:
        # Returns the handle to keep: a transport may replace a message it can no
        # longer edit by a new one.
        return await handle.edit(content=text, allowed_mentions=NO_MENTIONS)

    async def delete(self, handle: discord.Message) -> None:
        await handle.delete()

    def shows_thinking(self) -> bool:
        """The platform already shows that an answer is coming (so no placeholder)."""
        return False

    async def make_private(self) -> None:
        """Show what follows only to the asking user, where the platform allows."""

    async def abandon(self) -> None:
        """Nothing was shown at all (a duplicate delivery): clean up any placeholder."""

    def describe(self) -> str:
        raise NotImplementedError


class ChannelTransport(Transport):
    """Plain channel messages; the first one replies to `reply_to` when given."""

    def __init__(
        self, channel: discord.abc.Messageable, reply_to: discord.Message | None = None
    ) -> None:
        self.channel = channel
        self.reply_to = reply_to

    async def send(self, text: str, first: bool) -> discord.Message:
        if first and self.reply_to is not None:
            return await self.reply_to.reply(text, allowed_mentions=NO_MENTIONS)
        return await self.channel.send(text, allowed_mentions=NO_MENTIONS)

    async def send_file(self, file: discord.File) -> discord.Message:
        return await self.channel.send(file=file, allowed_mentions=NO_MENTIONS)

    def describe(self) -> str:
        channel_id = getattr(self.channel, "id", "?")
        if self.reply_to is not None:
            return f"reply to message {self.reply_to.id} in channel {channel_id}"
        return f"channel {channel_id}"


class InteractionTransport(Transport):
    """The deferred original response, then followups; the channel once the token expires."""

    def __init__(
        self,
        interaction: discord.Interaction[discord.Client],
        *,
        private: bool,
        clock: Clock = discord.utils.utcnow,
    ) -> None:
        self.interaction = interaction
        self.private = private
        self.clock = clock
        self.original_used = False

    def live(self) -> bool:
        return self.clock() < self.interaction.expires_at - TOKEN_MARGIN

    async def send(self, text: str, first: bool) -> discord.Message:
        if not self.live():
            return await self._channel().send(text, allowed_mentions=NO_MENTIONS)
        if first and not self.original_used:
            self.original_used = True
            return await self.interaction.edit_original_response(
                content=text, allowed_mentions=NO_MENTIONS
            )
        return await self.interaction.followup.send(
            text, wait=True, ephemeral=self.private, allowed_mentions=NO_MENTIONS
        )

    def shows_thinking(self) -> bool:
        # A deferred response shows Discord's own animated "Parley is thinking…" until
        # its first edit: an italic copy would only replace it, at the cost of a call.
        return not self.original_used and self.live()

    async def send_file(self, file: discord.File) -> discord.Message:
        if not self.live():
            return await self._channel().send(file=file, allowed_mentions=NO_MENTIONS)
        return await self.interaction.followup.send(
            file=file, wait=True, ephemeral=self.private, allowed_mentions=NO_MENTIONS
        )

    async def edit(self, handle: discord.Message, text: str) -> discord.Message:
        webhook_message = isinstance(handle, discord.InteractionMessage | discord.WebhookMessage)
        if webhook_message and not self.live():
            return await self._channel().send(text, allowed_mentions=NO_MENTIONS)
        return await super().edit(handle, text)

    def _channel(self) -> discord.abc.Messageable:
        """Where messages go once the interaction token has expired."""
        channel = self.interaction.channel
        if self.private:
            # A channel message would show a private answer to everyone.
            raise Undeliverable("a private reply outlived its interaction token")
        if not isinstance(channel, discord.abc.Messageable):
            raise Undeliverable("the interaction's channel cannot take messages")
        return channel

    async def make_private(self) -> None:
        if self.private:
            return
        self.private = True
        if not self.original_used and self.live():
            # The public "thinking…" placeholder would otherwise stay forever.
            self.original_used = True
            await self.interaction.delete_original_response()

    async def abandon(self) -> None:
        if not self.original_used and self.live():
            await self.interaction.delete_original_response()

    def describe(self) -> str:
        return f"interaction {self.interaction.id} in channel {self.interaction.channel_id}"


class Reply:
    """One answer on Discord, kept in step with the engine's ReplyEvents."""

    def __init__(
        self,
        transport: Transport,
        *,
        interval: float = EDIT_INTERVAL_SECONDS,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.transport = transport
        self.handles: list[discord.Message] = []
        self.shown: list[str] = []
        self.notices: list[str] = []
        self.answer: str | None = None  # the final text or error, once known
        self.last_error: Exception | None = None  # of the last send or edit that failed
        self.throttle = Throttle(self._stream, interval, clock)

    async def apply(self, event: ReplyEvent) -> None:
        if event.private and not self.transport.private:
            await self._attempt("make private", self.transport.make_private())
        if event.kind is ReplyKind.STATUS:
            if event.text == THINKING and self.transport.shows_thinking():
                return
            if not self.throttle.text and self.answer is None:
                await self._render([f"*{event.text}*"])
        elif event.kind is ReplyKind.DELTA:
            await self.throttle.add(event.text)
        elif event.kind is ReplyKind.FINAL:
            self.answer = event.text
            await self._render(self._answer_parts())
            if event.image is not None:
                await self._send_image(event.image, event.image_name or "image.png")
        elif event.kind is ReplyKind.ERROR:
            self.answer = f"⚠️ {event.text}"
            await self._render(self._answer_parts())
        elif event.kind is ReplyKind.NOTICE:
            self.notices.append(event.text)
            if self.answer is not None:
                await self._render(self._answer_parts())

    async def finish(self) -> None:
        """The engine is done: show leftover notices, or drop an unused placeholder."""
        if self.answer is None and self.notices:
            self.answer = ""
            await self._render(self._answer_parts())
        if not self.shown:
            await self._attempt("clean up", self.transport.abandon())

    def undelivered(self) -> bool:
        """The final answer (or error) is known, and not all of it is shown."""
        return self.answer is not None and self.shown != _visible(self._answer_parts())

    async def redeliver(self) -> None:
        """Try once more to show the final answer (or error)."""
        await self._render(self._answer_parts())

    async def _send_image(self, image: bytes, name: str) -> None:
        file = discord.File(io.BytesIO(image), filename=name)
        try:
            await self.transport.send_file(file)
        except (*SendErrors, Undeliverable) as error:
            log.warning(
                "Discord upload of %s failed for %s: %s",
                name, self.transport.describe(), describe_error(error),
            )  # fmt: skip
            self.notices.append(IMAGE_FAILED)  # the text alone must not pass for all
            await self._render(self._answer_parts())

    def _answer_parts(self) -> list[str]:
        lines = [self.answer or ""] + [f"-# {notice}" for notice in self.notices]
        return split_message(neutralise_broadcasts("\n".join(lines).strip()), MESSAGE_LIMIT)

    async def _stream(self, text: str) -> None:
        if self.answer is None:  # a late flush must never overwrite the final answer
            marked = neutralise_broadcasts(text).rstrip() + STREAMING_MARK
            await self._render(split_message(marked, MESSAGE_LIMIT))

    async def _render(self, parts: list[str]) -> None:
        parts = _visible(parts)
        for index, part in enumerate(parts):
            if index < len(self.shown) and self.shown[index] == part:
                continue
            if not await self._put(index, part):
                return  # later parts must not overtake a part that failed
        for handle in self.handles[len(parts) :]:
            await self._attempt("delete", self.transport.delete(handle))
        del self.handles[len(parts) :], self.shown[len(parts) :]

    async def _put(self, index: int, text: str) -> bool:
        try:
            if index < len(self.handles):
                self.handles[index] = await self.transport.edit(self.handles[index], text)
                self.shown[index] = text
            else:
                self.handles.append(await self.transport.send(text, first=index == 0))
                self.shown.append(text)
        except (*SendErrors, Undeliverable) as error:
            self.last_error = error
            action = "edit" if index < len(self.handles) else "send"
            log.warning(
                "Discord %s of part %d failed for %s: %s",
                action, index + 1, self.transport.describe(), describe_error(error),
            )  # fmt: skip
            return False
        return True

    async def _attempt(self, action: str, operation: Awaitable[None]) -> None:
        try:
            await operation
        except (*SendErrors, Undeliverable) as error:
            log.warning(
                "Discord %s failed for %s: %s",
                action, self.transport.describe(), describe_error(error),
            )  # fmt: skip


def _visible(parts: list[str]) -> list[str]:
    """Discord refuses an empty message: a blank part shows as an ellipsis."""
    return [part if part.strip() else "…" for part in parts]

"""How one Parley answer appears in Slack: status, streaming, edits, splits, Markdown.

`SlackReply` turns the engine's ReplyEvents for one user message into Web API calls.
It prefers Slack's own affordances (the thread status, native streaming) and falls back
to a placeholder message edited with chat.update when a workspace or a conversation
does not support them. Every text is neutralised (no @channel, user group or user
pings) before it is sent.
Files cannot be ephemeral, so a private reply's image (a usage chart) is uploaded into
the asking user's DM with the bot.
"""

from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import aiohttp
from slack_sdk.errors import SlackApiError, SlackClientError
from slack_sdk.web.async_client import AsyncWebClient
from slack_sdk.web.async_slack_response import AsyncSlackResponse

from adapters.common import Throttle, neutralise_broadcasts, split_message
from bot.messages import ReplyEvent, ReplyKind

log = logging.getLogger(__name__)

# Slack accepts 12,000 characters of markdown_text per call, but long plain messages
# are cut off behind "show more" and are hard to read: keep those to about 4,000.
PLAIN_LIMIT = 4000
STREAM_LIMIT = 12000
# chat.update is rate limited per channel (about one a second is safe); appends to a
# native stream are cheaper for Slack, so they may come more often.
EDIT_INTERVAL = 1.0
STREAM_INTERVAL = 0.5
# Errors that mean "this method will never work for this app", not "not here, now".
_UNSUPPORTED = frozenset(
    {"unknown_method", "missing_scope", "not_allowed_token_type", "method_deprecated",
     "feature_not_enabled", "not_implemented"}
)  # fmt: skip

# Files cannot be ephemeral: a private image goes to the asking user's DM instead.
# Usage charts are the only images replies carry, hence the wording.
IMAGE_IN_DM = "I sent you the chart in a DM."
# The scope each upload step needs, for when Slack's missing_scope does not name it.
_UPLOAD_SCOPES = {"conversations_open": "im:write", "files_upload_v2": "files:write"}

PrivateSender = Callable[[str], Awaitable[None]]


@dataclass
class Capabilities:
    """What this workspace turned out to support; shared by every reply of an adapter."""

    thread_status: bool = True
    native_stream: bool = True


@dataclass(frozen=True, slots=True)
class Target:
    """Where an answer goes. thread_ts "" means top level (an unthreaded DM)."""

    channel: str
    thread_ts: str
    team: str
    user: str


def clean(text: str) -> str:
    """What every outgoing text goes through: no broadcast, user group or user pings."""
    return neutralise_broadcasts(text)


def error_code(error: BaseException) -> str:
    """A short, token-free description of a failed call."""
    if isinstance(error, SlackApiError):
        data = error.response.data
        if isinstance(data, dict):
            return str(data.get("error", "unknown_error"))
        return f"HTTP {error.response.status_code}"  # not JSON: a proxy or an outage
    return type(error).__name__


def unsupported(error: BaseException) -> bool:
    return isinstance(error, SlackApiError) and error_code(error) in _UNSUPPORTED


class Api:
    """The Web API for one answer: every failure is logged with where it happened."""

    def __init__(self, client: AsyncWebClient, target: Target) -> None:
        self.client = client
        self.target = target
        self.last_error: BaseException | None = None

    async def call(self, method: str, **params: Any) -> AsyncSlackResponse | None:
        """Call a Web API method; None (and a log line) if it failed."""
        self.last_error = None
        try:
            response: AsyncSlackResponse = await getattr(self.client, method)(**params)
        except (SlackClientError, aiohttp.ClientError, TimeoutError) as error:
            self.last_error = error
            log.warning(
                "slack %s failed (channel %s, thread %s): %s",
                method, self.target.channel, self.target.thread_ts or "-", error_code(error),
            )  # fmt: skip
            return None
        return response

    async def post(self, text: str) -> str:
        """Post a message in the target thread; its ts, or "" if it failed."""
        thread = {"thread_ts": self.target.thread_ts} if self.target.thread_ts else {}
        response = await self.call(
            "chat_postMessage", channel=self.target.channel, markdown_text=text, **thread
        )
        return str(response.get("ts", "")) if response else ""

    async def update(self, ts: str, text: str) -> bool:
        response = await self.call(
            "chat_update", channel=self.target.channel, ts=ts, markdown_text=text
        )
        return response is not None

    async def delete(self, ts: str) -> None:
        await self.call("chat_delete", channel=self.target.channel, ts=ts)


async def open_dm(api: Api) -> str:
    """The id of the bot's DM with the asking user; "" if Slack would not open it."""
    response = await api.call("conversations_open", users=api.target.user)
    channel = response.get("channel") if response is not None else None
    return str(channel.get("id", "")) if isinstance(channel, dict) else ""


async def upload_private(api: Api, text: str, image: bytes, name: str, *, direct: bool) -> str:
    """Share a private reply's image in the asking user's DM; what to tell them then.

    In that DM already, the file's comment carries the text and nothing else is said
    (""). A failure is said with the text, so the user still gets the figures' title.
    """
    dm = api.target.channel if direct else await open_dm(api)
    if not dm:
        return f"{text}\n:warning: {upload_failure(api.last_error, 'conversations_open')}"
    here = dm == api.target.channel
    thread = {"thread_ts": api.target.thread_ts} if here and api.target.thread_ts else {}
    uploaded = await api.call(
        "files_upload_v2", channel=dm, file=image, filename=name, title=text,
        initial_comment=text, **thread,
    )  # fmt: skip
    if uploaded is None:
        return f"{text}\n:warning: {upload_failure(api.last_error, 'files_upload_v2')}"
    return "" if here else IMAGE_IN_DM


def upload_failure(error: BaseException | None, step: str) -> str:
    """Why the image did not arrive, naming the scope an admin has to add."""
    code = error_code(error) if error is not None else "no channel id"
    if code != "missing_scope":
        return f"I could not send the chart (Slack said: {code})."
    data = error.response.data if isinstance(error, SlackApiError) else None
    needed = data.get("needed") if isinstance(data, dict) else None
    scope = str(needed or _UPLOAD_SCOPES[step])
    return (
        f"I could not send the chart: this Slack app lacks the {scope} scope. "
        "An admin can add it (config/slack-manifest.yml lists every scope) and reinstall the app."
    )


class EditedMessages:
    """An answer shown as ordinary messages, edited in place as the text grows.

    A text longer than PLAIN_LIMIT continues in further messages; split_message keeps
    earlier parts stable as text is appended, so only the last part keeps changing.
    """

    interval = EDIT_INTERVAL

    def __init__(self, api: Api, ts: list[str] | None = None) -> None:
        self.api = api
        self.ts: list[str] = list(ts or [])
        self.shown: list[str] = ["" for _ in self.ts]

    async def show(self, text: str) -> bool:
        for index, part in enumerate(split_message(text, PLAIN_LIMIT)):
            if not await self._put(index, part):
                return False
        return True

    async def finish(self, text: str) -> bool:
        parts = split_message(text, PLAIN_LIMIT)
        ok = await self.show(text)
        # A final answer shorter than what was streamed leaves stale messages behind.
        while ok and len(self.ts) > len(parts):
            await self.api.delete(self.ts.pop())
            self.shown.pop()
        return ok

    async def _put(self, index: int, part: str) -> bool:
        if index < len(self.ts):
            if self.shown[index] == part:
                return True
            ok = await self.api.update(self.ts[index], part)
            if ok:
                self.shown[index] = part
            return ok
        ts = await self.api.post(part)
        if ts:
            self.ts.append(ts)
            self.shown.append(part)
        return bool(ts)


@dataclass
class _Stream:
    ts: str
    sent: str
    stopped: bool = False


class StreamFailed(Exception):
    """Native streaming did not work; the caller falls back to edited messages."""


class NativeStream:
    """An answer streamed with chat.startStream / appendStream / stopStream.

    Slack streams only into threads and takes STREAM_LIMIT characters per call; a
    longer answer continues in a new stream. If the final text is not what was
    streamed (a tool round's preamble, say), the stopped message is corrected with
    chat.update.
    """

    interval = STREAM_INTERVAL

    def __init__(self, api: Api) -> None:
        self.api = api
        self.streams: list[_Stream] = []

    @property
    def ts(self) -> list[str]:
        return [stream.ts for stream in self.streams]

    async def show(self, text: str) -> None:
        parts = split_message(text, STREAM_LIMIT)
        for index, part in enumerate(parts):
            await self._put(index, part)
            if index < len(parts) - 1:
                await self._stop(self.streams[index], part)

    async def finish(self, text: str) -> None:
        parts = split_message(text, STREAM_LIMIT)
        if not self.streams:  # the whole answer at once: one chat.postMessage, not two calls
            await self._post(parts)
            return
        for index, part in enumerate(parts):
            if index == len(self.streams):
                await self._start(part)
            # What is left of each part goes out with chat.stopStream itself: one call
            # where an append and then a stop were two.
            await self._stop(self.streams[index], part)
        while len(self.streams) > len(parts):
            stream = self.streams.pop()
            await self._stop(stream, "")
            await self.api.delete(stream.ts)

    async def abandon(self) -> None:
        """Close open streams (best effort) before someone else takes over."""
        for stream in self.streams:
            if not stream.stopped:
                stream.stopped = True
                await self.api.call("chat_stopStream", channel=self.api.target.channel,
                                    ts=stream.ts)  # fmt: skip

    async def _put(self, index: int, part: str) -> None:
        if index == len(self.streams):
            await self._start(part)
            return
        stream = self.streams[index]
        if stream.stopped or not part.startswith(stream.sent) or part == stream.sent:
            return  # nothing new, or a rewrite: _stop corrects it with chat.update
        response = await self.api.call(
            "chat_appendStream", channel=self.api.target.channel, ts=stream.ts,
            markdown_text=part[len(stream.sent):],
        )  # fmt: skip
        if response is None:
            raise StreamFailed
        stream.sent = part

    async def _post(self, parts: list[str]) -> None:
        for part in parts:
            ts = await self.api.post(part)
            if not ts:
                raise StreamFailed
            self.streams.append(_Stream(ts, part, stopped=True))

    async def _start(self, part: str) -> None:
        target = self.api.target
        response = await self.api.call(
            "chat_startStream", channel=target.channel, thread_ts=target.thread_ts,
            markdown_text=part, recipient_team_id=target.team, recipient_user_id=target.user,
        )  # fmt: skip
        ts = str(response.get("ts", "")) if response else ""
        if not ts:
            raise StreamFailed
        self.streams.append(_Stream(ts, part))

    async def _stop(self, stream: _Stream, part: str) -> None:
        if stream.stopped:
            if part and stream.sent != part and await self.api.update(stream.ts, part):
                stream.sent = part
            return
        stream.stopped = True
        rest = part[len(stream.sent) :] if part.startswith(stream.sent) else ""
        extra = {"markdown_text": rest} if rest else {}
        stopped = await self.api.call("chat_stopStream", channel=self.api.target.channel,
                                      ts=stream.ts, **extra)  # fmt: skip
        if stopped is not None and rest:
            stream.sent = part
        elif part and part != stream.sent and await self.api.update(stream.ts, part):
            stream.sent = part  # a rewrite, or the last piece did not arrive


class SlackReply:
    """Renders the ReplyEvents of one answer into one Slack thread (or DM)."""

    def __init__(
        self, api: Api, capabilities: Capabilities, private: PrivateSender,
        *, all_private: bool = False, direct: bool = False,
    ) -> None:  # fmt: skip
        self.api = api
        # A slash command's answer can only go to its response_url, ephemeral.
        self.all_private = all_private
        self.direct = direct  # the target is the bot's DM with the user
        self.capabilities = capabilities
        self.private = private
        self.surface: EditedMessages | NativeStream | None = None
        self.throttle: Throttle | None = None
        self.status_shown = False
        self.placeholder_only = False  # the surface shows a status, not answer text
        self._status_call: asyncio.Task[None] | None = None

    @property
    def target(self) -> Target:
        return self.api.target

    async def handle(self, event: ReplyEvent) -> None:
        private = event.private or self.all_private
        await self._status_settled()
        if event.kind is ReplyKind.STATUS and not private:
            # Set while the engine goes on to ask the model: the model's first words
            # need not wait for Slack's answer to the status (a round trip), and
            # whatever is shown next waits for it above, so nothing overtakes it.
            self._status_call = asyncio.create_task(self._status_aside(clean(event.text)))
            return
        if event.kind is ReplyKind.DELTA:
            # Raw: the streamed text is cleaned as a whole when shown, since a ping can
            # span two deltas (and cleaning each of hundreds of deltas would be waste).
            if not private:
                await self.delta(event.text)
            return
        text = clean(event.text)
        if event.image is not None and private and event.kind is ReplyKind.FINAL:
            name = event.image_name or "image.png"
            note = await upload_private(self.api, text, event.image, name, direct=self.direct)
            if note:
                await self.private(note)
            return
        if event.image is not None:  # only private replies (usage charts) carry images
            log.info("slack: image %r of a public reply not sent", event.image_name)
        if private:
            if event.kind in (ReplyKind.FINAL, ReplyKind.ERROR, ReplyKind.NOTICE):
                await self.private(f":warning: {text}" if event.kind is ReplyKind.ERROR else text)
        elif event.kind is ReplyKind.FINAL:
            await self.final(text)
        elif event.kind is ReplyKind.ERROR:
            await self.error(text)
        elif event.kind is ReplyKind.NOTICE:
            await self.notice(text)

    async def close(self) -> None:
        """Clear a status nothing replaced (Slack clears it when the bot posts)."""
        await self._status_settled()
        if self.status_shown and self.surface is None:
            await self._set_status("")

    async def _status_aside(self, text: str) -> None:
        """status(), with a failure of its own logged here: an answer must not be lost
        to a status line that could not be shown (a closed session at shutdown)."""
        try:
            await self.status(text)
        except Exception:
            log.exception("slack: setting the status failed (channel %s)", self.target.channel)

    async def _status_settled(self) -> None:
        """Until the status being set, if any, is shown (or has failed)."""
        if self._status_call is not None:
            call, self._status_call = self._status_call, None
            await call

    async def status(self, text: str) -> None:
        if self.throttle is not None and self.throttle.text:
            return  # answer text is already visible; a status line would hide nothing
        if await self._set_status(f"is {text}"):
            return
        if self.surface is None:
            self.surface = EditedMessages(self.api)
        if isinstance(self.surface, EditedMessages) and (
            self.placeholder_only or not self.surface.ts
        ):
            self.placeholder_only = await self.surface.show(f"_{text}_")

    async def delta(self, text: str) -> None:
        if self.throttle is None:
            interval = NativeStream.interval if self._can_stream() else EditedMessages.interval
            self.throttle = Throttle(self._show, interval)
        await self.throttle.add(text)

    async def final(self, text: str) -> None:
        if self.throttle is not None:
            self.throttle.text = self.throttle.shown = text  # nothing left to flush
        await self._render(text, final=True)

    async def error(self, text: str) -> None:
        message = f":warning: {text}"
        if isinstance(self.surface, EditedMessages) and self.placeholder_only:
            self.placeholder_only = False
            await self.surface.finish(message)
            return
        if isinstance(self.surface, NativeStream):
            await self.surface.abandon()
        await self.api.post(message)

    async def notice(self, text: str) -> None:
        thread = {"thread_ts": self.target.thread_ts} if self.target.thread_ts else {}
        block = {"type": "context", "elements": [{"type": "mrkdwn", "text": to_mrkdwn(text)}]}
        await self.api.call(
            "chat_postMessage", channel=self.target.channel, text=text, blocks=[block], **thread
        )

    def _can_stream(self) -> bool:
        # Streaming is thread-only, and a placeholder already on screen is edited instead.
        return (
            bool(self.target.thread_ts)
            and self.capabilities.native_stream
            and (self.surface is None or isinstance(self.surface, NativeStream))
        )

    async def _set_status(self, status: str) -> bool:
        if not (self.target.thread_ts and self.capabilities.thread_status):
            return False
        response = await self.api.call(
            "assistant_threads_setStatus", channel_id=self.target.channel,
            thread_ts=self.target.thread_ts, status=status,
        )  # fmt: skip
        if response is None:
            error = self.api.last_error
            if error is not None and unsupported(error):
                self.capabilities.thread_status = False
            return False
        self.status_shown = bool(status)
        return True

    async def _show(self, text: str) -> None:
        await self._render(clean(text), final=False)

    async def _render(self, text: str, *, final: bool) -> None:
        if self.surface is None:
            self.surface = (
                NativeStream(self.api) if self._can_stream() else EditedMessages(self.api)
            )
        self.placeholder_only = False
        if isinstance(self.surface, NativeStream):
            try:
                await (self.surface.finish(text) if final else self.surface.show(text))
                return
            except StreamFailed:
                await self._fall_back()
        assert isinstance(self.surface, EditedMessages)
        await (self.surface.finish(text) if final else self.surface.show(text))

    async def _fall_back(self) -> None:
        """Native streaming failed: continue in the same messages with chat.update."""
        assert isinstance(self.surface, NativeStream)
        error = self.api.last_error
        if error is not None and unsupported(error):
            self.capabilities.native_stream = False
        log.info("slack: native streaming unavailable (%s); editing messages instead",
                 error_code(error) if error else "no ts")  # fmt: skip
        await self.surface.abandon()
        self.surface = EditedMessages(self.api, self.surface.ts)


# Markdown -> Slack mrkdwn, for the few places that take no markdown_text (context
# blocks, response_url). Code spans and blocks are left exactly as they are.
_CODE = re.compile(r"(```.*?```|`[^`\n]+`)", re.DOTALL)
_MRKDWN_RULES: tuple[tuple[re.Pattern[str], str], ...] = (
    (re.compile(r"^#{1,6}\s+(.+?)\s*#*$", re.MULTILINE), r"*\1*"),
    (re.compile(r"\*\*(.+?)\*\*|__(.+?)__"), "*\\1\\2*"),
    (re.compile(r"~~(.+?)~~"), r"~\1~"),
    (re.compile(r"\[([^\]]+)\]\((https?://[^)\s]+)\)"), r"<\2|\1>"),
)


def to_mrkdwn(text: str) -> str:
    """Convert common Markdown (headings, bold, strike, links) to Slack mrkdwn."""
    pieces = _CODE.split(text)
    for index in range(0, len(pieces), 2):  # even indexes are outside code
        piece = pieces[index]
        for pattern, replacement in _MRKDWN_RULES:
            piece = pattern.sub(replacement, piece)
        pieces[index] = piece
    return "".join(pieces)

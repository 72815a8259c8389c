"""Slack's side of /summarize: reading what people wrote, and the message shortcut.

`@Parley summarize` in a thread reads the thread (conversations.replies); outside a
thread, or in a thread of one message, the channel's newest messages
(conversations.history). The "Summarize thread" message shortcut (callback id
summarize_thread in config/slack-manifest.yml) summarises the thread of the message it
was used on, answering in that thread. Slack only delivers a mention or a shortcut
from a conversation the user is in, and the bot reads with its own token, so what is
read is what both can read; a channel the bot is not in gets a sentence saying so.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, cast

import aiohttp
from slack_sdk.errors import SlackApiError, SlackClientError

from adapters.slack_format import error_code
from bot.messages import Message
from bot.summarize import Said, Span, SummaryError

if TYPE_CHECKING:
    from adapters.slack import Incoming, SlackAdapter

log = logging.getLogger(__name__)

SHORTCUT_ID = "summarize_thread"
# Subtypes that are someone saying something (joins, topic changes... are not).
SAID = frozenset({"", "file_share", "thread_broadcast", "bot_message", "me_message"})
PAGE = 200  # messages per Web API call (Slack's recommended most)
NOT_IN_CHANNEL = "I cannot read this channel: invite me first (/invite @Parley), then ask again."
MISSING_SCOPE = "I am not allowed to read this conversation's history (a missing scope)."
UNREACHABLE = "I could not read this conversation from Slack just now; please try again."


class SlackHistory:
    """The HistoryReader the Slack adapter registers with the engine."""

    def __init__(self, adapter: SlackAdapter) -> None:
        self.adapter = adapter

    async def read_history(self, message: Message, span: Span) -> list[Said]:
        try:
            raw = await self._thread(message) if message.thread else []
            if len(raw) <= 1:  # no thread, or a top-level mention: the channel
                raw = await self._channel(message, span)
        except SlackApiError as error:
            code = error_code(error)
            log.warning("slack: reading history of %s failed: %s", message.channel, code)
            if code in ("not_in_channel", "channel_not_found"):
                raise SummaryError(NOT_IN_CHANNEL) from None
            raise SummaryError(MISSING_SCOPE if code == "missing_scope" else UNREACHABLE) from None
        except (SlackClientError, aiohttp.ClientError, TimeoutError) as error:
            log.warning("slack: reading history of %s failed: %s", message.channel, error)
            raise SummaryError(UNREACHABLE) from None
        recent = [
            m for m in raw
            if m.get("subtype", "") in SAID and (span.since is None or _ts(m) >= span.since)
        ]  # fmt: skip
        return [await self._said(message.workspace, m) for m in recent[-span.count :]]

    async def _thread(self, message: Message) -> list[Mapping[str, Any]]:
        """The thread's messages, oldest first (conversations.replies pages forward)."""
        found: list[Mapping[str, Any]] = []
        cursor = ""
        client = self.adapter.client
        limit = self.adapter.engine.settings.summarize_max_messages
        while True:
            response = await client.conversations_replies(
                channel=message.channel, ts=message.thread, limit=PAGE, cursor=cursor or None
            )
            found.extend(cast(list[Mapping[str, Any]], response.get("messages") or []))
            cursor = str((response.get("response_metadata") or {}).get("next_cursor") or "")
            # A long thread: keep reading to its end, but never without a bound.
            if not cursor or len(found) >= 10 * limit:
                return found

    async def _channel(self, message: Message, span: Span) -> list[Mapping[str, Any]]:
        """The channel's newest top-level messages, oldest first."""
        oldest = f"{span.since:.6f}" if span.since is not None else None
        response = await self.adapter.client.conversations_history(
            channel=message.channel, limit=min(span.count, 999), oldest=oldest
        )
        messages = cast(list[Mapping[str, Any]], response.get("messages") or [])
        return list(reversed(messages))  # Slack answers newest first

    async def _said(self, team: str, raw: Mapping[str, Any]) -> Said:
        from adapters.slack import unescape

        text = unescape(str(raw.get("text") or "")) or "(a file or an attachment)"
        user = str(raw.get("user") or "")
        if raw.get("bot_id") or not user:
            own = user and user == self.adapter.bot_user_id
            return Said("Parley" if own else str(raw.get("username") or "a bot"), text)
        if user == self.adapter.bot_user_id:
            return Said("Parley", text)
        info = await self.adapter.users.get(team, user)
        return Said(info.name or user, text)


def _ts(raw: Mapping[str, Any]) -> float:
    try:
        return float(raw.get("ts") or 0)
    except ValueError:
        return 0.0


def shortcut_incoming(body: Mapping[str, Any]) -> Incoming | None:
    """The "Summarize thread" shortcut as a message to answer in the thread, or None
    for a payload without the fields it needs."""
    from adapters.slack import Incoming, dedupe_keys

    def text_at(data: Any, *path: str) -> str:
        for name in path:
            data = data.get(name) if isinstance(data, Mapping) else None
        return data if isinstance(data, str) else ""

    team, channel = text_at(body, "team", "id"), text_at(body, "channel", "id")
    user, trigger = text_at(body, "user", "id"), text_at(body, "trigger_id")
    thread = text_at(body, "message", "thread_ts") or text_at(body, "message", "ts")
    if not (team and channel and user and thread):
        return None
    keys = dedupe_keys(("slack:shortcut:", trigger))
    return Incoming(team, channel, user, "/summarize", thread, keys, channel.startswith("D"))

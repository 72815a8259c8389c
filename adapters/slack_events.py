"""What Slack sends, as Slack sends it, and the checks it passes before Parley reads it.

Bolt parses a body before it verifies the signature, and trusts every field's type: so
`null`, `[1]` or a non-numeric X-Slack-Request-Timestamp from anyone on the internet was
a 500 and a traceback, and a signed event with a number for its text a 500 that Slack
retries. The HTTP endpoint therefore verifies the signature itself, on the raw bytes,
before anything is parsed; then the shapes are checked here (what bolt's routing reads
in the envelope, what Parley reads in an event or a command). A request that fails is
ignored with one log line and a 200, so Slack does not retry it.
"""

from __future__ import annotations

import hashlib
import hmac
import re
from collections.abc import Mapping
from typing import Any, TypedDict

# Slack refuses to sign for longer; an older request is a replay.
SIGNATURE_MAX_AGE_SECONDS = 300
_TIMESTAMP = re.compile(r"[0-9]{1,12}")
_SLACK_TS = re.compile(r"[0-9]{1,12}\.[0-9]{1,9}")
# Event fields Parley reads; each is a string when present.
EVENT_TEXT_FIELDS = ("type", "subtype", "user", "bot_id", "text", "channel", "channel_type",
                     "team", "ts", "thread_ts")  # fmt: skip
COMMAND_FIELDS = ("command", "text", "team_id", "channel_id", "user_id", "trigger_id",
                  "response_url")  # fmt: skip
ENVELOPE_ID_FIELDS = ("type", "team_id", "event_id", "enterprise_id", "api_app_id")
HANDLED_EVENTS = frozenset({"app_mention", "message", "assistant_thread_started"})


# Raw Slack payloads, as Slack sends them (only the fields Parley reads).
class SlackEvent(TypedDict, total=False):
    type: str
    subtype: str
    user: str
    bot_id: str
    text: str
    ts: str
    thread_ts: str
    channel: str
    channel_type: str
    team: str


class EventEnvelope(TypedDict, total=False):
    type: str
    team_id: str
    event_id: str
    event: SlackEvent


class SlashCommand(TypedDict, total=False):
    team_id: str
    channel_id: str
    user_id: str
    text: str
    trigger_id: str
    response_url: str


def signature_valid(secret: str, body: bytes, timestamp: str, signature: str, now: float) -> bool:
    """Slack's v0 signature of this exact body, made within the last five minutes."""
    if not secret or not _TIMESTAMP.fullmatch(timestamp):
        return False
    if abs(now - int(timestamp)) > SIGNATURE_MAX_AGE_SECONDS:
        return False
    base = b"v0:" + timestamp.encode() + b":" + body
    expected = "v0=" + hmac.new(secret.encode(), base, hashlib.sha256).hexdigest()
    # As bytes: compare_digest refuses str with non-ASCII characters, which a header may hold.
    return hmac.compare_digest(expected.encode(), signature.encode("utf-8", "replace"))


def envelope_problem(payload: object) -> str:
    """'' if bolt may route this parsed body; else what is wrong with it."""
    if not isinstance(payload, dict):
        return f"the body is a JSON {type(payload).__name__}, not an object"
    if "command" in payload or "ssl_check" in payload:
        return command_problem(payload)
    kind = payload.get("type")
    if kind == "url_verification":
        return "" if isinstance(payload.get("challenge"), str) else "a challenge that is no text"
    if kind == "message_action":  # a message shortcut (Summarize thread)
        return _strings(payload, ("callback_id", "trigger_id"), "shortcut")
    if kind != "event_callback":
        return f"a request of type {_shown(kind)}, which Parley does not handle"
    if problem := _strings(payload, ENVELOPE_ID_FIELDS, "envelope"):
        return problem
    authorizations = payload.get("authorizations", [])
    if not isinstance(authorizations, list) or not all(
        isinstance(item, dict) and not _strings(item, ("team_id", "user_id", "enterprise_id"), "")
        for item in authorizations
    ):
        return "authorizations that are not a list of objects with text ids"
    event = payload.get("event")
    if not isinstance(event, dict) or not isinstance(event.get("type"), str):
        return "an event that is not an object with a type"
    if event["type"] not in HANDLED_EVENTS:
        return f"a {_shown(event['type'])} event, which Parley does not subscribe to"
    return ""


def message_key(team: str, channel: str, ts: str) -> str:
    """The delivery key of one message, the same whichever event carried it: Slack
    sends a mention as app_mention and as message, with event ids of their own."""
    return f"slack:msg:{team}:{channel}:{ts}"


def envelope_message_key(payload: Mapping[str, Any]) -> str:
    """The message key of a checked event envelope's message ('' for other events)."""
    event = payload.get("event")
    if not isinstance(event, dict) or event.get("type") not in ("app_mention", "message"):
        return ""
    team = payload.get("team_id") or event.get("team") or ""
    channel, ts = event.get("channel"), event.get("ts")
    if not (isinstance(team, str) and isinstance(channel, str) and isinstance(ts, str)):
        return ""
    return message_key(team, channel, ts) if channel and ts else ""


def event_problem(event: Mapping[str, Any]) -> str:
    """'' if every field Parley reads from a message event is well formed."""
    if problem := _strings(event, EVENT_TEXT_FIELDS, "event"):
        return problem
    for name in ("ts", "thread_ts"):
        value = event.get(name)
        if value and not _SLACK_TS.fullmatch(value):
            return f"event.{name} {_shown(value)} is not a Slack timestamp"
    return ""


def command_problem(body: Mapping[str, Any]) -> str:
    """'' if every field Parley reads from a slash command is text."""
    return _strings(body, COMMAND_FIELDS, "command")


def _strings(data: Mapping[str, Any], names: tuple[str, ...], where: str) -> str:
    """'' if each named field is absent, null or text; else which one is not."""
    for name in names:
        value = data.get(name)
        if value is not None and not isinstance(value, str):
            prefix = f"{where}." if where else ""
            return f"{prefix}{name} is {type(value).__name__}, not text"
    return ""


def _shown(value: object) -> str:
    """A value for a log line: short, and never more than one line."""
    text = repr(value)
    return text if len(text) <= 40 else text[:39] + "…"

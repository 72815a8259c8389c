"""Chat commands of the audit log and of usage for everyone, and the audit rows of
admin commands.

run_audited wraps every admin command that changes something: it notes the state
before, runs the command, notes the state after and writes one audit row. The
router (bot/commands.py) calls it; the handlers themselves know nothing of auditing.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING

from bot.audit import AuditLog, format_table
from bot.messages import Message, ReplyEvent
from bot.ratelimit import default_limits
from bot.report import format_table as usage_table
from bot.usage import parse_period

if TYPE_CHECKING:
    from bot.commands import CommandContext

Handler = Callable[["CommandContext", Message, list[str]], Awaitable[str | ReplyEvent]]
# The state an action changes: (action, target) or None for a command that changes
# nothing (a "show", a /forget not confirmed yet).
Subject = tuple[str, str] | None
AUDIT_ROWS_IN_CHAT = 30
# /access subcommands that change the access lists (when that command is present).
ACCESS_CHANGES = ("allow", "block", "remove")


def _subject(message: Message, name: str, arguments: list[str]) -> Subject:
    from bot.commands import _user_key  # the router's own parsing of user ids

    if name == "limits" and len(arguments) == 4 and arguments[0].lower() == "set":
        return f"limits.set.{arguments[2].lower()}", _user_key(message, arguments[1])
    if name in ("block", "unblock") and len(arguments) == 1:
        return name, _user_key(message, arguments[0])
    if name == "forget" and arguments == ["confirm"]:
        return name, message.channel_id
    if name in ("system", "model") and arguments:
        return name, message.channel_id
    if name == "moderation" and [a.lower() for a in arguments] in (["off"], ["on"]):
        return "moderation.override", message.channel_id
    if name == "access" and arguments[:1] and arguments[0].lower() in ACCESS_CHANGES:
        return f"access.{arguments[0].lower()}", " ".join(arguments[1:])
    return None


async def _state(context: CommandContext, message: Message, name: str, target: str) -> str:
    """What the action changes, as text: a user's limits or a channel's setting."""
    from bot.commands import describe_limits

    where = (message.platform, message.workspace, message.channel)
    if name in ("system", "model"):
        setting = "system_prompt" if name == "system" else "model"
        return (await context.store.channel_settings(*where))[setting] or "(default)"
    if name == "moderation":
        return await context.store.channel_moderation(*where) or "(default)"
    if name in ("forget", "access"):
        return ""  # what changed is in the command's answer
    limits = await context.store.user_limits(target, default_limits(context.settings))
    return describe_limits(target, limits).removeprefix(f"{target}: ")


async def run_audited(
    context: CommandContext, message: Message, name: str, arguments: list[str], handler: Handler
) -> str | ReplyEvent:
    subject = _subject(message, name, arguments)
    if subject is not None and name == "forget" and not _forget_pending(context, message):
        subject = None  # a "/forget confirm" with nothing to confirm deletes nothing
    if subject is None:
        return await handler(context, message, arguments)
    action, target = subject
    before = await _state(context, message, name, target)
    answer = await handler(context, message, arguments)
    if name in ("forget", "access"):
        after = answer if isinstance(answer, str) else answer.text
    else:
        after = await _state(context, message, name, target)
    await AuditLog(context.store, context.clock).by_message(message, action, target, before, after)
    return answer


def _forget_pending(context: CommandContext, message: Message) -> bool:
    deadline = context.pending_forgets.get((message.user_key, message.channel_id), 0.0)
    return context.clock() <= deadline


async def audit_command(context: CommandContext, message: Message, arguments: list[str]) -> str:
    """/audit [period] [action]: the newest admin actions and safety events."""
    period = arguments[0] if arguments else "7d"
    action = arguments[1] if len(arguments) > 1 else ""
    try:
        seconds = parse_period(period)
    except ValueError as error:
        return f"{error}. Usage: /audit [period] [action], e.g. /audit 30d limits"
    entries = await context.store.audit_entries(
        context.clock() - seconds, action=action, limit=AUDIT_ROWS_IN_CHAT
    )
    if not entries:
        return f"No audit entries in the last {period}."
    heading = f"Audit log, last {period}, newest first (at most {AUDIT_ROWS_IN_CHAT}):"
    return f"{heading}\n```\n{format_table(entries)}\n```"


async def moderation_command(
    context: CommandContext, message: Message, arguments: list[str]
) -> str:
    """/moderation [off|on]: exempt this channel from moderation, or stop exempting it."""
    where = (message.platform, message.workspace, message.channel)
    configured = "on" if context.settings.moderation_enabled else "off"
    word = arguments[0].lower() if len(arguments) == 1 else ""
    if word in ("off", "on"):
        await context.store.set_channel_setting(
            *where, "moderation", "off" if word == "off" else ""
        )
    elif arguments:
        return "Usage: /moderation [off|on]: exempt this channel from moderation, or not."
    override = await context.store.channel_moderation(*where)
    if override == "off":
        return "Moderation is off in this channel (an admin's override)."
    return f"Moderation in this channel follows the configuration: {configured}."


async def own_usage(context: CommandContext, message: Message, arguments: list[str]) -> str:
    """/usage for someone who is not an admin: their own figures and what is left."""
    period = next((word for word in arguments if word[:1].isdigit()), "7d")
    try:
        seconds = parse_period(period)
    except ValueError as error:
        return f"{error}. Usage: /usage [period], e.g. /usage 30d"
    now = context.clock()
    key = message.user_key
    rows = await context.store.user_usage(key, now - seconds)
    tokens, cost = await context.store.today(key, now)
    limits = await context.store.user_limits(key, default_limits(context.settings))
    lines = [f"Your usage over the last {period}:"]
    lines.append(usage_table(rows, "model") if rows else "No requests.")
    left = [
        f"{max(0, limits.tokens_per_day - tokens):,} of {limits.tokens_per_day:,} tokens"
        if limits.tokens_per_day else "unlimited tokens",
        f"${max(0.0, limits.cost_per_day_usd - cost):.2f} of ${limits.cost_per_day_usd:.2f}"
        if limits.cost_per_day_usd else "no spending limit",
    ]  # fmt: skip
    rate = limits.requests_per_minute
    lines.append(f"Left today (resets 00:00 UTC): {', '.join(left)}.")
    lines.append(f"Rate limit: {rate} requests a minute." if rate else "No rate limit.")
    if limits.blocked:
        lines.append("You are blocked from using Parley here; ask an admin.")
    return "\n".join(lines)

"""The neutral command router: the same commands answer on every platform.

In the console a command is a line starting with "/"; adapters turn "/parley usage",
"@Parley usage" and Discord's slash commands into the same "/usage" text. Admin
commands check the caller first and reveal nothing to anyone else.
"""

from __future__ import annotations

import asyncio
import logging
import re
import shlex
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from bot.audit_commands import audit_command, moderation_command, own_usage, run_audited
from bot.charts import daily_usage, usage_png
from bot.config import Settings
from bot.messages import Message, ReplyEvent, ReplyKind
from bot.ratelimit import default_limits, parse_limit
from bot.report import format_table
from bot.store import Store, UserLimits
from bot.usage import parse_period

log = logging.getLogger(__name__)

FORGET_CONFIRM_SECONDS = 120.0
NOT_ADMIN = "Sorry, only Parley admins can use /{name}."
# Said to a refused user: how to become an admin (no ids, no figures).
BECOME_ADMIN = (
    " Whoever runs this Parley can make you an admin: PARLEY_ADMINS=platform:your-user-id."
)
HELP = """Parley commands:
/help: this list
/reset: start this conversation afresh (older messages leave the context)
/summarize [50|24h]: catch up on this thread or channel (last N messages or period)
/summary: what I keep of this conversation's older messages
/usage [period]: your own usage and what is left of your limits today
Admins only:
/usage [period] [user|channel|model|day|kind]: everyone's usage, cached input and cost
/usage chart [period]: tokens and cost per day as a picture, e.g. /usage chart 30d
/limits show [user] | /limits set <user> <rpm|tpd|cost> <number|default>
/block <user>, /unblock <user>
/forget: delete this channel's stored history (asks to confirm)
/system [text|reset]: show or set this channel's system prompt
/model [name|reset]: show or set this channel's model
/audit [period] [action]: admin actions and moderation events, e.g. /audit 30d limits
/moderation [off|on]: exempt this channel from moderation, or not
/access show | /access allow|block|remove channel|user|role <id>: who Parley answers where"""


class CommandError(Exception):
    """A command was used wrongly; the message says how to use it."""


@dataclass
class CommandContext:
    store: Store
    settings: Settings
    clock: Callable[[], float]
    # (user_key, channel) -> deadline of a pending /forget confirmation
    pending_forgets: dict[tuple[str, str], float] = field(default_factory=dict)


# A handler answers with text, or with a whole ReplyEvent (a chart to attach).
Handler = Callable[[CommandContext, Message, list[str]], Awaitable[str | ReplyEvent]]
_HANDLERS: dict[str, tuple[Handler, bool]] = {}


def command(name: str, *, admin: bool) -> Callable[[Handler], Handler]:
    def register(handler: Handler) -> Handler:
        _HANDLERS[name] = (handler, admin)
        return handler

    return register


def is_command(text: str) -> bool:
    return text.startswith("/") and len(text) > 1 and not text.startswith("//")


def command_name(text: str) -> str:
    """'/usage 7d' or 'usage 7d' -> 'usage'; nothing -> 'help', as run_command answers."""
    words = text.strip().lstrip("/").split(maxsplit=1)
    return words[0].lower() if words else "help"


_USER_ID = re.compile(r"^(<@[^>]+>|[a-z]+:\S+|[A-Z0-9]{6,}|\d{5,})$")
_PERIOD = re.compile(r"^\d+[mhdw]$", re.IGNORECASE)
_SUMMARY_WORDS = re.compile(r"^(\d+|\d+[mhdw])$", re.IGNORECASE)
_USAGE_WORDS = re.compile(r"^(\d+[mhdw]|user|channel|model|day|kind|chart)$", re.IGNORECASE)


def mention_command(text: str) -> str | None:
    """The command a mention such as "@Parley usage 7d" asks for, or None for a question.

    Only words that parse as a command's arguments make a command, so "@Parley model
    this as a state machine" or "@Parley reset my password how?" stay questions. The
    free-text commands (system, model) need their explicit "/" form in a mention.
    """
    stripped = text.strip()
    if is_command(stripped):
        return stripped
    words = stripped.split()
    if not words:
        return "/help"
    name, arguments = words[0].lower(), words[1:]
    recognised = (
        (name in ("help", "reset", "forget", "summary") and not arguments)
        or (name == "forget" and arguments == ["confirm"])
        or (name == "usage" and all(_USAGE_WORDS.match(word) for word in arguments))
        or (name == "audit" and len(arguments) <= 1 and all(_PERIOD.match(w) for w in arguments))
        or (
            name == "summarize"
            and len(arguments) <= 1
            and all(_SUMMARY_WORDS.match(word) for word in arguments)
        )
        or (name == "access" and arguments[:1] in (["show"], ["allow"], ["block"], ["remove"]))
        or (name == "limits" and (not arguments or arguments[0].lower() in ("show", "set")))
        or (
            name in ("block", "unblock")
            and len(arguments) == 1
            and bool(_USER_ID.match(arguments[0]))
        )
    )
    return "/" + " ".join([name, *arguments]) if recognised else None


def is_admin(settings: Settings, message: Message) -> bool:
    if message.user_key in settings.admins:
        return True
    workspace = f"{message.platform}:{message.workspace}"
    return message.platform_admin and workspace in settings.platform_admin_workspaces


async def run_command(context: CommandContext, message: Message) -> ReplyEvent:
    """Answer one command line. Every reply is private where the platform allows."""
    try:
        words = shlex.split(message.text[1:])
    except ValueError:
        words = message.text[1:].split()
    name, arguments = (words[0].lower(), words[1:]) if words else ("help", [])
    entry = _HANDLERS.get(name)
    if entry is None:
        return ReplyEvent(ReplyKind.FINAL, f"Unknown command /{name}. Try /help.", private=True)
    handler, admin_only = entry
    if admin_only and not is_admin(context.settings, message):
        refusal = NOT_ADMIN.format(name=name) + BECOME_ADMIN
        return ReplyEvent(ReplyKind.ERROR, refusal, private=True)
    try:
        answer = await run_audited(context, message, name, arguments, handler)
    except CommandError as error:
        return ReplyEvent(ReplyKind.ERROR, str(error), private=True)
    except Exception:  # the delivery is already claimed: the user must hear something
        log.exception("command /%s failed", name)
        return ReplyEvent(ReplyKind.ERROR, f"/{name} failed; the error was logged.", private=True)
    if isinstance(answer, ReplyEvent):
        return answer
    return ReplyEvent(ReplyKind.FINAL, answer, private=True)


@command("help", admin=False)
async def _help(context: CommandContext, message: Message, arguments: list[str]) -> str:
    return HELP


@command("reset", admin=False)
async def _reset(context: CommandContext, message: Message, arguments: list[str]) -> str:
    await context.store.reset(message.conversation)
    return "Conversation reset: I will not use the earlier messages from here on."


@command("usage", admin=False)
async def _usage(
    context: CommandContext, message: Message, arguments: list[str]
) -> str | ReplyEvent:
    if not is_admin(context.settings, message):  # their own figures, nobody else's
        if arguments[:1] and arguments[0].lower() == "chart":  # a chart shows everyone
            return ReplyEvent(ReplyKind.ERROR, NOT_ADMIN.format(name="usage"), private=True)
        return await own_usage(context, message, arguments)
    if arguments[:1] and arguments[0].lower() == "chart":
        return await _usage_chart(context, arguments[1:])
    period, by = "7d", "user"
    for argument in arguments:
        if argument.lower() in ("user", "channel", "model", "day", "kind"):
            by = argument.lower()
        else:
            period = argument
    try:
        seconds = parse_period(period)
    except ValueError as error:
        usage = "Usage: /usage [period] [user|channel|model|day|kind]"
        raise CommandError(f"{error}. {usage}") from None
    since = context.clock() - seconds
    rows = await context.store.usage_report(since, by, limit=20)
    if not rows:
        return f"No usage in the last {period}."
    refusals = await context.store.refusal_counts(since)
    refused = sum(refusals.values())
    header = f"Usage over the last {period}, by {by} (top 20):"
    kinds = ", ".join(f"{kind} {count}" for kind, count in sorted(refusals.items()))
    footer = f"Messages refused: {refused} ({kinds})" if refused else ""
    return "\n".join(part for part in (header, format_table(rows, by), footer) if part)


async def _usage_chart(context: CommandContext, arguments: list[str]) -> ReplyEvent:
    """/usage chart [period]: a PNG of tokens and cost per day (admins only)."""
    period = arguments[0] if arguments else "7d"
    try:
        if len(arguments) > 1:
            raise ValueError(f"/usage chart takes one period, got {' '.join(arguments)!r}")
        seconds = parse_period(period)
    except ValueError as error:
        usage = "Usage: /usage chart [period], e.g. /usage chart 30d"
        return ReplyEvent(ReplyKind.ERROR, f"{error}. {usage}", private=True)
    now = context.clock()
    rows = await context.store.usage_report(now - seconds, "day")
    if not rows:
        return ReplyEvent(ReplyKind.FINAL, f"No usage in the last {period}.", private=True)
    days = daily_usage(rows, now - seconds, now)
    # Drawing takes tens of milliseconds: off the event loop, so chats keep flowing.
    png = await asyncio.to_thread(usage_png, days, f"Parley usage, last {period}")
    return ReplyEvent(
        ReplyKind.FINAL, f"Usage chart, last {period}", private=True,
        image=png, image_name="usage.png",
    )  # fmt: skip


def _user_key(message: Message, text: str) -> str:
    """'<@U123>', '@U123', 'U123' or 'slack:U123' -> 'slack:U123'."""
    user = text.strip().removeprefix("<").removesuffix(">").lstrip("@!")
    if ":" in user:
        return user
    return f"{message.platform}:{user}"


def describe_limits(key: str, limits: UserLimits) -> str:
    def shown(value: float | None) -> str:
        return "unlimited" if not value else f"{value:g}"

    return (
        f"{key}: {shown(limits.requests_per_minute)} requests/minute, "
        f"{shown(limits.tokens_per_day)} tokens/day, "
        f"{'$' + shown(limits.cost_per_day_usd) if limits.cost_per_day_usd else 'unlimited'}"
        f" per day{', BLOCKED' if limits.blocked else ''}"
    )


async def describe_all_limits(store: Store, defaults: UserLimits) -> list[str]:
    """The defaults, then every user with limits of their own."""
    overridden = await store.overridden_limits(defaults)
    return [describe_limits("default", defaults)] + [
        describe_limits(key, limits) for key, limits in overridden
    ]


@command("limits", admin=True)
async def _limits(context: CommandContext, message: Message, arguments: list[str]) -> str:
    action = arguments[0].lower() if arguments else "show"
    defaults = default_limits(context.settings)
    if action == "show":
        if len(arguments) > 1:
            key = _user_key(message, arguments[1])
            return describe_limits(key, await context.store.user_limits(key, defaults))
        return "\n".join(await describe_all_limits(context.store, defaults))
    if action == "set" and len(arguments) == 4:
        return await _set_limit(
            context, _user_key(message, arguments[1]), arguments[2], arguments[3]
        )
    raise CommandError(
        "Usage: /limits show [user] or /limits set <user> <rpm|tpd|cost> <number|default>"
    )


async def _set_limit(context: CommandContext, key: str, name: str, value: str) -> str:
    try:
        column, number = parse_limit(name, value)
    except ValueError as error:
        raise CommandError(str(error)) from None
    await context.store.set_user_limit(key, column, number)
    limits = await context.store.user_limits(key, default_limits(context.settings))
    return "Done. " + describe_limits(key, limits)


async def _set_blocked(
    context: CommandContext, message: Message, arguments: list[str], blocked: bool
) -> str:
    if len(arguments) != 1:
        raise CommandError(f"Usage: /{'block' if blocked else 'unblock'} <user>")
    key = _user_key(message, arguments[0])
    await context.store.set_user_limit(key, "blocked", 1 if blocked else 0)
    return f"{key} is {'now blocked' if blocked else 'no longer blocked'}."


@command("block", admin=True)
async def _block(context: CommandContext, message: Message, arguments: list[str]) -> str:
    return await _set_blocked(context, message, arguments, True)


@command("unblock", admin=True)
async def _unblock(context: CommandContext, message: Message, arguments: list[str]) -> str:
    return await _set_blocked(context, message, arguments, False)


@command("forget", admin=True)
async def _forget(context: CommandContext, message: Message, arguments: list[str]) -> str:
    pending_key = (message.user_key, message.channel_id)
    now = context.clock()
    deadline = context.pending_forgets.pop(pending_key, 0.0)
    if arguments == ["confirm"] and now <= deadline:
        deleted = await context.store.forget_channel(
            message.platform, message.workspace, message.channel
        )
        return f"Deleted {deleted} stored messages of this channel."
    context.pending_forgets[pending_key] = now + FORGET_CONFIRM_SECONDS
    return (
        "This deletes every stored message of this channel, its threads included, for good. "
        "Send /forget confirm within 2 minutes to go ahead."
    )


async def _channel_setting(
    context: CommandContext, message: Message, arguments: list[str], name: str, label: str
) -> str:
    where = (message.platform, message.workspace, message.channel)
    if not arguments:
        current = (await context.store.channel_settings(*where))[name]
        default = getattr(context.settings, name)
        return f"This channel's {label}: {current or default}" + ("" if current else " (default)")
    value = " ".join(arguments)
    if value.lower() == "reset":
        await context.store.set_channel_setting(*where, name, "")
        return f"This channel's {label} is back to the default."
    await context.store.set_channel_setting(*where, name, value)
    return f"This channel's {label} is now: {value}"


@command("system", admin=True)
async def _system(context: CommandContext, message: Message, arguments: list[str]) -> str:
    return await _channel_setting(context, message, arguments, "system_prompt", "system prompt")


@command("model", admin=True)
async def _model(context: CommandContext, message: Message, arguments: list[str]) -> str:
    return await _channel_setting(context, message, arguments, "model", "model")


command("audit", admin=True)(audit_command)
command("moderation", admin=True)(moderation_command)

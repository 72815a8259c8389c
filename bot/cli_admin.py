"""python -m bot usage / limits: the admin reports and controls, from the shell."""

from __future__ import annotations

import argparse
import sys
import time
from typing import Any

from bot.commands import LIMIT_NAMES, describe_limits
from bot.config import Settings
from bot.report import format_csv, format_json, format_table
from bot.store import Store, UserLimits
from bot.usage import parse_period


def add_commands(commands: Any) -> None:
    usage = commands.add_parser("usage", help="usage report")
    usage.add_argument("--since", default="7d", help="period: 30m, 12h, 7d, 4w (default 7d)")
    usage.add_argument("--by", default="user", choices=["user", "channel", "model", "day"])
    usage.add_argument("--format", default="table", choices=["table", "json", "csv"])
    usage.add_argument("--top", type=int, default=0, help="only the N biggest groups")
    limits = commands.add_parser("limits", help="show and set per-user limits")
    actions = limits.add_subparsers(dest="action", required=True)
    show = actions.add_parser("show", help="defaults and per-user overrides")
    show.add_argument("user", nargs="?", help="platform:user, e.g. slack:U123")
    set_ = actions.add_parser("set", help="set one user's limit (0 = unlimited)")
    set_.add_argument("user")
    set_.add_argument("limit", choices=sorted(LIMIT_NAMES))
    set_.add_argument("value", help="a number, or 'default'")
    for name in ("block", "unblock"):
        actions.add_parser(name, help=f"{name} a user").add_argument("user")


def _fail(text: str) -> int:
    print(f"Error: {text}", file=sys.stderr)
    return 2


def run(settings: Settings, arguments: argparse.Namespace) -> int:
    store = Store(settings.db_path)
    try:
        if arguments.command == "usage":
            return _usage(store, arguments)
        return _limits(store, settings, arguments)
    finally:
        store.close()


def _usage(store: Store, arguments: argparse.Namespace) -> int:
    try:
        since = time.time() - parse_period(arguments.since)
    except ValueError as error:
        return _fail(str(error))
    rows = store.usage_report(since, arguments.by, limit=max(0, arguments.top))
    if arguments.format == "json":
        print(format_json(rows, arguments.by))
    elif arguments.format == "csv":
        print(format_csv(rows, arguments.by), end="")
    elif rows:
        print(format_table(rows, arguments.by).strip("`\n"))
    else:
        print(f"No usage in the last {arguments.since}.")
    return 0


def _user(text: str) -> str | None:
    platform, _, user = text.partition(":")
    return text if platform and user else None


def _limits(store: Store, settings: Settings, arguments: argparse.Namespace) -> int:
    defaults = UserLimits(
        settings.requests_per_minute, settings.tokens_per_day, settings.cost_per_day_usd
    )
    if arguments.action == "show" and not arguments.user:
        print(describe_limits("default", defaults))
        for row in store.overridden_users():
            print(describe_limits(row["user_key"], store.user_limits(row["user_key"], defaults)))
        return 0
    user = _user(arguments.user)
    if user is None:
        return _fail(f"{arguments.user!r} must look like platform:user, e.g. slack:U123")
    if arguments.action == "set":
        value = _limit_value(arguments.limit, arguments.value)
        if isinstance(value, str):
            return _fail(value)
        store.set_user_limit(user, LIMIT_NAMES[arguments.limit], value)
    elif arguments.action in ("block", "unblock"):
        store.set_user_limit(user, "blocked", 1 if arguments.action == "block" else 0)
    print(describe_limits(user, store.user_limits(user, defaults)))
    return 0


def _limit_value(name: str, text: str) -> float | str | None:
    """The number to store, None for 'default', or an error message."""
    if text.lower() == "default":
        return None
    try:
        value = float(text) if LIMIT_NAMES[name] == "cost_per_day_usd" else int(text)
    except ValueError:
        return f"{text!r} is not a number (or 'default')"
    return value if value >= 0 else "limits cannot be negative; 0 means unlimited"

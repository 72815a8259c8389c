"""python -m bot usage / limits: the admin reports and controls, from the shell."""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from pathlib import Path
from typing import Any

from bot import cli_access
from bot.cli_audit import add_command, audit_cli_action, row_count_or_all, run_audit
from bot.commands import describe_all_limits, describe_limits
from bot.config import Settings
from bot.ratelimit import LIMIT_NAMES, default_limits, parse_limit
from bot.report import format_csv, format_json, format_table
from bot.store import Store, open_store, parse_store_url
from bot.usage import parse_period


def add_commands(commands: Any) -> None:
    usage = commands.add_parser("usage", help="usage report")
    usage.add_argument("--since", default="7d", help="period: 30m, 12h, 7d, 4w (default 7d)")
    usage.add_argument("--by", default="user", choices=["user", "channel", "model", "day", "kind"])
    usage.add_argument("--format", default="table", choices=["table", "json", "csv"])
    usage.add_argument("--top", type=row_count_or_all, default=0, help="only the N biggest groups")
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
    add_command(commands)
    cli_access.add_command(commands)
    migrate = commands.add_parser("migrate", help="copy a SQLite database into PostgreSQL")
    migrate.add_argument("--from", dest="source", required=True, help="the SQLite file")
    migrate.add_argument("--to", dest="target", required=True, help="a postgresql:// URL")


def _fail(text: str) -> int:
    print(f"Error: {text}", file=sys.stderr)
    return 2


def run(settings: Settings, arguments: argparse.Namespace) -> int:
    if arguments.command == "migrate" and not Path(arguments.source).is_file():
        return _fail(f"--from {arguments.source}: no such file")
    return asyncio.run(_run(settings, arguments))


async def _run(settings: Settings, arguments: argparse.Namespace) -> int:
    if arguments.command == "migrate":
        return await _migrate(arguments.source, arguments.target)
    store = await open_store(settings.db_path)
    try:
        if arguments.command == "usage":
            return await _usage(store, arguments)
        if arguments.command == "audit":
            return await run_audit(store, arguments)
        if arguments.command == "access":
            return await cli_access.run(store, settings, arguments)
        return await _limits(store, settings, arguments)
    finally:
        await store.close()


async def _usage(store: Store, arguments: argparse.Namespace) -> int:
    try:
        since = time.time() - parse_period(arguments.since)
    except ValueError as error:
        return _fail(str(error))
    rows = await store.usage_report(since, arguments.by, limit=max(0, arguments.top))
    if arguments.format == "json":
        print(format_json(rows, arguments.by))
    elif arguments.format == "csv":
        print(format_csv(rows, arguments.by), end="")
    elif rows:
        # With --top the total is of the rows shown, not of all usage: say so.
        label = f"TOTAL (top {len(rows)} shown)" if arguments.top > 0 else "TOTAL"
        print(format_table(rows, arguments.by, label).strip("`\n"))
    else:
        print(f"No usage in the last {arguments.since}.")
    return 0


async def _migrate(source: str, target: str) -> int:
    from bot.store.migrate import migrate

    copied = await migrate(source, target)
    print(f"{'table':<17} {'rows':>9} {'copied now':>11}")
    for table, total, new in copied:
        print(f"{table:<17} {total:>9,} {new:>11,}")
    print(f"Done: {parse_store_url(target).shown} has everything in {source}.")
    return 0


def _user(text: str) -> str | None:
    platform, _, user = text.partition(":")
    return text if platform and user else None


async def _limits(store: Store, settings: Settings, arguments: argparse.Namespace) -> int:
    defaults = default_limits(settings)
    if arguments.action == "show" and not arguments.user:
        print("\n".join(await describe_all_limits(store, defaults)))
        return 0
    user = _user(arguments.user)
    if user is None:
        return _fail(f"{arguments.user!r} must look like platform:user, e.g. slack:U123")
    before = describe_limits(user, await store.user_limits(user, defaults))
    if arguments.action == "set":
        try:
            column, value = parse_limit(arguments.limit, arguments.value)
        except ValueError as error:
            return _fail(str(error))
        await store.set_user_limit(user, column, value)
    elif arguments.action in ("block", "unblock"):
        await store.set_user_limit(user, "blocked", 1 if arguments.action == "block" else 0)
    after = describe_limits(user, await store.user_limits(user, defaults))
    if arguments.action != "show":
        action = f"limits.set.{arguments.limit}" if arguments.action == "set" else arguments.action
        strip = f"{user}: "
        await audit_cli_action(
            store, action, user, before.removeprefix(strip), after.removeprefix(strip)
        )
    print(after)
    return 0

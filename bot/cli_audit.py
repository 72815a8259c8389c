"""python -m bot audit: the audit log from the shell, and audit rows for the admin
actions taken there (python -m bot limits set|block|unblock)."""

from __future__ import annotations

import argparse
import getpass
import os
import sys
import time
from typing import Any

from bot.audit import AuditLog, format_csv, format_json, format_table
from bot.store import Store
from bot.store.audit_rows import AUDIT_PAGE
from bot.usage import parse_period


def add_command(commands: Any) -> None:
    audit = commands.add_parser("audit", help="admin actions and moderation events")
    audit.add_argument("--since", default="7d", help="period: 30m, 12h, 7d, 4w (default 7d)")
    audit.add_argument("--user", default="", help="only rows this user did or was the target of")
    audit.add_argument("--action", default="", help="only this action, or a prefix: moderation")
    audit.add_argument("--format", default="table", choices=["table", "json", "csv"])
    audit.add_argument("--limit", type=row_count, default=AUDIT_PAGE, help="at most this many rows")


# A row count from the command line: a database integer (an int past 2**63 made the
# query raise), and at least one row.
MAX_ROWS = 1_000_000


def row_count(text: str, least: int = 1) -> int:
    try:
        number = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if not least <= number <= MAX_ROWS:
        raise argparse.ArgumentTypeError(f"{text} is not between {least} and {MAX_ROWS:,}")
    return number


def row_count_or_all(text: str) -> int:
    """--top: 0 means every row."""
    return row_count(text, least=0)


async def run_audit(store: Store, arguments: argparse.Namespace) -> int:
    try:
        since = time.time() - parse_period(arguments.since)
    except ValueError as error:
        print(f"Error: {error}", file=sys.stderr)
        return 2
    entries = await store.audit_entries(since, arguments.user, arguments.action, arguments.limit)
    if arguments.format == "json":
        print(format_json(entries))
    elif arguments.format == "csv":
        print(format_csv(entries), end="")
    elif entries:
        print(format_table(entries))
    else:
        print(f"No audit entries in the last {arguments.since}.")
    return 0


async def audit_cli_action(store: Store, action: str, target: str, before: str, after: str) -> None:
    """One row for an admin action taken with the CLI, by the login that ran it."""
    actor = f"cli:{_login()}"
    await AuditLog(store, time.time).record(actor, ("cli", "", ""), action, target, before, after)


def _login() -> str:
    """Who ran the command. A container's user may have no name (an arbitrary uid, no
    LOGNAME): getuser() then raises, after the change was made but before its row."""
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return f"uid {os.getuid()}"

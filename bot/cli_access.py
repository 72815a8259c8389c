"""python -m bot access show|allow|block|remove channel|user|role <id>, from the shell.

The same words and answers as /access in chat; a change reaches every running
process with its next message.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

from bot import access
from bot.cli_audit import audit_cli_action
from bot.config import Settings
from bot.store import Store


def add_command(commands: Any) -> None:
    parser = commands.add_parser("access", help="show and change who Parley answers where")
    actions = parser.add_subparsers(dest="action", required=True)
    actions.add_parser("show", help="the allow and block lists, config and database")
    for action in ("allow", "block", "remove"):
        one = actions.add_parser(action, help=f"{action} a channel, user or role")
        one.add_argument("kind", choices=list(access.KINDS))
        one.add_argument(
            "id", help="channel platform:workspace:channel, user platform:user, "
            "role discord:<guild>:<role>",
        )  # fmt: skip


async def run(store: Store, settings: Settings, arguments: argparse.Namespace) -> int:
    if arguments.action == "show":
        print(await access.describe(store, settings))
        return 0
    try:
        action, kind = arguments.action, arguments.kind
        answer = await access.change(store, settings, action, kind, arguments.id)
    except ValueError as error:
        print(f"Error: {error}", file=sys.stderr)
        return 2
    # The same audit row as /access in chat (bot/audit_commands.py), by the login.
    target = f"{arguments.kind} {arguments.id}"
    await audit_cli_action(store, f"access.{arguments.action}", target, "", answer)
    print(answer)
    return 0

"""python -m bot <command>: run adapters, chat locally, report usage, manage limits."""

from __future__ import annotations

import argparse
import asyncio
import getpass
import logging
import sys
from collections.abc import Sequence

from bot import cli_admin
from bot.config import ConfigError, Settings, load_environment_file, load_settings
from bot.platforms import MISSING, availability, choose_adapters

log = logging.getLogger("parley")


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m bot", description=__doc__)
    parser.add_argument(
        "--config", help="config file (default: PARLEY_CONFIG or config/parley.toml)"
    )
    parser.add_argument(
        "--db", help="database: a SQLite path or a postgresql:// URL (default: PARLEY_DB)"
    )
    parser.add_argument("--model", help="chat model name (default: PARLEY_MODEL or config)")
    parser.add_argument("-v", "--verbose", action="store_true", help="log debug details")
    commands = parser.add_subparsers(dest="command")
    run = commands.add_parser("run", help="run adapters: slack, discord, web")
    # No choices=: argparse in 3.11 rejects an empty list against them; names are
    # checked in choose_adapters with a clearer message.
    run.add_argument("adapters", nargs="*", default=[], help="slack, discord and/or web")
    chat = commands.add_parser("chat", help="chat in the terminal")
    chat.add_argument("--user", default="", help="who is speaking (default: your login)")
    chat.add_argument("--channel", default="local", help="conversation channel id")
    cli_admin.add_commands(commands)
    return parser


def _settings(arguments: argparse.Namespace) -> Settings:
    overrides = {
        name: value
        for name, value in (("store.path", arguments.db), ("model.name", arguments.model))
        if value
    }
    return load_settings(arguments.config, overrides=overrides)


def _status() -> int:
    print("Parley: one LLM bot for Slack and Discord.\n")
    for line in availability():
        print(line)
    print(
        "\nCommands: run [slack] [discord] [web], chat, usage, limits, audit, access."
        " See --help."
    )
    return 0


async def _chat(settings: Settings, user: str, channel: str) -> None:
    from adapters.console import chat
    from bot.app import open_engine

    async with open_engine(settings) as engine:
        await chat(engine, user or getpass.getuser(), channel, sys.stdin, sys.stdout)


async def _run(settings: Settings, names: Sequence[str]) -> None:
    from bot.runner import run_adapters

    chosen = choose_adapters(names)
    if not names and chosen == ["web"]:
        print(
            "No Slack or Discord token is set, so Parley starts its local web chat at "
            f"http://{settings.web_host}:{settings.port}/\n"
            f"To add Slack: {MISSING['slack']}.\nTo add Discord: {MISSING['discord']}.",
            file=sys.stderr,
        )
    await run_adapters(settings, chosen)


def main(argv: Sequence[str] | None = None) -> int:
    arguments = _parser().parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if arguments.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    # The HTTP clients log every request at INFO: noise in a chat terminal.
    for noisy in ("httpx2", "httpx", "httpcore"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    if arguments.command is None:
        load_environment_file()  # so tokens kept in .env count as set
        return _status()
    try:
        settings = _settings(arguments)
        if arguments.command == "chat":
            asyncio.run(_chat(settings, arguments.user, arguments.channel))
        elif arguments.command == "run":
            asyncio.run(_run(settings, arguments.adapters))
        else:
            return cli_admin.run(settings, arguments)
    except ConfigError as error:
        print(f"Configuration error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())

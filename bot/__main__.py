"""python -m bot <command>: run adapters, chat locally, report usage, manage limits."""

from __future__ import annotations

import argparse
import asyncio
import getpass
import importlib.metadata
import logging
import os
import sys
from collections.abc import Sequence
from typing import NoReturn

from bot import cli_admin
from bot.config import ConfigError, Settings, load_environment_file, load_settings
from bot.platforms import MISSING, availability, choose_adapters
from bot.startup import StartupError, port_problem, sqlite_problem, token_problem
from bot.store.url import parse_store_url

log = logging.getLogger("parley")


def _global_flags(parser: argparse.ArgumentParser) -> None:
    """--config, --db, --model and -v, on the main parser and every subcommand's. SUPPRESS:
    a subcommand that was not given a flag must not reset what came before it."""
    flag = argparse.SUPPRESS
    parser.add_argument(
        "--config", default=flag, help="config file (default: PARLEY_CONFIG or config/parley.toml)"
    )
    parser.add_argument(
        "--db",
        default=flag,
        help="database: a SQLite path or a postgresql:// URL (default: PARLEY_DB)",
    )
    parser.add_argument(
        "--model", default=flag, help="chat model name (default: PARLEY_MODEL or config)"
    )
    parser.add_argument(
        "-v", "--verbose", action="store_true", default=flag, help="log debug details"
    )
    for action in parser._actions:  # argparse keeps subparsers only here
        if isinstance(action, argparse._SubParsersAction):
            for subparser in dict.fromkeys(action.choices.values()):
                _global_flags(subparser)


class _Parser(argparse.ArgumentParser):
    """A wrong flag is one line on stderr and exit 2, as every other error here is; the
    full usage stays behind --help. (Subcommands inherit the class.)"""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def _parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="python -m bot", description=__doc__)
    parser.add_argument("--version", action="version", version=f"Parley {_version()}")
    commands = parser.add_subparsers(dest="command")
    run = commands.add_parser("run", help="run adapters: slack, discord, web")
    # No choices=: argparse in 3.11 rejects an empty list against them; names are
    # checked in choose_adapters with a clearer message.
    run.add_argument("adapters", nargs="*", default=[], help="slack, discord and/or web")
    chat = commands.add_parser("chat", help="chat in the terminal")
    chat.add_argument("--user", default="", help="who is speaking (default: your login)")
    chat.add_argument("--channel", default="local", help="conversation channel id")
    cli_admin.add_commands(commands)
    check = commands.add_parser("check", help="check every part, one line each")
    check.add_argument("--format", default="table", choices=["table", "json"])
    _global_flags(parser)
    return parser


def _version() -> str:
    try:
        return importlib.metadata.version("parley")
    except importlib.metadata.PackageNotFoundError:
        return "(not installed)"


def _settings(arguments: argparse.Namespace) -> Settings:
    overrides = {
        name: value
        for name, value in (
            ("store.path", getattr(arguments, "db", None)),
            ("model.name", getattr(arguments, "model", None)),
        )
        if value
    }
    return load_settings(getattr(arguments, "config", None), overrides=overrides)


def _local_faults(arguments: argparse.Namespace) -> tuple[str, str]:
    """What stops the chats (config, database) and the web chat (port), found without
    network calls: the status page must not call a chat ready that cannot start."""
    try:
        settings = _settings(arguments)
        address = parse_store_url(settings.db_path)
    except ConfigError as error:
        return str(error), ""
    database = sqlite_problem(address.target) if address.kind == "sqlite" else None
    return database or "", port_problem(settings.web_host, settings.port) or ""


def _status(arguments: argparse.Namespace) -> int:
    print("Parley: one LLM bot for Slack and Discord.\n")
    for line in availability(*_local_faults(arguments)):
        print(line)
    print(
        "\nCommands: run [slack] [discord] [web], chat, check, usage, limits, audit, access."
        " See --help."
    )
    return 0


async def _chat(settings: Settings, user: str, channel: str) -> None:
    from adapters.console import chat
    from bot.app import open_engine

    if sys.stdin is None:  # started with stdin closed (<&-): nothing to read messages from
        raise StartupError(
            "chat reads messages from standard input, which is closed: run it in a "
            "terminal, or pipe the messages in (one a line)"
        )
    async with open_engine(settings) as engine:
        # No --user: the person running Parley is at the terminal, and is its admin.
        owner = not user
        await chat(engine, user or getpass.getuser(), channel, sys.stdin, sys.stdout, owner=owner)


async def _run(settings: Settings, names: Sequence[str]) -> None:
    from bot.runner import run_adapters

    chosen = choose_adapters(names)
    for problem in filter(None, map(token_problem, chosen)):
        raise StartupError(problem)
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
    verbose = bool(getattr(arguments, "verbose", False))
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    # The HTTP clients log every request at INFO: noise in a chat terminal.
    for noisy in ("httpx2", "httpx", "httpcore"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    if arguments.command is None:
        load_environment_file()  # so tokens kept in .env count as set
        return _status(arguments)
    try:
        if arguments.command == "check":
            from bot.check import check_command

            return check_command(lambda: _settings(arguments), arguments.format)
        settings = _settings(arguments)
        if arguments.command == "chat":
            asyncio.run(_chat(settings, arguments.user, arguments.channel))
        elif arguments.command == "run":
            asyncio.run(_run(settings, arguments.adapters))
        else:
            return cli_admin.run(settings, arguments)
    except StartupError as error:
        print(f"Parley cannot start: {error}", file=sys.stderr)
        return 2
    except ConfigError as error:
        print(f"Configuration error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:  # the reader went away (| head): end quietly, as Unix tools do
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 141
    except Exception as error:  # a traceback only when asked for: -v
        if verbose:
            raise
        print(
            f"Parley stopped: {type(error).__name__}: {error} (-v shows the traceback)",
            file=sys.stderr,
        )
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())

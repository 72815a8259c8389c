"""python -m bot check: every part Parley needs, one line each with ✓/✗ and the fix.

Exit 0 only when every item holds. Platforms are checked when their tokens are set
(a half-set platform is an item that fails); `--format json` prints a list of
{name, ok, detail}.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable, Sequence
from pathlib import Path

from bot.app import build_model_client
from bot.config import ConfigError, Settings, secret
from bot.discovery import discover
from bot.probes import Item, probe_discord, probe_model, probe_slack
from bot.startup import StartupError, model_setting_problem, port_problem
from bot.store import open_store, parse_store_url
from bot.usage import Prices

SLACK_VARIABLES = ("SLACK_BOT_TOKEN", "SLACK_SIGNING_SECRET", "SLACK_APP_TOKEN")


async def probe_store(settings: Settings) -> Item:
    """Opens (created or migrated to the current schema) and takes a write."""
    shown = parse_store_url(settings.db_path).shown
    try:
        store = await open_store(settings.db_path)
    except StartupError as error:
        return Item("database", False, str(error))
    except Exception as error:  # any driver's failure is this item's, not a crash
        return Item("database", False, f"PARLEY_DB {shown}: {error}")
    try:
        return Item("database", True, f"{store.description}: opens, writable, schema current")
    finally:
        await store.close()


def probe_port(settings: Settings) -> Item:
    problem = port_problem(settings.web_host, settings.port)
    where = f"{settings.web_host}:{settings.port}"
    return Item("http port", problem is None, problem or f"{where} is free")


async def _probe_model(settings: Settings) -> list[Item]:
    if problem := model_setting_problem():
        return [Item("model settings", False, problem)]
    endpoint = await discover(settings)
    model = build_model_client(settings, endpoint)
    try:
        return await probe_model(settings, endpoint, model)
    finally:
        await model.close()


def _config_item(settings: Settings) -> Item:
    # Run from another folder, config/parley.toml is not there: say so, not "valid".
    if settings.config_path and Path(settings.config_path).is_file():
        return Item("config", True, f"{settings.config_path}: valid")
    return Item("config", True, "no config file here, defaults used")


async def run_checks(settings: Settings) -> list[Item]:
    items = [_config_item(settings)]
    items.append(await probe_store(settings))
    items += await _probe_model(settings)
    if any(secret(name) for name in SLACK_VARIABLES):
        items += await probe_slack()
    if secret("DISCORD_BOT_TOKEN"):
        items += await probe_discord()
    items.append(probe_port(settings))
    return items


def render(items: Sequence[Item], form: str) -> str:
    if form == "json":
        return json.dumps([item.as_json() for item in items], indent=2)
    return "\n".join(f"{'✓' if item.ok else '✗'} {item.name}: {item.detail}" for item in items)


async def check(settings: Settings, form: str) -> int:
    items = await run_checks(settings)
    print(render(items, form), flush=True)
    return 0 if all(item.ok for item in items) else 1


def check_command(load: Callable[[], Settings], form: str) -> int:
    """An invalid config is the first item that fails, in the format asked for."""
    try:
        settings = load()
        Prices.load(settings.prices_path)  # usage.prices_path is part of the config
    except ConfigError as error:
        print(render([Item("config", False, str(error))], form), flush=True)
        return 1
    return asyncio.run(check(settings, form))

"""Building the engine from settings: the one place that wires the parts together."""

from __future__ import annotations

import asyncio
import logging
import sys
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import replace

from bot.config import Settings, secret
from bot.discovery import Endpoint, describe, discover
from bot.engine import Engine
from bot.llm import ModelClient
from bot.startup import StartupError, model_setting_problem
from bot.store import open_store
from bot.tokens import encoding
from bot.tools.builtins import register_builtins
from bot.tools.fetch import register_fetch
from bot.tools.plugins import load_entry_points, load_modules
from bot.tools.registry import Registry
from bot.usage import Prices

log = logging.getLogger(__name__)


def build_model_client(settings: Settings, endpoint: Endpoint) -> ModelClient:
    return ModelClient(
        api_key=secret("OPENAI_API_KEY"),
        base_url=endpoint.base_url or None,
        configured=endpoint.configured,
        timeout_seconds=settings.timeout_seconds,
        first_token_seconds=settings.first_token_seconds,
        deadline_seconds=settings.deadline_seconds,
        max_attempts=settings.max_attempts,
        retry_max_wait_seconds=settings.retry_max_wait_seconds,
    )


def build_registry(settings: Settings) -> Registry:
    registry = Registry()
    register_builtins(registry)
    register_fetch(registry, settings.fetch)
    for problem in load_modules(registry, settings.tool_modules) + load_entry_points(registry):
        log.warning("tool plugin skipped: %s", problem)
    return registry


@asynccontextmanager
async def open_engine(settings: Settings) -> AsyncIterator[Engine]:
    """An engine with its store, model client, tools and MCP servers; closed on exit."""
    if problem := model_setting_problem():
        raise StartupError(problem)
    # The tokenizer takes 0.3-3 s to load: off the loop, while the rest starts, rather
    # than on the first message, which would stall every other conversation meanwhile.
    tokenizer = asyncio.create_task(asyncio.to_thread(encoding))
    endpoint = await discover(settings)
    # The first thing Parley tells you about: which model, or how to set one.
    print(describe(endpoint), file=sys.stderr, flush=True)
    settings = replace(settings, model=endpoint.model)
    store = await open_store(settings.db_path)
    log.info("store: %s", store.description)
    model = build_model_client(settings, endpoint)
    registry = build_registry(settings)
    try:
        async with AsyncExitStack() as stack:
            if settings.mcp_servers:
                await stack.enter_async_context(_mcp_servers(registry, settings))
            prices = Prices.load(settings.prices_path)
            _warn_unpriced(settings, prices)
            engine = Engine(settings, store, model, tools=registry, prices=prices)
            await tokenizer
            try:
                yield engine
            finally:
                await engine.close()
    finally:
        await model.close()
        await store.close()


def _warn_unpriced(settings: Settings, prices: Prices) -> None:
    """A model without a price costs nothing as far as [budget] can tell: say so."""
    s = settings
    if not (s.budget_daily_usd or s.budget_monthly_usd or s.budget_workspaces):
        return
    for model in dict.fromkeys(m for m in (s.model, s.budget_fallback_model) if m):
        if model not in prices.prices:
            log.warning(
                "budget: %s has no price in %s, so its spend does not count toward the caps",
                model, s.prices_path,
            )  # fmt: skip


@asynccontextmanager
async def _mcp_servers(registry: Registry, settings: Settings) -> AsyncIterator[None]:
    # Imported only when servers are configured: the mcp package takes most of a
    # second to import, which every `python -m bot chat` would otherwise pay.
    from bot.tools.mcp import McpServers

    async with McpServers(registry, settings.mcp_servers) as servers:
        for problem in servers.errors:
            log.warning("MCP server skipped: %s", problem)
        for name in servers.connected:
            log.info("MCP server connected: %s", name)
        yield

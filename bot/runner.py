"""Run the chosen adapters in one process, sharing one engine and one HTTP server."""

from __future__ import annotations

import asyncio
import importlib
import logging
import signal
from collections.abc import AsyncIterator, Sequence
from typing import Any, Protocol

from aiohttp import web

from bot.app import open_engine
from bot.config import Settings
from bot.engine import Engine
from bot.http import make_app, start_server
from bot.live_config import LiveSettings
from bot.messages import Message, ReplyEvent
from bot.startup import StartupError, port_error_line, port_problem
from bot.turns import Recoverer

log = logging.getLogger(__name__)


class Adapter(Protocol):
    name: str

    def add_routes(self, app: web.Application) -> None: ...
    async def start(self) -> None: ...
    async def stop(self) -> None: ...
    def connected(self) -> bool: ...


def create_adapter(name: str, engine: Engine, settings: Settings) -> Adapter:
    module = importlib.import_module(f"adapters.{name}")
    adapter: Adapter = module.create(engine, settings)
    return adapter


def connect_alerts(engine: Engine, adapters: Sequence[object]) -> None:
    """Admins on a platform whose adapter can send direct messages get alerts there."""
    for adapter in adapters:
        direct = getattr(adapter, "send_direct", None)
        if direct is not None:
            engine.safety.alerts.register(getattr(adapter, "name", ""), direct)


def recoverer(adapter: object) -> Recoverer | None:
    """The adapter's way to answer a turn another process left, counted among its
    answers in progress: stopping the adapter gives a recovered answer the same grace
    period as any other, rather than cutting it off midway."""
    recover = getattr(adapter, "recover", None)
    track = getattr(getattr(adapter, "in_flight", None), "track", None)
    if recover is None or track is None:
        return recover

    async def tracked(message: Message, events: AsyncIterator[ReplyEvent]) -> None:
        await track(recover(message, events))

    return tracked


async def _until_terminated(adapters: Sequence[Adapter]) -> None:
    """Wait for SIGTERM or SIGINT, so platforms stopping a process get a clean exit; or
    for an adapter's fatal refusal (its `fatal` future), raised as a StartupError."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signal_number in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signal_number, stop.set)
    stopping = asyncio.ensure_future(stop.wait())
    fatal: list[asyncio.Future[str]] = [
        future for adapter in adapters if (future := getattr(adapter, "fatal", None))
    ]
    waiting: list[asyncio.Future[Any]] = [stopping, *fatal]
    await asyncio.wait(waiting, return_when=asyncio.FIRST_COMPLETED)
    stopping.cancel()
    for future in fatal:
        if future.done():
            raise StartupError(future.result())
    log.info("stopping")


async def run_adapters(settings: Settings, names: Sequence[str]) -> None:
    """Start every adapter and the HTTP server; run until cancelled."""
    busy = port_problem(settings.web_host, settings.port)
    if busy:  # before the store and the model: the fault to fix is here
        raise StartupError(busy)
    async with open_engine(settings) as engine:
        adapters = [create_adapter(name, engine, settings) for name in names]
        app = make_app(engine, {adapter.name: adapter.connected for adapter in adapters})
        for adapter in adapters:
            adapter.add_routes(app)
        connect_alerts(engine, adapters)
        try:
            runner = await start_server(app, settings.web_host, settings.port)
        except OSError as error:  # taken in the meantime
            raise StartupError(port_error_line(settings.web_host, settings.port, error)) from None
        live = LiveSettings(engine)  # config/parley.toml re-read when it changes
        live.start()
        log.info("HTTP on http://%s:%s; adapters: %s", settings.web_host, settings.port, names)
        try:
            for adapter in adapters:
                await adapter.start()
                recover = recoverer(adapter)
                if recover is not None:
                    # Messages of this platform that a process claimed and never
                    # answered (it died, or stopped mid-answer) are answered here.
                    engine.recover_for(adapter.name, recover)
            await _until_terminated(adapters)
        finally:
            engine.turns.stop_recovering()  # stopping: the next process takes them over
            # Together: each finishes its answers in progress within the grace period.
            await live.stop()
            await asyncio.gather(*(adapter.stop() for adapter in adapters))
            await runner.cleanup()

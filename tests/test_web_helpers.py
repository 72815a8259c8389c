"""Shared by the web tests: serve the real app on a real socket, talk to it over HTTP and
WebSocket. (A test_ module so it may live beside them; it holds no tests itself.)"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable, Mapping
from contextlib import asynccontextmanager
from typing import Any

from aiohttp import ClientSession, ClientWebSocketResponse, CookieJar

from adapters.web import WebAdapter
from bot.engine import Engine
from bot.http import make_app, start_server

FRAME_TIMEOUT = 10.0


@asynccontextmanager
async def serve(
    engine: Engine,
    adapter: WebAdapter | None = None,
    adapters: Mapping[str, Callable[[], bool]] | None = None,
    clock: Callable[[], float] = time.monotonic,
) -> AsyncIterator[str]:
    """The process's one HTTP app, as the runner builds it, on 127.0.0.1:<free port>.
    `clock` drives the /health cache."""
    status = dict(adapters or {})
    if adapter is not None:
        status[adapter.name] = adapter.connected
    app = make_app(engine, status, clock=clock)
    if adapter is not None:
        adapter.add_routes(app)
    runner = await start_server(app, "127.0.0.1", 0, shutdown_timeout=1.0)
    if adapter is not None:
        await adapter.start()
    try:
        yield f"http://127.0.0.1:{runner.addresses[0][1]}"
    finally:
        if adapter is not None:
            await adapter.stop()
        await runner.cleanup()


def browser_like() -> ClientSession:
    # unsafe=True: aiohttp's jar otherwise refuses cookies from an IP address host.
    return ClientSession(cookie_jar=CookieJar(unsafe=True))


async def receive(socket: ClientWebSocketResponse) -> dict[str, Any]:
    frame: dict[str, Any] = await asyncio.wait_for(socket.receive_json(), FRAME_TIMEOUT)
    return frame


async def until_done(socket: ClientWebSocketResponse) -> list[dict[str, Any]]:
    """Every frame of one answer, up to and including {"type": "done"}."""
    frames = [await receive(socket)]
    while frames[-1]["type"] != "done":
        frames.append(await receive(socket))
    return frames


async def ask(socket: ClientWebSocketResponse, text: str) -> list[dict[str, Any]]:
    await socket.send_json({"type": "message", "text": text})
    return await until_done(socket)

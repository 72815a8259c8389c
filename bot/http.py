"""The process's HTTP endpoints that every deployment has: /health and /metrics."""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from datetime import UTC, datetime

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST

from bot.engine import Engine

ENGINE_KEY = web.AppKey("engine", Engine)
ADAPTERS_KEY = web.AppKey("adapters", dict[str, Callable[[], bool]])


def health_report(engine: Engine, adapters: Mapping[str, Callable[[], bool]]) -> dict[str, object]:
    writable = engine.store.writable()
    connected = {name: is_connected() for name, is_connected in adapters.items()}
    last = engine.last_model_success
    return {
        "status": "ok" if writable and all(connected.values()) else "not ready",
        "database_writable": writable,
        "adapters": connected,
        "last_model_success": datetime.fromtimestamp(last, UTC).isoformat() if last else None,
    }


async def health(request: web.Request) -> web.Response:
    adapters: dict[str, Callable[[], bool]] = request.app[ADAPTERS_KEY]
    report = health_report(request.app[ENGINE_KEY], adapters)
    status = 200 if report["status"] == "ok" else 503
    return web.json_response(report, status=status, dumps=json.dumps)


async def metrics(request: web.Request) -> web.Response:
    body = request.app[ENGINE_KEY].metrics.exposition()
    response = web.Response(body=body)
    # prometheus_client's content type carries its own charset parameter.
    response.headers["Content-Type"] = CONTENT_TYPE_LATEST
    return response


def make_app(engine: Engine, adapters: Mapping[str, Callable[[], bool]]) -> web.Application:
    """The aiohttp app every process serves; adapters add their own routes to it."""
    app = web.Application(client_max_size=1024 * 1024)
    app[ENGINE_KEY] = engine
    app[ADAPTERS_KEY] = dict(adapters)
    app.router.add_get("/health", health)
    app.router.add_get("/metrics", metrics)
    return app

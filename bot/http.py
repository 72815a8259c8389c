"""The process's HTTP endpoints that every deployment has: /health and /metrics.

Both share the port Slack's HTTP mode exposes to the internet, so neither may be a
free lever for outsiders: /metrics (cost and token totals) takes a bearer token when
PARLEY_METRICS_TOKEN is set, and /health answers from a report at most a second old,
so a flood of probes cannot queue on the database's write lock.
"""

from __future__ import annotations

import asyncio
import hmac
import json
import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime

from aiohttp import web
from aiohttp.web_log import AccessLogger
from prometheus_client import CONTENT_TYPE_LATEST

from bot.config import Settings, secret
from bot.engine import Engine
from bot.http_guard import (
    GUARD_KEY,
    ConnectionGuard,
    GuardedSite,
    ServerLimits,
    quiet_accept_errors,
)

HEALTH_CACHE_SECONDS = 1.0
# A probe that waits longer than this (a lock held elsewhere) reports not writable.
HEALTH_PROBE_SECONDS = 0.8
# Longer than the idle timeout of common proxies (60 s), so a proxy never reuses a
# connection just as Parley closes it.
KEEPALIVE_SECONDS = 75.0


@dataclass
class HealthCache:
    """The last /health report and when it was made, on a monotonic clock."""

    clock: Callable[[], float]
    report: dict[str, object] | None = None
    made_at: float = 0.0


ENGINE_KEY = web.AppKey("engine", Engine)
ADAPTERS_KEY = web.AppKey("adapters", dict[str, Callable[[], bool]])
HEALTH_CACHE_KEY = web.AppKey("health_cache", HealthCache)


async def health_report(
    engine: Engine, adapters: Mapping[str, Callable[[], bool]]
) -> dict[str, object]:
    try:
        writable = await asyncio.wait_for(engine.store.writable(), HEALTH_PROBE_SECONDS)
        database = "ok" if writable else "not writable"
    except TimeoutError:  # another process holds the write lock
        writable, database = False, "busy"
    connected = {name: is_connected() for name, is_connected in adapters.items()}
    last = engine.last_model_success
    return {
        "status": "ok" if writable and all(connected.values()) else "not ready",
        "database_writable": writable,
        "database": database,
        "adapters": connected,
        "last_model_success": datetime.fromtimestamp(last, UTC).isoformat() if last else None,
    }


async def cached_health_report(app: web.Application) -> dict[str, object]:
    """health_report, made afresh at most once per HEALTH_CACHE_SECONDS."""
    cache = app[HEALTH_CACHE_KEY]
    now = cache.clock()
    if cache.report is None or now - cache.made_at >= HEALTH_CACHE_SECONDS:
        adapters: dict[str, Callable[[], bool]] = app[ADAPTERS_KEY]
        cache.report = await health_report(app[ENGINE_KEY], adapters)
        cache.made_at = now
    return cache.report


async def health(request: web.Request) -> web.Response:
    report = await cached_health_report(request.app)
    status = 200 if report["status"] == "ok" else 503
    return web.json_response(report, status=status, dumps=json.dumps)


def metrics_allowed(request: web.Request) -> bool:
    """No PARLEY_METRICS_TOKEN: open. Else its bearer token is required."""
    token = secret("PARLEY_METRICS_TOKEN")
    if not token:
        return True
    scheme, _, given = request.headers.get("Authorization", "").partition(" ")
    # compare_digest: the response time reveals nothing about how much of it matched.
    matches = hmac.compare_digest(given.strip().encode(), token.encode())
    return scheme.lower() == "bearer" and matches


async def metrics(request: web.Request) -> web.Response:
    if not metrics_allowed(request):
        return web.Response(
            text="Send Authorization: Bearer <PARLEY_METRICS_TOKEN>.\n", status=401,
            headers={"WWW-Authenticate": 'Bearer realm="parley-metrics"'},
        )  # fmt: skip
    body = request.app[ENGINE_KEY].metrics.exposition()
    response = web.Response(body=body)
    # prometheus_client's content type carries its own charset parameter.
    response.headers["Content-Type"] = CONTENT_TYPE_LATEST
    return response


def make_app(
    engine: Engine,
    adapters: Mapping[str, Callable[[], bool]],
    *,
    clock: Callable[[], float] = time.monotonic,
) -> web.Application:
    """The aiohttp app every process serves; adapters add their own routes to it."""
    guard = ConnectionGuard(server_limits(engine.settings))
    app = web.Application(client_max_size=1024 * 1024, middlewares=[guard.middleware])
    app[GUARD_KEY] = guard
    app[ENGINE_KEY] = engine
    app[ADAPTERS_KEY] = dict(adapters)
    app[HEALTH_CACHE_KEY] = HealthCache(clock)
    app.router.add_get("/health", health)
    app.router.add_get("/metrics", metrics)
    return app


def server_limits(settings: Settings) -> ServerLimits:
    return ServerLimits(
        settings.header_timeout_seconds, settings.body_timeout_seconds, settings.max_connections
    )


class ProblemAccessLogger(AccessLogger):
    """The access log of requests that went wrong (a refused login or signature, a
    missing page, a server error); of every request only with -v. A line per request
    (health probes, metrics scrapes, every Slack event) would drown the rest and cost
    about a twentieth of an answer's CPU."""

    def log(self, request: web.BaseRequest, response: web.StreamResponse, time: float) -> None:
        if response.status >= 400 or self.logger.isEnabledFor(logging.DEBUG):
            super().log(request, response, time)


async def start_server(
    app: web.Application, host: str, port: int, *, shutdown_timeout: float = 60.0
) -> web.AppRunner:
    """Serve an app from make_app on host:port, its connections under the app's guard.
    Stop it with runner.cleanup()."""
    quiet_accept_errors(asyncio.get_running_loop())
    runner = web.AppRunner(
        app, keepalive_timeout=KEEPALIVE_SECONDS, shutdown_timeout=shutdown_timeout,
        access_log_class=ProblemAccessLogger,
    )  # fmt: skip
    await runner.setup()
    try:
        await GuardedSite(runner, host, port).start()
    except BaseException:
        await runner.cleanup()
        raise
    return runner

"""Deadlines and a cap for the HTTP server's connections (slowloris, descriptor floods).

aiohttp's server has no deadline for reading a request: its only timer is keep-alive
(3630 s by default, tuned for proxies that reuse idle connections; from 3.14 it is also
armed when a connection opens, earlier versions wait forever), and a handler reading a
body waits as long as the client trickles it. read_bufsize, max_line_size and
max_field_size bound the memory of one connection, never its time or how many there are.
So a few hundred half-sent requests held every descriptor the process had, and then
asyncio logged each failed accept() without pause. Hand-written here, with only public
hooks (a protocol factory and a middleware), because aiohttp offers nothing to tune:

- a request's head must arrive within `header_timeout` of the connection opening or of
  the first byte of the next request on a kept-alive connection;
- its body, within `body_timeout`, read once by the middleware (aiohttp keeps it, so
  handlers calling read()/text()/json() get it at once);
- at most `max_connections` at once, below the open-file limit: more are answered 503;
- "accept() out of system resource" is logged at most once every ten seconds.
"""

from __future__ import annotations

import asyncio
import logging
import resource
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, TypeVar

from aiohttp import web

log = logging.getLogger(__name__)

# Descriptors kept for the database, model and platform connections and log files.
FD_RESERVE = 64
MIN_CONNECTIONS = 16
LOG_INTERVAL_SECONDS = 10.0
ACCEPT_ERROR = "socket.accept() out of system resource"
REQUEST_TIMEOUT = b"HTTP/1.1 408 Request Timeout\r\nConnection: close\r\nContent-Length: 0\r\n\r\n"
OVERLOADED = (
    b"HTTP/1.1 503 Service Unavailable\r\nConnection: close\r\nRetry-After: 5\r\n"
    b"Content-Length: 0\r\n\r\n"
)


@dataclass(frozen=True, slots=True)
class ServerLimits:
    header_timeout: float
    body_timeout: float
    max_connections: int


class RateLimitedLog:
    """One log line per interval at most; the next one says how many were left out."""

    def __init__(
        self,
        logger: logging.Logger,
        interval: float = LOG_INTERVAL_SECONDS,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.logger = logger
        self.interval = interval
        self.clock = clock
        self.last = float("-inf")
        self.skipped = 0

    def log(self, level: int, message: str, *args: object) -> None:
        now = self.clock()
        if now - self.last < self.interval:
            self.skipped += 1
            return
        if self.skipped:
            message += f" ({self.skipped} more like this not logged)"
        self.last, self.skipped = now, 0
        self.logger.log(level, message, *args)


def connection_cap(configured: int, soft_file_limit: int | None = None) -> int:
    """`configured`, lowered to leave FD_RESERVE descriptors under the open-file limit."""
    if soft_file_limit is None:
        soft_file_limit = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
    if soft_file_limit == resource.RLIM_INFINITY or soft_file_limit <= 0:
        return configured
    return min(configured, max(MIN_CONNECTIONS, soft_file_limit - FD_RESERVE))


class _Connection(asyncio.Protocol):
    """aiohttp's protocol for one connection, behind the deadline for request heads.

    States: "head" (reading a request's head: the deadline runs), "busy" (a handler
    runs, a WebSocket included: no deadline), "idle" (between requests: keep-alive is
    aiohttp's; the first byte of the next request starts a new deadline).
    """

    def __init__(self, guard: ConnectionGuard, inner: asyncio.Protocol) -> None:
        self.guard = guard
        self.inner = inner
        self.transport: asyncio.Transport | None = None
        self.state = "head"
        self.timer: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        self._arm()
        self.inner.connection_made(transport)

    def data_received(self, data: bytes) -> None:
        if self.state == "idle":
            self.state = "head"
            self._arm()
        self.inner.data_received(data)

    def eof_received(self) -> bool | None:
        return self.inner.eof_received()

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        self.guard.closed(self)
        self.inner.connection_lost(exc)

    def pause_writing(self) -> None:
        self.inner.pause_writing()

    def resume_writing(self) -> None:
        self.inner.resume_writing()

    def request_started(self) -> None:
        self._disarm()
        self.state = "busy"

    def request_finished(self) -> None:
        self.state = "idle"

    def refuse(self, response: bytes) -> None:
        """Answer with a bare status line and close, whatever aiohttp was doing."""
        self._disarm()
        transport = self.transport
        if transport is not None and not transport.is_closing():
            transport.write(response)
            transport.close()

    def _arm(self) -> None:
        self._disarm()
        loop = asyncio.get_running_loop()
        self.timer = loop.call_later(self.guard.limits.header_timeout, self._head_too_slow)

    def _disarm(self) -> None:
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None

    def _head_too_slow(self) -> None:
        self.timer = None
        if self.state == "head":
            self.guard.slow_log.log(
                logging.INFO, "closed a connection that sent no complete request within %.0f s",
                self.guard.limits.header_timeout,
            )  # fmt: skip
            self.refuse(REQUEST_TIMEOUT)


class _Overloaded(asyncio.Protocol):
    """A connection over the cap: told 503 and closed at once, so it holds no descriptor."""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        transport.write(OVERLOADED)
        transport.close()


class ConnectionGuard:
    """The connections of one HTTP app: counted, capped, and given read deadlines."""

    def __init__(self, limits: ServerLimits) -> None:
        self.limits = limits
        self.cap = connection_cap(limits.max_connections)
        self.connections: dict[object, _Connection] = {}  # aiohttp's protocol -> ours
        self.slow_log = RateLimitedLog(log)
        self.full_log = RateLimitedLog(log)

    def factory(self, make: Callable[[], asyncio.Protocol]) -> Callable[[], asyncio.Protocol]:
        """Wrap aiohttp's protocol factory (the runner's server)."""

        def build() -> asyncio.Protocol:
            if len(self.connections) >= self.cap:
                self.full_log.log(
                    logging.WARNING, "%d connections open (web.max_connections): refusing more",
                    self.cap,
                )  # fmt: skip
                return _Overloaded()
            connection = _Connection(self, make())
            # Counted from now, not from connection_made: asyncio accepts a whole
            # backlog of connections before any of them is made.
            self.connections[connection.inner] = connection
            return connection

        return build

    def closed(self, connection: _Connection) -> None:
        self.connections.pop(connection.inner, None)

    @web.middleware
    async def middleware(
        self, request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
    ) -> web.StreamResponse:
        connection = self.connections.get(request.protocol)
        if connection is None:  # served by some other runner (tests' TestServer)
            return await handler(request)
        connection.request_started()
        try:
            own_body = getattr(request.match_info.handler, OWN_BODY, False)
            if request.body_exists and not own_body and not await self._read_body(request):
                connection.refuse(REQUEST_TIMEOUT)
                raise web.HTTPRequestTimeout()
            return await handler(request)
        finally:
            connection.request_finished()

    async def _read_body(self, request: web.Request) -> bool:
        """Read the body (at most client_max_size) within the deadline; False if too slow."""
        try:
            async with asyncio.timeout(self.limits.body_timeout):
                await request.read()
        except TimeoutError:
            self.slow_log.log(
                logging.INFO, "closed a connection whose request body took over %.0f s",
                self.limits.body_timeout,
            )  # fmt: skip
            return False
        return True


OWN_BODY = "_parley_reads_own_body"
Handler = TypeVar("Handler", bound=Callable[..., Any])


def reads_own_body(handler: Handler) -> Handler:
    """Mark a handler that streams its body itself (file uploads, larger than
    client_max_size): it must bound the body's size and time on its own."""
    setattr(handler, OWN_BODY, True)
    return handler


GUARD_KEY = web.AppKey("parley-connection-guard", ConnectionGuard)


class GuardedSite(web.BaseSite):
    """A TCP site whose connections go through the app's ConnectionGuard."""

    def __init__(self, runner: web.AppRunner, host: str, port: int) -> None:
        super().__init__(runner)
        self.runner = runner
        self.host = host
        self.requested_port = port
        self.server: asyncio.AbstractServer | None = None

    @property
    def name(self) -> str:
        return f"http://{self.host}:{self.requested_port}"

    async def start(self) -> None:
        await super().start()
        server = self.runner.server
        assert server is not None, "runner.setup() first"
        guard = self.runner.app[GUARD_KEY]
        loop = asyncio.get_running_loop()
        factory = guard.factory(server)
        self.server = await loop.create_server(factory, self.host, self.requested_port)
        # BaseSite.stop() and runner.addresses read the server from here.
        self._server = self.server


def quiet_accept_errors(loop: asyncio.AbstractEventLoop) -> None:
    """Log asyncio's "accept() out of system resource" at most once per interval.

    Out of descriptors, asyncio logs it once per pending connection and retries a second
    later, hundreds of thousands of lines a minute; every other problem goes through.
    """
    previous = loop.get_exception_handler()
    if getattr(previous, "parley_quiet_accept", False):
        return
    limited = RateLimitedLog(logging.getLogger("asyncio"))

    def handle(loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
        if str(context.get("message", "")).startswith(ACCEPT_ERROR):
            limited.log(logging.ERROR, "%s: %s", ACCEPT_ERROR, context.get("exception"))
        elif previous is not None:
            previous(loop, context)
        else:
            loop.default_exception_handler(context)

    handle.parley_quiet_accept = True  # type: ignore[attr-defined]
    loop.set_exception_handler(handle)

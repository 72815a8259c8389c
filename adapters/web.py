"""Local web chat: a page at / that talks to the engine over a WebSocket at /ws.

One conversation per browser session. The session id lives in an HttpOnly cookie; the
conversation is keyed by a hash of it, so the cookie (a bearer secret) never reaches
the database, logs or the usage dashboard. Replies stream as JSON frames, one per
ReplyEvent, followed by {"type": "done"}. The page builds its DOM from text only, so
nothing the model writes can run as script.

Bound to loopback by default. On any other address PARLEY_WEB_TOKEN is required and
must be presented once (/?token=...), which leaves a cookie. Without a token, only
loopback Host names are served (DNS rebinding would otherwise let any web page in).
The usage dashboard at /admin is mounted here too (adapters/web_admin.py).
"""

from __future__ import annotations

import base64
import hashlib
import json
import logging
import re
import secrets
from collections.abc import AsyncIterator
from pathlib import Path

from aiohttp import WSMsgType, web

from adapters.common import InFlight
from adapters.web_admin import add_admin_routes
from adapters.web_auth import (
    ADMIN_COOKIE,
    LOOPBACK_ONLY,
    SESSION_COOKIE,
    SESSION_MAX_AGE,
    WEB_COOKIE,
    WRONG_HOST,
    has_cookie,
    is_loopback,
    local_host,
    plain,
    redact_access_log,
    same_origin,
    secure_headers,
    set_cookie,
    sign_in,
    token_matches,
)
from adapters.web_limits import WebChatLimits
from adapters.web_markdown import render
from adapters.web_recovery import RecoveredAnswers
from bot.config import ConfigError, Settings, secret
from bot.engine import Engine
from bot.messages import ConversationKey, Message, ReplyEvent, ReplyKind

log = logging.getLogger(__name__)

STATIC = Path(__file__).parent / "static"
ASSETS = {"chat.js": "text/javascript", "chat.css": "text/css", "favicon.svg": "image/svg+xml"}
_SESSION_ID = re.compile(r"^[A-Za-z0-9_-]{32,64}$")
HISTORY_LIMIT = 200
BAD_FRAME = 'Frames must be JSON: {"type": "message", "text": "..."}.'
TOO_DEEP = 'That frame nests too deeply to read; send {"type": "message", "text": "..."}.'
# A message is at most max_input_chars characters; 4 bytes each in UTF-8, plus JSON.
FRAME_BYTES_PER_CHAR = 6
RESTARTING = "Parley is restarting; send that again in a moment."
NEEDS_TOKEN = "This Parley web chat needs its access link: open /?token=<PARLEY_WEB_TOKEN> once."


class WebAdapter:
    name = "web"

    def __init__(self, engine: Engine, settings: Settings, token: str) -> None:
        self.engine = engine
        self.settings = settings
        self.token = token  # "" = no token needed (bound to loopback, none set)
        self.sockets: set[web.WebSocketResponse] = set()
        # The open pages of each browser session, by conversation id: where an answer
        # recovered after a restart is shown as it streams.
        self.pages: dict[str, set[web.WebSocketResponse]] = {}
        self.recovered = RecoveredAnswers()
        self.running = False
        self.in_flight = InFlight()
        self.assets = {name: (STATIC / name).read_bytes() for name in ASSETS}
        self.page_html = (STATIC / "index.html").read_bytes()
        self.limits = WebChatLimits(
            settings.web_rpm_per_address, settings.web_rpm_total, settings.trusted_proxies
        )

    def add_routes(self, app: web.Application) -> None:
        app[LOOPBACK_ONLY] = not self.token  # /admin checks the Host header then too
        app.router.add_get("/", self.page)
        app.router.add_get("/ws", self.websocket)
        app.router.add_get("/static/{name}", self.asset)
        app.router.add_get("/favicon.ico", self.favicon)  # what browsers ask for unbidden
        add_admin_routes(app)
        redact_access_log()

    async def start(self) -> None:
        self.running = True
        log.info("web chat at http://%s:%s/", self.settings.web_host, self.settings.port)

    async def stop(self) -> None:
        self.running = False
        await self.in_flight.drain(self.settings.shutdown_grace_seconds)
        for socket in list(self.sockets):
            await socket.close(code=1001, message=b"server shutting down")

    def connected(self) -> bool:
        return self.running

    async def recover(self, message: Message, events: AsyncIterator[ReplyEvent]) -> None:
        """A web chat message claimed and never answered (a restart): answer it into the
        history, streaming it to the session's pages open now; a page that connects
        later finds it in the history."""
        frames = (event_frame(event) async for event in events)
        await self.recovered.stream(message.channel, frames, self._to_pages)

    async def _to_pages(self, identity: str, frame: dict[str, object]) -> None:
        for socket in list(self.pages.get(identity, ())):
            await _send(socket, frame)

    # --- the page and its files ---------------------------------------------------

    async def page(self, request: web.Request) -> web.StreamResponse:
        if not self._right_host(request):
            return plain(WRONG_HOST, 403)
        if self.token and "token" in request.query:
            return self._present_token(request)
        if not self._allowed(request):
            return plain(NEEDS_TOKEN, 401)
        response = web.Response(body=self.page_html, content_type="text/html", charset="utf-8")
        secure_headers(response)
        session = request.cookies.get(SESSION_COOKIE, "")
        if not _SESSION_ID.match(session):
            session = secrets.token_urlsafe(32)
        # Set on every visit, so the conversation lives as long as the page is used.
        set_cookie(response, request, SESSION_COOKIE, session, SESSION_MAX_AGE)
        return response

    def _present_token(self, request: web.Request) -> web.StreamResponse:
        if not token_matches(request.query["token"], self.token):
            return plain("That access token is wrong.", 403)
        return sign_in(request, WEB_COOKIE, self.token)

    def _allowed(self, request: web.Request) -> bool:
        return not self.token or has_cookie(request, WEB_COOKIE, self.token)

    def _right_host(self, request: web.Request) -> bool:
        # Without a token, reaching the chat is the only credential; a rebinding page
        # reaches it too, but under its own host name.
        return bool(self.token) or local_host(request)

    async def favicon(self, request: web.Request) -> web.Response:
        response = web.Response(body=self.assets["favicon.svg"], content_type="image/svg+xml")
        secure_headers(response, cache=True)
        return response

    async def asset(self, request: web.Request) -> web.Response:
        name = request.match_info["name"]
        if name not in ASSETS:
            raise web.HTTPNotFound()
        response = web.Response(body=self.assets[name], content_type=ASSETS[name], charset="utf-8")
        secure_headers(response, cache=True)
        return response

    # --- the WebSocket ------------------------------------------------------------

    async def websocket(self, request: web.Request) -> web.StreamResponse:
        refusal = self._refuse_socket(request)
        if refusal:
            return refusal
        session = request.cookies[SESSION_COOKIE]
        max_size = self.settings.max_input_chars * FRAME_BYTES_PER_CHAR + 1024
        socket = web.WebSocketResponse(heartbeat=30.0, max_msg_size=max_size)
        await socket.prepare(request)
        self.sockets.add(socket)
        address = self.limits.key(request.remote, request.headers.get("X-Forwarded-For", ""))
        try:
            await self._converse(socket, session, address, self._is_admin(request))
        finally:
            self.sockets.discard(socket)
        return socket

    def _refuse_socket(self, request: web.Request) -> web.StreamResponse | None:
        # Browsers send cookies with cross-site WebSocket handshakes and WebSockets have
        # no CORS, so the Origin check is what stops another site driving this chat.
        if not self._right_host(request):
            return plain(WRONG_HOST, 403)
        if not same_origin(request):
            return plain("Cross-origin WebSocket refused.", 403)
        if not self._allowed(request):
            return plain(NEEDS_TOKEN, 403)
        if not _SESSION_ID.match(request.cookies.get(SESSION_COOKIE, "")):
            return plain("No chat session: open the page first.", 403)
        return None

    def _is_admin(self, request: web.Request) -> bool:
        # Whoever signed in to /admin with PARLEY_ADMIN_TOKEN in this browser is an
        # admin in the chat too: the web has no platform that says who administers it.
        token = secret("PARLEY_ADMIN_TOKEN")
        return bool(token) and has_cookie(request, ADMIN_COOKIE, token)

    async def _converse(
        self, socket: web.WebSocketResponse, session: str, address: str, admin: bool
    ) -> None:
        identity = session_identity(session)
        for _ in range(3):  # a recovered answer finishing meanwhile: read it again
            finished = self.recovered.finished
            await _send(socket, await self._history(identity))
            if self.recovered.finished == finished:
                break
        # Join before catching up: a recovered frame sent meanwhile is not lost.
        catch_up = self.recovered.so_far(identity)
        pages = self.pages.setdefault(identity, set())
        pages.add(socket)
        for frame in catch_up:
            await _send(socket, frame)
        try:
            await self._read_frames(socket, identity, address, admin)
        finally:
            pages.discard(socket)
            if not pages:
                self.pages.pop(identity, None)

    async def _read_frames(
        self, socket: web.WebSocketResponse, identity: str, address: str, admin: bool
    ) -> None:
        async for frame in socket:
            if frame.type is not WSMsgType.TEXT:
                continue
            try:
                text = _message_text(frame.data)
            except RecursionError:  # json's parser recurses once per nested [ or {
                await _send(socket, {"type": "error", "text": TOO_DEEP})
                continue
            if text is None:
                await _send(socket, {"type": "error", "text": BAD_FRAME})
                continue
            if not self.in_flight.accepting:
                await _send(socket, {"type": "error", "text": RESTARTING})
                continue
            if not await self._admit(socket, address, admin):
                continue
            message = Message("web", "local", identity, identity, text, platform_admin=admin)
            await self.in_flight.track(self._answer(socket, message))

    async def _admit(self, socket: web.WebSocketResponse, address: str, admin: bool) -> bool:
        """The address and total limits; refused, the socket is told why (and may go on)."""
        if admin and self.settings.admins_exempt:
            return True
        refusal = self.limits.admit(address)
        if refusal is None:
            return True
        self.engine.metrics.refusals.labels(refusal.kind).inc()
        await _send(socket, {"type": "error", "text": refusal.text, "private": True})
        await _send(socket, {"type": "done"})
        return False

    async def _history(self, identity: str) -> dict[str, object]:
        key = ConversationKey("web", "local", identity)
        pairs = await self.engine.transcript(key, HISTORY_LIMIT)
        messages = [
            {"role": role, "text": text, **({"html": render(text)} if role != "user" else {})}
            for role, text in pairs
        ]
        return {"type": "history", "messages": messages}

    async def _answer(self, socket: web.WebSocketResponse, message: Message) -> None:
        # Run to the end even if the page went away: the answer is still stored, so a
        # reload shows it.
        async for event in self.engine.handle(message):
            await _send(socket, event_frame(event))
        await _send(socket, {"type": "done"})


def session_identity(session: str) -> str:
    """The conversation and user id of a browser session: a hash, never the cookie."""
    return "s" + hashlib.sha256(session.encode()).hexdigest()[:24]


def event_frame(event: ReplyEvent) -> dict[str, object]:
    """One ReplyEvent as a JSON frame; an image travels as base64 for a blob: URL."""
    frame: dict[str, object] = {
        "type": event.kind.value, "text": event.text, "private": event.private,
    }  # fmt: skip
    if event.kind is ReplyKind.FINAL:  # rendered once, when the answer is complete
        frame["html"] = render(event.text)
    if event.image is not None:
        frame["image"] = base64.b64encode(event.image).decode("ascii")
        frame["image_name"] = event.image_name or "image.png"
    return frame


def _message_text(data: str) -> str | None:
    try:
        frame = json.loads(data)
    except ValueError:
        return None
    if not isinstance(frame, dict) or frame.get("type") != "message":
        return None
    text = frame.get("text")
    return text if isinstance(text, str) else None


async def _send(socket: web.WebSocketResponse, frame: dict[str, object]) -> None:
    if socket.closed:
        return
    try:
        await socket.send_json(frame)
    except ConnectionError:
        log.debug("web chat page went away mid-answer")


def create(engine: Engine, settings: Settings) -> WebAdapter:
    """The runner's entry point: refuses to expose the chat without PARLEY_WEB_TOKEN."""
    token = secret("PARLEY_WEB_TOKEN")
    if not is_loopback(settings.web_host) and not token:
        raise ConfigError(
            f"web.host is {settings.web_host!r}, reachable from other machines: set "
            "PARLEY_WEB_TOKEN to a long random secret (users open /?token=<it> once), "
            "or bind web.host to 127.0.0.1"
        )
    return WebAdapter(engine, settings, token)

"""A fake Discord REST API and gateway for the real discord.py client.

The client logs in over REST, connects to the gateway websocket, identifies, and gets
READY and a GUILD_CREATE for one test guild (a text channel, roles, members), so
permissions and channels resolve exactly as on Discord. Tests push MESSAGE_CREATE and
INTERACTION_CREATE dispatches and read back every REST call the client made. Replies
carry Content-Type exactly application/json (discord.py compares it verbatim), and
gateway frames are plain JSON text (no zlib), which discord.py accepts.

Raw wire payloads are TypedDicts, as in discord.py's own discord/types.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import re
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, NotRequired, TypeAlias, TypedDict

from aiohttp import WSMsgType, web

JSON: TypeAlias = dict[str, Any]
DISCORD_EPOCH_MS = 1_420_070_400_000

BOT_ID = 900_000_000_000_000_001
APP_ID = BOT_ID  # Discord gives a bot the same id as its application
GUILD_ID = 800_000_000_000_000_001
OTHER_GUILD_ID = 800_000_000_000_000_002
CHANNEL_ID = 800_000_000_000_000_010
MANAGER_ROLE_ID = 800_000_000_000_000_020
BOT_ROLE_ID = 800_000_000_000_000_021
ALICE_ID = 700_000_000_000_000_001  # a plain member
ADA_ID = 700_000_000_000_000_002  # has Manage Server through a role
OWNER_ID = 700_000_000_000_000_003
DM_CHANNEL_ID = 600_000_000_000_000_001

MANAGE_GUILD = 1 << 5
EVERYONE_PERMISSIONS = (1 << 10) | (1 << 11) | (1 << 16)  # view, send, read history
BOT_PERMISSIONS = EVERYONE_PERMISSIONS | (1 << 14) | (1 << 15) | (1 << 35) | (1 << 38)
EPHEMERAL = 1 << 6
LOADING = 1 << 7
NAMES = {BOT_ID: "Parley", ALICE_ID: "alice", ADA_ID: "ada", OWNER_ID: "owner"}


class UserPayload(TypedDict):
    id: str
    username: str
    discriminator: str
    global_name: str | None
    avatar: str | None
    bot: bool
    public_flags: int


class MemberPayload(TypedDict):
    roles: list[str]
    joined_at: str
    deaf: bool
    mute: bool
    flags: int
    pending: bool
    nick: str | None
    avatar: str | None
    communication_disabled_until: str | None
    user: NotRequired[UserPayload]
    permissions: NotRequired[str]


class MessagePayload(TypedDict):
    id: str
    channel_id: str
    author: UserPayload
    content: str
    timestamp: str
    edited_timestamp: str | None
    tts: bool
    mention_everyone: bool
    mentions: list[JSON]
    mention_roles: list[str]
    attachments: list[JSON]
    embeds: list[JSON]
    pinned: bool
    type: int
    flags: int
    components: list[JSON]
    guild_id: NotRequired[str]
    member: NotRequired[MemberPayload]
    message_reference: NotRequired[JSON]
    webhook_id: NotRequired[str]
    application_id: NotRequired[str]


class InteractionPayload(TypedDict):
    id: str
    application_id: str
    type: int
    token: str
    version: int
    channel_id: str
    channel: JSON
    data: JSON
    locale: str
    app_permissions: str
    entitlements: list[JSON]
    authorizing_integration_owners: JSON
    context: int
    attachment_size_limit: int
    guild_id: NotRequired[str]
    guild_locale: NotRequired[str]
    member: NotRequired[MemberPayload]
    user: NotRequired[UserPayload]


@dataclass(frozen=True)
class RestCall:
    """One REST request the client made; path is relative to the API base (/api/v10)."""

    method: str
    path: str
    body: Any  # a JSON object, a list (bulk command overwrite), or None
    query: dict[str, str]
    status: int


@dataclass
class Fault:
    """Answer matching requests with an error status, `times` times."""

    method: str
    pattern: re.Pattern[str]
    status: int
    body: JSON
    headers: dict[str, str]
    times: int


class _Error(Exception):
    """Raised by a route handler to answer with a Discord error."""

    def __init__(self, status: int, message: str, code: int) -> None:
        super().__init__(message)
        self.status = status
        self.body: JSON = {"message": message, "code": code}


@dataclass
class _Gateway:
    socket: web.WebSocketResponse | None = None
    received: list[JSON] = field(default_factory=list)
    seq: int = 0
    replay: list[tuple[str, JSON]] = field(default_factory=list)


def _now() -> str:
    return datetime.now(UTC).isoformat()


def user(user_id: int) -> UserPayload:
    name = NAMES.get(user_id, f"user{user_id}")
    return {
        "id": str(user_id), "username": name, "discriminator": "0", "global_name": name,
        "avatar": None, "bot": user_id == BOT_ID, "public_flags": 0,
    }  # fmt: skip


def member(user_id: int, *, with_user: bool = True) -> MemberPayload:
    roles = {ADA_ID: [str(MANAGER_ROLE_ID)], BOT_ID: [str(BOT_ROLE_ID)]}.get(user_id, [])
    payload: MemberPayload = {
        "roles": roles, "joined_at": _now(), "deaf": False, "mute": False, "flags": 0,
        "pending": False, "nick": None, "avatar": None, "communication_disabled_until": None,
    }  # fmt: skip
    if with_user:
        payload["user"] = user(user_id)
    return payload


def _role(role_id: int, name: str, permissions: int, position: int, managed: bool) -> JSON:
    return {
        "id": str(role_id), "name": name, "permissions": str(permissions), "position": position,
        "color": 0, "hoist": False, "managed": managed, "mentionable": False, "flags": 0,
        "icon": None, "unicode_emoji": None,
    }  # fmt: skip


def text_channel(channel_id: int, guild_id: int, name: str = "general") -> JSON:
    return {
        "id": str(channel_id), "type": 0, "guild_id": str(guild_id), "name": name,
        "position": 0, "permission_overwrites": [], "nsfw": False, "parent_id": None,
        "topic": None, "rate_limit_per_user": 0, "last_message_id": None, "flags": 0,
    }  # fmt: skip


def thread_channel(
    thread_id: int, parent_id: int, guild_id: int, name: str, owner_id: int = BOT_ID
) -> JSON:
    return {
        "id": str(thread_id), "type": 11, "guild_id": str(guild_id), "parent_id": str(parent_id),
        "owner_id": str(owner_id), "name": name, "last_message_id": None, "message_count": 0,
        "member_count": 1, "rate_limit_per_user": 0, "flags": 0, "total_message_sent": 0,
        "thread_metadata": {
            "archived": False, "auto_archive_duration": 1440, "archive_timestamp": _now(),
            "locked": False, "create_timestamp": _now(),
        },
    }  # fmt: skip


def guild(guild_id: int, channel_id: int) -> JSON:
    everyone = _role(guild_id, "@everyone", EVERYONE_PERMISSIONS, 0, False)
    return {
        "id": str(guild_id), "name": f"guild {guild_id}", "owner_id": str(OWNER_ID),
        "icon": None, "unavailable": False, "member_count": 4, "large": False,
        "features": [], "emojis": [], "stickers": [], "voice_states": [], "presences": [],
        "stage_instances": [], "guild_scheduled_events": [], "soundboard_sounds": [],
        "threads": [], "joined_at": _now(), "preferred_locale": "en-US",
        "roles": [
            everyone,
            _role(MANAGER_ROLE_ID, "Managers", MANAGE_GUILD, 1, False),
            _role(BOT_ROLE_ID, "Parley", BOT_PERMISSIONS, 2, True),
        ],
        "channels": [text_channel(channel_id, guild_id)],
        "members": [member(uid) for uid in (BOT_ID, ALICE_ID, ADA_ID, OWNER_ID)],
    }  # fmt: skip


class FakeDiscord:
    """Discord's REST API under /api/v10 and its gateway at /gateway, on one port."""

    def __init__(
        self,
        guild_ids: Sequence[int] = (GUILD_ID,),
        *,
        resume_gateway_url: str | None = None,
        thread_create_events: bool = True,
    ) -> None:
        self.guild_ids = list(guild_ids)
        self.calls: list[RestCall] = []
        self.faults: list[Fault] = []
        self.messages: dict[int, MessagePayload] = {}
        self.channels: dict[int, JSON] = {}
        self.thread_create_events = thread_create_events
        self.gateway = _Gateway()
        self._resume_gateway_url = resume_gateway_url
        self._counter = itertools.count(1)
        self._runner: web.AppRunner | None = None
        self._port = 0
        self._routes: list[tuple[str, re.Pattern[str], Callable[..., Awaitable[Any]]]] = [
            (method, re.compile(pattern + "$"), handler)
            for method, pattern, handler in (
                ("GET", r"/users/@me", self._me),
                ("GET", r"/oauth2/applications/@me", self._application),
                ("GET", r"/gateway/bot", self._gateway_bot),
                ("PUT", r"/applications/(\d+)/guilds/(\d+)/commands", self._commands),
                ("PUT", r"/applications/(\d+)/commands", self._commands),
                ("POST", r"/interactions/(\d+)/([^/]+)/callback", self._callback),
                ("PATCH", r"/webhooks/(\d+)/([^/]+)/messages/(@original|\d+)", self._edit_hook),
                ("DELETE", r"/webhooks/(\d+)/([^/]+)/messages/(@original|\d+)", self._delete),
                ("POST", r"/webhooks/(\d+)/([^/]+)", self._followup),
                ("POST", r"/channels/(\d+)/messages", self._create_message),
                ("PATCH", r"/channels/(\d+)/messages/(\d+)", self._edit_message),
                ("POST", r"/channels/(\d+)/messages/(\d+)/threads", self._thread_from_message),
                ("POST", r"/channels/(\d+)/threads", self._thread),
                ("GET", r"/channels/(\d+)", self._get_channel),
            )
        ]  # fmt: skip
        # Original interaction responses by token: created by a deferral.
        self.originals: dict[str, MessagePayload] = {}
        self._interactions: dict[str, InteractionPayload] = {}
        for guild_id in self.guild_ids:
            self.channels[self.channel_for(guild_id)] = text_channel(
                self.channel_for(guild_id), guild_id
            )

    # -- lifecycle ------------------------------------------------------------------

    async def start(self) -> None:
        app = web.Application()
        app.router.add_get("/gateway", self._gateway)
        app.router.add_route("*", "/api/v10/{tail:.*}", self._rest)
        self._runner = web.AppRunner(app, access_log=None, shutdown_timeout=0.5)
        await self._runner.setup()
        await web.TCPSite(self._runner, "127.0.0.1", 0).start()
        self._port = self._runner.addresses[0][1]

    async def stop(self) -> None:
        if self.gateway.socket is not None:
            await self.gateway.socket.close()
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    @property
    def api_url(self) -> str:
        return f"http://127.0.0.1:{self._port}/api/v10"

    @property
    def gateway_url(self) -> str:
        return f"ws://127.0.0.1:{self._port}/gateway"

    @staticmethod
    def channel_for(guild_id: int) -> int:
        return CHANNEL_ID + (guild_id - GUILD_ID) * 1000

    # -- what tests use ---------------------------------------------------------------

    def new_id(self) -> int:
        """A snowflake for now: discord.py derives created_at (and expiry) from it."""
        return ((int(time.time() * 1000) - DISCORD_EPOCH_MS) << 22) | (
            next(self._counter) & 0x3FFFFF
        )

    def calls_to(self, method: str, pattern: str) -> list[RestCall]:
        compiled = re.compile(pattern + "$")
        return [c for c in self.calls if c.method == method and compiled.match(c.path)]

    def fail(
        self,
        method: str,
        pattern: str,
        status: int,
        *,
        code: int = 0,
        retry_after: float | None = None,
        times: int = 1,
    ) -> None:
        """Answer the next `times` matching requests with an error (429 with retry_after)."""
        body: JSON = {"message": f"fake error {status}", "code": code}
        headers: dict[str, str] = {}
        if retry_after is not None:
            body.update(retry_after=retry_after, message="You are being rate limited.")
            body["global"] = False
            headers["Via"] = "1.1 google"  # discord.py treats a 429 without Via as a ban
        self.faults.append(Fault(method, re.compile(pattern + "$"), status, body, headers, times))

    async def dispatch(self, event: str, data: Any) -> None:
        socket = self.gateway.socket
        if socket is None or socket.closed:
            raise RuntimeError("no gateway connection to dispatch to")
        self.gateway.seq += 1
        await self._send({"op": 0, "t": event, "s": self.gateway.seq, "d": data})

    def message(
        self,
        content: str,
        *,
        author: int = ALICE_ID,
        channel_id: int = CHANNEL_ID,
        guild_id: int | None = GUILD_ID,
        mentions: Sequence[int] = (),
    ) -> MessagePayload:
        payload = self._message_payload(channel_id, guild_id, user(author), content)
        if guild_id is not None:
            payload["member"] = member(author, with_user=False)
        payload["mentions"] = [
            {**user(uid), "member": member(uid, with_user=False)} for uid in mentions
        ]
        return payload

    async def send_message(self, content: str, **options: Any) -> MessagePayload:
        payload = self.message(content, **options)
        await self.dispatch("MESSAGE_CREATE", payload)
        return payload

    def interaction(
        self,
        name: str,
        options: dict[str, Any] | None = None,
        *,
        user_id: int = ALICE_ID,
        channel_id: int = CHANNEL_ID,
        guild_id: int = GUILD_ID,
    ) -> InteractionPayload:
        channel = self.channels.get(channel_id) or text_channel(channel_id, guild_id)
        options_payload = [
            {"name": key, "type": 3, "value": value} for key, value in (options or {}).items()
        ]
        token = f"token-{next(self._counter)}"
        payload: InteractionPayload = {
            "id": str(self.new_id()), "application_id": str(APP_ID), "type": 2, "token": token,
            "version": 1, "channel_id": str(channel_id), "channel": channel,
            "data": {"id": str(self.new_id()), "name": name, "type": 1,
                     "options": options_payload, "guild_id": str(guild_id)},
            "locale": "en-US", "guild_locale": "en-US", "guild_id": str(guild_id),
            "app_permissions": str(BOT_PERMISSIONS), "entitlements": [],
            "authorizing_integration_owners": {"0": str(guild_id)}, "context": 0,
            "attachment_size_limit": 10 * 1024 * 1024,
            "member": {**member(user_id), "permissions": str(_permissions_of(user_id))},
        }  # fmt: skip
        self._interactions[token] = payload
        return payload

    async def send_interaction(self, name: str, **options: Any) -> InteractionPayload:
        payload = self.interaction(name, **options)
        await self.dispatch("INTERACTION_CREATE", payload)
        return payload

    async def request_reconnect(self, replay: Sequence[tuple[str, JSON]] = ()) -> None:
        """Send op 7 (RECONNECT); on the RESUME that follows, replay these dispatches."""
        self.gateway.replay = list(replay)
        await self._send({"op": 7, "d": None, "s": None, "t": None})

    def received_ops(self, op: int) -> list[JSON]:
        return [frame for frame in self.gateway.received if frame.get("op") == op]

    def channel_contents(self, channel_id: int) -> list[str]:
        """The current text of every message in a channel, oldest first."""
        return [m["content"] for m in self.messages.values() if m["channel_id"] == str(channel_id)]

    # -- gateway ----------------------------------------------------------------------

    async def _send(self, frame: JSON) -> None:
        socket = self.gateway.socket
        assert socket is not None
        await socket.send_str(json.dumps(frame))

    async def _gateway(self, request: web.Request) -> web.WebSocketResponse:
        socket = web.WebSocketResponse()
        await socket.prepare(request)
        self.gateway.socket = socket
        await self._send({"op": 10, "d": {"heartbeat_interval": 41250}, "s": None, "t": None})
        async for frame in socket:
            if frame.type is not WSMsgType.TEXT:
                break
            await self._on_frame(json.loads(frame.data))
        return socket

    async def _on_frame(self, frame: JSON) -> None:
        self.gateway.received.append(frame)
        op = frame.get("op")
        if op == 1:
            await self._send({"op": 11, "d": None, "s": None, "t": None})
        elif op == 2:
            await self._ready(frame["d"])
        elif op == 6:
            for event, data in self.gateway.replay:
                await self.dispatch(event, data)
            self.gateway.replay = []
            await self.dispatch("RESUMED", {})

    async def _ready(self, identify: JSON) -> None:
        me = {**user(BOT_ID), "verified": True, "mfa_enabled": False, "flags": 0}
        await self.dispatch("READY", {
            "v": 10, "user": me, "session_id": f"session-{next(self._counter)}",
            "resume_gateway_url": self._resume_gateway_url or self.gateway_url,
            "guilds": [{"id": str(g), "unavailable": True} for g in self.guild_ids],
            "shard": identify.get("shard", [0, 1]), "application": {"id": str(APP_ID), "flags": 0},
            "private_channels": [], "relationships": [], "presences": [],
        })  # fmt: skip
        for guild_id in self.guild_ids:
            await self.dispatch("GUILD_CREATE", guild(guild_id, self.channel_for(guild_id)))

    # -- REST -------------------------------------------------------------------------

    async def _rest(self, request: web.Request) -> web.Response:
        path = "/" + request.match_info["tail"]
        body = await _read_body(request)
        fault = self._fault(request.method, path)
        status, result = (fault.status, fault.body) if fault else (200, None)
        if fault is None:
            status, result = await self._route(request.method, path, body, dict(request.query))
        self.calls.append(RestCall(request.method, path, body, dict(request.query), status))
        if status == 204:
            return web.Response(status=204)
        headers = {"Content-Type": "application/json", **(fault.headers if fault else {})}
        return web.Response(status=status, body=json.dumps(result).encode(), headers=headers)

    def _fault(self, method: str, path: str) -> Fault | None:
        for fault in self.faults:
            if fault.times > 0 and fault.method == method and fault.pattern.match(path):
                fault.times -= 1
                return fault
        return None

    async def _route(
        self, method: str, path: str, body: Any, query: dict[str, str]
    ) -> tuple[int, Any]:
        for route_method, pattern, handler in self._routes:
            match = pattern.match(path)
            if route_method == method and match:
                try:
                    result = await handler(*match.groups(), body=body or {}, query=query)
                except _Error as error:
                    return error.status, error.body
                return (204, None) if result is None else (200, result)
        return 404, {"message": "404: Not Found", "code": 0}

    async def _me(self, **_: Any) -> JSON:
        return {**user(BOT_ID), "verified": True, "mfa_enabled": False, "flags": 0}

    async def _application(self, **_: Any) -> JSON:
        return {
            "id": str(APP_ID), "name": "Parley", "icon": None, "description": "",
            "rpc_origins": [], "bot_public": True, "bot_require_code_grant": False,
            "owner": user(OWNER_ID), "summary": "", "verify_key": "0" * 64, "flags": 0,
            "bot": user(BOT_ID), "team": None,
        }  # fmt: skip

    async def _gateway_bot(self, **_: Any) -> JSON:
        # Discord's own gateway: a client pointed at a proxy must not follow it.
        limit = {"total": 1000, "remaining": 999, "reset_after": 0, "max_concurrency": 1}
        return {"url": "ws://127.0.0.1:9/", "shards": 1, "session_start_limit": limit}

    async def _commands(self, app_id: str, guild_id: str = "", *, body: Any, **_: Any) -> Any:
        commands = body if isinstance(body, list) else []
        return [
            {**command, "id": str(self.new_id()), "application_id": app_id, "version": "1",
             **({"guild_id": guild_id} if guild_id else {})}
            for command in commands
        ]  # fmt: skip

    async def _callback(self, interaction_id: str, token: str, *, body: JSON, **_: Any) -> JSON:
        interaction = self._interactions[token]
        flags = (body.get("data") or {}).get("flags", 0)
        original = self._message_payload(
            int(interaction["channel_id"]), _guild_of(interaction), user(BOT_ID), ""
        )
        original["flags"], original["type"] = flags | LOADING, 20  # 20: a slash command's
        original["webhook_id"] = str(APP_ID)
        self.originals[token] = original
        self.messages[int(original["id"])] = original
        return {"interaction": {
            "id": interaction_id, "type": 2, "response_message_id": original["id"],
            "response_message_loading": body.get("type") == 5,
            "response_message_ephemeral": bool(flags & EPHEMERAL),
        }}  # fmt: skip

    def _hook_message(self, token: str, message_id: str) -> MessagePayload:
        if message_id == "@original":
            return self.originals[token]
        return self.messages[int(message_id)]

    async def _edit_hook(
        self, app: str, token: str, message_id: str, *, body: JSON, **_: Any
    ) -> JSON:
        message = self._hook_message(token, message_id)
        _apply_edit(message, body)
        message["flags"] &= ~LOADING
        return dict(message)

    async def _delete(self, app: str, token: str, message_id: str, **_: Any) -> None:
        message = self._hook_message(token, message_id)
        self.messages.pop(int(message["id"]), None)

    async def _followup(self, app: str, token: str, *, body: JSON, **_: Any) -> JSON:
        interaction = self._interactions[token]
        message = self._message_payload(
            int(interaction["channel_id"]),
            _guild_of(interaction),
            user(BOT_ID),
            body.get("content") or "",
        )
        message["flags"], message["webhook_id"] = body.get("flags", 0), str(APP_ID)
        self.messages[int(message["id"])] = message
        return dict(message)

    async def _create_message(self, channel_id: str, *, body: JSON, **_: Any) -> JSON:
        channel = self.channels.get(int(channel_id), {})
        guild_id = int(channel["guild_id"]) if channel.get("guild_id") else None
        message = self._message_payload(
            int(channel_id), guild_id, user(BOT_ID), body.get("content") or ""
        )
        if body.get("message_reference"):
            message["message_reference"], message["type"] = body["message_reference"], 19
        self.messages[int(message["id"])] = message
        # Discord echoes the bot's own messages on the gateway; the bot must ignore them.
        await self.dispatch("MESSAGE_CREATE", dict(message))
        return dict(message)

    async def _edit_message(
        self, channel_id: str, message_id: str, *, body: JSON, **_: Any
    ) -> JSON:
        message = self.messages[int(message_id)]
        _apply_edit(message, body)
        return dict(message)

    async def _thread_from_message(
        self, channel_id: str, message_id: str, *, body: JSON, **_: Any
    ) -> JSON:
        return await self._open_thread(int(message_id), int(channel_id), body)

    async def _thread(self, channel_id: str, *, body: JSON, **_: Any) -> JSON:
        return await self._open_thread(self.new_id(), int(channel_id), body)

    async def _open_thread(self, thread_id: int, parent_id: int, body: JSON) -> JSON:
        guild_id = int(self.channels[parent_id]["guild_id"])
        thread = thread_channel(thread_id, parent_id, guild_id, body.get("name", "thread"))
        self.channels[thread_id] = thread
        if self.thread_create_events:
            await self.dispatch("THREAD_CREATE", {**thread, "newly_created": True})
        return thread

    async def _get_channel(self, channel_id: str, **_: Any) -> JSON:
        channel = self.channels.get(int(channel_id))
        if channel is None:
            raise _Error(404, "Unknown Channel", 10003)
        return channel

    def _message_payload(
        self, channel_id: int, guild_id: int | None, author: UserPayload, content: str
    ) -> MessagePayload:
        payload: MessagePayload = {
            "id": str(self.new_id()), "channel_id": str(channel_id), "author": author,
            "content": content, "timestamp": _now(), "edited_timestamp": None, "tts": False,
            "mention_everyone": False, "mentions": [], "mention_roles": [], "attachments": [],
            "embeds": [], "pinned": False, "type": 0, "flags": 0, "components": [],
        }  # fmt: skip
        if guild_id is not None:
            payload["guild_id"] = str(guild_id)
        return payload


def _permissions_of(user_id: int) -> int:
    return EVERYONE_PERMISSIONS | (MANAGE_GUILD if user_id in (ADA_ID, OWNER_ID) else 0)


def _guild_of(interaction: InteractionPayload) -> int | None:
    return int(interaction["guild_id"]) if "guild_id" in interaction else None


def _apply_edit(message: MessagePayload, body: JSON) -> None:
    if "content" in body:
        message["content"] = body["content"] or ""
    message["edited_timestamp"] = _now()


async def _read_body(request: web.Request) -> Any:
    """The JSON body, or the payload_json part of a multipart (file upload) body."""
    if request.content_type.startswith("multipart/"):
        form = await request.post()
        raw = form.get("payload_json")
        return json.loads(str(raw)) if raw is not None else {}
    data = await request.read()
    if not data:
        return None
    return json.loads(data)


async def eventually(check: Callable[[], Any], within: float = 5.0) -> Any:
    """Poll until check() returns something truthy; return it, or fail after `within` s."""
    deadline = asyncio.get_running_loop().time() + within
    while True:
        result = check()
        if result:
            return result
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"condition not met within {within}s: {check}")
        await asyncio.sleep(0.01)

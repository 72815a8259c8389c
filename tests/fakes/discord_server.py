"""A fake Discord REST API and gateway for the real discord.py client.

The client logs in over REST, connects to the gateway websocket, identifies, and gets
READY and a GUILD_CREATE for one test guild (a text channel, roles, members), so
permissions and channels resolve exactly as on Discord. Tests push MESSAGE_CREATE and
INTERACTION_CREATE dispatches and read back every REST call the client made. Replies
carry Content-Type exactly application/json (discord.py compares it verbatim), and
gateway frames are plain JSON text (no zlib), which discord.py accepts.

Messages may carry files: multipart/form-data bodies (payload_json and files[n]) are
accepted on followups and edits, and the bytes are kept. Raw wire payloads are
TypedDicts, in tests.fakes.discord_payloads, as in discord.py's own discord/types.
"""

from __future__ import annotations

import itertools
import json
import re
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from aiohttp import WSMsgType, web

from tests.fakes import discord_payloads as wire
from tests.fakes.discord_payloads import (
    ALICE_ID,
    APP_ID,
    CHANNEL_ID,
    DISCORD_EPOCH_MS,
    EPHEMERAL,
    GUILD_ID,
    JSON,
    LOADING,
    AttachmentPayload,
    InteractionPayload,
    MessagePayload,
    UploadedFile,
)


@dataclass(frozen=True)
class RestCall:
    """One REST request the client made; path is relative to the API base (/api/v10)."""

    method: str
    path: str
    body: Any  # a JSON object (payload_json if multipart), a list, or None
    query: dict[str, str]
    status: int
    files: tuple[UploadedFile, ...] = ()


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
        # GATEWAY_MESSAGE_CONTENT_LIMITED: the Message Content intent of an unverified bot.
        self.application_flags = 1 << 19
        self.refuse_intents = False
        self.messages: dict[int, MessagePayload] = {}
        # What people said (send_message), apart from the bot's own in `messages`.
        self.said: dict[int, MessagePayload] = {}
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
                ("POST", r"/users/@me/channels", self._open_dm),
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
                ("GET", r"/channels/(\d+)/messages/(\d+)", self._get_message),
                ("GET", r"/channels/(\d+)/messages", self._history),
                ("GET", r"/guilds/(\d+)/members/(\d+)", self._member),
            )
        ]  # fmt: skip
        # Original interaction responses by token: created by a deferral.
        self.originals: dict[str, MessagePayload] = {}
        self.uploads: dict[str, bytes] = {}  # attachment id -> the file's bytes
        # Files users attached, served like Discord's CDN; and which were downloaded.
        self.cdn: dict[str, bytes] = {}
        self.downloads: list[str] = []
        self.dm_channels: dict[int, int] = {}  # user id -> their DM channel's id
        self._interactions: dict[str, InteractionPayload] = {}
        for guild_id in self.guild_ids:
            self.channels[self.channel_for(guild_id)] = wire.text_channel(
                self.channel_for(guild_id), guild_id
            )

    # -- lifecycle ------------------------------------------------------------------

    async def start(self) -> None:
        app = web.Application()
        app.router.add_get("/gateway", self._gateway)
        app.router.add_route("*", "/api/v10/{tail:.*}", self._rest)
        app.router.add_get("/attachments/{id}/{name}", self._attachment)
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
        reply_to: MessagePayload | None = None,
        referenced: bool = True,
        attachments: Sequence[AttachmentPayload] = (),
    ) -> MessagePayload:
        """A person's message; `reply_to`: as a reply to that one (`referenced`: the
        gateway sends the replied-to message along, as Discord usually does)."""
        author_payload = wire.user(author)
        payload = wire.message_payload(self.new_id(), channel_id, guild_id, author_payload, content)
        payload["attachments"] = list(attachments)
        if guild_id is not None:
            payload["member"] = wire.member(author, with_user=False)
        payload["mentions"] = [
            {**wire.user(uid), "member": wire.member(uid, with_user=False)} for uid in mentions
        ]
        if reply_to is not None:
            payload["type"] = 19
            payload["message_reference"] = {
                "message_id": reply_to["id"], "channel_id": reply_to["channel_id"],
                **({"guild_id": str(guild_id)} if guild_id else {}),
            }  # fmt: skip
            if referenced:
                payload["referenced_message"] = dict(reply_to)
        return payload

    async def send_message(self, content: str, **options: Any) -> MessagePayload:
        payload = self.message(content, **options)
        self.said[int(payload["id"])] = payload
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
        files: dict[str, AttachmentPayload] | None = None,
    ) -> InteractionPayload:
        channel = self.channels.get(channel_id) or wire.text_channel(channel_id, guild_id)
        token = f"token-{next(self._counter)}"
        payload = wire.interaction_payload(
            self.new_id(), self.new_id(), token, name, options or {},
            user_id=user_id, channel=channel, guild_id=guild_id,
        )  # fmt: skip
        # Attachment options (type 11) name an attachment that "resolved" describes.
        for option, attachment in (files or {}).items():
            chosen = {"name": option, "type": 11, "value": attachment["id"]}
            payload["data"]["options"].append(chosen)
            resolved = payload["data"].setdefault("resolved", {}).setdefault("attachments", {})
            resolved[attachment["id"]] = attachment
        self._interactions[token] = payload
        return payload

    async def send_interaction(self, name: str, **options: Any) -> InteractionPayload:
        payload = self.interaction(name, **options)
        await self.dispatch("INTERACTION_CREATE", payload)
        return payload

    async def open_thread(
        self, name: str, *, owner_id: int = ALICE_ID, private: bool = False,
        parent_id: int = CHANNEL_ID,
    ) -> int:  # fmt: skip
        """A thread a person opens in a channel, announced by THREAD_CREATE; its id."""
        guild_id = int(self.channels[parent_id]["guild_id"])
        thread_id = self.new_id()
        thread = wire.thread_channel(
            thread_id, parent_id, guild_id, name, owner_id, private=private
        )
        self.channels[thread_id] = thread
        await self.dispatch("THREAD_CREATE", {**thread, "newly_created": True})
        return thread_id

    async def request_reconnect(self, replay: Sequence[tuple[str, JSON]] = ()) -> None:
        """Send op 7 (RECONNECT); on the RESUME that follows, replay these dispatches."""
        self.gateway.replay = list(replay)
        await self._send({"op": 7, "d": None, "s": None, "t": None})

    def received_ops(self, op: int) -> list[JSON]:
        return [frame for frame in self.gateway.received if frame.get("op") == op]

    def attachments_in(self, message_id: int) -> list[tuple[AttachmentPayload, bytes]]:
        """A message's current attachments, each with the bytes uploaded for it."""
        message = self.messages.get(message_id)
        attachments = message["attachments"] if message is not None else []
        return [(a, self.uploads[a["id"]]) for a in attachments]

    def channel_contents(self, channel_id: int) -> list[str]:
        """The current text of every message in a channel, oldest first."""
        return [m["content"] for m in self.messages.values() if m["channel_id"] == str(channel_id)]

    # -- gateway ----------------------------------------------------------------------

    async def _send(self, frame: JSON) -> None:
        socket = self.gateway.socket
        assert socket is not None
        await socket.send_str(json.dumps(frame))

    def attach(self, filename: str, data: bytes, content_type: str) -> AttachmentPayload:
        """A file a user attaches, as MESSAGE_CREATE lists it, served from this fake."""
        attachment_id = self.new_id()
        self.cdn[str(attachment_id)] = data
        url = f"http://127.0.0.1:{self._port}/attachments/{attachment_id}/{filename}"
        payload = wire.attachment_payload(attachment_id, filename, len(data), content_type)
        return {**payload, "url": url, "proxy_url": url}

    async def _attachment(self, request: web.Request) -> web.Response:
        attachment_id = request.match_info["id"]
        self.downloads.append(attachment_id)
        if attachment_id not in self.cdn:
            return web.Response(status=404)
        return web.Response(body=self.cdn[attachment_id])

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
        if self.refuse_intents:  # what Discord does when Message Content is not enabled
            assert self.gateway.socket is not None
            await self.gateway.socket.close(code=4014, message=b"Disallowed intent(s).")
            return
        session = f"session-{next(self._counter)}"
        resume_url = self._resume_gateway_url or self.gateway_url
        shard = identify.get("shard", [0, 1])
        await self.dispatch("READY", wire.ready(session, resume_url, self.guild_ids, shard))
        for guild_id in self.guild_ids:
            guild = wire.guild(guild_id, self.channel_for(guild_id))
            # The channel as the test left it (permission overwrites, say).
            guild["channels"] = [self.channels[self.channel_for(guild_id)]]
            await self.dispatch("GUILD_CREATE", guild)

    # -- REST -------------------------------------------------------------------------

    async def _rest(self, request: web.Request) -> web.Response:
        path = "/" + request.match_info["tail"]
        body, files = await wire.read_body(request)
        fault = self._fault(request.method, path)
        status, result = (fault.status, fault.body) if fault else (200, None)
        query = dict(request.query)
        if fault is None:
            status, result = await self._route(request.method, path, body, query, files)
        self.calls.append(RestCall(request.method, path, body, query, status, files))
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
        self, method: str, path: str, body: Any, query: dict[str, str],
        files: tuple[UploadedFile, ...],
    ) -> tuple[int, Any]:  # fmt: skip
        for route_method, pattern, handler in self._routes:
            match = pattern.match(path)
            if route_method == method and match:
                try:
                    result = await handler(
                        *match.groups(), body=body or {}, query=query, files=files
                    )
                except _Error as error:
                    return error.status, error.body
                return (204, None) if result is None else (200, result)
        return 404, {"message": "404: Not Found", "code": 0}

    async def _me(self, **_: Any) -> JSON:
        return wire.me()

    async def _application(self, **_: Any) -> JSON:
        return {**wire.application(), "flags": self.application_flags}

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
        channel_id, guild_id = int(interaction["channel_id"]), _guild_of(interaction)
        original = wire.bot_message(self.new_id(), channel_id, guild_id)
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
        self, app: str, token: str, message_id: str, *, body: JSON,
        files: tuple[UploadedFile, ...], **_: Any,
    ) -> JSON:  # fmt: skip
        message = self._hook_message(token, message_id)
        self._apply_edit(message, body, files)
        message["flags"] &= ~LOADING
        return dict(message)

    async def _delete(self, app: str, token: str, message_id: str, **_: Any) -> None:
        message = self._hook_message(token, message_id)
        self.messages.pop(int(message["id"]), None)

    async def _followup(
        self, app: str, token: str, *, body: JSON, files: tuple[UploadedFile, ...], **_: Any
    ) -> JSON:
        interaction = self._interactions[token]
        channel_id, guild_id = int(interaction["channel_id"]), _guild_of(interaction)
        message = wire.bot_message(self.new_id(), channel_id, guild_id, body.get("content") or "")
        message["flags"], message["webhook_id"] = body.get("flags", 0), str(APP_ID)
        message["attachments"] = self._attach(files)
        self.messages[int(message["id"])] = message
        return dict(message)

    async def _create_message(
        self, channel_id: str, *, body: JSON, files: tuple[UploadedFile, ...], **_: Any
    ) -> JSON:
        channel = self.channels.get(int(channel_id), {})
        guild_id = int(channel["guild_id"]) if channel.get("guild_id") else None
        content = body.get("content") or ""
        message = wire.bot_message(self.new_id(), int(channel_id), guild_id, content)
        message["attachments"] = self._attach(files)
        if body.get("message_reference"):
            message["message_reference"], message["type"] = body["message_reference"], 19
        self.messages[int(message["id"])] = message
        # Discord echoes the bot's own messages on the gateway; the bot must ignore them.
        # A bot between gateway sessions (restarting) posts all the same, unechoed.
        if self.gateway.socket is not None and not self.gateway.socket.closed:
            await self.dispatch("MESSAGE_CREATE", dict(message))
        return dict(message)

    async def _edit_message(
        self, channel_id: str, message_id: str, *, body: JSON,
        files: tuple[UploadedFile, ...], **_: Any,
    ) -> JSON:  # fmt: skip
        message = self.messages[int(message_id)]
        self._apply_edit(message, body, files)
        return dict(message)

    async def _thread_from_message(
        self, channel_id: str, message_id: str, *, body: JSON, **_: Any
    ) -> JSON:
        return await self._open_thread(int(message_id), int(channel_id), body)

    async def _thread(self, channel_id: str, *, body: JSON, **_: Any) -> JSON:
        return await self._open_thread(self.new_id(), int(channel_id), body)

    async def _open_thread(self, thread_id: int, parent_id: int, body: JSON) -> JSON:
        guild_id = int(self.channels[parent_id]["guild_id"])
        thread = wire.thread_channel(thread_id, parent_id, guild_id, body.get("name", "thread"))
        self.channels[thread_id] = thread
        if self.thread_create_events:
            await self.dispatch("THREAD_CREATE", {**thread, "newly_created": True})
        return thread

    def _everything(self, channel_id: str) -> list[MessagePayload]:
        """People's and the bot's messages in a channel, oldest first (ids are in time
        order), as GET /channels/{id}/messages shows them."""
        # Ephemeral messages are the asker's alone: never in a channel's history.
        found = [m for m in [*self.said.values(), *self.messages.values()]
                 if m["channel_id"] == channel_id and not m["flags"] & EPHEMERAL]  # fmt: skip
        return sorted(found, key=lambda m: int(m["id"]))

    async def _get_message(self, channel_id: str, message_id: str, **_: Any) -> JSON:
        for message in self._everything(channel_id):
            if message["id"] == message_id:
                return dict(message)
        raise _Error(404, "Unknown Message", 10008)

    async def _history(self, channel_id: str, *, query: dict[str, str], **_: Any) -> list[JSON]:
        """GET /channels/{id}/messages: newest first, as Discord answers (limit, before,
        after)."""
        found = self._everything(channel_id)
        if "before" in query:
            found = [m for m in found if int(m["id"]) < int(query["before"])]
        if "after" in query:
            found = [m for m in found if int(m["id"]) > int(query["after"])]
        limit = min(int(query.get("limit", 50)), 100)
        newest = found[::-1][:limit]
        return [dict(m) for m in newest]

    async def _member(self, guild_id: str, user_id: str, **_: Any) -> JSON:
        if int(user_id) not in wire.NAMES:
            raise _Error(404, "Unknown Member", 10007)
        return dict(wire.member(int(user_id)))

    async def _open_dm(self, *, body: JSON, **_: Any) -> JSON:
        """The bot's DM channel with a user (one per user, as Discord keeps it)."""
        recipient = int(body["recipient_id"])
        channel_id = self.dm_channels.setdefault(recipient, self.new_id())
        channel: JSON = {
            "id": str(channel_id), "type": 1, "last_message_id": None,
            "recipients": [wire.user(recipient)],
        }  # fmt: skip
        self.channels[channel_id] = channel
        return channel

    async def _get_channel(self, channel_id: str, **_: Any) -> JSON:
        channel = self.channels.get(int(channel_id))
        if channel is None:
            raise _Error(404, "Unknown Channel", 10003)
        return channel

    def _attach(self, files: Sequence[UploadedFile]) -> list[AttachmentPayload]:
        """Attachments for uploaded files, keeping each one's bytes."""
        attachments = []
        for upload in files:
            attachment = wire.attachment_payload(
                self.new_id(), upload.filename, len(upload.data), upload.content_type
            )
            self.uploads[attachment["id"]] = upload.data
            attachments.append(attachment)
        return attachments

    def _apply_edit(
        self, message: MessagePayload, body: JSON, files: Sequence[UploadedFile]
    ) -> None:
        if "content" in body:
            message["content"] = body["content"] or ""
        if "attachments" in body or files:
            # An edit lists the attachments to keep, by id; new files are added.
            keep = {str(item.get("id")) for item in body.get("attachments") or []}
            kept = [a for a in message["attachments"] if a["id"] in keep]
            message["attachments"] = kept + self._attach(files)
        message["edited_timestamp"] = wire.now()


def _guild_of(interaction: InteractionPayload) -> int | None:
    return int(interaction["guild_id"]) if "guild_id" in interaction else None

"""A fake Slack: the Web API, response_url, Socket Mode, and signed Events API requests.

The real slack-sdk AsyncWebClient talks to `FakeSlack.api_url` over a real socket. Every
call is recorded (method, parsed params, headers) and the messages the bot posted are
kept as Slack would show them: posted, edited, streamed, deleted. Files go through
Slack's external upload (files.getUploadURLExternal, a POST of the bytes to the URL it
returns, files.completeUploadExternal) and are kept as shared. `EventSender` plays
Slack's side of the Events API: it signs requests exactly as Slack does.
"""

from __future__ import annotations

import asyncio
import hashlib
import itertools
import json
import time
from dataclasses import dataclass, field
from typing import Any, TypeAlias
from urllib.parse import parse_qsl, urlencode

import aiohttp
from aiohttp import web
from multidict import CIMultiDictProxy
from slack_sdk.signature import SignatureVerifier

JSON: TypeAlias = dict[str, Any]
BOT_USER_ID = "UBOT"
BOT_ID = "BBOT"
TEAM_ID = "T1"


@dataclass
class ApiCall:
    method: str
    params: JSON
    headers: CIMultiDictProxy[str]


@dataclass
class Posted:
    """One message the bot made, as a user would now see it."""

    channel: str
    ts: str
    thread_ts: str
    text: str
    ephemeral_user: str = ""
    streaming: bool = False
    deleted: bool = False
    blocks: list[JSON] = field(default_factory=list)


@dataclass
class Uploaded:
    """One file the bot shared: where, and the bytes that reached the upload URL."""

    file_id: str
    filename: str
    data: bytes = b""
    channel: str = ""
    thread_ts: str = ""
    title: str = ""
    initial_comment: str = ""
    shared: bool = False  # files.completeUploadExternal finished it


@dataclass
class _Fault:
    error: str = ""
    status: int = 200
    retry_after: int = 0
    times: int | None = None  # None: for ever
    extra: JSON = field(default_factory=dict)  # more of the error body, e.g. "needed"


# What config/slack-manifest.yml asks for: a token installed from it has these.
GRANTED_SCOPES = (
    "app_mentions:read", "chat:write", "files:read", "files:write", "im:history",
    "channels:history", "groups:history", "mpim:history", "im:read", "im:write", "users:read",
    "commands", "assistant:write", "reactions:write",
)


class FakeSlack:
    def __init__(self) -> None:
        self.calls: list[ApiCall] = []
        self.posted: dict[str, Posted] = {}
        self.responses: list[JSON] = []  # what was sent to response_urls
        self.admins: set[str] = set()
        self.foreign_users: set[str] = set()  # Slack Connect users from another org
        self.socket_acks: list[JSON] = []
        self.files: dict[str, Uploaded] = {}
        # What people wrote, as conversations.history / .replies return it (say()).
        self.history: list[JSON] = []
        # Files users shared (url_private), by id: (bytes, content type); and who
        # downloaded them, with which Authorization header.
        self.private_files: dict[str, tuple[bytes, str]] = {}
        self.file_objects: dict[str, JSON] = {}  # what files.info returns, by id
        self.downloads: list[tuple[str, str]] = []
        self._faults: dict[str, _Fault] = {}
        # Methods whose answer waits until the test sets their event (hold()).
        self._held: dict[str, asyncio.Event] = {}
        self.scopes = list(GRANTED_SCOPES)  # the bot token's; a test removes one
        self._ts = itertools.count(1)
        self._sockets: list[web.WebSocketResponse] = []
        self._runner: web.AppRunner | None = None
        self._port = 0

    # -- lifecycle -------------------------------------------------------------------

    async def __aenter__(self) -> FakeSlack:
        app = web.Application()
        app.router.add_route("*", "/api/{method}", self._api)  # some methods use GET
        app.router.add_post("/respond/{id}", self._respond)
        app.router.add_post("/upload/{file_id}", self._upload)
        app.router.add_get("/socket", self._socket)
        app.router.add_get("/files-pri/{file_id}/{name}", self._download)
        self._runner = web.AppRunner(app, access_log=None, shutdown_timeout=0.5)
        await self._runner.setup()
        await web.TCPSite(self._runner, "127.0.0.1", 0).start()
        self._port = self._runner.addresses[0][1]
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        for socket in self._sockets:
            await socket.close()
        if self._runner is not None:
            await self._runner.cleanup()

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self._port}"

    @property
    def api_url(self) -> str:
        return f"{self.base}/api/"

    def response_url(self, name: str = "1") -> str:
        return f"{self.base}/respond/{name}"

    # -- scripting -------------------------------------------------------------------

    def fail(
        self, method: str, error: str = "unknown_method", times: int | None = None, **extra: Any
    ) -> None:
        """Make a method answer {"ok": false, "error": error, **extra}."""
        self._faults[method] = _Fault(error=error, times=times, extra=extra)

    def rate_limit(self, method: str, times: int = 1, retry_after: int = 0) -> None:
        """Make a method answer HTTP 429 with Retry-After, `times` times."""
        self._faults[method] = _Fault(status=429, retry_after=retry_after, times=times)

    def hold(self, method: str) -> asyncio.Event:
        """Make a method's answers wait until the returned event is set."""
        return self._held.setdefault(method, asyncio.Event())

    # -- inspection ------------------------------------------------------------------

    def calls_to(self, method: str) -> list[ApiCall]:
        return [call for call in self.calls if call.method == method]

    def thread(self, channel: str, thread_ts: str = "") -> list[Posted]:
        """Visible, non-ephemeral bot messages in a thread (or top level), oldest first."""
        return [
            p for p in self.posted.values()
            if p.channel == channel and p.thread_ts == thread_ts
            and not p.deleted and not p.ephemeral_user
        ]  # fmt: skip

    def ephemerals(self, user: str) -> list[Posted]:
        return [p for p in self.posted.values() if p.ephemeral_user == user]

    def shared_files(self, channel: str | None = None) -> list[Uploaded]:
        """Files shared into a channel (any channel when None), oldest first."""
        return [
            f for f in self.files.values()
            if f.shared and (channel is None or f.channel == channel)
        ]  # fmt: skip

    @staticmethod
    def dm_for(user: str) -> str:
        """The id of the bot's DM with a user: U1 -> D1, UADMIN -> DADMIN."""
        return "D" + user.removeprefix("U")

    # -- Socket Mode -----------------------------------------------------------------

    async def send_socket_event(self, body: JSON, envelope_id: str = "env-1") -> None:
        """Deliver an Events API body over every connected Socket Mode WebSocket."""
        envelope = {
            "envelope_id": envelope_id, "type": "events_api", "payload": body,
            "accepts_response_payload": False, "retry_attempt": 0, "retry_reason": "",
        }  # fmt: skip
        for socket in self._sockets:
            await socket.send_str(json.dumps(envelope))

    async def _socket(self, request: web.Request) -> web.WebSocketResponse:
        socket = web.WebSocketResponse(autoping=True)
        await socket.prepare(request)
        self._sockets.append(socket)
        await socket.send_str(json.dumps({"type": "hello", "num_connections": 1}))
        async for frame in socket:
            if frame.type == aiohttp.WSMsgType.TEXT:
                self.socket_acks.append(json.loads(frame.data))
        return socket

    # -- Web API ---------------------------------------------------------------------

    async def _api(self, request: web.Request) -> web.Response:
        method = request.match_info["method"]
        params = await _params(request)
        self.calls.append(ApiCall(method, params, request.headers))
        if (held := self._held.get(method)) is not None:
            await held.wait()
        fault = self._faults.get(method)
        if fault is not None and fault.times != 0:
            if fault.times is not None:
                fault.times -= 1
            return self._fault(fault)
        if not request.headers.get("Authorization", "").startswith("Bearer x"):
            return _json({"ok": False, "error": "not_authed"})
        handler = getattr(self, "_" + method.replace(".", "_"), None)
        if handler is None:
            return _json({"ok": False, "error": "unknown_method"})
        # Slack names the token's scopes on every Web API answer.
        return _json(handler(params), headers={"X-OAuth-Scopes": ",".join(self.scopes)})

    def _fault(self, fault: _Fault) -> web.Response:
        if fault.status == 429:
            headers = {"Retry-After": str(fault.retry_after)}
            return _json({"ok": False, "error": "ratelimited"}, status=429, headers=headers)
        return _json({"ok": False, "error": fault.error, **fault.extra})

    def _next_ts(self) -> str:
        return f"1700000000.{next(self._ts):06d}"

    def _auth_test(self, params: JSON) -> JSON:
        return {"ok": True, "user_id": BOT_USER_ID, "bot_id": BOT_ID, "team_id": TEAM_ID,
                "user": "parley", "team": "Test Team", "url": "https://t.slack.com/"}  # fmt: skip

    def _apps_connections_open(self, params: JSON) -> JSON:
        return {"ok": True, "url": f"ws://127.0.0.1:{self._port}/socket"}

    def say(self, channel: str, text: str, *, user: str = "U1", ts: str = "",
            thread_ts: str = "", subtype: str = "") -> JSON:  # fmt: skip
        """A person's message in the channel's history (no event is sent for it)."""
        message = {"type": "message", "user": user, "text": text, "ts": ts or self._next_ts(),
                   **({"thread_ts": thread_ts} if thread_ts else {}),
                   **({"subtype": subtype} if subtype else {})}  # fmt: skip
        self.history.append({**message, "channel": channel})
        return message

    def _readable(self, channel: str) -> list[JSON]:
        """People's and the bot's messages in a channel, oldest first."""
        said = [dict(m) for m in self.history if m["channel"] == channel]
        ours = [
            {"type": "message", "user": BOT_USER_ID, "bot_id": BOT_ID, "text": p.text,
             "ts": p.ts, "channel": channel, **({"thread_ts": p.thread_ts} if p.thread_ts else {})}
            for p in self.posted.values()
            if p.channel == channel and not p.ephemeral_user and not p.deleted
        ]  # fmt: skip
        return sorted(said + ours, key=lambda m: float(m["ts"]))

    def _conversations_replies(self, params: JSON) -> JSON:
        thread = str(params.get("ts", ""))
        found = [m for m in self._readable(str(params.get("channel", "")))
                 if m["ts"] == thread or m.get("thread_ts") == thread]  # fmt: skip
        return {"ok": True, "messages": found, "has_more": False,
                "response_metadata": {"next_cursor": ""}}  # fmt: skip

    def _conversations_history(self, params: JSON) -> JSON:
        oldest = float(params.get("oldest") or 0)
        top = [m for m in self._readable(str(params.get("channel", "")))
               if m.get("thread_ts", m["ts"]) == m["ts"] and float(m["ts"]) >= oldest]  # fmt: skip
        limit = int(params.get("limit") or 100)
        return {"ok": True, "messages": top[::-1][:limit], "has_more": len(top) > limit}

    def _users_info(self, params: JSON) -> JSON:
        user = str(params.get("user", ""))
        admin = user in self.admins
        team = "TFOREIGN" if user in self.foreign_users else TEAM_ID
        return {"ok": True, "user": {
            "id": user, "team_id": team, "name": user.lower(), "real_name": f"User {user}",
            "is_bot": False,
            "is_admin": admin, "is_owner": False, "profile": {"display_name": user.lower()},
        }}  # fmt: skip

    def _store(self, params: JSON, *, streaming: bool = False, user: str = "") -> Posted:
        channel = str(params.get("channel", ""))
        posted = Posted(
            channel, self._next_ts(), str(params.get("thread_ts", "")), _text(params),
            ephemeral_user=user, streaming=streaming, blocks=blocks_of(params),
        )  # fmt: skip
        self.posted[posted.ts] = posted
        return posted

    def _chat_postMessage(self, params: JSON) -> JSON:
        posted = self._store(params)
        return {"ok": True, "channel": posted.channel, "ts": posted.ts,
                "message": {"text": posted.text, "ts": posted.ts}}  # fmt: skip

    def _chat_postEphemeral(self, params: JSON) -> JSON:
        posted = self._store(params, user=str(params.get("user", "")))
        return {"ok": True, "message_ts": posted.ts}

    def _chat_startStream(self, params: JSON) -> JSON:
        if not params.get("thread_ts"):
            return {"ok": False, "error": "invalid_arguments"}
        posted = self._store(params, streaming=True)
        return {"ok": True, "channel": posted.channel, "ts": posted.ts}

    def _find(self, params: JSON) -> Posted | None:
        posted = self.posted.get(str(params.get("ts", "")))
        if posted is None or posted.deleted or posted.channel != params.get("channel"):
            return None
        return posted

    def _chat_appendStream(self, params: JSON) -> JSON:
        posted = self._find(params)
        if posted is None or not posted.streaming:
            return {"ok": False, "error": "message_not_in_streaming_state"}
        posted.text += _text(params)
        return {"ok": True, "channel": posted.channel, "ts": posted.ts}

    def _chat_stopStream(self, params: JSON) -> JSON:
        result = self._chat_appendStream(params)
        posted = self._find(params)
        if posted is not None:
            posted.streaming = False
        return result

    def _chat_update(self, params: JSON) -> JSON:
        posted = self._find(params)
        if posted is None:
            return {"ok": False, "error": "message_not_found"}
        posted.text = _text(params)
        return {"ok": True, "channel": posted.channel, "ts": posted.ts, "text": posted.text}

    def _chat_delete(self, params: JSON) -> JSON:
        posted = self._find(params)
        if posted is None:
            return {"ok": False, "error": "message_not_found"}
        posted.deleted = True
        return {"ok": True, "channel": posted.channel, "ts": posted.ts}

    def _assistant_threads_setStatus(self, params: JSON) -> JSON:
        return {"ok": True}

    def _reactions_add(self, params: JSON) -> JSON:
        return {"ok": True}

    def _conversations_open(self, params: JSON) -> JSON:
        users = str(params.get("users", ""))
        if not users or "," in users:
            return {"ok": False, "error": "invalid_arguments"}  # Parley opens 1:1 DMs only
        return {"ok": True, "channel": {"id": self.dm_for(users)}}

    def _files_getUploadURLExternal(self, params: JSON) -> JSON:
        if not params.get("filename") or not str(params.get("length", "")).isdigit():
            return {"ok": False, "error": "invalid_arguments"}
        file_id = f"F{len(self.files) + 1:04d}"
        self.files[file_id] = Uploaded(file_id, str(params["filename"]))
        return {"ok": True, "upload_url": f"{self.base}/upload/{file_id}", "file_id": file_id}

    def _files_completeUploadExternal(self, params: JSON) -> JSON:
        listed = json.loads(str(params.get("files") or "[]"))
        uploads = [self.files.get(str(item.get("id"))) for item in listed]
        if not uploads or any(upload is None or not upload.data for upload in uploads):
            return {"ok": False, "error": "file_not_found"}  # never uploaded to its URL
        shared = []
        for upload, item in zip(uploads, listed, strict=True):
            assert upload is not None
            upload.channel = str(params.get("channel_id") or "")
            upload.thread_ts = str(params.get("thread_ts") or "")
            upload.initial_comment = str(params.get("initial_comment") or "")
            upload.title, upload.shared = str(item.get("title") or upload.filename), True
            shared.append({"id": upload.file_id, "name": upload.filename, "title": upload.title})
        return {"ok": True, "files": shared}

    async def _upload(self, request: web.Request) -> web.Response:
        """The upload URL: Slack answers a plain-text "OK - <bytes>"."""
        upload = self.files.get(request.match_info["file_id"])
        if upload is None:
            return web.Response(status=404, text="not found")
        upload.data = await request.read()
        return web.Response(text=f"OK - {len(upload.data)}")

    def share_file(self, name: str, data: bytes, mimetype: str, size: int | None = None) -> JSON:
        """A file a user shared, as it appears in the message event's `files`."""
        file_id = f"F{len(self.private_files) + 1:04d}"
        self.private_files[file_id] = (data, mimetype)
        url = f"{self.base}/files-pri/{TEAM_ID}-{file_id}/{name}"
        shared = {"id": file_id, "name": name, "title": name, "mimetype": mimetype,
                  "filetype": name.rsplit(".", 1)[-1], "size": len(data) if size is None else size,
                  "url_private": url, "url_private_download": url + "?download=1"}  # fmt: skip
        self.file_objects[file_id] = shared
        return shared

    def _files_info(self, params: JSON) -> JSON:
        shared = self.file_objects.get(str(params.get("file", "")))
        return {"ok": True, "file": shared} if shared else {"ok": False, "error": "file_not_found"}

    async def _download(self, request: web.Request) -> web.Response:
        file_id = request.match_info["file_id"].rsplit("-", 1)[-1]
        self.downloads.append((file_id, request.headers.get("Authorization", "")))
        if not request.headers.get("Authorization", "").startswith("Bearer xoxb-"):
            # What Slack does without the token: a sign-in page, not the file.
            return web.Response(status=302, headers={"Location": "https://slack.com/signin"})
        if file_id not in self.private_files:
            return web.Response(status=404)
        data, mimetype = self.private_files[file_id]
        return web.Response(body=data, content_type=mimetype)

    async def _respond(self, request: web.Request) -> web.Response:
        self.responses.append(await request.json())
        return web.Response(text="ok")


async def _params(request: web.Request) -> JSON:
    # slack-sdk sends some POSTs' arguments in the query string (files.* among them).
    query: JSON = dict(request.query)
    if request.method == "GET":
        return query
    raw = await request.text()
    if request.content_type == "application/json":
        return query | dict(json.loads(raw or "{}"))
    return query | dict(parse_qsl(raw, keep_blank_values=True))


def _text(params: JSON) -> str:
    return str(params.get("markdown_text") or params.get("text") or "")


def blocks_of(params: JSON) -> list[JSON]:
    blocks = params.get("blocks") or []
    return list(json.loads(blocks) if isinstance(blocks, str) else blocks)


def _json(body: JSON, status: int = 200, headers: dict[str, str] | None = None) -> web.Response:
    return web.json_response(body, status=status, headers=headers)


class EventSender:
    """Slack's side of the HTTP Events API: signed POSTs to the adapter's endpoint."""

    def __init__(self, url: str, signing_secret: str) -> None:
        self.url = url
        self.verifier = SignatureVerifier(signing_secret)
        self._event_ids = itertools.count(1)

    async def post(
        self, body: str, content_type: str, *, headers: dict[str, str] | None = None,
        signature: str | None = None,
    ) -> tuple[int, str]:  # fmt: skip
        timestamp = str(int(time.time()))
        signed = self.verifier.generate_signature(timestamp=timestamp, body=body) or ""
        all_headers = {
            "Content-Type": content_type, "X-Slack-Request-Timestamp": timestamp,
            "X-Slack-Signature": signature if signature is not None else signed,
            **(headers or {}),
        }  # fmt: skip
        async with aiohttp.ClientSession() as session:
            async with session.post(self.url, data=body.encode(), headers=all_headers) as resp:
                return resp.status, await resp.text()

    def envelope(self, event: JSON, event_id: str | None = "") -> JSON:
        """An event_callback body; event_id "" is a fresh id, None leaves the field out."""
        body = {
            "token": "legacy", "team_id": TEAM_ID, "api_app_id": "A1", "type": "event_callback",
            "event_id": event_id or f"Ev{next(self._event_ids):04d}",
            "event_time": int(time.time()), "event": event,
            "authorizations": [{"team_id": TEAM_ID, "user_id": BOT_USER_ID, "is_bot": True}],
        }  # fmt: skip
        if event_id is None:
            del body["event_id"]
        return body

    async def event(
        self, event: JSON, *, event_id: str | None = "", retry_num: int | None = None,
        signature: str | None = None,
    ) -> int:  # fmt: skip
        headers = {}
        if retry_num is not None:
            headers = {"X-Slack-Retry-Num": str(retry_num), "X-Slack-Retry-Reason": "http_timeout"}
        body = json.dumps(self.envelope(event, event_id))
        status, _ = await self.post(body, "application/json", headers=headers, signature=signature)
        return status

    async def shortcut(self, callback_id: str, *, user: str, channel: str, message: JSON,
                       response_url: str) -> tuple[int, str]:  # fmt: skip
        """A message shortcut, as Slack posts it to the interactivity URL: signed form
        data with one field, payload (JSON)."""
        payload = {
            "type": "message_action", "callback_id": callback_id, "token": "legacy",
            "trigger_id": f"trig-{next(self._event_ids)}", "action_ts": str(time.time()),
            "team": {"id": TEAM_ID, "domain": "test"}, "user": {"id": user, "team_id": TEAM_ID},
            "channel": {"id": channel, "name": "general"}, "message": message,
            "message_ts": message.get("ts", ""), "response_url": response_url,
            "is_enterprise_install": False, "enterprise": None,
        }  # fmt: skip
        body = urlencode({"payload": json.dumps(payload)})
        return await self.post(body, "application/x-www-form-urlencoded")

    async def url_verification(self, challenge: str) -> tuple[int, str]:
        body = json.dumps({"token": "legacy", "challenge": challenge, "type": "url_verification"})
        return await self.post(body, "application/json")

    async def slash_command(
        self, text: str, *, user: str, channel: str, response_url: str,
        trigger_id: str | None = "",
    ) -> tuple[int, str]:  # fmt: skip
        """POST /parley; trigger_id "" is a fresh id, None leaves the field out."""
        fresh = hashlib.sha1(f"{user}{text}{time.time()}".encode()).hexdigest()
        form = {
            "token": "legacy", "team_id": TEAM_ID, "team_domain": "test", "channel_id": channel,
            "channel_name": "directmessage" if channel.startswith("D") else "general",
            "user_id": user, "user_name": user.lower(), "command": "/parley", "text": text,
            "api_app_id": "A1", "response_url": response_url, "trigger_id": trigger_id or fresh,
        }  # fmt: skip
        if trigger_id is None:
            del form["trigger_id"]
        return await self.post(urlencode(form), "application/x-www-form-urlencoded")

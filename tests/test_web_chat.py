"""The web chat over real sockets: the page, its files, and the WebSocket at /ws."""

from __future__ import annotations

import base64
import io
import logging
import re
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass

import aiohttp
import pytest
from aiohttp import ClientSession, ClientWebSocketResponse
from PIL import Image

from adapters.web import TOO_DEEP, WebAdapter, create, session_identity
from adapters.web_auth import WEB_COOKIE, WEB_MAX_AGE, RedactTokens, cookie_value, is_loopback
from bot.config import ConfigError
from bot.engine import Engine
from tests.conftest import EngineFactory
from tests.fakes.openai_server import FakeOpenAI, Text
from tests.test_web_helpers import ask, browser_like, receive, serve

ADMIN_TOKEN = "admin-secret-for-tests"


@dataclass
class Chat:
    url: str
    engine: Engine
    adapter: WebAdapter

    async def open(self, client: ClientSession) -> ClientWebSocketResponse:
        """Load the page (which sets the session cookie), then open the socket."""
        async with client.get(self.url + "/") as page:
            assert page.status == 200
        return await client.ws_connect(self.url + "/ws", origin=self.url)


@pytest.fixture
async def chat(make_engine: EngineFactory, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[Chat]:
    monkeypatch.delenv("PARLEY_WEB_TOKEN", raising=False)
    monkeypatch.setenv("PARLEY_ADMIN_TOKEN", ADMIN_TOKEN)
    engine = make_engine()
    adapter = create(engine, engine.settings)
    async with serve(engine, adapter) as url:
        yield Chat(url, engine, adapter)


# --- the page ------------------------------------------------------------------------


async def test_page_sets_a_private_session_cookie_and_a_strict_csp(chat: Chat) -> None:
    async with browser_like() as client, client.get(chat.url + "/") as page:
        assert page.status == 200
        assert page.content_type == "text/html"
        body = await page.text()
        csp = page.headers["Content-Security-Policy"]
        cookie = page.headers["Set-Cookie"]
    assert "default-src 'self'" in csp and "script-src 'self'" in csp
    assert "unsafe-inline" not in csp and "unsafe-eval" not in csp
    assert page.headers["X-Content-Type-Options"] == "nosniff"
    assert re.match(r"parley_session=[A-Za-z0-9_-]{43};", cookie)
    assert "HttpOnly" in cookie and "SameSite=Strict" in cookie
    assert '<script src="/static/chat.js"' in body
    assert not re.search(r"<script(?![^>]*\bsrc=)", body), "inline script would break the CSP"
    assert "http://" not in body and "https://" not in body  # no CDN: works offline


async def test_assets_are_served_and_nothing_else(chat: Chat) -> None:
    async with ClientSession() as client:
        async with client.get(chat.url + "/static/chat.js") as script:
            assert script.status == 200
            assert script.content_type == "text/javascript"
            source = await script.text()
        async with client.get(chat.url + "/static/chat.css") as style:
            assert style.status == 200
        async with client.get(chat.url + "/static/..%2Fweb.py") as escape:
            assert escape.status == 404
        async with client.get(chat.url + "/favicon.ico") as icon:
            assert icon.status == 200 and icon.content_type == "image/svg+xml"
    # Model text becomes markup only as the server's sanitised HTML (web_markdown.py):
    # one assignment, of the frame's html field; everything else is text.
    markup = re.findall(r"\.(?:inner|outer)HTML\s*=.*|insertAdjacentHTML|document\.write", source)
    assert markup == [".innerHTML = html;"]
    assert "textContent" in source


# --- the WebSocket -------------------------------------------------------------------


async def test_reply_streams_as_status_delta_and_final_frames(
    chat: Chat, fake_openai: FakeOpenAI
) -> None:
    answer = "Hello from the fake model, streamed in pieces."
    fake_openai.script(Text(answer, chunks=4, interval=0.1))
    async with browser_like() as client, await chat.open(client) as socket:
        assert await receive(socket) == {"type": "history", "messages": []}
        frames = await ask(socket, "hi there")
    kinds = [frame["type"] for frame in frames]
    # The first piece at once; the rest, read with the end of the stream, in the final.
    assert kinds == ["status", "delta", "final", "done"]
    assert answer.startswith(frames[1]["text"]) and frames[1]["text"] != answer
    assert frames[-2]["text"] == answer
    assert fake_openai.requests[-1]["messages"][-1] == {"role": "user", "content": "hi there"}


async def test_slash_commands_work_as_in_the_console(chat: Chat) -> None:
    async with browser_like() as client, await chat.open(client) as socket:
        await receive(socket)
        [final, done] = await ask(socket, "/help")
    assert final["type"] == "final" and final["private"] is True
    assert "Parley commands" in final["text"] and "/usage chart" in final["text"]
    assert done == {"type": "done"}


async def test_messages_carry_the_session_identity(chat: Chat, fake_openai: FakeOpenAI) -> None:
    async with browser_like() as client, await chat.open(client) as socket:
        await receive(socket)
        await ask(socket, "hello")
        session = next(c.value for c in client.cookie_jar if c.key == "parley_session")
    identity = session_identity(session)
    [row] = await chat.engine.store.usage_report(0, "channel")
    assert row["key"] == f"web:local:{identity}"
    assert session not in row["key"]  # the cookie itself never reaches the database


async def test_reconnecting_with_the_same_cookie_redraws_the_conversation(chat: Chat) -> None:
    async with browser_like() as client:
        async with await chat.open(client) as socket:
            await receive(socket)
            await ask(socket, "remember the word otter")
        async with await chat.open(client) as socket:
            history = await receive(socket)
    assert history == {
        "type": "history",
        "messages": [
            {"role": "user", "text": "remember the word otter"},
            {
                "role": "assistant",
                "text": "echo: remember the word otter",
                "html": "<p>echo: remember the word otter</p>\n",
            },
        ],
    }


async def test_another_session_does_not_see_the_first_ones_history(
    chat: Chat, fake_openai: FakeOpenAI
) -> None:
    async with browser_like() as first, await chat.open(first) as socket:
        await receive(socket)
        await ask(socket, "my secret is 1234")
    async with browser_like() as second, await chat.open(second) as socket:
        assert await receive(socket) == {"type": "history", "messages": []}
        await ask(socket, "what is my secret?")
    prompt = fake_openai.requests[-1]["messages"]
    assert [m["content"] for m in prompt if m["role"] != "system"] == ["what is my secret?"]


async def test_history_survives_a_restart(
    make_engine: EngineFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("PARLEY_WEB_TOKEN", raising=False)
    async with browser_like() as client:
        first = make_engine()
        async with serve(first, create(first, first.settings)) as url:
            await client.get(url + "/")
            async with client.ws_connect(url + "/ws", origin=url) as socket:
                await receive(socket)
                await ask(socket, "before the restart")
        second = make_engine()  # a new engine on the same database file
        async with serve(second, create(second, second.settings)) as url:
            async with client.ws_connect(url + "/ws", origin=url) as socket:
                history = await receive(socket)
    assert [m["text"] for m in history["messages"]] == [
        "before the restart", "echo: before the restart",
    ]  # fmt: skip


@pytest.mark.parametrize("origin", ["http://evil.example", "null", "", "http://127.0.0.1:1"])
async def test_cross_origin_websocket_is_refused(chat: Chat, origin: str) -> None:
    async with browser_like() as client:
        await client.get(chat.url + "/")
        with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
            await client.ws_connect(chat.url + "/ws", origin=origin or None)
    assert refused.value.status == 403


@pytest.mark.parametrize("host", ["rebind.evil.example", "127.0.0.1.evil.example", "evil:80"])
async def test_a_rebound_host_name_is_refused_without_a_token(chat: Chat, host: str) -> None:
    # DNS rebinding: a page on evil.example re-resolves its own name to 127.0.0.1, so
    # its requests reach us with its Host, and an Origin that matches that Host.
    port = chat.url.rsplit(":", 1)[1]
    forged = {"Host": f"{host}:{port}"}
    async with browser_like() as client:
        async with client.get(chat.url + "/", headers=forged) as page:
            assert page.status == 403 and "127.0.0.1" in await page.text()
            assert "Set-Cookie" not in page.headers
        await client.get(chat.url + "/")  # a real session cookie, so only Host is wrong
        with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
            await client.ws_connect(
                chat.url + "/ws", origin=f"http://{host}:{port}", headers=forged
            )
        assert refused.value.status == 403
        async with client.get(chat.url + "/admin", headers=forged) as admin:
            assert admin.status == 403
            assert "test:" not in await admin.text()


@pytest.mark.parametrize("host", ["127.0.0.1", "localhost", "LocalHost", "[::1]"])
async def test_loopback_host_names_are_served(chat: Chat, host: str) -> None:
    port = chat.url.rsplit(":", 1)[1]
    async with ClientSession() as client:
        for value in (host, f"{host}:{port}"):
            async with client.get(chat.url + "/", headers={"Host": value}) as page:
                assert page.status == 200, value


async def test_websocket_without_a_session_is_refused(chat: Chat) -> None:
    async with browser_like() as client:
        with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
            await client.ws_connect(chat.url + "/ws", origin=chat.url)
    assert refused.value.status == 403


async def test_a_malformed_frame_gets_an_error_frame(chat: Chat) -> None:
    async with browser_like() as client, await chat.open(client) as socket:
        await receive(socket)
        await socket.send_str("not json")
        assert (await receive(socket))["type"] == "error"
        [final, _] = await ask(socket, "/help")
    assert final["type"] == "final"  # the socket still works


@pytest.mark.parametrize(
    "frame",
    ["[" * 40_000, '{"type": "message", "text": "hi", "x": ' + "[" * 5000 + "]" * 5000 + "}"],
)
async def test_a_deeply_nested_frame_is_refused_and_the_socket_kept(chat: Chat, frame: str) -> None:
    async with browser_like() as client, await chat.open(client) as socket:
        await receive(socket)
        await socket.send_str(frame)
        refusal = await receive(socket)
        [final, _] = await ask(socket, "/help")
    assert refusal == {"type": "error", "text": TOO_DEEP}
    assert final["type"] == "final"  # the socket still works


# --- /usage chart in the web chat --------------------------------------------------


async def test_usage_chart_is_a_png_for_an_admin(chat: Chat) -> None:
    async with browser_like() as client:
        async with client.get(chat.url + f"/admin?token={ADMIN_TOKEN}") as signed_in:
            assert signed_in.status == 200
        async with await chat.open(client) as socket:
            await receive(socket)
            await ask(socket, "spend some tokens")
            [final, _] = await ask(socket, "/usage chart 7d")
    assert final["type"] == "final" and final["text"] == "Usage chart, last 7d"
    png = base64.b64decode(final["image"])
    assert png.startswith(b"\x89PNG\r\n\x1a\n")
    assert final["image_name"] == "usage.png"
    with Image.open(io.BytesIO(png)) as image:
        assert image.format == "PNG" and image.width > 100


async def test_usage_chart_is_refused_to_a_non_admin(chat: Chat) -> None:
    async with browser_like() as client, await chat.open(client) as socket:
        await receive(socket)
        await ask(socket, "spend some tokens")
        [reply, _] = await ask(socket, "/usage chart")
    assert reply["type"] == "error" and "only Parley admins" in reply["text"]
    assert "image" not in reply


# --- exposed on the network: PARLEY_WEB_TOKEN ---------------------------------------


@pytest.mark.parametrize(
    ("host", "loopback"),
    [("127.0.0.1", True), ("localhost", True), ("::1", True), ("[::1]", True),
     ("0.0.0.0", False), ("::", False), ("192.168.1.5", False), ("example.org", False)],
)  # fmt: skip
def test_loopback_hosts(host: str, loopback: bool) -> None:
    assert is_loopback(host) is loopback


def test_exposed_web_chat_refuses_to_start_without_a_token(
    make_engine: EngineFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("PARLEY_WEB_TOKEN", raising=False)
    engine = make_engine(web_host="0.0.0.0")
    with pytest.raises(ConfigError, match="PARLEY_WEB_TOKEN"):
        create(engine, engine.settings)


async def test_exposed_web_chat_needs_the_token_once(
    make_engine: EngineFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PARLEY_WEB_TOKEN", "web-secret")
    engine = make_engine(web_host="0.0.0.0")
    async with serve(engine, create(engine, engine.settings)) as url, browser_like() as client:
        async with client.get(url + "/") as missing:
            assert missing.status == 401
        async with client.get(url + "/?token=guess") as wrong:
            assert wrong.status == 403
        await client.get(url + "/")  # a session cookie, but no access yet
        with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
            await client.ws_connect(url + "/ws", origin=url)
        assert refused.value.status == 403
        async with client.get(url + "/?token=web-secret", allow_redirects=False) as right:
            assert right.status == 303 and right.headers["Location"] == "/"
            assert "web-secret" not in right.headers["Set-Cookie"]  # a derived value
        async with client.get(url + "/") as page:
            assert page.status == 200
        async with client.ws_connect(url + "/ws", origin=url) as socket:
            assert (await receive(socket))["type"] == "history"


async def test_exposed_web_chat_checks_the_cookie_not_the_host_name(
    make_engine: EngineFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PARLEY_WEB_TOKEN", "web-secret")
    engine = make_engine(web_host="0.0.0.0")
    named = {"Host": "parley.example.org"}  # a real deployment's name
    async with serve(engine, create(engine, engine.settings)) as url, browser_like() as client:
        async with client.get(url + "/?token=web-secret", headers=named) as page:
            assert page.status == 200


async def test_an_access_cookie_past_its_lifetime_is_refused(
    make_engine: EngineFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PARLEY_WEB_TOKEN", "web-secret")
    engine = make_engine(web_host="0.0.0.0")
    now = time.time()
    stale = cookie_value("web-secret", WEB_COOKIE, issued=now - WEB_MAX_AGE - 1)
    fresh = cookie_value("web-secret", WEB_COOKIE, issued=now - WEB_MAX_AGE + 60)
    future = cookie_value("web-secret", WEB_COOKIE, issued=now + 3600)
    moved = f"{int(now)}.{stale.split('.')[1]}"  # the stale signature on a fresh time
    async with serve(engine, create(engine, engine.settings)) as url, ClientSession() as client:
        for value, status in ((stale, 401), (future, 401), (moved, 401), (fresh, 200)):
            headers = {"Cookie": f"{WEB_COOKIE}={value}"}
            async with client.get(url + "/", headers=headers) as page:
                assert page.status == status, value


@pytest.mark.parametrize(
    "query",
    ["since=7d&token=s3cret", "%74oken=s3cret&since=7d", "since=7d&%74%6F%6B%65%6E=s3cret",
     "since=7d&TOKEN=s3cret", "since=7d&%2574oken=s3cret", "since=7d;token=s3cret",
     "since=7d&+token=s3cret"],
)  # fmt: skip
def test_tokens_are_kept_out_of_the_access_log(query: str) -> None:
    line = f'"GET /admin?{query} HTTP/1.1" 303 "http://127.0.0.1/?token=s3cret"'
    record = logging.LogRecord("aiohttp.access", logging.INFO, __file__, 1, line, None, None)
    # aiohttp passes the request line as an extra field too.
    setattr(record, "first_request_line", f"GET /admin?{query} HTTP/1.1")  # noqa: B010
    assert RedactTokens().filter(record)
    assert "s3cret" not in record.getMessage() and "since=7d" in record.getMessage()
    assert "s3cret" not in getattr(record, "first_request_line")  # noqa: B009


def test_other_parameters_are_logged_as_they_were() -> None:
    line = '"GET /admin?since=7d&tokens=2&my_token=x&a=%20 HTTP/1.1" 200'
    record = logging.LogRecord("aiohttp.access", logging.INFO, __file__, 1, line, None, None)
    assert RedactTokens().filter(record)
    assert record.getMessage() == line

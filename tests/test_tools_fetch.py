"""fetch_url against a local aiohttp server over real sockets: what it reads, and what it
refuses (hosts not allowed, loopback and private addresses, redirects elsewhere)."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from bot.config import FetchSettings
from bot.messages import ConversationKey
from bot.tools.fetch import register_fetch
from bot.tools.registry import Registry, ToolContext, ToolResult
from tests.conftest import EngineFactory, collect, final_text, message
from tests.fakes.openai_server import Call, FakeOpenAI, Text, ToolCalls

PAGE = b"""<!doctype html><html><head><title>Opening hours</title>
<script>var tracking = "never shown";</script><style>p { color: red }</style></head>
<body><nav>Home | About</nav><h1>The library</h1><p>Open 9 to 5, <b>closed</b> Sundays.</p>
<form><input name="q"></form></body></html>"""


async def _nothing() -> list[dict[str, str]]:
    return []


def _context() -> ToolContext:
    return ToolContext(ConversationKey("test", "w", "c"), "test:u", lambda q, n: _nothing())


@pytest.fixture
async def site() -> AsyncIterator[TestServer]:
    async def page(_: web.Request) -> web.Response:
        return web.Response(body=PAGE, content_type="text/html")

    async def hop(_: web.Request) -> web.Response:
        raise web.HTTPFound("/page")

    async def away(_: web.Request) -> web.Response:
        raise web.HTTPFound("http://elsewhere.test/secret")

    async def to_loopback(request: web.Request) -> web.Response:
        raise web.HTTPFound(f"http://127.0.0.1:{request.url.port}/page")

    async def big(_: web.Request) -> web.StreamResponse:
        return web.Response(text="x" * 50_000, content_type="text/plain")

    async def picture(_: web.Request) -> web.Response:
        return web.Response(body=b"\x89PNG\r\n", content_type="image/png")

    async def posted(_: web.Request) -> web.Response:
        return web.Response(text="posted")

    app = web.Application()
    app.router.add_get("/page", page)
    app.router.add_get("/hop", hop)
    app.router.add_get("/away", away)
    app.router.add_get("/to-loopback", to_loopback)
    app.router.add_get("/big", big)
    app.router.add_get("/picture", picture)
    app.router.add_post("/page", posted)
    server = TestServer(app, host="127.0.0.1")
    await server.start_server()
    yield server
    await server.close()


async def fetch(url: str, *hosts: str, max_bytes: int = 20_000) -> ToolResult:
    registry = Registry()
    register_fetch(registry, FetchSettings(allow_hosts=hosts, max_bytes=max_bytes))
    return await registry.run("fetch_url", f'{{"url": "{url}"}}', _context(), timeout=10)


def test_off_unless_some_host_is_allowed() -> None:
    registry = Registry()
    register_fetch(registry, FetchSettings())
    assert "fetch_url" not in registry.names()


async def test_a_page_allowed_by_name_is_read_as_text(site: TestServer) -> None:
    result = await fetch(f"http://localhost:{site.port}/page", "localhost")
    assert result.ok, result.content
    assert result.content == (
        f"http://localhost:{site.port}/page\n\nOpening hours\n\nThe library\nOpen 9 to 5,\n"
        "closed\nSundays."
    )


async def test_loopback_is_refused_unless_listed_exactly(site: TestServer) -> None:
    by_address = await fetch(f"http://127.0.0.1:{site.port}/page", "*")
    assert not by_address.ok
    assert "127.0.0.1 is a loopback address, which is refused unless listed" in by_address.content
    # A name that resolves to loopback, through a wildcard: refused after resolving.
    by_name = await fetch(f"http://localhost:{site.port}/page", "*")
    assert not by_name.ok and "loopback address, which is not allowed" in by_name.content
    listed = await fetch(f"http://127.0.0.1:{site.port}/page", "127.0.0.1")
    assert listed.ok and "Open 9 to 5" in listed.content


async def test_hosts_outside_the_list_are_refused(site: TestServer) -> None:
    result = await fetch(f"http://localhost:{site.port}/page", "example.org")
    assert result.content.endswith("localhost is not in tools.fetch.allow_hosts")
    metadata = await fetch("http://169.254.169.254/latest/meta-data/", "*")
    assert "169.254.169.254 is a link-local address" in metadata.content


async def test_redirects_stay_within_the_allowed_hosts(site: TestServer) -> None:
    within = await fetch(f"http://localhost:{site.port}/hop", "localhost")
    assert within.ok and within.content.startswith(f"http://localhost:{site.port}/page\n")
    away = await fetch(f"http://localhost:{site.port}/away", "localhost")
    assert not away.ok and "elsewhere.test is not in tools.fetch.allow_hosts" in away.content
    # Listed by name is not listed by address: a redirect to 127.0.0.1 is refused.
    loop = await fetch(f"http://localhost:{site.port}/to-loopback", "localhost")
    assert not loop.ok and "127.0.0.1 is not in tools.fetch.allow_hosts" in loop.content


async def test_size_and_type_are_bounded(site: TestServer) -> None:
    big = await fetch(f"http://localhost:{site.port}/big", "localhost", max_bytes=10_000)
    assert not big.ok and "too large" in big.content
    picture = await fetch(f"http://localhost:{site.port}/picture", "localhost")
    assert not picture.ok and "it is image/png, not text" in picture.content
    other = await fetch("ftp://localhost/file", "localhost")
    assert "only http and https URLs can be fetched" in other.content


async def test_the_model_reads_a_page_through_the_engine(
    site: TestServer, make_engine: EngineFactory, fake_openai: FakeOpenAI
) -> None:
    engine = make_engine()
    register_fetch(engine.tools, FetchSettings(allow_hosts=("localhost",)))
    url = f"http://localhost:{site.port}/page"
    fake_openai.script(
        ToolCalls([Call("fetch_url", {"url": url}, id="call_1")]), Text("Closed on Sundays.")
    )
    events = await collect(engine, message("when is the library open?"))
    assert final_text(events) == "Closed on Sundays."
    tool_message = fake_openai.requests[1]["messages"][-1]
    assert tool_message["role"] == "tool" and "Open 9 to 5" in tool_message["content"]
    offered = [tool["function"]["name"] for tool in fake_openai.requests[0]["tools"]]
    assert "fetch_url" in offered

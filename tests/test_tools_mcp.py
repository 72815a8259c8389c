"""MCP servers as tools, against a real stdio MCP server (tests/mcp_echo_server.py).

Starting the server costs about a second (a Python process importing the SDK), so
one connection is shared by the tests of this module.
"""

from __future__ import annotations

import asyncio
import sys
from collections.abc import AsyncIterator, Awaitable, Callable, MutableMapping
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio
import uvicorn

from bot.messages import ConversationKey
from bot.tools.mcp import McpServers, tool_name
from bot.tools.registry import Registry, ToolContext, ToolResult

SERVER = str(Path(__file__).with_name("mcp_echo_server.py"))
CONTEXT = ToolContext(
    ConversationKey("console", "local", "general"), "console:alice", lambda q, n: []
)
ECHO = {"name": "echo", "command": sys.executable, "args": [SERVER]}
MISSING = {"name": "ghost", "command": "/nonexistent/mcp-server"}

# The shared connection lives in the module's event loop; so must its tests.
shared_loop = pytest.mark.asyncio(loop_scope="module")


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def servers() -> AsyncIterator[McpServers]:
    async with McpServers(Registry(), [ECHO, MISSING]) as connected:
        yield connected


@shared_loop
async def test_connected_and_failed_servers_are_reported(servers: McpServers) -> None:
    assert servers.connected == ["echo"]
    assert len(servers.errors) == 1
    assert servers.errors[0].startswith("ghost: FileNotFoundError")


@shared_loop
async def test_tools_join_registry_with_prefix(servers: McpServers) -> None:
    assert servers.registry.names() == ["echo__add", "echo__shout", "echo__nap", "echo__fail"]
    add = servers.registry.get("echo__add")
    assert add is not None and add.description == "Add two integers."
    assert add.parameters["required"] == ["a", "b"]
    assert add.parameters["properties"]["a"]["type"] == "integer"


@shared_loop
@pytest.mark.parametrize(
    ("name", "arguments", "content"),
    [("echo__add", '{"a": 2, "b": 40}', "42"), ("echo__shout", '{"text": "hi"}', "HI")],
)
async def test_run_mcp_tool(servers: McpServers, name: str, arguments: str, content: str) -> None:
    result = await servers.registry.run(name, arguments, CONTEXT, timeout=10)
    assert result == ToolResult(content, ok=True)


@shared_loop
async def test_erroring_mcp_tool_is_an_error_result(servers: McpServers) -> None:
    result = await servers.registry.run("echo__fail", '{"reason": "x"}', CONTEXT, timeout=10)
    assert (result.ok, result.error_kind) == (False, "exception")
    assert result.content.startswith("Error: ") and "failed on purpose: x" in result.content


@shared_loop
async def test_slow_mcp_tool_times_out_and_session_survives(servers: McpServers) -> None:
    slow = await servers.registry.run("echo__nap", '{"seconds": 5}', CONTEXT, timeout=0.2)
    assert (slow.ok, slow.error_kind) == (False, "timeout")
    after = await servers.registry.run("echo__shout", '{"text": "still here"}', CONTEXT, timeout=5)
    assert after == ToolResult("STILL HERE", ok=True)


@shared_loop
async def test_mcp_arguments_are_validated_locally(servers: McpServers) -> None:
    result = await servers.registry.run("echo__add", '{"a": "two", "b": 1}', CONTEXT, timeout=10)
    assert (result.ok, result.error_kind) == (False, "invalid_arguments")


@pytest.mark.parametrize(
    ("config", "reason"),
    [
        ({"name": "both", "command": "x", "url": "http://127.0.0.1:1/mcp"}, "bad config"),
        ({"name": "neither"}, "bad config"),
        ({"name": "args", "command": "x", "args": "not-a-list"}, "bad config"),
        ({"name": "ghost", "command": "/nonexistent/mcp-server"}, "FileNotFoundError"),
        ({"name": "refused", "url": "http://127.0.0.1:9/mcp"}, "ConnectError"),
        # Reads stdin until it closes and never answers: only the timeout ends it.
        (
            {
                "name": "mute",
                "command": sys.executable,
                "args": ["-c", "import sys; sys.stdin.read()"],
            },
            "no answer within 0.5 seconds",
        ),
    ],
)
async def test_failing_servers_are_skipped(config: dict[str, object], reason: str) -> None:
    registry = Registry()
    async with McpServers(registry, [config], connect_timeout=0.5) as servers:
        assert servers.connected == []
        assert len(servers.errors) == 1
        assert servers.errors[0].startswith(f"{config['name']}: {reason}")
    assert registry.names() == []


Scope = MutableMapping[str, Any]
Asgi = Callable[[Scope, Any, Any], Awaitable[None]]


def recording_headers(app: Asgi, seen: list[dict[str, str]]) -> Asgi:
    async def wrapped(scope: Scope, receive: Any, send: Any) -> None:
        if scope["type"] == "http":
            seen.append({k.decode(): v.decode() for k, v in scope["headers"]})
        await app(scope, receive, send)

    return wrapped


@pytest_asyncio.fixture
async def http_url(seen_headers: list[dict[str, str]]) -> AsyncIterator[str]:
    """The echo server over streamable HTTP, in this process on a free port."""
    from tests.mcp_echo_server import server

    app = recording_headers(server.streamable_http_app(), seen_headers)
    web = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=0, log_level="warning"))
    task = asyncio.create_task(web.serve())
    for _ in range(500):  # bounded: a server that never starts fails the test
        if web.started:
            break
        await asyncio.sleep(0.01)
    port = web.servers[0].sockets[0].getsockname()[1]
    yield f"http://127.0.0.1:{port}/mcp"
    web.should_exit = True
    await task


@pytest.fixture
def seen_headers() -> list[dict[str, str]]:
    return []


async def test_streamable_http_server(http_url: str, seen_headers: list[dict[str, str]]) -> None:
    registry = Registry()
    config = {"name": "web", "url": http_url, "headers": {"Authorization": "Bearer t0ken"}}
    async with McpServers(registry, [config]) as servers:
        assert (servers.connected, servers.errors) == (["web"], [])
        result = await registry.run("web__add", '{"a": 1, "b": 2}', CONTEXT, timeout=10)
    assert result == ToolResult("3", ok=True)
    assert seen_headers and all(h.get("authorization") == "Bearer t0ken" for h in seen_headers)


@pytest.mark.parametrize(
    ("server", "tool", "expected"),
    [
        ("files", "read", "files__read"),
        ("my files", "read.file", "my_files__read_file"),
        ("x" * 70, "t", "x" * 64),
    ],
)
def test_tool_names_are_sanitised(server: str, tool: str, expected: str) -> None:
    assert tool_name(server, tool) == expected

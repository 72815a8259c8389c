"""MCP servers as tools: each tool of server "files" joins the registry as files__<tool>.

Config entries (one per server):
    {"name": "files", "command": "python", "args": ["server.py"], "env": {...}, "cwd": "..."}
    {"name": "web", "url": "http://127.0.0.1:8000/mcp", "headers": {...}}

Each server's client lives in a task of its own that enters and leaves the client's
context; anyio cancel scopes inside the SDK must be exited by the task that entered
them, and this keeps that true however the engine enters and leaves McpServers.
A server that fails to start, answer or list its tools is reported in `errors` and
skipped: tools are an extra, never a reason for the bot not to start.
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from contextlib import AbstractAsyncContextManager, asynccontextmanager, suppress
from types import TracebackType
from typing import Any

import httpx2
import mcp_types
from mcp import Client, StdioServerParameters
from mcp.client.streamable_http import streamable_http_client

from bot.tools.registry import NAME_PATTERN, Registry, Tool, ToolResult

log = logging.getLogger(__name__)

CONNECT_TIMEOUT = 10.0
SEPARATOR = "__"
# Long-lived server-sent event streams need a generous read timeout.
_HTTP_TIMEOUT = httpx2.Timeout(30.0, read=300.0)

Listing = tuple[Client, list[mcp_types.Tool]]


class McpServers:
    """Async context manager: connects every configured server, registers its tools."""

    def __init__(
        self,
        registry: Registry,
        servers: Sequence[Mapping[str, Any]],
        *,
        connect_timeout: float = CONNECT_TIMEOUT,
    ) -> None:
        self.registry = registry
        self.servers = list(servers)
        self.connect_timeout = connect_timeout
        self.errors: list[str] = []  # "name: reason"
        self.connected: list[str] = []
        self._stop = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []

    async def __aenter__(self) -> McpServers:
        # Concurrently, so one slow server costs its own timeout and no more.
        await asyncio.gather(*(self._connect(index, c) for index, c in enumerate(self.servers)))
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self._stop.set()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    async def _connect(self, index: int, config: Mapping[str, Any]) -> None:
        name = str(config.get("name") or f"server{index + 1}")
        try:
            transport = _transport(config)
        except (TypeError, ValueError) as exc:
            self.errors.append(f"{name}: bad config: {exc}")
            return
        ready: asyncio.Future[Listing] = asyncio.get_running_loop().create_future()
        task = asyncio.create_task(self._serve(name, transport, ready), name=f"mcp:{name}")
        try:
            client, tools = await asyncio.wait_for(asyncio.shield(ready), self.connect_timeout)
        except Exception as exc:
            task.cancel()
            with suppress(asyncio.CancelledError):
                await task
            self.errors.append(f"{name}: {_reason(exc, self.connect_timeout)}")
            return
        self._tasks.append(task)
        self.connected.append(name)
        self._register(name, client, tools)

    async def _serve(
        self,
        name: str,
        transport: Transport,
        ready: asyncio.Future[Listing],
    ) -> None:
        try:
            async with Client(transport) as client:
                tools = await _list_tools(client)
                ready.set_result((client, tools))
                await self._stop.wait()
        except Exception as exc:
            if not ready.done():
                ready.set_exception(exc)
            else:  # its tools now answer with errors; the rest of the bot carries on
                log.warning("MCP server %s stopped: %s", name, _reason(exc, 0))

    def _register(self, server: str, client: Client, tools: list[mcp_types.Tool]) -> None:
        for remote in tools:
            local = tool_name(server, remote.name)
            try:
                self.registry.add(
                    Tool(
                        name=local,
                        description=remote.description or remote.title or "",
                        parameters=remote.input_schema,
                        function=_remote_call(client, remote.name),
                        needs_context=False,
                    )
                )
            except ValueError as exc:
                self.errors.append(f"{server}: tool {remote.name!r} skipped: {exc}")


def tool_name(server: str, tool: str) -> str:
    """`<server>__<tool>`, made to match what OpenAI accepts as a function name."""
    name = re.sub(r"[^a-zA-Z0-9_-]", "_", f"{server}{SEPARATOR}{tool}")[:64]
    assert NAME_PATTERN.match(name), name  # non-empty: the separator is always there
    return name


Transport = AbstractAsyncContextManager[Any] | StdioServerParameters


def _transport(config: Mapping[str, Any]) -> Transport:
    command, url = config.get("command"), config.get("url")
    if bool(command) == bool(url):
        raise ValueError('give exactly one of "command" (stdio) or "url" (streamable HTTP)')
    if url:
        return _http_transport(str(url), _strings(config.get("headers"), "headers"))
    args = config.get("args") or []
    if not isinstance(args, list):
        raise TypeError('"args" must be a list of strings')
    return StdioServerParameters(
        command=str(command),
        args=[str(arg) for arg in args],
        env=_strings(config.get("env"), "env") or None,
        cwd=config.get("cwd") or None,
    )


def _strings(value: object, field: str) -> dict[str, str]:
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise TypeError(f'"{field}" must be a table of strings')
    return {str(key): str(item) for key, item in value.items()}


@asynccontextmanager
async def _http_transport(url: str, headers: dict[str, str]) -> AsyncIterator[Any]:
    # Our own HTTP client, so configured headers (auth tokens) go with every request.
    async with (
        httpx2.AsyncClient(headers=headers, timeout=_HTTP_TIMEOUT) as http,
        streamable_http_client(url, http_client=http) as streams,
    ):
        yield streams


async def _list_tools(client: Client) -> list[mcp_types.Tool]:
    tools: list[mcp_types.Tool] = []
    cursor: str | None = None
    for _ in range(100):  # a server paginating forever must not hang the start
        page = await client.list_tools(cursor=cursor)
        tools.extend(page.tools)
        cursor = page.next_cursor
        if cursor is None:
            break
    return tools


def _remote_call(client: Client, remote_name: str) -> Callable[..., Awaitable[ToolResult]]:
    async def call(**arguments: Any) -> ToolResult:
        result = await client.call_tool(remote_name, arguments)
        text = result_text(result)
        if result.is_error:
            text = f"Error: {text or 'the tool failed'}"
            return ToolResult(text, ok=False, error_kind="exception")
        return ToolResult(text, ok=True)

    return call


def result_text(result: mcp_types.CallToolResult) -> str:
    """Text parts joined; other parts named, since the model cannot see them here."""
    parts: list[str] = []
    for block in result.content:
        if isinstance(block, mcp_types.TextContent):
            parts.append(block.text)
        elif isinstance(block, mcp_types.EmbeddedResource) and isinstance(
            block.resource, mcp_types.TextResourceContents
        ):
            parts.append(block.resource.text)
        else:
            parts.append(f"[{block.type} content not shown]")
    if not parts and result.structured_content is not None:
        parts.append(json.dumps(result.structured_content, default=str, ensure_ascii=False))
    return "\n".join(parts)


def _reason(exc: BaseException, timeout: float) -> str:
    # anyio task groups wrap the one real failure in exception groups.
    while isinstance(exc, BaseExceptionGroup) and len(exc.exceptions) == 1:
        exc = exc.exceptions[0]
    if isinstance(exc, TimeoutError):
        return f"no answer within {timeout:g} seconds"
    message = str(exc)
    return f"{type(exc).__name__}: {message}" if message else type(exc).__name__

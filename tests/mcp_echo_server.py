"""A tiny stdio MCP server for tests/test_tools_mcp.py (run as a subprocess)."""

from __future__ import annotations

import anyio
from mcp.server.mcpserver import MCPServer
from mcp.server.mcpserver.exceptions import ToolError

server = MCPServer("echo")


@server.tool()
def add(a: int, b: int) -> int:
    """Add two integers."""
    return a + b


@server.tool()
def shout(text: str) -> str:
    """Return the text in capitals."""
    return text.upper()


@server.tool()
async def nap(seconds: float) -> str:
    """Sleep, then answer: for timeouts."""
    await anyio.sleep(seconds)
    return "rested"


@server.tool()
def fail(reason: str) -> str:
    """Always fail, so the client sees an error result."""
    # ToolError's message reaches the client; other exceptions are hidden by the SDK.
    raise ToolError(f"failed on purpose: {reason}")


if __name__ == "__main__":
    server.run("stdio")

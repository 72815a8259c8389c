"""Fake servers that speak the platforms' wire formats, and a polling helper for tests."""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import Callable
from typing import Any


async def eventually(check: Callable[[], Any], within: float = 5.0) -> Any:
    """Poll until check() returns something truthy (awaited if it is awaitable); return
    it, or fail after `within` s."""
    deadline = asyncio.get_running_loop().time() + within
    while True:
        result = check()
        if inspect.isawaitable(result):
            result = await result
        if result:
            return result
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"condition not met within {within}s: {check}")
        await asyncio.sleep(0.01)

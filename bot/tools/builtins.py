"""The tools every Parley deployment has: calculate, current_time, search_history."""

from __future__ import annotations

import zoneinfo
from datetime import UTC, datetime
from typing import Any

from bot.tools.calculator import calculate
from bot.tools.registry import Registry, ToolContext

MAX_SEARCH_RESULTS = 20
MAX_SNIPPET_CHARS = 500


def current_time(timezone: str = "UTC") -> str:
    """The current date and time (ISO 8601) in an IANA time zone.

    Args:
        timezone: An IANA zone name such as "Europe/Paris" or "America/New_York".
    """
    try:
        zone = zoneinfo.ZoneInfo(timezone)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError) as exc:
        # ValueError covers keys that are not zone names at all ("../etc", "").
        hint = "use an IANA name like Europe/Paris"
        raise ValueError(f"unknown time zone {timezone!r}; {hint}") from exc
    now = datetime.now(zone)
    return f"{now.isoformat(timespec='seconds')} ({now:%A}, {timezone})"


# async, so it runs on the event loop: the store's SQLite connection is shared, and a
# sync tool would run in a worker thread alongside the loop's own transactions.
async def search_history(query: str, context: ToolContext, limit: int = 5) -> str:
    """Search earlier messages of this channel for words or phrases.

    Args:
        query: Words to look for.
        limit: How many matches to return (1 to 20).
    """
    rows = await context.search_history(query, max(1, min(limit, MAX_SEARCH_RESULTS)))
    if not rows:
        return "No matches."
    return "\n".join(_format_row(row) for row in rows)


def _format_row(row: dict[str, Any]) -> str:
    content = str(row.get("content", ""))
    if len(content) > MAX_SNIPPET_CHARS:
        content = content[:MAX_SNIPPET_CHARS] + "…"
    return f"[{_when(row.get('created_at'))}] {row.get('role', '?')}: {content}"


def _when(created_at: object) -> str:
    # The store keeps epoch seconds; anything else is shown as it came.
    if isinstance(created_at, int | float) and not isinstance(created_at, bool):
        return datetime.fromtimestamp(created_at, UTC).strftime("%Y-%m-%d %H:%M UTC")
    return str(created_at or "unknown time")


def register_builtins(registry: Registry) -> None:
    registry.tool(calculate)
    registry.tool(current_time)
    registry.tool(search_history)

"""Usage reports as text: a table for chat and the terminal, CSV and JSON for tools."""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Mapping, Sequence
from typing import Any

from bot.money import plain, usd

COLUMNS = (
    "requests", "prompt_tokens", "completion_tokens", "total_tokens", "cost_usd", "errors",
    "cached_tokens", "cached_share",
)  # fmt: skip


def cached_share(row: Mapping[str, Any]) -> float | None:
    """The share of input tokens the provider had cached (billed at its cached price)."""
    prompt = int(row.get("prompt_tokens") or 0)
    return int(row.get("cached_tokens") or 0) / prompt if prompt else None


def format_share(share: float | None) -> str:
    return "" if share is None else f"{100 * share:.1f}%"


def _cost(value: Any) -> str:
    return usd(value)


def total_row(rows: Sequence[dict[str, Any]], label: str = "TOTAL") -> dict[str, Any]:
    """The sum of every group; the cost is unknown if any group's cost is."""
    total: dict[str, Any] = {"key": label}
    names = ("requests", "prompt_tokens", "completion_tokens", "total_tokens", "errors")
    for name in (*names, "cached_tokens"):
        total[name] = sum(row.get(name) or 0 for row in rows)
    costs = [row["cost_usd"] for row in rows]
    total["cost_usd"] = None if any(cost is None for cost in costs) else sum(costs)
    return total


def format_table(rows: Sequence[dict[str, Any]], by: str, total_label: str = "TOTAL") -> str:
    """A fixed-width table with a TOTAL line; cost shows 'unknown' where a price is missing.
    total_label says what the total covers when the rows are not all (--top)."""
    header = (by, "requests", "prompt", "cached", "completion", "total", "cost", "errors")
    rows = [*rows, total_row(rows, total_label)] if len(rows) > 1 else list(rows)
    lines = [header] + [
        (
            str(row["key"]),
            str(row["requests"]),
            str(row["prompt_tokens"]),
            f"{row.get('cached_tokens') or 0} {format_share(cached_share(row))}".strip(),
            str(row["completion_tokens"]),
            str(row["total_tokens"]),
            _cost(row["cost_usd"]),
            str(row["errors"]),
        )
        for row in rows
    ]
    widths = [max(len(line[i]) for line in lines) for i in range(len(header))]
    text = [
        "  ".join(cell.ljust(width) if i == 0 else cell.rjust(width)
                  for i, (cell, width) in enumerate(zip(line, widths, strict=True)))
        for line in lines
    ]  # fmt: skip
    return "```\n" + "\n".join(text) + "\n```"


def as_records(rows: Sequence[dict[str, Any]], by: str) -> list[dict[str, Any]]:
    """The documented JSON shape: the group key named as --by, then the figures."""
    return [
        {
            by: row["key"],
            **{name: row[name] for name in COLUMNS[:-2]},
            "cached_tokens": row.get("cached_tokens") or 0,
            "cached_share": cached_share(row),  # worked out, not summed
        }
        for row in rows
    ]


def format_json(rows: Sequence[dict[str, Any]], by: str) -> str:
    return json.dumps(as_records(rows, by), indent=2)


def format_csv(rows: Sequence[dict[str, Any]], by: str) -> str:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=[by, *COLUMNS], lineterminator="\n")
    writer.writeheader()
    # Full precision without an exponent: a spreadsheet reads 8.19e-05 as text in places.
    writer.writerows({**row, "cost_usd": plain(row["cost_usd"])} for row in as_records(rows, by))
    return buffer.getvalue()

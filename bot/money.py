"""Money as people read it: fixed decimals, never an exponent ($0.0000819, not $8.19e-05).

Every place that shows a cost (the usage table, /usage, the dashboard, charts, CSV) goes
through here, so they agree.
"""

from __future__ import annotations

from decimal import Decimal

# Prices per million tokens make single calls cost millionths of a dollar.
SMALL_DIGITS = 7


def usd(value: float | None) -> str:
    """$12.35 from $10 up; below, enough fixed decimals to show the first digits; "unknown"
    for None."""
    if value is None:
        return "unknown"
    if value == 0:
        return "$0"
    if abs(value) >= 10:
        return f"${value:.2f}"
    if abs(value) >= 0.01:
        return f"${value:.4f}".rstrip("0").rstrip(".")
    return f"${value:.{SMALL_DIGITS}f}".rstrip("0").rstrip(".")


def plain(value: float | None) -> str:
    """Full precision without an exponent, for CSV: repr's digits written out."""
    if value is None:
        return ""
    return format(Decimal(repr(float(value))), "f")

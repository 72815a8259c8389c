"""Prices, cost and report periods for usage accounting."""

from __future__ import annotations

import re
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from bot.config import ConfigError

if TYPE_CHECKING:  # the admin CLI reads usage without loading the model client
    from bot.llm import Usage

_PERIOD = re.compile(r"^(\d+)([mhdw])$")
_UNIT_SECONDS = {"m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}
# A little over a year: a year-on-year look back fits, and a chart stays a few hundred bars.
MAX_PERIOD_DAYS = 400


@dataclass(frozen=True, slots=True)
class Price:
    """US dollars per million tokens."""

    input: float
    output: float
    cached_input: float


class Prices:
    def __init__(self, prices: dict[str, Price]) -> None:
        self.prices = prices

    @classmethod
    def load(cls, path: str | Path) -> Prices:
        """Read config/prices.toml; a missing file means every cost is unknown."""
        path = Path(path)
        if not path.is_file():
            return cls({})
        try:
            document = tomllib.loads(path.read_text(encoding="utf-8"))
        except tomllib.TOMLDecodeError as error:
            raise ConfigError(f"{path} is not valid TOML: {error}") from None
        return cls({name: _price(path, name, table) for name, table in document.items()})

    def cost(self, model: str, usage: Usage) -> float | None:
        """Cost in USD, or None for a model with no known price (never a silent 0)."""
        price = self.prices.get(model)
        if price is None:
            return None
        uncached = max(0, usage.prompt_tokens - usage.cached_tokens)
        return (
            uncached * price.input
            + usage.cached_tokens * price.cached_input
            + usage.completion_tokens * price.output
        ) / 1_000_000


def _price(path: Path, name: str, table: object) -> Price:
    if not isinstance(table, dict):
        raise ConfigError(f'{path}: ["{name}"] must be a table with input and output')
    try:
        input_price = float(table["input"])
        output_price = float(table["output"])
        cached = float(table.get("cached_input", input_price))
    except (KeyError, TypeError, ValueError):
        raise ConfigError(
            f'{path}: ["{name}"] needs numbers input and output (USD per million tokens),'
            " and optionally cached_input"
        ) from None
    return Price(input_price, output_price, cached)


def parse_period(text: str) -> int:
    """'7d' -> seconds. Units: m(inutes), h(ours), d(ays), w(eeks); at most MAX_PERIOD_DAYS.

    The dashboard and /usage chart lay the period out day by day, so an unbounded one
    was a lever: 365000d drew a million empty days on the event loop. The tables and
    the CLI take the same bound, so a period means the same everywhere.
    """
    match = _PERIOD.match(text.strip().lower())
    digits = match.group(1).lstrip("0") if match else ""
    shown = text if len(text) <= 20 else text[:19] + "…"
    if not match or not digits:
        raise ValueError(
            f"period {shown!r} is not understood: use a number and a unit, e.g. 30m, 12h, 7d, 4w"
        )
    seconds = _UNIT_SECONDS[match.group(2)]
    # The digit count first: int() of thousands of digits is slow work on its own.
    if len(digits) > 9 or int(digits) * seconds > MAX_PERIOD_DAYS * 86400:
        raise ValueError(
            f"period {shown!r} is too long: at most {MAX_PERIOD_DAYS} days, e.g. 90d, 52w"
        )
    return int(digits) * seconds

"""Usage charts: SVG for the web dashboard, PNG for chat (/usage chart).

Both formats draw the same geometry, computed once by `layout`, so a chart looks the
same in the browser and in Slack or Discord. Charts are plain bars per day: easy to
read, easy to check, no plotting library.
"""

from __future__ import annotations

import io
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any
from xml.sax.saxutils import escape

from bot.money import usd

if TYPE_CHECKING:
    from PIL.ImageDraw import ImageDraw
    from PIL.ImageFont import FreeTypeFont, ImageFont

DAY_SECONDS = 86400
BAR_COLOUR = "#3b6fb6"
GRID_COLOUR = "#d0d4da"
TEXT_COLOUR = "#222222"
# Space around the plot for the title, the value axis and the day labels.
MARGIN_LEFT, MARGIN_RIGHT, MARGIN_TOP, MARGIN_BOTTOM = 64, 16, 34, 30
MAX_X_LABELS = 12


@dataclass(frozen=True, slots=True)
class DayUsage:
    """One UTC day of usage; cost is None when some call's price was unknown."""

    day: str
    requests: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cost_usd: float | None = 0.0
    errors: int = 0
    cached_tokens: int = 0

    @property
    def total_tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens


@dataclass(frozen=True, slots=True)
class Bar:
    label: str
    value: float | None  # None: unknown (drawn as a gap, labelled "?")


@dataclass(frozen=True, slots=True)
class Box:
    x: float
    y: float
    width: float
    height: float


@dataclass(frozen=True, slots=True)
class Layout:
    """Where everything of one bar chart goes, in pixels from the top left."""

    width: int
    height: int
    title: str
    bars: list[tuple[Box, Bar]]
    grid: list[tuple[float, str]]  # (y, value label) of each horizontal grid line
    x_labels: list[tuple[float, str]]  # (centre x, text)


def daily_usage(rows: Sequence[Mapping[str, Any]], since: float, now: float) -> list[DayUsage]:
    """usage_report(..., by="day") rows, with the days that had no usage filled in."""
    found = {str(row["key"]): row for row in rows}
    days: list[DayUsage] = []
    day = datetime.fromtimestamp(since, UTC).date()
    last = datetime.fromtimestamp(now, UTC).date()
    while day <= last:
        name = day.isoformat()
        row = found.get(name)
        days.append(_day_from_row(name, row) if row else DayUsage(name))
        day += timedelta(days=1)
    return days


def _day_from_row(day: str, row: Mapping[str, Any]) -> DayUsage:
    cost = row.get("cost_usd")
    return DayUsage(
        day,
        int(row.get("requests") or 0),
        int(row.get("prompt_tokens") or 0),
        int(row.get("completion_tokens") or 0),
        None if cost is None else float(cost),
        int(row.get("errors") or 0),
        int(row.get("cached_tokens") or 0),
    )


def format_tokens(value: float) -> str:
    for limit, suffix in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
        if abs(value) >= limit:
            return f"{value / limit:.3g}{suffix}"
    return f"{value:.3g}"


def format_cost(value: float) -> str:
    return usd(value)


def nice_ceiling(value: float) -> float:
    """The smallest 1, 2, 2.5 or 5 times a power of ten that is >= value (axis top)."""
    if value <= 0:
        return 1.0
    power: float = 10.0 ** math.floor(math.log10(value))
    for step in (1, 2, 2.5, 5, 10):
        if value <= step * power:
            return step * power
    return 10 * power


def layout(
    title: str,
    bars: Sequence[Bar],
    fmt: Callable[[float], str],
    size: tuple[int, int] = (720, 240),
) -> Layout:
    width, height = size
    plot_w = width - MARGIN_LEFT - MARGIN_RIGHT
    plot_h = height - MARGIN_TOP - MARGIN_BOTTOM
    known = [bar.value for bar in bars if bar.value is not None]
    top = nice_ceiling(max(known, default=0.0))
    slot = plot_w / max(1, len(bars))
    boxes: list[tuple[Box, Bar]] = []
    for index, bar in enumerate(bars):
        bar_h = 0.0 if bar.value is None else plot_h * max(0.0, bar.value) / top
        x = MARGIN_LEFT + index * slot + slot * 0.15
        boxes.append((Box(x, MARGIN_TOP + plot_h - bar_h, slot * 0.7, bar_h), bar))
    grid = [(MARGIN_TOP + plot_h * (1 - i / 4), fmt(top * i / 4)) for i in range(5)]
    every = max(1, math.ceil(len(bars) / MAX_X_LABELS))
    x_labels = [
        (MARGIN_LEFT + (i + 0.5) * slot, _short_day(bar.label))
        for i, bar in enumerate(bars)
        if i % every == 0
    ]
    return Layout(width, height, title, boxes, grid, x_labels)


def _short_day(label: str) -> str:
    # "2026-11-03" -> "11-03": the year is in the period, the bars need room.
    return label[5:] if len(label) == 10 and label[4] == "-" else label


def token_bars(days: Sequence[DayUsage]) -> list[Bar]:
    return [Bar(day.day, float(day.total_tokens)) for day in days]


def cost_bars(days: Sequence[DayUsage]) -> list[Bar]:
    return [Bar(day.day, day.cost_usd) for day in days]


# --- SVG ---------------------------------------------------------------------------


def svg_chart(chart: Layout, fmt: Callable[[float], str]) -> str:
    """An inline <svg> element; every text is escaped, so labels from users are inert."""
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" class="chart" role="img"'
        f' viewBox="0 0 {chart.width} {chart.height}" aria-label="{_attr(chart.title)}">',
        _svg_text(MARGIN_LEFT, 20, chart.title, "start", "title"),
    ]
    right = chart.width - MARGIN_RIGHT
    for y, label in chart.grid:
        parts.append(
            f'<line x1="{MARGIN_LEFT}" y1="{y:.1f}" x2="{right}" y2="{y:.1f}"'
            f' stroke="{GRID_COLOUR}" stroke-width="1"/>'
        )
        parts.append(_svg_text(MARGIN_LEFT - 6, y + 4, label, "end", "axis"))
    for box, bar in chart.bars:
        shown = "unknown" if bar.value is None else fmt(bar.value)
        parts.append(
            f'<rect x="{box.x:.1f}" y="{box.y:.1f}" width="{box.width:.1f}"'
            f' height="{box.height:.1f}" fill="{BAR_COLOUR}">'
            f"<title>{escape(bar.label)}: {escape(shown)}</title></rect>"
        )
        if bar.value is None:
            parts.append(_svg_text(box.x + box.width / 2, box.y - 4, "?", "middle", "axis"))
    for x, label in chart.x_labels:
        parts.append(_svg_text(x, chart.height - 10, label, "middle", "axis"))
    parts.append("</svg>")
    return "".join(parts)


def _attr(text: str) -> str:
    return escape(text, {'"': "&quot;"})


def _svg_text(x: float, y: float, text: str, anchor: str, css: str) -> str:
    return (
        f'<text x="{x:.1f}" y="{y:.1f}" text-anchor="{anchor}" class="{css}"'
        f' fill="{TEXT_COLOUR}">{escape(text)}</text>'
    )


def usage_svgs(days: Sequence[DayUsage]) -> list[str]:
    """The dashboard's charts: tokens per day and cost per day."""
    return [
        svg_chart(layout("Tokens per day", token_bars(days), format_tokens), format_tokens),
        svg_chart(layout("Cost per day (USD)", cost_bars(days), format_cost), format_cost),
    ]


# --- PNG ---------------------------------------------------------------------------


def usage_png(days: Sequence[DayUsage], heading: str) -> bytes:
    """A PNG with tokens per day above cost per day, for chat platforms."""
    # Imported here: only /usage chart needs Pillow, and chat start-up should not pay it.
    from PIL import Image, ImageFont
    from PIL.ImageDraw import Draw

    charts = [
        layout("Tokens per day", token_bars(days), format_tokens),
        layout("Cost per day (USD)", cost_bars(days), format_cost),
    ]
    head = 36
    width = charts[0].width
    image = Image.new("RGB", (width, head + sum(c.height for c in charts)), "white")
    draw = Draw(image)
    draw.text((12, 8), heading, fill=TEXT_COLOUR, font=ImageFont.load_default(size=18))
    font = ImageFont.load_default(size=12)
    top = head
    for chart in charts:
        _draw_chart(draw, chart, top, font)
        top += chart.height
    buffer = io.BytesIO()
    image.save(buffer, format="PNG", optimize=True)
    return buffer.getvalue()


def _draw_chart(draw: ImageDraw, chart: Layout, top: float, font: ImageFont | FreeTypeFont) -> None:
    draw.text((MARGIN_LEFT, top + 8), chart.title, fill=TEXT_COLOUR, font=font)
    right = chart.width - MARGIN_RIGHT
    for y, label in chart.grid:
        draw.line([(MARGIN_LEFT, top + y), (right, top + y)], fill=GRID_COLOUR, width=1)
        draw.text((MARGIN_LEFT - 6, top + y), label, fill=TEXT_COLOUR, font=font, anchor="rm")
    for box, bar in chart.bars:
        if bar.value is None:
            draw.text((box.x + box.width / 2, top + box.y - 4), "?", fill=TEXT_COLOUR,
                      font=font, anchor="mb")  # fmt: skip
        elif box.height >= 0.5:
            corners = [(box.x, top + box.y), (box.x + box.width, top + box.y + box.height)]
            draw.rectangle(corners, fill=BAR_COLOUR)
    for x, label in chart.x_labels:
        draw.text((x, top + chart.height - 10), label, fill=TEXT_COLOUR, font=font, anchor="mm")

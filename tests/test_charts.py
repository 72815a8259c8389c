"""Usage charts: the SVG of the dashboard, the PNG of /usage chart."""

from __future__ import annotations

import io
import xml.etree.ElementTree as ET
from datetime import datetime

import pytest
from PIL import Image

from bot.charts import (
    BAR_COLOUR,
    Bar,
    DayUsage,
    daily_usage,
    format_cost,
    format_tokens,
    layout,
    nice_ceiling,
    svg_chart,
    usage_png,
    usage_svgs,
)
from bot.messages import ReplyKind
from tests.conftest import EngineFactory, collect, message
from tests.fakes.openai_server import FakeOpenAI, Text

SVG = "{http://www.w3.org/2000/svg}"
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def at(day: str) -> float:
    return datetime.fromisoformat(day + "T12:00:00+00:00").timestamp()


def test_daily_usage_fills_the_days_without_usage() -> None:
    rows = [
        {"key": "2026-03-02", "requests": 2, "prompt_tokens": 10, "completion_tokens": 5,
         "cost_usd": 0.5, "errors": 1},
        {"key": "2026-03-04", "requests": 1, "prompt_tokens": 1, "completion_tokens": 1,
         "cost_usd": None, "errors": 0},
    ]  # fmt: skip
    days = daily_usage(rows, at("2026-03-01"), at("2026-03-05"))
    assert [d.day for d in days] == [f"2026-03-0{n}" for n in range(1, 6)]
    assert [d.total_tokens for d in days] == [0, 15, 0, 2, 0]
    assert [d.cost_usd for d in days] == [0.0, 0.5, 0.0, None, 0.0]
    assert days[1].errors == 1


@pytest.mark.parametrize(
    ("value", "top"),
    [(0, 1), (0.7, 1), (1, 1), (1.2, 2), (2.1, 2.5), (3, 5), (7, 10), (1234, 2000),
     (0.0031, 0.005)],
)  # fmt: skip
def test_axis_top_is_a_round_number_above_the_highest_bar(value: float, top: float) -> None:
    assert nice_ceiling(value) == pytest.approx(top)


@pytest.mark.parametrize(
    ("value", "tokens", "cost"),
    [(0, "0", "$0"), (950, "950", "$950.00"), (1500, "1.5k", "$1500.00"),
     (2_500_000, "2.5M", "$2500000.00"), (0.0123, "0.0123", "$0.0123")],
)  # fmt: skip
def test_value_labels(value: float, tokens: str, cost: str) -> None:
    assert (format_tokens(value), format_cost(value)) == (tokens, cost)


def test_bars_are_proportional_to_their_values() -> None:
    chart = layout("t", [Bar("a", 10), Bar("b", 5), Bar("c", 0)], format_tokens)
    heights = [box.height for box, _ in chart.bars]
    assert heights[0] == pytest.approx(2 * heights[1]) and heights[2] == 0
    assert heights[0] > 100
    xs = [box.x for box, _ in chart.bars]
    assert xs == sorted(xs)


def test_svg_is_well_formed_and_escapes_labels() -> None:
    bars = [Bar("<script>alert(1)</script>", 3.0), Bar("2026-01-02", None)]
    svg = svg_chart(layout('Tokens "&" <b>', bars, format_tokens), format_tokens)
    root = ET.fromstring(svg)  # raises if an unescaped label broke the markup
    assert root.tag == SVG + "svg"
    assert len(root.findall(f"{SVG}rect")) == 2
    assert "<script>" not in svg and "&lt;script&gt;" in svg
    texts = [t.text for t in root.iter(f"{SVG}text")]
    assert 'Tokens "&" <b>' in texts and "?" in texts  # unknown cost is marked, not 0


def test_dashboard_has_a_token_chart_and_a_cost_chart() -> None:
    days = [DayUsage("2026-03-01", 1, 100, 50, 0.25), DayUsage("2026-03-02", 1, 10, 5, 0.1)]
    token_svg, cost_svg = usage_svgs(days)
    assert "Tokens per day" in token_svg and "03-01" in token_svg
    assert "Cost per day" in cost_svg and "$0.25" in cost_svg


def test_png_opens_in_pillow_and_shows_bars() -> None:
    days = [DayUsage(f"2026-03-0{n}", n, 100 * n, 10 * n, 0.01 * n) for n in range(1, 8)]
    png = usage_png(days, "Parley usage, last 7d")
    assert png.startswith(PNG_SIGNATURE)
    with Image.open(io.BytesIO(png)) as image:
        image.load()
        assert image.format == "PNG" and image.size[0] == 720
        colours = {colour for _, colour in image.convert("RGB").getcolors(1 << 16) or []}
    assert tuple(int(BAR_COLOUR[i : i + 2], 16) for i in (1, 3, 5)) in colours


# --- /usage chart in chat ------------------------------------------------------------


async def test_usage_chart_is_a_png_for_an_admin(
    make_engine: EngineFactory, fake_openai: FakeOpenAI
) -> None:
    engine = make_engine(admins=("test:root",))
    fake_openai.script(Text("ok", prompt_tokens=400, completion_tokens=100))
    await collect(engine, message("spend"))
    [reply] = await collect(engine, message("/usage chart 7d", user="root"))
    assert (reply.kind, reply.text, reply.private) == (
        ReplyKind.FINAL,
        "Usage chart, last 7d",
        True,
    )
    assert reply.image_name == "usage.png"
    assert reply.image is not None and reply.image.startswith(PNG_SIGNATURE)
    with Image.open(io.BytesIO(reply.image)) as image:
        assert image.format == "PNG"


async def test_a_chart_that_fails_to_draw_still_gets_a_reply(
    make_engine: EngineFactory, fake_openai: FakeOpenAI, monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken(*_: object) -> bytes:
        raise OSError("no fonts")

    monkeypatch.setattr("bot.commands.usage_png", broken)
    engine = make_engine(admins=("test:root",))
    await collect(engine, message("spend"))
    [reply] = await collect(engine, message("/usage chart 7d", user="root"))
    assert (reply.kind, reply.text) == (ReplyKind.ERROR, "/usage failed; the error was logged.")


async def test_usage_chart_is_refused_to_a_non_admin(
    make_engine: EngineFactory, fake_openai: FakeOpenAI
) -> None:
    engine = make_engine(admins=("test:root",))
    await collect(engine, message("spend"))
    [reply] = await collect(engine, message("/usage chart", user="alice"))
    assert reply.kind is ReplyKind.ERROR and "only Parley admins" in reply.text
    assert reply.image is None


@pytest.mark.parametrize(
    ("command", "expected"),
    [("/usage chart banana", "is not understood"), ("/usage chart 7d 30d", "one period"),
     ("/usage chart 1h", "No usage in the last 1h"),
     ("/usage chart 365000d", "too long: at most 400 days"),
     ("/usage chart 1000000d", "too long: at most 400 days"),
     ("/usage 1000000d", "too long: at most 400 days")],
)  # fmt: skip
async def test_usage_chart_without_a_chart(
    make_engine: EngineFactory, command: str, expected: str
) -> None:
    engine = make_engine(admins=("test:root",))
    [reply] = await collect(engine, message(command, user="root"))
    assert expected in reply.text and reply.image is None


async def test_usage_chart_defaults_to_seven_days(
    make_engine: EngineFactory, fake_openai: FakeOpenAI
) -> None:
    now = at("2026-03-10")
    engine = make_engine(clock=lambda: now, admins=("test:root",))
    await collect(engine, message("spend"))
    [reply] = await collect(engine, message("/usage CHART", user="root"))
    assert reply.text == "Usage chart, last 7d" and reply.image is not None

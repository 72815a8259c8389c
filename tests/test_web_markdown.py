"""The web chat's Markdown (adapters/web_markdown.py) and money in fixed decimals."""

from __future__ import annotations

from html.parser import HTMLParser

import pytest

from adapters.web_markdown import render
from bot.money import plain, usd
from bot.report import format_csv


def test_tables_italics_and_quotes_render() -> None:
    html = render("*it*\n\n> quoted\n\n| a | b |\n|---|---|\n| 1 | 2 |\n")
    assert "<em>it</em>" in html
    assert "<blockquote>" in html and "quoted" in html
    assert "<table>" in html and "<td>1</td>" in html


@pytest.mark.parametrize(
    "hostile",
    [
        "<script>alert(1)</script>",
        "<img src=x onerror=alert(1)>",
        "[x](javascript:alert(1))",
        '<a href="javascript:alert(1)">x</a>',
    ],
)
def test_hostile_markup_stays_inert(hostile: str) -> None:
    tags = elements(render(hostile))
    assert all(tag in ("p", "a") for tag, _ in tags), tags
    for _, attributes in tags:
        assert all(not name.startswith("on") for name, _ in attributes)
        assert all(not (value or "").startswith("javascript") for _, value in attributes)


def elements(html: str) -> list[tuple[str, list[tuple[str, str | None]]]]:
    """The tags a browser would build from this HTML, with their attributes."""
    found: list[tuple[str, list[tuple[str, str | None]]]] = []

    class Collector(HTMLParser):
        def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
            found.append((tag, attrs))

    Collector().feed(html)
    return found


def test_links_open_safely() -> None:
    html = render("[docs](https://example.org/a)")
    assert 'href="https://example.org/a"' in html
    assert 'rel="noopener noreferrer nofollow"' in html


@pytest.mark.parametrize(
    ("value", "shown"),
    [(8.19e-05, "$0.0000819"), (0.0123, "$0.0123"), (1.5, "$1.5"), (1500, "$1500.00"),
     (0, "$0"), (None, "unknown"), (3e-9, "$0")],
)  # fmt: skip
def test_money_never_shows_an_exponent(value: float | None, shown: str) -> None:
    assert usd(value) == shown


def test_csv_keeps_full_precision_without_exponent() -> None:
    assert plain(8.19e-05) == "0.0000819"
    row = {"key": "ann", "requests": 1, "prompt_tokens": 1, "completion_tokens": 1,
           "total_tokens": 2, "cost_usd": 1.2345678e-07, "errors": 0}  # fmt: skip
    text = format_csv([row], "user")
    assert "0.00000012345678" in text and "e-" not in text

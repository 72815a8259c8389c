"""Built-in tools: calculate (never eval), current_time, search_history."""

from __future__ import annotations

import math
import re
from datetime import datetime, timedelta
from typing import Any

import pytest

from bot.messages import ConversationKey
from bot.tools.builtins import current_time, register_builtins, search_history
from bot.tools.calculator import calculate
from bot.tools.registry import Registry, ToolContext


@pytest.mark.parametrize(
    ("expression", "expected"),
    [
        ("1 + 2 * 3", "7"),
        ("(1 + 2) * 3", "9"),
        ("7 / 2", "3.5"),
        ("7 // 2", "3"),
        ("-7 % 3", "2"),
        ("2 ** 10", "1024"),
        ("-2 ** 2", "-4"),
        ("+-+3", "-3"),
        ("2 ** -1", "0.5"),
        ("2 ** 9999", str(2**9999)),
        ("sqrt(16) + abs(-2)", "6.0"),
        ("round(2.567, 2)", "2.57"),
        ("round(2.5)", "2"),
        ("log(e)", "1.0"),
        ("log(8, 2)", "3.0"),
        ("exp(0) + cos(0) + sin(0) + tan(0)", "2.0"),
        ("pi", str(math.pi)),
        ("1.5e3", "1500.0"),
        ("  3  ", "3"),
    ],
)
def test_calculate_good_expressions(expression: str, expected: str) -> None:
    assert calculate(expression) == expected


@pytest.mark.parametrize(
    ("expression", "message"),
    [
        ("__import__('os')", "unknown function '__import__'"),
        ("os", "unknown name 'os'"),
        ("os.system('ls')", "unknown function 'Attribute'"),
        ("(1).__class__", "Attribute is not allowed"),
        ("[1, 2]", "List is not allowed"),
        ("(1, 2)[0]", "Subscript is not allowed"),
        ("'a' * 3", "only numbers"),
        ("True + 1", "only numbers"),
        ("1j", "only numbers"),
        ("[x for x in (1, 2)]", "ListComp is not allowed"),
        ("(lambda: 1)()", "unknown function 'Lambda'"),
        ("lambda: 1", "Lambda is not allowed"),
        ("1 < 2", "Compare is not allowed"),
        ("1 << 100", "LShift is not supported"),
        ("not 1", "UnaryOp is not allowed"),
        ("sqrt(x=4)", "positional arguments only"),
        ("sqrt(*[4])", "positional arguments only"),
        ("sqrt(1, 2)", "takes 1 to 1 arguments"),
        ("x = 1", "not a valid arithmetic expression"),
        ("1 +", "not a valid arithmetic expression"),
        ("1 / 0", "division by zero"),
        ("1 % 0", "division by zero"),
        ("sqrt(-1)", "math domain error"),
        ("log(0)", "math domain error"),
        ("9**9**9", "too large"),
        ("2**100000", "too large"),
        ("(2**5000) ** 3", "too large"),
        ("3 ** 9000", "too large"),
        ("(2**9000) * (2**9000)", "too large"),
        ("10.0 ** 400", "too large"),
        ("1e308 * 10", "too large"),
        ("exp(1000)", "too large"),
        ("(-8) ** 0.5", "no real value"),
        ("round(5, -10**9)", "digits must be an integer"),
        ("1" * 501, "longer than 500"),
        ("(" * 240 + "1" + ")" * 240, "not a valid arithmetic expression"),
    ],
)
def test_calculate_rejects(expression: str, message: str) -> None:
    with pytest.raises(ValueError, match=re.escape(message)):
        calculate(expression)


def test_calculate_deep_but_short_expression() -> None:
    assert calculate("-" * 498 + "1") == "1"  # an even number of minus signs


def test_calculate_is_not_eval(monkeypatch: pytest.MonkeyPatch) -> None:
    # If anything reached eval/exec, this name would resolve.
    monkeypatch.setattr("builtins.secret", 42, raising=False)
    with pytest.raises(ValueError, match="unknown name"):
        calculate("secret")


@pytest.mark.parametrize("zone", ["UTC", "Europe/Paris", "America/New_York", "Asia/Kolkata"])
def test_current_time_in_zone(zone: str) -> None:
    stamp = current_time(zone).split(" ")[0]
    moment = datetime.fromisoformat(stamp)
    assert moment.tzinfo is not None
    assert abs(moment - datetime.now(moment.tzinfo)) < timedelta(minutes=1)
    assert zone in current_time(zone)


def test_current_time_offsets_differ() -> None:
    utc = datetime.fromisoformat(current_time("UTC").split(" ")[0])
    kolkata = datetime.fromisoformat(current_time("Asia/Kolkata").split(" ")[0])
    assert utc.utcoffset() == timedelta(0)
    assert kolkata.utcoffset() == timedelta(hours=5, minutes=30)


@pytest.mark.parametrize("zone", ["Mars/Olympus_Mons", "../../etc/passwd", "", "Not A Zone"])
def test_current_time_rejects_unknown_zones(zone: str) -> None:
    with pytest.raises(ValueError, match="unknown time zone"):
        current_time(zone)


def context_with(rows: list[dict[str, Any]], calls: list[tuple[str, int]]) -> ToolContext:
    async def search(query: str, limit: int) -> list[dict[str, Any]]:
        calls.append((query, limit))
        return rows[:limit]

    return ToolContext(ConversationKey("slack", "T1", "C1"), "slack:U1", search)


@pytest.mark.parametrize(("limit", "sent"), [(5, 5), (0, 1), (-3, 1), (100, 20)])
async def test_search_history_uses_callback_with_clamped_limit(limit: int, sent: int) -> None:
    calls: list[tuple[str, int]] = []
    await search_history("deploy plan", context_with([], calls), limit)
    assert calls == [("deploy plan", sent)]


async def test_search_history_formats_rows() -> None:
    rows: list[dict[str, Any]] = [
        {"role": "user", "content": "the deploy is on Friday", "created_at": 0.0},
        {"role": "assistant", "content": "x" * 600, "created_at": "yesterday"},
    ]
    text = await search_history("deploy", context_with(rows, []))
    first, second = text.splitlines()
    assert first == "[1970-01-01 00:00 UTC] user: the deploy is on Friday"
    assert second.startswith("[yesterday] assistant: xxx") and len(second) < 600


async def test_search_history_no_matches() -> None:
    assert await search_history("nothing", context_with([], [])) == "No matches."


async def test_builtins_through_the_registry() -> None:
    registry = Registry()
    register_builtins(registry)
    assert registry.names() == ["calculate", "current_time", "search_history"]
    search = registry.get("search_history")
    assert search is not None and "context" not in search.parameters["properties"]
    calls: list[tuple[str, int]] = []
    context = context_with([{"role": "user", "content": "hi", "created_at": 0}], calls)
    found = await registry.run("search_history", '{"query": "hi"}', context, timeout=5)
    assert found.ok and "user: hi" in found.content and calls == [("hi", 5)]
    bad = await registry.run("calculate", '{"expression": "9**9**9"}', context, timeout=5)
    assert (bad.ok, bad.error_kind) == (False, "exception")
    assert bad.content.startswith("Error: ValueError:") and "too large" in bad.content
    zone = await registry.run("current_time", '{"timezone": "Nowhere/Land"}', context, timeout=5)
    assert not zone.ok and "Nowhere/Land" in zone.content

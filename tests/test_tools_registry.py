"""Tool registry: schemas derived from code, decorators, safe runs, plugins."""

from __future__ import annotations

import asyncio
import threading
from pathlib import Path
from typing import Any, Literal, Optional

import pytest

from bot.messages import ConversationKey
from bot.tools.plugins import load_entry_points, load_modules
from bot.tools.registry import MAX_RESULT_CHARS, Registry, Tool, ToolContext, ToolResult


async def no_history(query: str, limit: int) -> list[dict[str, Any]]:
    return []


CONTEXT = ToolContext(
    conversation=ConversationKey("console", "local", "general"),
    user="console:alice",
    search_history=no_history,
)


def only_parameter(hint: Any) -> dict[str, Any]:
    def function(value: int) -> None:
        pass

    function.__annotations__ = {"value": hint, "return": None}
    properties: dict[str, dict[str, Any]] = Tool.from_function(function).parameters["properties"]
    return properties["value"]


@pytest.mark.parametrize(
    ("hint", "expected"),
    [
        (str, {"type": "string"}),
        (int, {"type": "integer"}),
        (float, {"type": "number"}),
        (bool, {"type": "boolean"}),
        (list[str], {"type": "array", "items": {"type": "string"}}),
        (
            list[list[int]],
            {"type": "array", "items": {"type": "array", "items": {"type": "integer"}}},
        ),
        (Literal["a", "b"], {"type": "string", "enum": ["a", "b"]}),
        (Literal[1, "x"], {"enum": [1, "x"]}),
        (int | None, {"type": ["integer", "null"]}),
        (Optional[str], {"type": ["string", "null"]}),  # noqa: UP045 - the old spelling too
        (Literal["a"] | None, {"type": ["string", "null"], "enum": ["a", None]}),
    ],
)
def test_schema_of_hint(hint: Any, expected: dict[str, Any]) -> None:
    assert only_parameter(hint) == expected


@pytest.mark.parametrize(
    "hint", [dict, list, dict[str, int], tuple[int, int], int | str, bytes, object, Any]
)
def test_unsupported_hint_raises_type_error(hint: Any) -> None:
    with pytest.raises(TypeError, match="value"):
        only_parameter(hint)


def test_missing_annotation_raises_type_error() -> None:
    def untyped(value) -> str:  # type: ignore[no-untyped-def]
        return str(value)

    with pytest.raises(TypeError, match="missing type annotation"):
        Registry().tool(untyped)


def test_var_keyword_raises_type_error() -> None:
    def loose(**kwargs: str) -> str:
        return ""

    with pytest.raises(TypeError, match=r"\*\*kwargs"):
        Registry().tool(loose)


def documented(city: str, days: int = 3, units: Literal["C", "F"] = "C") -> str:
    """Forecast the weather
    for a city.

    Longer explanation that the model does not need.

    Args:
        city: Name of the city,
            with its country if ambiguous.
        days (int): How many days ahead.

    Returns:
        A forecast.
    """
    return f"{city} {days} {units}"


def test_schema_from_signature_and_docstring() -> None:
    tool = Tool.from_function(documented)
    assert tool.schema() == {
        "type": "function",
        "function": {
            "name": "documented",
            "description": "Forecast the weather for a city.",
            "parameters": {
                "type": "object",
                "properties": {
                    "city": {
                        "type": "string",
                        "description": "Name of the city, with its country if ambiguous.",
                    },
                    "days": {
                        "type": "integer",
                        "description": "How many days ahead.",
                        "default": 3,
                    },
                    "units": {"type": "string", "enum": ["C", "F"], "default": "C"},
                },
                "required": ["city"],
                "additionalProperties": False,
            },
        },
    }


def test_context_parameter_is_excluded_from_schema() -> None:
    def whoami(context: ToolContext, loud: bool = False) -> str:
        return context.user

    tool = Tool.from_function(whoami)
    assert tool.needs_context
    assert list(tool.parameters["properties"]) == ["loud"]


def test_decorator_forms() -> None:
    registry = Registry()

    @registry.tool
    def plain(x: int) -> int:
        """Plain."""
        return x

    @registry.tool(name="renamed", description="Given description.")
    def original(x: int) -> int:
        """Docstring description."""
        return x

    assert plain(2) == 2 and original(3) == 3  # the functions are returned unchanged
    assert registry.names() == ["plain", "renamed"]
    assert registry.get("renamed") is not None
    assert registry.schemas(["renamed"])[0]["function"]["description"] == "Given description."


@pytest.mark.parametrize(
    ("enabled", "expected"),
    [(None, ["a", "b"]), (["b"], ["b"]), (["b", "nope"], ["b"]), ([], [])],
)
def test_schemas_filtered_by_enabled(enabled: list[str] | None, expected: list[str]) -> None:
    registry = Registry()
    registry.tool(lambda: "", name="a")
    registry.tool(lambda: "", name="b")
    assert [s["function"]["name"] for s in registry.schemas(enabled)] == expected


@pytest.mark.parametrize("name", ["a", "has space", "x" * 65, "dot.ted"])
def test_add_rejects_duplicates_and_bad_names(name: str) -> None:
    registry = Registry()
    registry.tool(lambda: "", name="a")
    with pytest.raises(ValueError):
        registry.tool(lambda: "", name=name)


def add(a: int, b: int = 0) -> int:
    """Add."""
    return a + b


async def slow_echo(text: str) -> str:
    """Echo asynchronously."""
    await asyncio.sleep(0)
    return text


def make_registry() -> Registry:
    registry = Registry()
    registry.tool(add)
    registry.tool(slow_echo)
    return registry


@pytest.mark.parametrize(
    ("name", "arguments", "content"),
    [
        ("add", '{"a": 2, "b": 3}', "5"),
        ("add", '{"a": 2}', "2"),
        ("slow_echo", '{"text": "hi"}', "hi"),
    ],
)
async def test_run_sync_and_async_tools(name: str, arguments: str, content: str) -> None:
    result = await make_registry().run(name, arguments, CONTEXT, timeout=5)
    assert result == ToolResult(content, ok=True)


async def test_run_unknown_tool_lists_available() -> None:
    result = await make_registry().run("nope", "{}", CONTEXT, timeout=5)
    assert (result.ok, result.error_kind) == (False, "unknown_tool")
    assert result.content.startswith("Error:") and "add, slow_echo" in result.content


@pytest.mark.parametrize("arguments", ["{", "{'a': 1}", "not json"])
async def test_run_bad_json(arguments: str) -> None:
    result = await make_registry().run("add", arguments, CONTEXT, timeout=5)
    assert (result.ok, result.error_kind) == (False, "bad_json")
    assert result.content.startswith("Error:")


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        ('{"a": "2"}', "'2' is not of type 'integer'"),
        ('{"a": true}', "True is not of type 'integer'"),
        ('{"b": 1}', "'a' is a required property"),
        ('{"a": 1, "c": 2}', "'c' was unexpected"),
        ("[1, 2]", "must be a JSON object"),
    ],
)
async def test_run_invalid_arguments(arguments: str, message: str) -> None:
    result = await make_registry().run("add", arguments, CONTEXT, timeout=5)
    assert (result.ok, result.error_kind) == (False, "invalid_arguments")
    assert result.content.startswith("Error:") and message in result.content


async def test_integral_float_arrives_as_int() -> None:
    registry = Registry()

    @registry.tool
    def kind(n: int) -> str:
        return type(n).__name__

    assert (await registry.run("kind", '{"n": 2.0}', CONTEXT, timeout=5)).content == "int"
    rejected = await registry.run("kind", '{"n": 2.5}', CONTEXT, timeout=5)
    assert rejected.error_kind == "invalid_arguments"


async def test_run_passes_context() -> None:
    registry = Registry()

    @registry.tool
    def whoami(ctx: ToolContext) -> str:
        return f"{ctx.user} in {ctx.conversation.channel}"

    result = await registry.run("whoami", "", CONTEXT, timeout=5)
    assert result == ToolResult("console:alice in general", ok=True)


async def test_run_async_tool_timeout() -> None:
    registry = Registry()

    @registry.tool
    async def hang() -> str:
        await asyncio.sleep(30)
        return "never"

    result = await registry.run("hang", "{}", CONTEXT, timeout=0.2)
    assert (result.ok, result.error_kind) == (False, "timeout")
    assert result.content.startswith("Error:") and "0.2" in result.content


async def test_run_sync_tool_timeout_keeps_loop_free() -> None:
    release = threading.Event()
    registry = Registry()

    @registry.tool
    def block() -> str:
        release.wait(10)
        return "late"

    try:
        result = await registry.run("block", "{}", CONTEXT, timeout=0.2)
    finally:
        release.set()  # let the worker thread finish so the loop can close
    assert (result.ok, result.error_kind) == (False, "timeout")


async def test_timeout_error_raised_by_tool_is_an_exception() -> None:
    registry = Registry()

    @registry.tool
    def gives_up() -> str:
        raise TimeoutError("upstream took too long")

    result = await registry.run("gives_up", "{}", CONTEXT, timeout=5)
    assert result == ToolResult(
        "Error: TimeoutError: upstream took too long", ok=False, error_kind="exception"
    )


@pytest.mark.parametrize("is_async", [False, True])
async def test_run_raising_tool(is_async: bool) -> None:
    def boom(x: int) -> int:
        raise KeyError(f"no item {x}")

    async def aboom(x: int) -> int:
        raise KeyError(f"no item {x}")

    registry = Registry()
    registry.tool(aboom if is_async else boom, name="boom")
    result = await registry.run("boom", '{"x": 7}', CONTEXT, timeout=5)
    assert result == ToolResult("Error: KeyError: 'no item 7'", ok=False, error_kind="exception")
    assert "Traceback" not in result.content


@pytest.mark.parametrize(
    ("value", "content"),
    [
        ({"b": [1, 2]}, '{"b": [1, 2]}'),
        (None, "null"),
        (3.5, "3.5"),
        (Path("x"), '"x"'),  # default=str for what JSON cannot hold
        ("plain", "plain"),
    ],
)
async def test_results_are_serialised(value: Any, content: str) -> None:
    registry = Registry()
    registry.tool(lambda: value, name="give")
    assert (await registry.run("give", "{}", CONTEXT, timeout=5)).content == content


async def test_long_results_are_truncated_and_say_so() -> None:
    registry = Registry()
    registry.tool(lambda: "x" * 50_000, name="big")
    result = await registry.run("big", "{}", CONTEXT, timeout=5)
    assert result.ok and len(result.content) <= MAX_RESULT_CHARS
    assert "truncated" in result.content and "50000" in result.content


def test_load_modules_marked_functions() -> None:
    registry = Registry()
    assert load_modules(registry, ["tests.tools_plugin_example"]) == []
    assert registry.names() == ["reverse", "word_count"]
    schema = registry.schemas(["reverse"])[0]["function"]
    assert schema["parameters"]["properties"]["text"]["description"] == "The text to reverse."


def write_module(directory: Path, name: str, source: str) -> str:
    (directory / f"{name}.py").write_text(source)
    return name


REGISTER_PLUGIN = """
def lower(text: str) -> str:
    return text.lower()

def register(registry):
    registry.tool(lower)
"""
HALF_BROKEN_PLUGIN = """
def ok() -> str:
    return "ok"

def register(registry):
    registry.tool(ok)
    raise RuntimeError("plugin broke")
"""


async def test_load_modules_register_and_failures(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.syspath_prepend(str(tmp_path))
    good = write_module(tmp_path, "parley_good_plugin", REGISTER_PLUGIN)
    broken = write_module(tmp_path, "parley_broken_plugin", HALF_BROKEN_PLUGIN)
    empty = write_module(tmp_path, "parley_empty_plugin", "X = 1\n")
    registry = Registry()
    errors = load_modules(registry, [good, broken, empty, "parley_missing_plugin"])
    assert registry.names() == ["lower"]  # the broken plugin added nothing
    assert [e.split(":")[0] for e in errors] == [broken, empty, "parley_missing_plugin"]
    assert "RuntimeError: plugin broke" in errors[0]


def test_load_modules_name_clash_is_reported() -> None:
    registry = Registry()
    registry.tool(lambda: "", name="reverse")
    errors = load_modules(registry, ["tests.tools_plugin_example"])
    assert len(errors) == 1 and "reverse" in errors[0]
    assert registry.names() == ["reverse"]


def test_load_entry_points(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    write_module(tmp_path, "parley_ep_plugin", REGISTER_PLUGIN)
    dist = tmp_path / "parley_ep_plugin-0.1.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: parley-ep-plugin\nVersion: 0.1\n")
    (dist / "entry_points.txt").write_text(
        "[parley.tools]\nlower = parley_ep_plugin:register\nbroken = parley_nowhere:register\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    registry = Registry()
    errors = load_entry_points(registry)
    assert registry.names() == ["lower"]
    assert len(errors) == 1 and errors[0].startswith("broken (parley_nowhere:register)")
    assert load_entry_points(Registry(), group="parley.nothing") == []

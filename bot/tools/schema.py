"""JSON schemas derived from a function's signature, type hints and docstring.

The schema the model sees is computed from the code itself, so the two cannot drift
apart; an annotation we cannot express raises TypeError when the tool is registered,
not when the model first calls it.
"""

from __future__ import annotations

import inspect
import re
import types
import typing
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal, Union

_PRIMITIVES: dict[type, str] = {str: "string", int: "integer", float: "number", bool: "boolean"}
_JSON_SCALARS = (str, int, float, bool, type(None))
# "name: text" or "name (type): text" inside an Args: section.
_ARG_LINE = re.compile(r"^(\*{0,2}\w+)\s*(?:\([^)]*\))?\s*:\s*(.*)$")
_SECTION = re.compile(r"^[A-Z][A-Za-z ]*:\s*$")


@dataclass(frozen=True)
class Derived:
    description: str
    parameters: dict[str, Any]
    context_parameter: str  # "" when the function takes no ToolContext


def derive(function: Callable[..., Any], context_type: type) -> Derived:
    """Build the description and parameters schema of `function`."""
    where = getattr(function, "__qualname__", repr(function))
    try:
        hints = typing.get_type_hints(function)
    except (NameError, TypeError) as exc:
        raise TypeError(f"tool {where}: cannot resolve type hints: {exc}") from exc
    summary, arg_docs = parse_docstring(inspect.getdoc(function) or "")
    properties: dict[str, Any] = {}
    required: list[str] = []
    context_parameter = ""
    for parameter in inspect.signature(function).parameters.values():
        label = f"tool {where}, parameter {parameter.name!r}"
        if parameter.kind in (parameter.VAR_POSITIONAL, parameter.VAR_KEYWORD):
            raise TypeError(f"{label}: *args and **kwargs cannot be described to the model")
        if parameter.kind is parameter.POSITIONAL_ONLY:
            raise TypeError(f"{label}: positional-only parameters cannot be passed by name")
        if parameter.name not in hints:
            raise TypeError(f"{label}: missing type annotation")
        hint = hints[parameter.name]
        if hint is context_type:
            context_parameter = parameter.name
            continue
        properties[parameter.name] = _property(hint, parameter, arg_docs.get(parameter.name), label)
        if parameter.default is parameter.empty:
            required.append(parameter.name)
    parameters: dict[str, Any] = {
        "type": "object",
        "properties": properties,
        "required": required,
        "additionalProperties": False,
    }
    return Derived(summary, parameters, context_parameter)


def _property(hint: Any, parameter: inspect.Parameter, doc: str | None, label: str) -> Any:
    schema = hint_schema(hint, label)
    if doc:
        schema["description"] = doc
    default = parameter.default
    if default is not parameter.empty and isinstance(default, _JSON_SCALARS):
        schema["default"] = default
    return schema


def hint_schema(hint: Any, label: str = "tool") -> dict[str, Any]:
    """The JSON schema of one type hint; TypeError for anything unsupported."""
    if isinstance(hint, type) and hint in _PRIMITIVES:
        return {"type": _PRIMITIVES[hint]}
    origin = typing.get_origin(hint)
    args = typing.get_args(hint)
    if origin is list:
        if len(args) != 1:
            raise TypeError(f"{label}: list needs an item type, e.g. list[str]")
        return {"type": "array", "items": hint_schema(args[0], label)}
    if origin is Literal:
        return _literal_schema(args, label)
    if origin in (Union, types.UnionType):
        return _optional_schema(args, label)
    raise TypeError(
        f"{label}: unsupported annotation {hint!r}; use str, int, float, bool, "
        "list[...], Literal[...] or X | None"
    )


def _literal_schema(values: tuple[Any, ...], label: str) -> dict[str, Any]:
    if not values or not all(type(value) in _PRIMITIVES for value in values):
        raise TypeError(f"{label}: Literal values must be str, int, float or bool")
    kinds = {_PRIMITIVES[type(value)] for value in values}
    schema: dict[str, Any] = {"enum": list(values)}
    if len(kinds) == 1:
        schema["type"] = kinds.pop()
    return schema


def _optional_schema(members: tuple[Any, ...], label: str) -> dict[str, Any]:
    others = [member for member in members if member is not type(None)]
    if len(others) != 1 or len(others) == len(members):
        raise TypeError(f"{label}: only X | None unions are supported, got {members!r}")
    inner = hint_schema(others[0], label)
    # A type list is what most OpenAI-compatible servers understand best.
    if isinstance(inner.get("type"), str):
        inner["type"] = [inner["type"], "null"]
        if "enum" in inner:
            inner["enum"] = [*inner["enum"], None]
        return inner
    return {"anyOf": [inner, {"type": "null"}]}


def parse_docstring(doc: str) -> tuple[str, dict[str, str]]:
    """First paragraph, and per-parameter text from a Google-style Args: section."""
    lines = inspect.cleandoc(doc).splitlines()
    summary: list[str] = []
    for line in lines:
        if not line.strip() or _SECTION.match(line.strip()):
            break
        summary.append(line.strip())
    return " ".join(summary), _args_section(lines)


def _args_section(lines: list[str]) -> dict[str, str]:
    found: dict[str, str] = {}
    headers = ("Args:", "Arguments:")
    start = next((i for i, line in enumerate(lines) if line.strip() in headers), None)
    if start is None:
        return found
    outer = _indent(lines[start])
    current = ""
    for line in lines[start + 1 :]:
        if not line.strip():
            continue
        if _indent(line) <= outer:
            break  # the next section begins
        match = _ARG_LINE.match(line.strip())
        if match and (not current or _indent(line) <= _indent_of_args(lines, start)):
            current = match.group(1).lstrip("*")
            found[current] = match.group(2).strip()
        elif current:
            found[current] = f"{found[current]} {line.strip()}".strip()
    return found


def _indent(line: str) -> int:
    return len(line) - len(line.lstrip())


def _indent_of_args(lines: list[str], start: int) -> int:
    """Indentation of the first entry: continuation lines are indented deeper."""
    for line in lines[start + 1 :]:
        if line.strip():
            return _indent(line)
    return 0

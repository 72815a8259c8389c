"""The tool registry: what the model may call, and the one safe way to call it.

`Registry.run` never raises for anything the model or a tool does: every failure
becomes a `ToolResult` whose content starts with "Error:", so the model can read it
and try again. A tool's result is data for the model; the engine never acts on it.
"""

from __future__ import annotations

import asyncio
import inspect
import json
import re
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from typing import Any, TypeVar, overload

import jsonschema
import jsonschema.exceptions
import jsonschema.validators

from bot.messages import ConversationKey
from bot.tools.schema import derive
from bot.tools.threads import run_in_tool_thread

# What OpenAI accepts as a function name; other servers are no stricter.
NAME_PATTERN = re.compile(r"^[a-zA-Z0-9_-]{1,64}$")
MAX_RESULT_CHARS = 20_000
_MARK = "__parley_tool__"

F = TypeVar("F", bound=Callable[..., Any])


@dataclass(frozen=True)
class ToolContext:
    conversation: ConversationKey
    user: str  # platform:user
    # Searches stored messages of THIS conversation's channel only; supplied by the
    # engine. Async tools await search_history; sync tools (in a worker thread) call
    # search_history_sync, which runs the search on the event loop and waits.
    search_history: Callable[[str, int], Awaitable[list[dict[str, Any]]]]
    search_history_sync: Callable[[str, int], list[dict[str, Any]]] = lambda query, limit: []


@dataclass(frozen=True)
class ToolResult:
    content: str  # the role "tool" message content the model reads
    ok: bool
    # "", "unknown_tool", "bad_json", "invalid_arguments", "timeout", "exception"
    error_kind: str = ""


@dataclass(frozen=True)
class Tool:
    name: str
    description: str
    parameters: dict[str, Any]  # JSON schema of an object
    function: Callable[..., Any]  # sync or async; may return a ToolResult to pass through
    needs_context: bool
    context_parameter: str = "context"  # keyword the ToolContext is passed as

    def schema(self) -> dict[str, Any]:
        """The OpenAI tools API form."""
        function: dict[str, Any] = {"name": self.name}
        if self.description:
            function["description"] = self.description
        function["parameters"] = self.parameters
        return {"type": "function", "function": function}

    @classmethod
    def from_function(
        cls,
        function: Callable[..., Any],
        *,
        name: str | None = None,
        description: str | None = None,
    ) -> Tool:
        """Describe a Python function; TypeError if its annotations cannot be."""
        derived = derive(function, ToolContext)
        return cls(
            name=name or str(getattr(function, "__name__", type(function).__name__)),
            description=derived.description if description is None else description,
            parameters=derived.parameters,
            function=function,
            needs_context=bool(derived.context_parameter),
            context_parameter=derived.context_parameter or "context",
        )


@overload
def tool(function: F, *, name: str | None = None, description: str | None = None) -> F: ...
@overload
def tool(
    function: None = None, *, name: str | None = None, description: str | None = None
) -> Callable[[F], F]: ...
def tool(
    function: F | None = None, *, name: str | None = None, description: str | None = None
) -> F | Callable[[F], F]:
    """Mark a module-level function as a tool; `plugins.load_modules` registers it.

    Marking instead of registering keeps plugin modules free of global registry state.
    """

    def mark(target: F) -> F:
        setattr(target, _MARK, (name, description))
        return target

    return mark if function is None else mark(function)


def marked_options(function: object) -> tuple[str | None, str | None] | None:
    """(name, description) given to @tool, or None if `function` is not marked."""
    options = getattr(function, _MARK, None)
    return options if isinstance(options, tuple) else None


class Registry:
    def __init__(self) -> None:
        self._tools: dict[str, Tool] = {}
        self._validators: dict[str, Any] = {}

    @overload
    def tool(
        self, function: F, *, name: str | None = None, description: str | None = None
    ) -> F: ...
    @overload
    def tool(
        self, function: None = None, *, name: str | None = None, description: str | None = None
    ) -> Callable[[F], F]: ...
    def tool(
        self, function: F | None = None, *, name: str | None = None, description: str | None = None
    ) -> F | Callable[[F], F]:
        """Register a function: `@registry.tool` or `@registry.tool(name=...)`."""

        def register(target: F) -> F:
            self.add(Tool.from_function(target, name=name, description=description))
            return target

        return register if function is None else register(function)

    def add(self, tool: Tool) -> None:
        if not NAME_PATTERN.match(tool.name):
            raise ValueError(f"tool name {tool.name!r} must match {NAME_PATTERN.pattern}")
        if tool.name in self._tools:
            raise ValueError(f"a tool named {tool.name!r} is already registered")
        self._validators[tool.name] = _validator(tool)
        self._tools[tool.name] = tool

    def names(self) -> list[str]:
        return list(self._tools)

    def get(self, name: str) -> Tool | None:
        return self._tools.get(name)

    def schemas(self, enabled: Iterable[str] | None = None) -> list[dict[str, Any]]:
        """Schemas in registration order; None means every tool, unknown names are ignored."""
        wanted = None if enabled is None else set(enabled)
        return [t.schema() for n, t in self._tools.items() if wanted is None or n in wanted]

    async def run(
        self,
        name: str,
        arguments_json: str,
        context: ToolContext,
        *,
        timeout: float,  # noqa: ASYNC109 - the deadline must be told apart from tool errors
        enabled: Iterable[str] | None = None,
    ) -> ToolResult:
        """Validate the model's arguments and call the tool; never raises for tool failures.

        `timeout` bounds the call itself; a caller's own asyncio.timeout would cancel
        the whole run and could not be reported to the model as a timeout. `enabled`
        (None: all) is the set this conversation may run: a model naming any other
        tool, offered or not, gets "unknown tool", and learns only the enabled names.
        """
        allowed = self.names() if enabled is None else [n for n in enabled if n in self._tools]
        tool = self._tools.get(name) if name in allowed else None
        if tool is None:
            available = ", ".join(allowed) or "none"
            return _error("unknown_tool", f"unknown tool {name!r}. Available tools: {available}.")
        arguments = _parse_arguments(arguments_json)
        if isinstance(arguments, ToolResult):
            return arguments
        problem = _first_problem(self._validators[name], arguments)
        if problem:
            return _error("invalid_arguments", f"invalid arguments for {name}: {problem}")
        _integral_floats_to_int(tool.parameters, arguments)
        if tool.needs_context:
            arguments[tool.context_parameter] = context
        return await _call(tool, arguments, timeout)


def _validator(tool: Tool) -> Any:
    cls = jsonschema.validators.validator_for(
        tool.parameters, default=jsonschema.Draft202012Validator
    )
    try:
        cls.check_schema(tool.parameters)
    except jsonschema.exceptions.SchemaError as exc:
        problem = f"tool {tool.name!r} has an invalid parameters schema: {exc.message}"
        raise ValueError(problem) from exc
    return cls(tool.parameters)


def _parse_arguments(arguments_json: str) -> dict[str, Any] | ToolResult:
    # Some models send "" rather than "{}" for a tool without parameters.
    if not arguments_json.strip():
        return {}
    try:
        arguments = json.loads(arguments_json)
    except (json.JSONDecodeError, RecursionError) as exc:
        return _error("bad_json", f"the arguments are not valid JSON ({exc}). Send a JSON object.")
    if not isinstance(arguments, dict):
        return _error("invalid_arguments", "the arguments must be a JSON object.")
    return arguments


def _integral_floats_to_int(schema: dict[str, Any], arguments: dict[str, Any]) -> None:
    """JSON Schema counts 2.0 as an integer; give the tool the int its annotation promises."""
    properties = schema.get("properties")
    if not isinstance(properties, dict):
        return
    for key, value in arguments.items():
        spec = properties.get(key)
        kinds = spec.get("type") if isinstance(spec, dict) else None
        kinds = [kinds] if isinstance(kinds, str) else kinds
        if isinstance(value, float) and isinstance(kinds, list) and "integer" in kinds:
            if "number" not in kinds:
                arguments[key] = int(value)  # validation already checked it is integral


def _first_problem(validator: Any, arguments: dict[str, Any]) -> str:
    error = jsonschema.exceptions.best_match(validator.iter_errors(arguments))
    if error is None:
        return ""
    where = "/".join(str(part) for part in error.absolute_path)
    return f"{error.message} (at {where})" if where else str(error.message)


async def _call(tool: Tool, arguments: dict[str, Any], seconds: float) -> ToolResult:
    try:
        async with asyncio.timeout(seconds) as deadline:
            value = await _invoke(tool.function, arguments)
        return _success(value)
    except TimeoutError as exc:
        # Only our own deadline is a timeout; a TimeoutError the tool raised is its failure.
        if deadline.expired():
            return _error("timeout", f"{tool.name} did not finish within {seconds:g} seconds.")
        return _exception(exc)
    except Exception as exc:  # any tool failure is reported to the model, never raised
        return _exception(exc)


async def _invoke(function: Callable[..., Any], arguments: dict[str, Any]) -> Any:
    if inspect.iscoroutinefunction(function):
        return await function(**arguments)
    # A thread keeps the event loop responsive; it cannot be killed on timeout, so it
    # runs to completion in the background while the model gets the timeout error. The
    # tools' own pool: a hung tool never holds threads the model calls need.
    value = await run_in_tool_thread(function, **arguments)
    if inspect.isawaitable(value):  # callable objects with an async __call__
        value = await value
    return value


def _success(value: Any) -> ToolResult:
    if isinstance(value, ToolResult):
        return ToolResult(cap(value.content), value.ok, value.error_kind)
    text = value if isinstance(value, str) else json.dumps(value, default=str, ensure_ascii=False)
    return ToolResult(cap(text), ok=True)


def _exception(exc: BaseException) -> ToolResult:
    message = str(exc)
    label = type(exc).__name__
    return _error("exception", f"{label}: {message}" if message else label)


def _error(kind: str, message: str) -> ToolResult:
    return ToolResult(cap(f"Error: {message}"), ok=False, error_kind=kind)


def cap(text: str, limit: int = MAX_RESULT_CHARS) -> str:
    """At most `limit` characters, saying so when text was cut."""
    if len(text) <= limit:
        return text
    note = f"\n[truncated: showing {{}} of {len(text)} characters]"
    keep = limit - len(note.format(limit))
    return text[:keep] + note.format(keep)

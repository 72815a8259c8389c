"""Third-party tools, from modules named in config or from installed packages.

A plugin module either defines `register(registry)` (called, and nothing else is
looked at) or marks module-level functions with `bot.tools.registry.tool`, which are
then registered in definition order. An installed package advertises a
`register(registry)` callable under the "parley.tools" entry point group.
A plugin that fails is reported as an error string and skipped: one broken plugin
must not keep the bot from starting.
"""

from __future__ import annotations

import importlib
import importlib.metadata
import inspect
from collections.abc import Callable, Iterable
from types import ModuleType

from bot.tools.registry import Registry, marked_options

Register = Callable[[Registry], None]


def load_modules(registry: Registry, module_names: Iterable[str]) -> list[str]:
    """Import each module and register its tools; returns one error string per failure."""
    errors: list[str] = []
    for module_name in module_names:
        try:
            _load_module(registry, importlib.import_module(module_name))
        except Exception as exc:  # a broken plugin is reported, never fatal
            errors.append(f"{module_name}: {type(exc).__name__}: {exc}")
    return errors


def load_entry_points(registry: Registry, group: str = "parley.tools") -> list[str]:
    """Call every `register(registry)` advertised under the entry point group."""
    errors: list[str] = []
    for entry_point in importlib.metadata.entry_points(group=group):
        try:
            register = entry_point.load()
            if not callable(register):
                raise TypeError(f"{entry_point.value} is not callable")
            _register_atomically(registry, register)
        except Exception as exc:  # a broken plugin is reported, never fatal
            errors.append(f"{entry_point.name} ({entry_point.value}): {type(exc).__name__}: {exc}")
    return errors


def _load_module(registry: Registry, module: ModuleType) -> None:
    register = getattr(module, "register", None)
    if callable(register):
        _register_atomically(registry, register)
        return
    marked = _marked_functions(module)
    if not marked:
        raise ValueError("defines neither register(registry) nor functions marked with @tool")

    def register_marked(target: Registry) -> None:
        for function in marked:
            name, description = marked_options(function) or (None, None)
            target.tool(function, name=name, description=description)

    _register_atomically(registry, register_marked)


def _marked_functions(module: ModuleType) -> list[Callable[..., object]]:
    # Only functions defined here: a plugin importing another plugin's tools must not
    # register them twice.
    return [
        value
        for value in vars(module).values()
        if inspect.isfunction(value)
        and value.__module__ == module.__name__
        and marked_options(value) is not None
    ]


def _register_atomically(registry: Registry, register: Register) -> None:
    """Run `register` on a scratch registry first, so a plugin failing halfway adds nothing."""
    scratch = Registry()
    register(scratch)
    clashes = [name for name in scratch.names() if registry.get(name) is not None]
    if clashes:
        raise ValueError(f"tool names already registered: {', '.join(clashes)}")
    for name in scratch.names():
        tool = scratch.get(name)
        if tool is not None:
            registry.add(tool)

"""Refusing regular expressions from the config that can backtrack for ever.

Patterns in [moderation] and [redaction] run on every message (and, for redaction, on
every tool result), on the event loop. Python's re backtracks: a repetition of
something that is itself nothing but repetition, such as (a+)+ or (\\w+\\s?)*, takes
exponential time on a near-miss. Such a pattern is refused at start; the same written
possessively ((a++)+, (?>...)) or with a required separator ((\\.[a-z]+)*) is fine.
This is a check for the classic shape, not a proof of linearity.
"""

from __future__ import annotations

from re import _parser  # type: ignore[attr-defined]  # the parser re itself uses
from typing import Any

_REPEATS = ("MAX_REPEAT", "MIN_REPEAT")


def nested_repetition(pattern: str) -> bool:
    """True when an unbounded repetition repeats nothing but repetitions."""
    return _search(_parser.parse(pattern))


def _search(items: Any) -> bool:
    for op, value in items:
        name = str(op)
        if name in _REPEATS:
            _, high, body = value
            if high == _parser.MAXREPEAT and _only_repetition(body):
                return True
            if _search(body):
                return True
        elif name == "SUBPATTERN":
            if _search(value[-1]):
                return True
        elif name == "BRANCH":
            if any(_search(branch) for branch in value[1]):
                return True
    return False


def _only_repetition(items: Any) -> bool:
    """Every part of the body is optional, and one is an unbounded repetition."""
    unbounded = False
    for op, value in items:
        name = str(op)
        if name == "SUBPATTERN":
            inner = value[-1]
            if not _only_repetition(inner) and not _all_optional(inner):
                return False
            unbounded = unbounded or _only_repetition(inner)
        elif name in _REPEATS:
            low, high, _ = value
            if high == _parser.MAXREPEAT:
                unbounded = True
            elif low > 0:
                return False
        elif name not in ("AT",):  # a literal, a class: something each round must match
            return False
    return unbounded


def _all_optional(items: Any) -> bool:
    return all(str(op) in _REPEATS and value[0] == 0 for op, value in items)

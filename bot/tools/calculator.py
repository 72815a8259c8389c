"""Arithmetic for the model, by walking the parsed expression: nothing is ever eval'd.

Only numbers, arithmetic operators and a short whitelist of math functions and
constants are accepted; sizes are bounded so that an expression cannot exhaust
CPU or memory (9**9**9 is refused before it is computed).
"""

from __future__ import annotations

import ast
import math
import operator
from collections.abc import Callable

Number = int | float

MAX_EXPRESSION_CHARS = 500
MAX_INT_BITS = 10_000
MAX_ROUND_DIGITS = 100

_BINARY: dict[type[ast.operator], Callable[[Number, Number], Number]] = {
    ast.Add: operator.add,
    ast.Sub: operator.sub,
    ast.Mult: operator.mul,
    ast.Div: operator.truediv,
    ast.FloorDiv: operator.floordiv,
    ast.Mod: operator.mod,
}
_UNARY: dict[type[ast.unaryop], Callable[[Number], Number]] = {
    ast.UAdd: operator.pos,
    ast.USub: operator.neg,
}
_CONSTANTS: dict[str, float] = {"pi": math.pi, "e": math.e}
# name -> (function, fewest arguments, most arguments)
_FUNCTIONS: dict[str, tuple[Callable[..., Number], int, int]] = {
    "sqrt": (math.sqrt, 1, 1),
    "sin": (math.sin, 1, 1),
    "cos": (math.cos, 1, 1),
    "tan": (math.tan, 1, 1),
    "log": (math.log, 1, 2),
    "exp": (math.exp, 1, 1),
    "abs": (abs, 1, 1),
    "round": (round, 1, 2),
}


def calculate(expression: str) -> str:
    """Evaluate an arithmetic expression exactly (integers) or in floating point.

    Supports + - * / // % ** and parentheses, the constants pi and e, and the
    functions sqrt, sin, cos, tan, log (natural, or log(x, base)), exp, abs, round.

    Args:
        expression: The expression, e.g. "(2 + 3) * sqrt(16) / 7".
    """
    if len(expression) > MAX_EXPRESSION_CHARS:
        raise ValueError(f"expression is longer than {MAX_EXPRESSION_CHARS} characters")
    try:
        tree = ast.parse(expression.strip(), mode="eval")
    except (SyntaxError, RecursionError, MemoryError) as exc:
        raise ValueError(f"not a valid arithmetic expression: {expression!r}") from exc
    try:
        value = _evaluate(tree.body)
    except ZeroDivisionError as exc:
        raise ValueError("division by zero") from exc
    except OverflowError as exc:
        raise ValueError(f"the result is too large ({exc})") from exc
    except RecursionError as exc:
        raise ValueError("the expression is nested too deeply") from exc
    return str(value)


def _evaluate(node: ast.expr) -> Number:
    if isinstance(node, ast.Constant):
        return _checked(_literal(node.value))
    if isinstance(node, ast.BinOp):
        left, right = _evaluate(node.left), _evaluate(node.right)
        if isinstance(node.op, ast.Pow):
            return _checked(_power(left, right))
        binary = _BINARY.get(type(node.op))
        if binary is None:
            raise ValueError(f"operator {type(node.op).__name__} is not supported")
        return _checked(binary(left, right))
    if isinstance(node, ast.UnaryOp) and type(node.op) in _UNARY:
        return _UNARY[type(node.op)](_evaluate(node.operand))
    if isinstance(node, ast.Name):
        if node.id not in _CONSTANTS:
            raise ValueError(f"unknown name {node.id!r}; constants are: {', '.join(_CONSTANTS)}")
        return _CONSTANTS[node.id]
    if isinstance(node, ast.Call):
        return _checked(_call(node))
    raise ValueError(f"{type(node).__name__} is not allowed in an arithmetic expression")


def _literal(value: object) -> Number:
    # bool is an int subclass; True + True is not arithmetic anyone means.
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValueError(f"only numbers are allowed, not {value!r}")
    return value


def _power(base: Number, exponent: Number) -> Number:
    if isinstance(base, int) and isinstance(exponent, int) and exponent > 0:
        # Refuse before computing: an exact power's size is known in advance.
        if abs(base) > 1 and (abs(base).bit_length() - 1) * exponent > MAX_INT_BITS:
            raise ValueError(f"{base}**{exponent} is too large (over {MAX_INT_BITS} bits)")
    result = base**exponent
    if isinstance(result, complex):
        raise ValueError("a negative number to a fractional power has no real value")
    return result


def _call(node: ast.Call) -> Number:
    if not isinstance(node.func, ast.Name) or node.func.id not in _FUNCTIONS:
        shown = node.func.id if isinstance(node.func, ast.Name) else type(node.func).__name__
        raise ValueError(f"unknown function {shown!r}; functions are: {', '.join(_FUNCTIONS)}")
    function, fewest, most = _FUNCTIONS[node.func.id]
    if node.keywords or any(isinstance(arg, ast.Starred) for arg in node.args):
        raise ValueError(f"{node.func.id}() takes plain positional arguments only")
    if not fewest <= len(node.args) <= most:
        raise ValueError(f"{node.func.id}() takes {fewest} to {most} arguments")
    arguments = [_evaluate(arg) for arg in node.args]
    if node.func.id == "round" and len(arguments) == 2:
        _check_round_digits(arguments[1])
    try:
        return function(*arguments)
    except (ValueError, TypeError) as exc:  # math domain errors: sqrt(-1), log(0)
        raise ValueError(f"{node.func.id}{tuple(arguments)}: {exc}") from exc


def _check_round_digits(digits: Number) -> None:
    # round(5, -10**9) would build 10**(10**9) internally.
    if not isinstance(digits, int) or abs(digits) > MAX_ROUND_DIGITS:
        raise ValueError(f"round() digits must be an integer within ±{MAX_ROUND_DIGITS}")


def _checked(value: Number) -> Number:
    if isinstance(value, int) and value.bit_length() > MAX_INT_BITS:
        raise ValueError(f"the result is too large (over {MAX_INT_BITS} bits)")
    if isinstance(value, float) and not math.isfinite(value):
        raise ValueError("the result is too large or undefined (floating-point overflow)")
    return value

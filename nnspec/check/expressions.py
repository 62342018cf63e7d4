"""Expressions → values. A spec computes only with numbers, lists and names; nothing runs."""
from __future__ import annotations

import math
from typing import Any, Mapping

from nnspec.syntax import nodes as n
from nnspec.errors import NnspecError, Diagnostic, did_you_mean
from nnspec.limits import LIMITS
from nnspec.registry.types import CallValue, Symbol, describe


class Names:
    """Names visible to an expression: consts and parameters, innermost first."""

    def __init__(self, values: Mapping[str, Any] | None = None, parent: "Names | None" = None):
        self.values = dict(values or {})
        self.parent = parent
        self.failed: set[str] = set()      # consts whose definition was already reported as wrong

    def has_failed(self, name: str) -> bool:
        """Whether `name` is a const whose definition failed (with an error already reported)."""
        scope: Names | None = self
        while scope is not None:
            if name in scope.values:
                return False
            if name in scope.failed:
                return True
            scope = scope.parent
        return False

    def lookup(self, name: str) -> tuple[bool, Any]:
        scope: Names | None = self
        while scope is not None:
            if name in scope.values:
                return True, scope.values[name]
            scope = scope.parent
        return False, None

    def names(self) -> set[str]:
        out: set[str] = set()
        scope: Names | None = self
        while scope is not None:
            out.update(scope.values)
            scope = scope.parent
        return out

    def child(self, values: Mapping[str, Any] | None = None) -> "Names":
        return Names(values, self)


# Pure arithmetic helpers usable in any expression, e.g. MobileNet's channel rounding:
# `max(8, (c + 4) // 8 * 8)`. (name → function, (min args, max args))
FUNCTIONS = {
    "min": (min, (2, 64)), "max": (max, (2, 64)), "abs": (abs, (1, 1)),
    "round": (round, (1, 1)), "floor": (math.floor, (1, 1)), "ceil": (math.ceil, (1, 1)),
}


def _fail(code: str, message: str, node, hint: str | None = None) -> NnspecError:
    return NnspecError(Diagnostic("error", code, message, node.span, hint))


def _number(value: Any, node, scope: Names, operand) -> int | float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        if isinstance(value, Symbol):
            hint = did_you_mean(value.name, scope.names()) or "define it with `const name = value` or as a parameter"
            raise _fail("E202", f"`{value.name}` is not defined", operand, hint)
        raise _fail("E307", f"arithmetic needs numbers, got {describe(value)}", operand)
    return value


def _check_size(value: Any, node) -> Any:
    if isinstance(value, int) and abs(value) > LIMITS.max_int:
        raise _fail("E602", f"integer {value:.3g} is too large", node, f"values are limited to ±{LIMITS.max_int}")
    return value


def evaluate(expr: n.Expr, scope: Names) -> Any:
    """Evaluate `expr`; bare words that name nothing become `Symbol`s (checked where used)."""
    if isinstance(expr, (n.Number, n.String, n.Bool)):
        return _check_size(expr.value, expr)
    if isinstance(expr, n.Name):
        found, value = scope.lookup(expr.name)
        if not found and scope.has_failed(expr.name):
            raise NnspecError([])     # its definition's error is the one to fix; nothing more to say here
        return value if found else Symbol(expr.name, expr.span)
    if isinstance(expr, n.ListExpr):
        if len(expr.items) > LIMITS.max_list:
            raise _fail("E602", f"list has {len(expr.items)} items (limit {LIMITS.max_list})", expr)
        return tuple(evaluate(item, scope) for item in expr.items)
    if isinstance(expr, n.Neg):
        return -_number(evaluate(expr.operand, scope), expr, scope, expr.operand)
    if isinstance(expr, n.BinOp):
        left = _number(evaluate(expr.left, scope), expr, scope, expr.left)
        right = _number(evaluate(expr.right, scope), expr, scope, expr.right)
        if expr.op in ("/", "//", "%") and right == 0:
            raise _fail("E308", "division by zero", expr.right)
        try:
            result = {"+": lambda: left + right, "-": lambda: left - right, "*": lambda: left * right,
                      "/": lambda: left / right, "//": lambda: left // right, "%": lambda: left % right}[expr.op]()
        except OverflowError:
            raise _fail("E602", "number too large", expr) from None
        if isinstance(result, float) and result.is_integer() and expr.op == "/" \
                and isinstance(left, int) and isinstance(right, int):
            result = int(result)      # `channels / 2` stays an integer when it divides evenly
        if isinstance(result, float) and result != result or result in (float("inf"), float("-inf")):
            raise _fail("E602", "number out of range", expr)
        return _check_size(result, expr)
    if isinstance(expr, n.Call) and expr.name in FUNCTIONS and not any(a.name for a in expr.args):
        values = [_number(evaluate(a.value, scope), expr, scope, a.value) for a in expr.args]
        fn, arity = FUNCTIONS[expr.name]
        if not (arity[0] <= len(values) <= arity[1]):
            raise _fail("E312", f"`{expr.name}` takes {arity[0]}" + (f" to {arity[1]}" if arity[1] != arity[0]
                        else "") + f" arguments, got {len(values)}", expr)
        return _check_size(fn(*values), expr)
    if isinstance(expr, n.Call):
        args = tuple(evaluate(a.value, scope) for a in expr.args if a.name is None)
        kwargs = tuple((a.name, evaluate(a.value, scope)) for a in expr.args if a.name is not None)
        return CallValue(expr.name, args, kwargs, expr)
    if isinstance(expr, n.Then):
        raise _fail("E309", "`then` joins schedules and is only allowed in a `schedule` section", expr)
    raise TypeError(f"not an expression: {expr!r}")  # unreachable: the parser builds only these

"""Argument types and tensor types: the vocabulary every registry entry declares itself in.

Values reaching a type check are already evaluated: int, float, bool, str, `Symbol` (a bare
word such as `auto`), tuple (a `[...]` list) or `CallValue` (a nested `name(args)`).
A failed check raises `ArgError`; the checker adds the location.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from collections.abc import Mapping
from typing import Any, Callable

from nnspec.limits import LIMITS

# Numbers torch can hold: integers within the spec's integer limit (LIMITS.max_int, 2^53, inside
# int64; a float such as 1e300 given for an integer argument must meet it too), floats within float32.
MAX_FLOAT = 3.4028234663852886e38

REQUIRED: Any = type("Required", (), {"__repr__": lambda self: "REQUIRED"})()


class ArgError(Exception):
    """A value does not fit its declared type or range. `hint` says what would."""

    def __init__(self, message: str, hint: str | None = None, allowed: Callable[[str], str] | None = None):
        super().__init__(message)
        self.message, self.hint = message, hint
        self.allowed = allowed      # range text for a named argument, e.g. "lr > 0"

    def hint_for(self, name: str) -> str | None:
        return f"allowed: {self.allowed(name)}" if self.allowed else self.hint


class ShapeError(ArgError):
    """A layer cannot take the shape it is given (raised by shape rules)."""


@dataclass(frozen=True, slots=True)
class Symbol:
    """A bare word used as a value: `device auto`, `monitor = val_loss`. `span` is where the
    word is written (not part of its value), so an undefined name is reported there."""
    name: str
    span: Any = field(default=None, compare=False, repr=False)

    def __str__(self) -> str:
        return self.name


@dataclass(frozen=True, slots=True)
class CallValue:
    """`name(args)` used as a value (a schedule, a loss, an augmentation). Args are evaluated."""
    name: str
    args: tuple                      # positional values
    kwargs: tuple                    # ((name, value), ...)
    node: Any = field(default=None, compare=False, repr=False)   # the nodes.Call, for locations


def describe(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return f'"{value}"'
    if isinstance(value, tuple):
        return "[" + ", ".join(describe(v) for v in value) + "]"
    if isinstance(value, CallValue):
        return f"{value.name}(…)"
    return str(value)


class Type:
    """Base of argument types. `check` returns the (possibly converted) value or raises ArgError."""
    name = "value"

    def check(self, value: Any) -> Any:
        return value

    def __str__(self) -> str:
        return self.name


@dataclass(frozen=True)
class Number(Type):
    """An int or float in a range. `min_open`/`max_open` make a bound exclusive."""
    integer: bool = False
    min: float | None = None
    max: float | None = None
    min_open: bool = False
    max_open: bool = False

    @property
    def name(self) -> str:  # type: ignore[override]
        return "int" if self.integer else "number"

    def range_text(self, label: str = "x") -> str:
        parts = []
        if self.min is not None:
            parts.append(f"{label} {'>' if self.min_open else '≥'} {_fmt(self.min)}")
        if self.max is not None:
            parts.append(f"{label} {'<' if self.max_open else '≤'} {_fmt(self.max)}")
        return " and ".join(parts)

    def check(self, value: Any) -> Any:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ArgError(f"expected {'an integer' if self.integer else 'a number'}, got {describe(value)}")
        if self.integer and not isinstance(value, int):
            if isinstance(value, float) and value.is_integer():
                value = int(value)
            else:
                raise ArgError(f"expected an integer, got {describe(value)}")
        if isinstance(value, float) and not math.isfinite(value):
            raise ArgError(f"expected a finite number, got {value}")
        if self.integer and abs(value) > LIMITS.max_int:
            raise ArgError(f"{value:.3g} is too large for an integer argument",
                           f"integers are limited to ±{LIMITS.max_int}")
        if not self.integer and abs(value) > MAX_FLOAT:
            raise ArgError(f"{describe(value)} is too large: torch computes in float32, whose largest value "
                           f"is about {MAX_FLOAT:.4g}", "use a number within float32 range")
        low_bad = self.min is not None and (value <= self.min if self.min_open else value < self.min)
        high_bad = self.max is not None and (value >= self.max if self.max_open else value > self.max)
        if low_bad or high_bad:
            raise ArgError(f"{describe(value)} is out of range", "allowed: " + self.range_text(),
                           allowed=self.range_text)
        return value if self.integer else float(value)


def _fmt(x: float) -> str:
    return str(int(x)) if float(x).is_integer() and abs(x) < 1e15 else repr(x)


def Int(min: int | None = None, max: int | None = None) -> Number:
    return Number(True, min, max)


def Float(min: float | None = None, max: float | None = None, *, min_open: bool = False,
          max_open: bool = False) -> Number:
    return Number(False, min, max, min_open, max_open)


PositiveInt = Int(min=1)
NonNegativeInt = Int(min=0)
PositiveFloat = Float(min=0, min_open=True)
Probability = Float(0, 1, max_open=True)      # e.g. dropout: 0 ≤ p < 1


@dataclass(frozen=True)
class Bool(Type):
    name = "bool"

    def check(self, value: Any) -> Any:
        if not isinstance(value, bool):
            raise ArgError(f"expected true or false, got {describe(value)}")
        return value


@dataclass(frozen=True)
class Str(Type):
    name = "string"

    def check(self, value: Any) -> Any:
        if not isinstance(value, str):
            raise ArgError(f'expected a string in double quotes, got {describe(value)}')
        return value


@dataclass(frozen=True)
class Choice(Type):
    """One of fixed words, written bare (`mode = max`) or quoted. Checks to a str."""
    options: tuple[str, ...]

    def __init__(self, *options: str):
        object.__setattr__(self, "options", tuple(options))

    @property
    def name(self) -> str:  # type: ignore[override]
        return " | ".join(self.options)

    def check(self, value: Any) -> Any:
        word = value.name if isinstance(value, Symbol) else value
        if not isinstance(word, str) or word not in self.options:
            from nnspec.errors import did_you_mean
            hint = (did_you_mean(word, self.options) if isinstance(word, str) else None) or \
                "one of: " + ", ".join(self.options)
            raise ArgError(f"expected one of {', '.join(self.options)}; got {describe(value)}", hint)
        return word


@dataclass(frozen=True)
class Tuple(Type):
    """`[a, b]` of `item`s with `length` items (None: any length ≥ 1). A bare item is broadcast
    when `broadcast` (so `kernel_size = 3` means [3, 3])."""
    item: Type
    length: int | None = None
    broadcast: bool = True

    @property
    def name(self) -> str:  # type: ignore[override]
        n = "" if self.length is None else f"{self.length} × "
        return f"[{n}{self.item}]"

    def check(self, value: Any) -> Any:
        if not isinstance(value, tuple):
            if self.broadcast and self.length is not None:
                value = (self.item.check(value),) * self.length
                return value
            raise ArgError(f"expected a list {self.name}, got {describe(value)}")
        if self.length is not None and len(value) != self.length:
            raise ArgError(f"expected {self.length} items, got {len(value)}")
        if self.length is None and not value:
            raise ArgError("expected at least one item")
        return tuple(self.item.check(v) for v in value)


@dataclass(frozen=True)
class OneOf(Type):
    """The first of several types that accepts the value."""
    options: tuple[Type, ...]

    def __init__(self, *options: Type):
        object.__setattr__(self, "options", tuple(options))

    @property
    def name(self) -> str:  # type: ignore[override]
        return " or ".join(str(o) for o in self.options)

    def check(self, value: Any) -> Any:
        first: ArgError | None = None
        for option in self.options:
            try:
                return option.check(value)
            except ArgError as err:
                first = first or err
        raise ArgError(f"expected {self.name}, got {describe(value)}", first.hint if first else None)


@dataclass(frozen=True)
class Optional(Type):
    """`inner`, or the bare word `none` (read as None): e.g. `stride = none` means "same as kernel"."""
    inner: Type

    @property
    def name(self) -> str:  # type: ignore[override]
        return f"{self.inner} or none"

    def check(self, value: Any) -> Any:
        if value is None or (isinstance(value, Symbol) and value.name == "none"):
            return None
        return self.inner.check(value)


@dataclass(frozen=True)
class AnyValue(Type):
    name = "any"


@dataclass(frozen=True)
class Param:
    """One declared argument of a component. Positional order is declaration order."""
    name: str
    type: Type
    default: Any = REQUIRED
    doc: str = ""
    keyword_only: bool = False

    @property
    def required(self) -> bool:
        return self.default is REQUIRED


# --- tensors --------------------------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class TensorType:
    """A tensor's shape without the batch dimension, and its dtype kind ("float" or "long")."""
    shape: tuple[int, ...]
    dtype: str = "float"

    def __str__(self) -> str:
        s = "[" + ", ".join(str(d) for d in self.shape) + "]"
        return s if self.dtype == "float" else f"{s} {self.dtype}"

    @property
    def numel(self) -> int:
        return math.prod(self.shape)


ShapeRule = Callable[[Any, "list[TensorType]"], TensorType]
CountRule = Callable[[Any, "list[TensorType]"], "tuple[int, int]"]
ParamRule = Callable[[Any, "list[TensorType]"], "Mapping[str, tuple[int, ...]]"]


class Args(Mapping):
    """Checked arguments of one component use: every declared parameter, defaults filled in.
    Read as `args.out_features` or `args["out_features"]`."""

    __slots__ = ("_values",)

    def __init__(self, values: Mapping[str, Any] | None = None, **kw: Any):
        object.__setattr__(self, "_values", dict(values or {}, **kw))

    def __getattr__(self, name: str) -> Any:
        try:
            return self._values[name]
        except KeyError:
            raise AttributeError(name) from None

    def __setattr__(self, name: str, value: Any) -> None:
        raise AttributeError("Args are immutable")

    def __getitem__(self, key: str) -> Any:
        return self._values[key]

    def __iter__(self):
        return iter(self._values)

    def __len__(self) -> int:
        return len(self._values)

    def __repr__(self) -> str:
        return "Args(" + ", ".join(f"{k}={v!r}" for k, v in self._values.items()) + ")"

    def __hash__(self) -> int:
        return hash(tuple(sorted((k, repr(v)) for k, v in self._values.items())))

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Args) and self._values == other._values

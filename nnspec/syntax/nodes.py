"""The AST: frozen dataclasses, one per construct, each carrying the `Span` it came from.

The parser builds these and nothing else; meaning (names, types, shapes) is given by the
check passes in `nnspec.check.checker`.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Union

from nnspec.errors import Span

# --- expressions --------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Number:
    value: int | float
    span: Span


@dataclass(frozen=True, slots=True)
class String:
    value: str
    span: Span


@dataclass(frozen=True, slots=True)
class Bool:
    value: bool
    span: Span


@dataclass(frozen=True, slots=True)
class Name:
    """A bare word: a constant, a parameter, or a symbol such as `auto` or `val_loss`."""
    name: str
    span: Span


@dataclass(frozen=True, slots=True)
class ListExpr:
    items: tuple["Expr", ...]
    span: Span


@dataclass(frozen=True, slots=True)
class BinOp:
    op: str                 # + - * / // %
    left: "Expr"
    right: "Expr"
    span: Span


@dataclass(frozen=True, slots=True)
class Neg:
    operand: "Expr"
    span: Span


@dataclass(frozen=True, slots=True)
class Arg:
    """One call argument; `name` is None for a positional one."""
    name: str | None
    value: "Expr"
    span: Span
    name_span: Span | None = None


@dataclass(frozen=True, slots=True)
class Call:
    """`name(args)`: a component with arguments, in a graph or as a value."""
    name: str
    args: tuple[Arg, ...]
    span: Span
    name_span: Span


@dataclass(frozen=True, slots=True)
class Then:
    """`a then b then c`: a sequence, e.g. a schedule chain."""
    items: tuple["Expr", ...]
    span: Span


Expr = Union[Number, String, Bool, Name, ListExpr, BinOp, Neg, Call, Then]

# --- graphs --------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Ref:
    """A bare name in a graph: a layer without arguments, a block, a shared layer or a tensor."""
    name: str
    span: Span


@dataclass(frozen=True, slots=True)
class Repeat:
    """`node * count`: count fresh copies applied in sequence."""
    node: "Node"
    count: Expr
    span: Span


@dataclass(frozen=True, slots=True)
class Residual:
    """`residual { body } shortcut { projection }`: body(x) + x, or + shortcut(x) when shapes differ.

    `shortcut none` (no_shortcut) drops the skip connection where shapes differ (MobileNetV2)."""
    body: tuple["Stmt", ...]
    shortcut: tuple["Stmt", ...] | None
    span: Span
    no_shortcut: bool = False


@dataclass(frozen=True, slots=True)
class Parallel:
    """`parallel merge { branch; branch }`: every branch sees the same input; `merge` joins them."""
    merge: Union[Call, Ref]
    branches: tuple["Stmt", ...]
    span: Span


Node = Union[Call, Ref, Repeat, Residual, Parallel, "Chain"]   # a Chain in parentheses groups nodes


@dataclass(frozen=True, slots=True)
class Chain:
    """`a -> b -> c`: nodes applied in order to the current tensor."""
    nodes: tuple[Node, ...]
    span: Span


@dataclass(frozen=True, slots=True)
class Bind:
    """`name = chain`: run the chain and name its output (the flow continues from it)."""
    name: str
    chain: Chain
    span: Span
    name_span: Span


@dataclass(frozen=True, slots=True)
class Shared:
    """`shared name = layer`: one instance; each use of `name` applies the same weights."""
    name: str
    node: Node
    span: Span
    name_span: Span


@dataclass(frozen=True, slots=True)
class InputDecl:
    """`input [3, 32, 32]` or `input [128] long`: the model's input shape without the batch."""
    shape: ListExpr
    dtype: str | None
    span: Span


@dataclass(frozen=True, slots=True)
class Const:
    name: str
    value: Expr
    span: Span
    name_span: Span


Stmt = Union[Chain, Bind, Shared, InputDecl, Const]

# --- top level -----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Param:
    name: str
    default: Expr | None
    span: Span


@dataclass(frozen=True, slots=True)
class GraphDef:
    """`block name(params) { ... }` or `model name(params) { ... }`."""
    kind: str               # "block" | "model"
    name: str
    params: tuple[Param, ...]
    body: tuple[Stmt, ...]
    span: Span
    name_span: Span


@dataclass(frozen=True, slots=True)
class Setting:
    """`name(args)? values? { settings }?`: every section and every key inside one.

    `loss cross_entropy(label_smoothing = 0.1)`, `train { epochs 30 }`, `seed 0`,
    `early_stop(monitor = val_loss)` and `group bias, norm { weight_decay 0 }` are all Settings.
    """
    name: str
    args: tuple[Arg, ...] | None
    values: tuple[Expr, ...]
    body: tuple["Setting", ...] | None
    span: Span
    name_span: Span


@dataclass(frozen=True, slots=True)
class Import:
    path: str
    span: Span


Item = Union[Import, Const, GraphDef, Setting]


@dataclass(frozen=True, slots=True)
class Module:
    """One parsed file."""
    path: str
    items: tuple[Item, ...]
    comments: tuple[tuple[int, str], ...]    # (offset, text) of every comment, for `nnspec fmt`
    source: str

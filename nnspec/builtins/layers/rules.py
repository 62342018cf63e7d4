"""Shared helpers for the built-in layer declarations (pure Python, never imports torch).

`layer(...)` builds a layer Component whose shape and parameter rules are wrapped so that every
rule first sees the right number of inputs and (unless it opts out) float inputs; the parameter
rule re-runs the shape rule, so it never meets an input the shape rule would refuse. A layer
declares its trainable parameters by name and shape (`parameters`) and, if it keeps any, its
buffer elements (`buffers`); its `count` is derived from those two, never a second formula.
"""
from __future__ import annotations

import math
from typing import Callable

from nnspec.registry.catalog import Component
from nnspec.registry.types import Optional, ShapeError, TensorType  # noqa: F401 (Optional is re-exported)

IMPL = "nnspec.builtins.layers.torch_impl:"


# `Optional` lives in nnspec.registry.types; re-exported here for the declarations that import it from here.


def show(shape) -> str:
    """A shape as written in specs: [64, 8, 8]."""
    return "[" + ", ".join(str(d) for d in shape) + "]"


def same_shape(args, inputs):
    return inputs[0]


def expect_rank(name: str, x: TensorType, ranks: tuple[int, ...], layout: str) -> None:
    """Raise unless `x` has one of `ranks` non-batch dims; `layout` names them, e.g. "[channels, length]"."""
    if len(x.shape) not in ranks:
        raise ShapeError(f"{name} expects {layout}, got {show(x.shape)}",
                         f"{name} takes inputs shaped {layout} (batch dimension excluded)")


def expect_min_rank(name: str, x: TensorType, rank: int, what: str = "") -> None:
    if len(x.shape) < rank:
        need = f"at least {rank} dimension{'s' if rank != 1 else ''}"
        raise ShapeError(f"{name} expects an input with {need}{what}, got {show(x.shape)}")


def norm_dim(name: str, dim: int, x: TensorType, label: str = "dim") -> int:
    """A non-batch dim index (negatives count from the end) as 0-based, or ShapeError."""
    n = len(x.shape)
    if n == 0:
        raise ShapeError(f"{name} {label} {dim} cannot index an input with no dimensions "
                         f"(the batch dimension is not counted)")
    if not -n <= dim < n:
        raise ShapeError(f"{name} {label} {dim} is out of range for {show(x.shape)}",
                         f"dims count from 0 over the non-batch dims: 0..{n - 1} or -{n}..-1")
    return dim % n


def _check_float(name: str, inputs) -> None:
    for i, x in enumerate(inputs):
        if x.dtype != "float":
            which = f"input {i + 1}" if len(inputs) > 1 else "got"
            raise ShapeError(f"{name} expects a float tensor; did you forget an embedding? ({which} {x})",
                             "integer (long) tensors only feed `embedding`, which turns ids into float vectors")


def layer(name: str, params=(), summary: str = "", impl: str | None = None, *,
          shape: Callable = same_shape, parameters: Callable | None = None,
          buffers: Callable | None = None, inputs=(1, 1),
          flags=frozenset(), check: Callable | None = None, warn: Callable | None = None,
          dtype: str | None = "float", info: dict | None = None) -> Component:
    """A layer Component whose rules check input count and dtype before the layer's own rule.
    `dtype=None` lets the rule see any dtype (embedding checks its own)."""
    low, high = inputs

    def checked_shape(args, ins):
        ins = list(ins)
        if len(ins) < low or (high is not None and len(ins) > high):
            want = str(low) if low == high else f"at least {low}" if high is None else f"{low} to {high}"
            raise ShapeError(f"{name} takes {want} input{'s' if want != '1' else ''}, got {len(ins)}")
        if dtype == "float":
            _check_float(name, ins)
        return shape(args, ins)

    def checked_parameters(args, ins):
        checked_shape(args, ins)
        return {key: tuple(size) for key, size in parameters(args, list(ins)).items()}

    def checked_count(args, ins):
        checked_shape(args, ins)
        declared = parameters(args, list(ins)) if parameters else {}
        return (sum(math.prod(size) for size in declared.values()),
                buffers(args, list(ins)) if buffers else 0)

    checked_shape.__doc__ = shape.__doc__
    return Component(name, "layers", params=tuple(params), summary=summary,
                     impl=IMPL + (impl or name), flags=frozenset(flags), shape=checked_shape,
                     parameters=checked_parameters if parameters else None, count=checked_count,
                     inputs=inputs, check=check, warn=warn, info=info or {})


def tup(value, n: int) -> tuple:
    """A defaulted scalar (`stride = 1`) as the n-tuple a checked value would be."""
    return tuple(value) if isinstance(value, tuple) else (value,) * n

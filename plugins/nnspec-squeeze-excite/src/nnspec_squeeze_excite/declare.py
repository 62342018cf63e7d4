"""The declaration of `squeeze_excite` that `nnspec validate` reads. Never import torch here.

Its shape and parameter rules are plain Python over `TensorType`s, so a spec is checked, and
`nnspec summary` counts parameters, without building anything. A rule raises `ShapeError`
for an input it cannot take; nnspec reports it (E410) at the layer in the spec. `parameters`
names the module's parameters as its `named_parameters()` does, so parameter groups can select
inside it (`group bias` takes `reduce.bias` and `expand.bias`); the count is their sum.
"""
from __future__ import annotations

from nnspec.registry import Component
from nnspec.types import Choice, Int, Param, ShapeError, TensorType


def _show(shape) -> str:
    return "[" + ", ".join(str(d) for d in shape) + "]"


def hidden_units(args, channels: int) -> int:
    return channels // args.reduction


def _shape(args, inputs: list[TensorType]) -> TensorType:
    (x,) = inputs
    if x.dtype != "float":
        raise ShapeError(f"squeeze_excite expects a float tensor, got {x}")
    if len(x.shape) not in (2, 3):
        raise ShapeError(f"squeeze_excite expects [channels, length] or [channels, height, width], "
                         f"got {_show(x.shape)}",
                         "put it after a conv layer, before flatten (the batch dimension is not counted)")
    channels = x.shape[0]
    if hidden_units(args, channels) < 1:
        raise ShapeError(f"squeeze_excite reduction {args.reduction} leaves no hidden units for {channels} channels",
                         f"use reduction ≤ {channels}")
    return x


def _parameters(args, inputs: list[TensorType]) -> dict[str, tuple[int, ...]]:
    channels = _shape(args, inputs).shape[0]
    hidden = hidden_units(args, channels)
    return {"reduce.weight": (hidden, channels), "reduce.bias": (hidden,),      # two linear maps with bias
            "expand.weight": (channels, hidden), "expand.bias": (channels,)}


SQUEEZE_EXCITE = Component(
    "squeeze_excite", "layers",
    params=(
        Param("reduction", Int(min=1), 16, doc="hidden units = channels // reduction (≥ 1)"),
        Param("activation", Choice("relu", "silu"), "relu", doc="nonlinearity between the two linear maps"),
        Param("gate", Choice("sigmoid", "hard_sigmoid"), "sigmoid", doc="squashes the channel weights into [0, 1]"),
    ),
    summary="Squeeze-and-excitation (Hu et al. 2018): rescale channels by weights computed from their means.",
    impl="nnspec_squeeze_excite.layer:squeeze_excite",
    shape=_shape,
    parameters=_parameters,
)

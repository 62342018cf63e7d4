"""Built-in layer declarations: parameters and pure-Python shape and parameter-count rules.

Never import torch here: `nnspec validate` reads these. Implementations live in
nnspec/lower/layers.py and are named by "module:attr" strings.
"""
from __future__ import annotations

from nnspec.registry import Component
from nnspec.types import Bool, Param, PositiveInt, ShapeError, TensorType

IMPL = "nnspec.lower.layers:"


def _linear_shape(args, inputs):
    (x,) = inputs
    if not x.shape:
        raise ShapeError("linear needs an input with at least one dimension")
    return TensorType(x.shape[:-1] + (args.out_features,))


def _linear_count(args, inputs):
    fan_in = inputs[0].shape[-1]
    return fan_in * args.out_features + (args.out_features if args.bias else 0), 0


linear = Component(
    "linear", "layers",
    params=(Param("out_features", PositiveInt, doc="size of each output sample"),
            Param("bias", Bool(), True, doc="learn an additive bias")),
    summary="Fully connected layer over the last dimension (in_features is inferred).",
    impl=IMPL + "linear", shape=_linear_shape, count=_linear_count)


def _same_shape(args, inputs):
    return inputs[0]


def _no_params(args, inputs):
    return 0, 0


relu = Component("relu", "layers", summary="max(0, x).", impl=IMPL + "relu",
                 shape=_same_shape, count=_no_params)

COMPONENTS = [linear, relu]

"""Dense, embedding, normalization and dropout layers."""
from __future__ import annotations

from nnspec.registry.catalog import NORM
from nnspec.builtins.layers.rules import Optional, expect_min_rank, expect_rank, layer, show
from nnspec.registry.types import (ArgError, Bool, Float, Int, Param, PositiveFloat, PositiveInt, Probability,
                          ShapeError, TensorType)


def _linear_shape(args, inputs):
    x = inputs[0]
    expect_min_rank("linear", x, 1, " (it acts on the last dimension)")
    return TensorType(x.shape[:-1] + (args.out_features,))


def _linear_parameters(args, inputs):
    out = {"weight": (args.out_features, inputs[0].shape[-1])}
    return {**out, "bias": (args.out_features,)} if args.bias else out


linear = layer(
    "linear",
    (Param("out_features", PositiveInt, doc="size of each output sample"),
     Param("bias", Bool(), True, doc="learn an additive bias")),
    "Fully connected layer over the last dimension (in_features is inferred).",
    shape=_linear_shape, parameters=_linear_parameters)


# --- embeddings -----------------------------------------------------------------------------

def _embedding_check(args) -> None:
    i, n = args.padding_idx, args.num_embeddings
    if i is not None and not -n <= i < n:
        raise ArgError(f"padding_idx = {i} is outside the vocabulary of {n} entries",
                       f"allowed: -{n} ≤ padding_idx < {n}")


def _embedding_shape(args, inputs):
    x = inputs[0]
    if x.dtype != "long":
        raise ShapeError(f"embedding expects integer token ids (a long tensor), got {x} ({x.dtype})",
                         "declare the input as long, e.g. `input [seq] long`")
    return TensorType(x.shape + (args.embedding_dim,))


def _embedding_parameters(args, inputs):
    return {"weight": (args.num_embeddings, args.embedding_dim)}


embedding = layer(
    "embedding",
    (Param("num_embeddings", PositiveInt, doc="vocabulary size: ids must lie in [0, num_embeddings)"),
     Param("embedding_dim", PositiveInt, doc="size of each embedding vector"),
     Param("padding_idx", Optional(Int()), None,
           doc="an id whose vector stays zero and gets no gradient; none: no padding id")),
    "Lookup table from integer ids (long [...]) to float vectors ([..., embedding_dim]).",
    shape=_embedding_shape, parameters=_embedding_parameters, check=_embedding_check, dtype=None)


def _positional_shape(args, inputs):
    x = inputs[0]
    expect_rank("positional_embedding", x, (2,), "[seq, features]")
    if x.shape[0] > args.max_len:
        raise ShapeError(f"positional_embedding has max_len = {args.max_len} but the sequence is "
                         f"{x.shape[0]} long ({show(x.shape)})", f"use max_len ≥ {x.shape[0]}")
    return x


def _positional_parameters(args, inputs):
    return {"weight": (args.max_len, inputs[0].shape[1])}


positional_embedding = layer(
    "positional_embedding",
    (Param("max_len", PositiveInt, doc="longest sequence the learned positions cover"),),
    "Adds a learned vector per position to a [seq, features] input (seq ≤ max_len).",
    shape=_positional_shape, parameters=_positional_parameters)


# --- normalization --------------------------------------------------------------------------

_EPS = Param("eps", PositiveFloat, 1e-5, doc="added to the variance for numerical stability")
_MOMENTUM = Param("momentum", Optional(Float(0, 1)), 0.1,
                  doc="weight of the newest batch in the running statistics; none: a cumulative average")
_AFFINE = Param("affine", Bool(), True, doc="learn a per-channel scale and shift")
_TRACK = Param("track_running_stats", Bool(), True,
               doc="keep running mean/variance for evaluation (else batch statistics are always used)")


def _batchnorm_shape(name: str, ranks: tuple[int, ...], layout: str):
    def rule(args, inputs):
        expect_rank(name, inputs[0], ranks, layout)
        return inputs[0]
    return rule


def _affine_parameters(args, inputs):
    """weight and bias per channel (dim 0) when affine: batchnorm and groupnorm."""
    c = inputs[0].shape[0]
    return {"weight": (c,), "bias": (c,)} if args.affine else {}


def _batchnorm_buffers(args, inputs):
    """running mean and variance per channel, plus the batch counter."""
    return 2 * inputs[0].shape[0] + 1 if args.track_running_stats else 0


batchnorm1d = layer(
    "batchnorm1d", (_EPS, _MOMENTUM, _AFFINE, _TRACK),
    "Batch normalization of [features] or [channels, length] per channel.",
    shape=_batchnorm_shape("batchnorm1d", (1, 2), "[features] or [channels, length]"),
    parameters=_affine_parameters, buffers=_batchnorm_buffers, flags={NORM})

batchnorm2d = layer(
    "batchnorm2d", (_EPS, _MOMENTUM, _AFFINE, _TRACK),
    "Batch normalization of [channels, height, width] per channel.",
    shape=_batchnorm_shape("batchnorm2d", (3,), "[channels, height, width]"),
    parameters=_affine_parameters, buffers=_batchnorm_buffers, flags={NORM})


def _layernorm_shape(args, inputs):
    x = inputs[0]
    if len(x.shape) < args.dims:
        raise ShapeError(f"layernorm over the last {args.dims} dims needs an input with at least "
                         f"{args.dims} dimensions, got {show(x.shape)}")
    return x


def _layernorm_parameters(args, inputs):
    shape = tuple(inputs[0].shape[len(inputs[0].shape) - args.dims:])
    if not args.affine:
        return {}
    return {"weight": shape, "bias": shape} if args.bias else {"weight": shape}


layernorm = layer(
    "layernorm",
    (Param("dims", PositiveInt, 1, doc="how many trailing dims are normalized together"),
     _EPS,
     Param("affine", Bool(), True, doc="learn an elementwise scale (and shift, see bias)"),
     Param("bias", Bool(), True, doc="learn the shift too (when affine)")),
    "Layer normalization over the last dimension (or the last `dims` dimensions).",
    shape=_layernorm_shape, parameters=_layernorm_parameters, flags={NORM})


def _groupnorm_shape(args, inputs):
    x = inputs[0]
    expect_min_rank("groupnorm", x, 1, " ([channels, ...])")
    if x.shape[0] % args.groups:
        raise ShapeError(f"groupnorm with {args.groups} groups needs channels divisible by {args.groups}, "
                         f"got {x.shape[0]} channels ({show(x.shape)})")
    return x


groupnorm = layer(
    "groupnorm", (Param("groups", PositiveInt, doc="number of channel groups; must divide the channels"),
                  _EPS, _AFFINE),
    "Group normalization of [channels, ...] (statistics per sample and channel group).",
    shape=_groupnorm_shape, parameters=_affine_parameters, flags={NORM})


# --- dropout --------------------------------------------------------------------------------

def _dropout_warn(args) -> str | None:
    return "dropout with p = 0 does nothing" if args.p == 0 else None


dropout = layer("dropout", (Param("p", Probability, 0.5, doc="probability of zeroing an element (0 ≤ p < 1)"),),
                "Zero random elements during training (scaled by 1 / (1 − p)).", warn=_dropout_warn)


def _dropout2d_shape(args, inputs):
    expect_rank("dropout2d", inputs[0], (3,), "[channels, height, width]")
    return inputs[0]


dropout2d = layer("dropout2d", (Param("p", Probability, 0.5, doc="probability of zeroing a whole channel"),),
                  "Zero whole channels of [channels, height, width] during training.",
                  shape=_dropout2d_shape, warn=_dropout_warn)


COMPONENTS = [linear, embedding, positional_embedding, batchnorm1d, batchnorm2d, layernorm, groupnorm,
              dropout, dropout2d]

"""Shape manipulation, activations and merges. None of these has parameters.

Dims are over the non-batch dims, 0-based, negatives counting from the end: `concat(dim = 0)`
on [C, H, W] joins channels, `mean(dim = 0)` on [seq, features] pools the sequence.
"""
from __future__ import annotations

import math

from nnspec.builtins.layers.rules import expect_min_rank, layer, norm_dim, show
from nnspec.registry.catalog import MULTI_INPUT
from nnspec.registry.types import ArgError, Bool, Choice, Float, Int, Param, ShapeError, TensorType, Tuple

# --- shape ----------------------------------------------------------------------------------


def _flatten_shape(args, inputs):
    x = inputs[0]
    expect_min_rank("flatten", x, 1)
    start = norm_dim("flatten", args.start, x, "start")
    end = norm_dim("flatten", args.end, x, "end")
    if start > end:
        raise ShapeError(f"flatten start {args.start} comes after end {args.end} for {show(x.shape)}")
    s = x.shape
    return TensorType(s[:start] + (math.prod(s[start:end + 1]),) + s[end + 1:])


flatten = layer(
    "flatten",
    (Param("start", Int(), 0, doc="first non-batch dim to merge (0: the first after the batch)"),
     Param("end", Int(), -1, doc="last dim to merge (-1: the last)")),
    "Merge dims start..end into one: by default every non-batch dim ([C, H, W] → [C·H·W]).",
    shape=_flatten_shape)


def _reshape_check(args) -> None:
    if sum(1 for d in args.shape if d == -1) > 1:
        raise ArgError(f"reshape shape {show(args.shape)} has more than one -1", "at most one size can be inferred")
    if 0 in args.shape:
        raise ArgError(f"reshape shape {show(args.shape)} has a 0 size", "sizes are ≥ 1, or -1 for one inferred size")


def _reshape_shape(args, inputs):
    x, target = inputs[0], args.shape
    known = math.prod(d for d in target if d != -1)
    if -1 in target:
        if x.numel % known:
            raise ShapeError(f"cannot reshape {show(x.shape)} ({x.numel} elements) to {show(target)}: "
                             f"{x.numel} is not divisible by {known}")
        return TensorType(tuple(x.numel // known if d == -1 else d for d in target))
    if known != x.numel:
        raise ShapeError(f"cannot reshape {show(x.shape)} ({x.numel} elements) to {show(target)} ({known} elements)")
    return TensorType(tuple(target))


reshape = layer(
    "reshape",
    (Param("shape", Tuple(Int(min=-1), broadcast=False), doc="new non-batch shape; one size may be -1 (inferred)"),),
    "View the non-batch dims in a new shape with the same number of elements.",
    shape=_reshape_shape, check=_reshape_check)


def _permute_shape(args, inputs):
    x = inputs[0]
    if len(args.dims) != len(x.shape):
        raise ShapeError(f"permute dims {show(args.dims)} name {len(args.dims)} dims but the input "
                         f"{show(x.shape)} has {len(x.shape)}", "list every non-batch dim exactly once")
    order = [norm_dim("permute", d, x) for d in args.dims]
    if sorted(order) != list(range(len(x.shape))):
        raise ShapeError(f"permute dims {show(args.dims)} repeat a dim", "list every non-batch dim exactly once")
    return TensorType(tuple(x.shape[d] for d in order))


permute = layer(
    "permute",
    (Param("dims", Tuple(Int(), broadcast=False), doc="new order of the non-batch dims, e.g. [1, 0]"),),
    "Reorder the non-batch dims (`permute([1, 0])` turns [seq, features] into [features, seq]).",
    shape=_permute_shape)


def _mean_shape(args, inputs):
    x = inputs[0]
    d = norm_dim("mean", args.dim, x)
    return TensorType(x.shape[:d] + ((1,) if args.keepdim else ()) + x.shape[d + 1:])


mean = layer(
    "mean",
    (Param("dim", Int(), doc="the non-batch dim to average over (0 pools a [seq, features] sequence)"),
     Param("keepdim", Bool(), False, doc="keep the reduced dim with size 1")),
    "Average over one non-batch dim, e.g. `mean(0)`: [seq, features] → [features].",
    shape=_mean_shape)

identity = layer("identity", (), "Pass the input through unchanged.")


# --- activations ----------------------------------------------------------------------------

def _act(name: str, summary: str, params=()):
    """An elementwise activation: any float shape in, the same shape out, no parameters."""
    return layer(name, params, summary)


relu = _act("relu", "max(0, x).")
relu6 = _act("relu6", "min(max(0, x), 6).")
leaky_relu = _act("leaky_relu", "x for x ≥ 0, negative_slope · x otherwise.",
                  (Param("negative_slope", Float(min=0), 0.01, doc="slope for negative inputs"),))
elu = _act("elu", "x for x > 0, alpha · (exp(x) − 1) otherwise.",
           (Param("alpha", Float(min=0), 1.0, doc="value the output approaches for very negative x (−alpha)"),))
gelu = _act("gelu", "Gaussian error linear unit x · Φ(x).",
            (Param("approximate", Choice("none", "tanh"), "none", doc="tanh: the faster tanh approximation"),))
silu = _act("silu", "x · sigmoid(x) (swish).")
mish = _act("mish", "x · tanh(softplus(x)).")
hardswish = _act("hardswish", "x · relu6(x + 3) / 6.")
tanh = _act("tanh", "Hyperbolic tangent.")
sigmoid = _act("sigmoid", "1 / (1 + exp(−x)).")


def _softmax_shape(name: str):
    def rule(args, inputs):
        norm_dim(name, args.dim, inputs[0])
        return inputs[0]
    return rule


softmax = layer("softmax", (Param("dim", Int(), -1, doc="non-batch dim that sums to 1"),),
                "Exponentials normalized to sum to 1 along dim.", shape=_softmax_shape("softmax"))
log_softmax = layer("log_softmax", (Param("dim", Int(), -1, doc="non-batch dim to normalize over"),),
                    "log(softmax(x)) along dim, computed stably.", shape=_softmax_shape("log_softmax"))


# --- merges ---------------------------------------------------------------------------------

def _same_shapes(name: str):
    def rule(args, inputs):
        first = inputs[0]
        for i, x in enumerate(inputs[1:], start=2):
            if x.shape != first.shape:
                raise ShapeError(f"{name} needs inputs of the same shape: input 1 is {show(first.shape)} "
                                 f"but input {i} is {show(x.shape)}",
                                 "project one branch (e.g. linear or a 1×1 conv2d) to match the other")
        return first
    return rule


def _concat_shape(args, inputs):
    first = inputs[0]
    d = norm_dim("concat", args.dim, first)
    total = first.shape[d]
    for i, x in enumerate(inputs[1:], start=2):
        if len(x.shape) != len(first.shape) or x.shape[:d] + x.shape[d + 1:] != first.shape[:d] + first.shape[d + 1:]:
            raise ShapeError(f"concat along dim {args.dim} needs every other dim equal: input 1 is "
                             f"{show(first.shape)} but input {i} is {show(x.shape)}")
        total += x.shape[d]
    return TensorType(first.shape[:d] + (total,) + first.shape[d + 1:])


add = layer("add", (), "Elementwise sum of two or more tensors of the same shape.",
            shape=_same_shapes("add"), inputs=(2, None), flags={MULTI_INPUT})
multiply = layer("multiply", (), "Elementwise product of two or more tensors of the same shape.",
                 shape=_same_shapes("multiply"), inputs=(2, None), flags={MULTI_INPUT})
concat = layer("concat", (Param("dim", Int(), 0, keyword_only=True,
                                doc="non-batch dim to join along (0: channels of [C, H, W])"),),
               "Join two or more tensors along one dim; all other dims must match.",
               shape=_concat_shape, inputs=(2, None), flags={MULTI_INPUT})


COMPONENTS = [flatten, reshape, permute, mean, identity, relu, relu6, leaky_relu, elu, gelu, silu, mish,
              hardswish, tanh, sigmoid, softmax, log_softmax, add, multiply, concat]

"""Convolution, pooling and upsampling layers over channel-first inputs ([C, L] or [C, H, W]).

The output-size arithmetic mirrors torch's exactly (floor division, ceil_mode's last-window
rule, `same` padding split as left = total // 2), so a spec that validates also builds.
"""
from __future__ import annotations

import math

from nnspec.builtins.layers.rules import Optional, expect_min_rank, expect_rank, layer, show, tup
from nnspec.registry.types import (ArgError, Bool, Choice, NonNegativeInt, OneOf, Param, PositiveFloat,
                          PositiveInt, ShapeError, TensorType, Tuple)

_LAYOUT = {1: "[channels, length]", 2: "[channels, height, width]"}
_SPATIAL = {1: ("length",), 2: ("height", "width")}


# --- convolution ----------------------------------------------------------------------------

def _conv_params(n: int) -> tuple[Param, ...]:
    return (
        Param("out_channels", PositiveInt, doc="number of output channels (filters)"),
        Param("kernel_size", Tuple(PositiveInt, n), doc="window size; one int is used for every spatial dim"),
        Param("stride", Tuple(PositiveInt, n), 1, doc="step between windows"),
        Param("padding", OneOf(Tuple(NonNegativeInt, n), Choice("same", "valid")), 0,
              doc="zeros added on both sides; `same` keeps the size (stride 1 only), `valid` is 0"),
        Param("dilation", Tuple(PositiveInt, n), 1, doc="spacing between kernel taps"),
        Param("groups", OneOf(PositiveInt, Choice("depthwise")), 1,
              doc="split channels into groups (in and out channels must divide); "
                  "`depthwise`: one group per input channel"),
        Param("bias", Bool(), True, doc="learn an additive bias per output channel"),
        Param("padding_mode", Choice("zeros", "reflect", "replicate", "circular"), "zeros",
              doc="how padded values are filled"),
    )


def _conv_check(args) -> None:
    if args.padding == "same" and any(s != 1 for s in tup(args.stride, len(args.kernel_size))):
        raise ArgError(f"padding = same needs stride 1, got stride = {show(tup(args.stride, len(args.kernel_size)))}",
                       "with a stride, give the padding as numbers (e.g. kernel_size // 2)")
    if isinstance(args.groups, int) and args.out_channels % args.groups:
        raise ArgError(f"out_channels = {args.out_channels} is not divisible by groups = {args.groups}")


def _conv_pads(args, n: int) -> list[tuple[int, int]]:
    """(before, after) padding per spatial dim, as torch computes it."""
    k, d = args.kernel_size, tup(args.dilation, n)
    if args.padding == "same":
        return [(d[i] * (k[i] - 1) // 2, d[i] * (k[i] - 1) - d[i] * (k[i] - 1) // 2) for i in range(n)]
    if args.padding == "valid":
        return [(0, 0)] * n
    p = tup(args.padding, n)
    return [(p[i], p[i]) for i in range(n)]


def _conv_groups(name: str, args, channels: int) -> int:
    if args.groups == "depthwise":
        if args.out_channels % channels:
            raise ShapeError(f"{name} with groups = depthwise needs out_channels to be a multiple of the "
                             f"{channels} input channels, got {args.out_channels}")
        return channels
    if channels % args.groups:
        raise ShapeError(f"{name} with groups = {args.groups} needs input channels divisible by {args.groups}, "
                         f"got {channels} channels")
    return args.groups


def _window_out(name: str, axis: str, size: int, before: int, after: int, k: int, d: int, s: int) -> int:
    span = d * (k - 1) + 1
    if size + before + after < span:
        what = f"kernel {k}" if d == 1 else f"kernel {k} with dilation {d} (spanning {span})"
        raise ShapeError(f"{name} {what} is larger than the padded input {axis} {size + before + after}",
                         "use a smaller kernel, add padding, or downsample less before this layer")
    return (size + before + after - span) // s + 1


def _pad_mode_check(name: str, mode: str, axis: str, size: int, before: int, after: int) -> None:
    if mode == "reflect" and max(before, after) >= size:
        raise ShapeError(f"{name} reflect padding {max(before, after)} must be smaller than the input {axis} {size}")
    if mode == "circular" and max(before, after) > size:
        raise ShapeError(f"{name} circular padding {max(before, after)} must be at most the input {axis} {size}")


def _conv_shape(name: str, n: int):
    def rule(args, inputs):
        x = inputs[0]
        expect_rank(name, x, (n + 1,), _LAYOUT[n])
        channels, spatial = x.shape[0], x.shape[1:]
        _conv_groups(name, args, channels)
        k, s, d = args.kernel_size, tup(args.stride, n), tup(args.dilation, n)
        out = []
        for i, (size, (lo, hi)) in enumerate(zip(spatial, _conv_pads(args, n))):
            _pad_mode_check(name, args.padding_mode, _SPATIAL[n][i], size, lo, hi)
            out.append(_window_out(name, _SPATIAL[n][i], size, lo, hi, k[i], d[i], s[i]))
        return TensorType((args.out_channels, *out))
    return rule


def _with_bias(weight: tuple, args) -> dict:
    return {"weight": weight, "bias": (args.out_channels,)} if args.bias else {"weight": weight}


def _conv_parameters(name: str):
    def parameters(args, inputs):
        channels = inputs[0].shape[0]
        groups = _conv_groups(name, args, channels)
        return _with_bias((args.out_channels, channels // groups, *args.kernel_size), args)
    return parameters


def _conv(name: str, n: int):
    return layer(name, _conv_params(n), f"{n}-D convolution over {_LAYOUT[n]} (in_channels is inferred).",
                 shape=_conv_shape(name, n), parameters=_conv_parameters(name), check=_conv_check)


conv1d = _conv("conv1d", 1)
conv2d = _conv("conv2d", 2)


def _convt_check(args) -> None:
    s, d, op = tup(args.stride, 2), tup(args.dilation, 2), tup(args.output_padding, 2)
    if any(op[i] >= max(s[i], d[i]) for i in range(2)):
        raise ArgError(f"output_padding = {show(op)} must be smaller than stride or dilation in each dim")
    if args.out_channels % args.groups:
        raise ArgError(f"out_channels = {args.out_channels} is not divisible by groups = {args.groups}")


def _convt_shape(args, inputs):
    x = inputs[0]
    expect_rank("conv_transpose2d", x, (3,), _LAYOUT[2])
    channels = x.shape[0]
    if channels % args.groups:
        raise ShapeError(f"conv_transpose2d with groups = {args.groups} needs input channels divisible by "
                         f"{args.groups}, got {channels} channels")
    k, s, p = args.kernel_size, tup(args.stride, 2), tup(args.padding, 2)
    d, op = tup(args.dilation, 2), tup(args.output_padding, 2)
    out = []
    for i, size in enumerate(x.shape[1:]):
        o = (size - 1) * s[i] - 2 * p[i] + d[i] * (k[i] - 1) + op[i] + 1
        if o < 1:
            raise ShapeError(f"conv_transpose2d output {_SPATIAL[2][i]} would be {o} for input {show(x.shape)}",
                             "padding removes more than the transposed convolution adds; use less padding")
        out.append(o)
    return TensorType((args.out_channels, *out))


def _convt_parameters(args, inputs):
    return _with_bias((inputs[0].shape[0], args.out_channels // args.groups, *args.kernel_size), args)


conv_transpose2d = layer(
    "conv_transpose2d",
    (Param("out_channels", PositiveInt, doc="number of output channels"),
     Param("kernel_size", Tuple(PositiveInt, 2), doc="window size; one int is used for both dims"),
     Param("stride", Tuple(PositiveInt, 2), 1, doc="upsampling factor between input positions"),
     Param("padding", Tuple(NonNegativeInt, 2), 0, doc="trimmed from both sides of the output"),
     Param("output_padding", Tuple(NonNegativeInt, 2), 0,
           doc="extra size on one side of the output; smaller than stride or dilation"),
     Param("dilation", Tuple(PositiveInt, 2), 1, doc="spacing between kernel taps"),
     Param("groups", PositiveInt, 1, doc="split channels into groups (in and out channels must divide)"),
     Param("bias", Bool(), True, doc="learn an additive bias per output channel")),
    "Transposed 2-D convolution (learned upsampling) over [channels, height, width].",
    shape=_convt_shape, parameters=_convt_parameters, check=_convt_check)


# --- pooling --------------------------------------------------------------------------------

def _pool_params(n: int, kind: str) -> tuple[Param, ...]:
    params = [
        Param("kernel_size", Tuple(PositiveInt, n), doc="window size; one int is used for every spatial dim"),
        Param("stride", Optional(Tuple(PositiveInt, n)), None, doc="step between windows; none: the kernel size"),
        Param("padding", Tuple(NonNegativeInt, n), 0, doc="implicit padding on both sides; at most half the kernel"),
    ]
    if kind == "max":
        params.append(Param("dilation", Tuple(PositiveInt, n), 1, doc="spacing between window taps"))
    params.append(Param("ceil_mode", Bool(), False, doc="round the output size up (a last partial window counts)"))
    if kind == "avg":
        params.append(Param("count_include_pad", Bool(), True, doc="include padded zeros in the average"))
    return tuple(params)


def _pool_check(args) -> None:
    n = len(args.kernel_size)
    p = tup(args.padding, n)
    if any(p[i] > args.kernel_size[i] // 2 for i in range(n)):
        raise ArgError(f"padding = {show(p)} must be at most half the kernel_size {show(args.kernel_size)}")


def _pool_out(name: str, axis: str, size: int, k: int, s: int, p: int, d: int, ceil: bool) -> int:
    span = d * (k - 1) + 1
    out = (size + 2 * p - span + (s - 1 if ceil else 0)) // s + 1
    if ceil and (out - 1) * s >= size + p:
        out -= 1      # the last window must start inside the input or its left padding
    if out < 1:
        raise ShapeError(f"{name} window {span} is larger than the padded input {axis} {size + 2 * p}",
                         "use a smaller kernel or pool an earlier, larger feature map")
    return out


def _pool_shape(name: str, n: int):
    def rule(args, inputs):
        x = inputs[0]
        expect_rank(name, x, (n + 1,), _LAYOUT[n])
        k = args.kernel_size
        s = k if args.stride is None else args.stride
        p, d = tup(args.padding, n), tup(args.get("dilation", 1), n)
        out = [_pool_out(name, _SPATIAL[n][i], size, k[i], s[i], p[i], d[i], args.ceil_mode)
               for i, size in enumerate(x.shape[1:])]
        return TensorType((x.shape[0], *out))
    return rule


def _pool(name: str, n: int, kind: str):
    what = "Max" if kind == "max" else "Average"
    return layer(name, _pool_params(n, kind), f"{what} pooling over {_LAYOUT[n]}; channels are kept.",
                 shape=_pool_shape(name, n), check=_pool_check)


maxpool1d = _pool("maxpool1d", 1, "max")
maxpool2d = _pool("maxpool2d", 2, "max")
avgpool1d = _pool("avgpool1d", 1, "avg")
avgpool2d = _pool("avgpool2d", 2, "avg")


def _adaptive_shape(name: str, n: int):
    def rule(args, inputs):
        x = inputs[0]
        expect_rank(name, x, (n + 1,), _LAYOUT[n])
        return TensorType((x.shape[0], *args.output_size))
    return rule


def _adaptive(name: str, n: int, kind: str):
    what = "max" if kind == "max" else "average"
    return layer(name, (Param("output_size", Tuple(PositiveInt, n),
                              doc="output spatial size; one int is used for every spatial dim"),),
                 f"Adaptive {what} pooling of {_LAYOUT[n]} to a fixed output size.",
                 shape=_adaptive_shape(name, n))


adaptive_avgpool1d = _adaptive("adaptive_avgpool1d", 1, "avg")
adaptive_avgpool2d = _adaptive("adaptive_avgpool2d", 2, "avg")
adaptive_maxpool2d = _adaptive("adaptive_maxpool2d", 2, "max")


def _global_avgpool_shape(args, inputs):
    """[C, L] → [C], [C, H, W] → [C]: the first non-batch dim is channels, the rest are averaged."""
    x = inputs[0]
    expect_min_rank("global_avgpool", x, 2, " ([channels, spatial...]; for a [seq, features] "
                    "sequence use mean(dim = 0))")
    return TensorType((x.shape[0],))


global_avgpool = layer(
    "global_avgpool", (),
    "Mean over every spatial dim of a channel-first input: [C, L] or [C, H, W] → [C] "
    "(for a [seq, features] sequence use `mean(dim = 0)`).",
    shape=_global_avgpool_shape)


# --- upsampling -----------------------------------------------------------------------------

def _upsample_shape(args, inputs):
    x = inputs[0]
    if args.mode == "bilinear":
        expect_rank("upsample", x, (3,), "[channels, height, width] for mode = bilinear")
    else:
        expect_rank("upsample", x, (2, 3), "[channels, length] or [channels, height, width]")
    spatial = x.shape[1:]
    scale = args.scale_factor
    if isinstance(scale, tuple):
        if len(scale) != len(spatial):
            raise ShapeError(f"upsample scale_factor {show(scale)} has {len(scale)} items but the input "
                             f"{show(x.shape)} has {len(spatial)} spatial dims")
    else:
        scale = (scale,) * len(spatial)
    out = []
    for size, f in zip(spatial, scale):
        o = math.floor(float(size) * f)
        if o < 1:
            raise ShapeError(f"upsample by {f} turns size {size} into {o}; the output needs at least 1")
        out.append(o)
    return TensorType((x.shape[0], *out))


upsample = layer(
    "upsample",
    (Param("scale_factor", OneOf(PositiveFloat, Tuple(PositiveFloat)),
           doc="multiplier for each spatial size (output = floor(size × scale)); a list gives one per dim"),
     Param("mode", Choice("nearest", "bilinear"), "nearest",
           doc="nearest copies values; bilinear interpolates (needs [C, H, W])")),
    "Resize [C, L] or [C, H, W] by a scale factor (channels kept).",
    shape=_upsample_shape)


COMPONENTS = [conv1d, conv2d, conv_transpose2d, maxpool1d, maxpool2d, avgpool1d, avgpool2d,
              adaptive_avgpool1d, adaptive_avgpool2d, adaptive_maxpool2d, global_avgpool, upsample]

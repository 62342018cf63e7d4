"""Hypothesis strategies for tests/test_layers.py: per built-in layer, mostly valid arguments
(raw spec values, bare words as Symbols) and small input shapes, with sizes biased toward the
edges where shape rules go wrong (kernels as large as the input, padding at its limits)."""
from __future__ import annotations

from dataclasses import dataclass

from hypothesis import strategies as st

from nnspec.registry.types import Symbol, TensorType

W = Symbol  # a bare word in a spec: `mode = bilinear`


@dataclass(frozen=True)
class Case:
    positional: tuple
    keyword: tuple           # ((name, raw value), ...)
    inputs: tuple            # TensorTypes


def F(*shape) -> TensorType:
    return TensorType(tuple(shape))


ch, sp, seq = st.integers(1, 8), st.integers(1, 12), st.integers(1, 6)
edgy = st.one_of(st.integers(1, 4), st.integers(2, 12))     # sizes near window edges are common


def shapes(min_rank=0, max_rank=3, size=st.integers(1, 6)):
    return st.lists(size, min_size=min_rank, max_size=max_rank).map(tuple)


def optional(**strategies):
    """A random subset of keyword arguments."""
    return st.fixed_dictionaries({}, optional=strategies).map(lambda d: tuple(d.items()))


def tuple_or_int(n, values):
    return st.one_of(values, st.lists(values, min_size=n, max_size=n).map(tuple))


@st.composite
def conv_case(draw, n):
    c = draw(ch)
    groups = draw(st.sampled_from([1, W("depthwise")] + [g for g in range(2, c + 1) if c % g == 0]))
    g = c if groups == W("depthwise") else groups
    out = g * draw(st.integers(1, 3))
    kw = draw(optional(stride=tuple_or_int(n, st.integers(1, 3)),
                       padding=st.one_of(tuple_or_int(n, st.integers(0, 2)), st.sampled_from([W("same"), W("valid")])),
                       dilation=tuple_or_int(n, st.integers(1, 2)), bias=st.booleans(),
                       padding_mode=st.sampled_from([W(m) for m in ("zeros", "reflect", "replicate", "circular")])))
    spatial = draw(st.lists(edgy, min_size=n, max_size=n))
    kernel = draw(tuple_or_int(n, st.integers(1, 4)))
    return Case((out, kernel), kw + (("groups", groups),), (F(c, *spatial),))


@st.composite
def conv_transpose_case(draw):
    c = draw(ch)
    groups = draw(st.sampled_from([g for g in range(1, c + 1) if c % g == 0]))
    stride, dilation = draw(st.integers(1, 3)), draw(st.integers(1, 2))
    kw = (("stride", stride), ("dilation", dilation),
          ("output_padding", draw(st.integers(0, max(stride, dilation)))), ("groups", groups))
    kw += draw(optional(padding=tuple_or_int(2, st.integers(0, 2)), bias=st.booleans()))
    return Case((groups * draw(st.integers(1, 3)), draw(tuple_or_int(2, st.integers(1, 4)))), kw,
                (F(c, *draw(st.lists(sp, min_size=2, max_size=2))),))


@st.composite
def pool_case(draw, n, kind):
    k = draw(st.integers(1, 4))
    extra = {"dilation": st.integers(1, 2)} if kind == "max" else {"count_include_pad": st.booleans()}
    kw = draw(optional(stride=st.one_of(tuple_or_int(n, st.integers(1, 3)), st.just(W("none"))),
                       padding=st.integers(0, k // 2), ceil_mode=st.booleans(), **extra))
    spatial = draw(st.lists(edgy, min_size=n, max_size=n))
    return Case((k,), kw, (F(draw(ch), *spatial),))


@st.composite
def adaptive_case(draw, n):
    return Case((draw(tuple_or_int(n, st.integers(1, 6))),), (),
                (F(draw(ch), *draw(st.lists(sp, min_size=n, max_size=n))),))


@st.composite
def upsample_case(draw):
    mode = draw(st.sampled_from(["nearest", "bilinear"]))
    rank = 3 if mode == "bilinear" else draw(st.sampled_from([2, 3]))
    scale = draw(st.one_of(st.floats(0.25, 3.0), st.integers(1, 3),
                           st.lists(st.floats(0.5, 3.0), min_size=rank - 1, max_size=rank - 1).map(tuple)))
    return Case((scale,), (("mode", W(mode)),), (F(draw(ch), *draw(shapes(rank - 1, rank - 1, sp))),))


def norm_kw():
    return optional(eps=st.floats(1e-6, 1e-2), momentum=st.one_of(st.floats(0, 1), st.just(W("none"))),
                    affine=st.booleans(), track_running_stats=st.booleans())


@st.composite
def batchnorm1d_case(draw):
    return Case((), draw(norm_kw()), (F(*draw(shapes(1, 2, ch))),))


@st.composite
def batchnorm2d_case(draw):
    return Case((), draw(norm_kw()), (F(*draw(shapes(3, 3, ch))),))


@st.composite
def layernorm_case(draw):
    shape = draw(shapes(1, 3))
    kw = draw(optional(dims=st.integers(1, len(shape)), eps=st.floats(1e-6, 1e-2), affine=st.booleans(),
                       bias=st.booleans()))
    return Case((), kw, (F(*shape),))


@st.composite
def groupnorm_case(draw):
    groups = draw(st.integers(1, 4))
    channels = draw(st.one_of(st.integers(1, 2).map(lambda k: groups * k), ch))
    shape = (channels,) + draw(shapes(0, 2))
    return Case((groups,), draw(optional(eps=st.floats(1e-6, 1e-2), affine=st.booleans())), (F(*shape),))


@st.composite
def embedding_case(draw):
    n = draw(st.integers(1, 12))
    kw = draw(optional(padding_idx=st.one_of(st.integers(-n - 1, n), st.just(W("none")))))
    return Case((n, draw(ch)), kw, (TensorType(draw(shapes(0, 2)), "long"),))


@st.composite
def positional_case(draw):
    s = draw(seq)
    return Case((draw(st.integers(s - 1, 8)),), (), (F(s, draw(ch)),))


@st.composite
def recurrent_case(draw, name):
    layers = draw(st.integers(1, 2))
    kw = (("layers", layers),) + draw(optional(bidirectional=st.booleans(), bias=st.booleans(),
                                               output=st.sampled_from([W("last"), W("all")])))
    if layers > 1 or draw(st.integers(0, 5)) == 0:
        kw += draw(optional(dropout=st.floats(0, 0.9)))
    if name == "rnn":
        kw += draw(optional(nonlinearity=st.sampled_from([W("tanh"), W("relu")])))
    return Case((draw(ch),), kw, (F(draw(seq), draw(ch)),))


@st.composite
def attention_case(draw, encoder):
    heads = draw(st.integers(1, 4))
    d = draw(st.one_of(st.integers(1, 2).map(lambda k: heads * k), ch))
    if encoder:
        kw = draw(optional(ff=st.integers(1, 16), dropout=st.floats(0, 0.5), norm_first=st.booleans(),
                           activation=st.sampled_from([W("relu"), W("gelu")]), causal=st.booleans(),
                           eps=st.floats(1e-6, 1e-3)))
    else:
        kw = draw(optional(dropout=st.floats(0, 0.5), bias=st.booleans(), causal=st.booleans()))
    return Case((heads,), kw, (F(draw(seq), d),))


@st.composite
def flatten_case(draw):
    shape = draw(shapes(1, 4))
    dims = st.integers(-len(shape), len(shape) - 1)
    both = st.tuples(dims, dims).map(lambda se: (("start", se[0]), ("end", se[1])))
    kw = draw(st.one_of(optional(start=dims, end=dims), both))      # start > end must be refused
    return Case((), kw, (F(*shape),))


@st.composite
def reshape_case(draw):
    shape = draw(shapes(1, 3))
    n = TensorType(shape).numel
    a = draw(st.sampled_from([d for d in range(1, n + 1) if n % d == 0]))
    target = draw(st.sampled_from([(n,), (a, n // a), (n // a, 1, a)]))
    if draw(st.booleans()):
        i = draw(st.integers(0, len(target) - 1))
        target = target[:i] + (-1,) + target[i + 1:]
    return Case((target,), (), (F(*shape),))


@st.composite
def permute_case(draw):
    shape = draw(shapes(1, 4))
    order = draw(st.permutations(range(len(shape))))
    dims = tuple(d - len(shape) if draw(st.booleans()) else d for d in order)
    return Case((dims,), (), (F(*shape),))


@st.composite
def dim_case(draw, keepdim=False):
    shape = draw(shapes(1, 3))
    dim = draw(st.integers(-len(shape), len(shape) - 1))
    kw = draw(optional(keepdim=st.booleans())) if keepdim else ()
    return Case((dim,), kw, (F(*shape),))


@st.composite
def unary_case(draw, **params):
    return Case((), draw(optional(**params)), (F(*draw(shapes(0, 3))),))


@st.composite
def same_shapes_case(draw):
    shape = draw(shapes(0, 3))
    return Case((), (), tuple(F(*shape) for _ in range(draw(st.integers(2, 3)))))


@st.composite
def concat_case(draw):
    shape = draw(shapes(1, 3))
    dim = draw(st.integers(-len(shape), len(shape) - 1))
    k = dim % len(shape)
    inputs = [F(*(shape[:k] + (draw(st.integers(1, 4)),) + shape[k + 1:])) for _ in range(draw(st.integers(2, 3)))]
    return Case((), (("dim", dim),), tuple(inputs))


@st.composite
def linear_case(draw):
    return Case((draw(ch),), draw(optional(bias=st.booleans())), (F(*draw(shapes(1, 3))),))


@st.composite
def ranked_case(draw, rank, **params):
    return Case((), draw(optional(**params)), (F(*draw(shapes(rank, rank))),))


@st.composite
def global_pool_case(draw):
    return Case((), (), (F(*draw(shapes(2, 3))),))


P = {"p": st.floats(0, 0.99)}
STRATEGIES = {
    "linear": linear_case(),
    "conv1d": conv_case(1), "conv2d": conv_case(2), "conv_transpose2d": conv_transpose_case(),
    "maxpool1d": pool_case(1, "max"), "maxpool2d": pool_case(2, "max"),
    "avgpool1d": pool_case(1, "avg"), "avgpool2d": pool_case(2, "avg"),
    "adaptive_avgpool1d": adaptive_case(1), "adaptive_avgpool2d": adaptive_case(2),
    "adaptive_maxpool2d": adaptive_case(2), "global_avgpool": global_pool_case(), "upsample": upsample_case(),
    "batchnorm1d": batchnorm1d_case(), "batchnorm2d": batchnorm2d_case(), "layernorm": layernorm_case(),
    "groupnorm": groupnorm_case(), "dropout": unary_case(**P), "dropout2d": ranked_case(3, **P),
    "embedding": embedding_case(), "positional_embedding": positional_case(),
    "lstm": recurrent_case("lstm"), "gru": recurrent_case("gru"), "rnn": recurrent_case("rnn"),
    "self_attention": attention_case(False), "transformer_encoder": attention_case(True),
    "flatten": flatten_case(), "reshape": reshape_case(), "permute": permute_case(), "mean": dim_case(True),
    "identity": unary_case(), "relu": unary_case(), "relu6": unary_case(),
    "leaky_relu": unary_case(negative_slope=st.floats(0, 1)), "elu": unary_case(alpha=st.floats(0, 2)),
    "gelu": unary_case(approximate=st.sampled_from([W("none"), W("tanh")])), "silu": unary_case(),
    "mish": unary_case(), "hardswish": unary_case(), "tanh": unary_case(), "sigmoid": unary_case(),
    "softmax": dim_case(), "log_softmax": dim_case(),
    "add": same_shapes_case(), "multiply": same_shapes_case(), "concat": concat_case(),
}

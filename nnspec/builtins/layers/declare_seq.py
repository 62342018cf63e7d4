"""Sequence layers over [seq, features] (batch first): recurrent nets, attention, transformers."""
from __future__ import annotations

from nnspec.builtins.layers.rules import expect_rank, layer, show
from nnspec.registry.types import Bool, Choice, Param, PositiveFloat, PositiveInt, Probability, ShapeError, TensorType

_SEQ = "[seq, features]"

# --- recurrent ------------------------------------------------------------------------------

_GATES = {"lstm": 4, "gru": 3, "rnn": 1}
_RNN_NAMES = {"lstm": "LSTM", "gru": "GRU", "rnn": "Elman RNN"}


def _rnn_params(name: str) -> tuple[Param, ...]:
    params = [
        Param("hidden_size", PositiveInt, doc="features in the hidden state (per direction)"),
        Param("layers", PositiveInt, 1, doc="number of stacked recurrent layers"),
        Param("bidirectional", Bool(), False, doc="also run right-to-left; outputs concatenate both directions"),
        Param("dropout", Probability, 0.0, doc="dropout between stacked layers (no effect with layers = 1)"),
        Param("output", Choice("last", "all"), "last",
              doc="last: the final hidden state [hidden × directions]; all: every step [seq, hidden × directions]"),
        Param("bias", Bool(), True, doc="learn the gate biases"),
    ]
    if name == "rnn":
        params.append(Param("nonlinearity", Choice("tanh", "relu"), "tanh", doc="activation of the hidden state"))
    return tuple(params)


def _rnn_warn(args) -> str | None:
    if args.dropout > 0 and args.layers == 1:
        return (f"dropout = {args.dropout} has no effect with layers = 1 (it applies between stacked layers); "
                "stack layers or put a dropout layer after this one")
    return None


def _rnn_shape(name: str):
    def rule(args, inputs):
        x = inputs[0]
        expect_rank(name, x, (2,), _SEQ)
        width = args.hidden_size * (2 if args.bidirectional else 1)
        return TensorType((x.shape[0], width) if args.output == "all" else (width,))
    return rule


def _rnn_parameters(name: str):
    """torch's names inside the wrapper's `rnn`: weight_ih_l0, ..., `_reverse` for the backward direction."""
    def parameters(args, inputs):
        h, gates = args.hidden_size, _GATES[name] * args.hidden_size
        suffixes = ("", "_reverse") if args.bidirectional else ("",)
        out, fan_in = {}, inputs[0].shape[1]
        for i in range(args.layers):
            for suffix in suffixes:
                out[f"rnn.weight_ih_l{i}{suffix}"] = (gates, fan_in)
                out[f"rnn.weight_hh_l{i}{suffix}"] = (gates, h)
                if args.bias:
                    out[f"rnn.bias_ih_l{i}{suffix}"] = (gates,)
                    out[f"rnn.bias_hh_l{i}{suffix}"] = (gates,)
            fan_in = h * len(suffixes)
        return out
    return parameters


def _rnn(name: str):
    return layer(name, _rnn_params(name),
                 f"{_RNN_NAMES[name]} over {_SEQ}; output = last gives the final hidden state, all every step.",
                 shape=_rnn_shape(name), parameters=_rnn_parameters(name), warn=_rnn_warn)


lstm, gru, rnn = _rnn("lstm"), _rnn("gru"), _rnn("rnn")


# --- attention ------------------------------------------------------------------------------

def _heads_check(name: str, heads: int, x) -> None:
    expect_rank(name, x, (2,), _SEQ)
    if x.shape[1] % heads:
        raise ShapeError(f"{name} with {heads} heads needs features divisible by {heads}, got {show(x.shape)}",
                         "change heads, or project first with linear(...) to a multiple of heads")


def _attention_shape(args, inputs):
    _heads_check("self_attention", args.heads, inputs[0])
    return inputs[0]


def _attention_params(d: int, bias: bool, prefix: str = "") -> dict:
    """torch.nn.MultiheadAttention's own names: one packed q/k/v projection and out_proj."""
    out = {"in_proj_weight": (3 * d, d), "in_proj_bias": (3 * d,), "out_proj.weight": (d, d), "out_proj.bias": (d,)}
    return {prefix + key: size for key, size in out.items() if bias or "bias" not in key}


def _attention_parameters(args, inputs):
    return _attention_params(inputs[0].shape[1], args.bias)


_CAUSAL = Param("causal", Bool(), False, keyword_only=True,
                doc="each position attends only to itself and earlier positions")

self_attention = layer(
    "self_attention",
    (Param("heads", PositiveInt, doc="attention heads; must divide the feature size"),
     Param("dropout", Probability, 0.0, doc="dropout on the attention weights"),
     Param("bias", Bool(), True, doc="learn biases in the input and output projections"),
     _CAUSAL),
    "Multi-head self-attention on [seq, features] → [seq, features] (query = key = value).",
    shape=_attention_shape, parameters=_attention_parameters)


def _encoder_shape(args, inputs):
    _heads_check("transformer_encoder", args.heads, inputs[0])
    return inputs[0]


def _encoder_parameters(args, inputs):
    """torch.nn.TransformerEncoderLayer's names: self_attn, linear1, linear2, norm1, norm2."""
    d, ff = inputs[0].shape[1], args.ff
    return {**_attention_params(d, True, "self_attn."),
            "linear1.weight": (ff, d), "linear1.bias": (ff,), "linear2.weight": (d, ff), "linear2.bias": (d,),
            "norm1.weight": (d,), "norm1.bias": (d,), "norm2.weight": (d,), "norm2.bias": (d,)}


transformer_encoder = layer(
    "transformer_encoder",
    (Param("heads", PositiveInt, doc="attention heads; must divide the feature size"),
     Param("ff", PositiveInt, 2048, doc="hidden size of the feed-forward block"),
     Param("dropout", Probability, 0.1, doc="dropout in attention, feed-forward and residuals"),
     Param("activation", Choice("relu", "gelu"), "relu", doc="feed-forward activation"),
     Param("norm_first", Bool(), False, doc="pre-norm (layer norm before attention and feed-forward)"),
     Param("eps", PositiveFloat, 1e-5, doc="layer norm epsilon"),
     _CAUSAL),
    "One transformer encoder layer (self-attention + feed-forward) on [seq, features], same shape out.",
    shape=_encoder_shape, parameters=_encoder_parameters,
    info={"norm_parts": ("norm1", "norm2")})       # `group norm` selects its two layer norms


COMPONENTS = [lstm, gru, rnn, self_attention, transformer_encoder]

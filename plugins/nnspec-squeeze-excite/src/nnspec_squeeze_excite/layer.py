"""The torch module behind `squeeze_excite`: for x of shape [B, C, *spatial],

    s = gate(W2 · act(W1 · mean_spatial(x) + b1) + b2)      (s has shape [B, C])
    y = x · s  (broadcast over the spatial positions)
"""
from __future__ import annotations

from typing import Any

import torch
from torch import nn

_ACTIVATIONS = {"relu": nn.ReLU, "silu": nn.SiLU}
_GATES = {"sigmoid": nn.Sigmoid, "hard_sigmoid": nn.Hardsigmoid}


class SqueezeExcite(nn.Module):
    def __init__(self, channels: int, hidden: int, activation: str = "relu", gate: str = "sigmoid"):
        super().__init__()
        self.reduce = nn.Linear(channels, hidden)
        self.act = _ACTIVATIONS[activation]()
        self.expand = nn.Linear(hidden, channels)
        self.gate = _GATES[gate]()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        squeezed = x.mean(dim=tuple(range(2, x.dim())))
        weights = self.gate(self.expand(self.act(self.reduce(squeezed))))
        return x * weights.view(*weights.shape, *([1] * (x.dim() - 2)))


def squeeze_excite(args: Any, inputs: list) -> nn.Module:
    """nnspec's factory: `inputs` are the checked input types, so channels come from the graph."""
    from nnspec_squeeze_excite.declare import hidden_units
    channels = inputs[0].shape[0]
    return SqueezeExcite(channels, hidden_units(args, channels), args.activation, args.gate)

"""Torch implementations of the built-in layers: `factory(args, inputs) -> nn.Module`.

`inputs` are the checked `TensorType`s the layer receives (shapes without the batch), so
sizes such as in_features never have to be written in a spec.
"""
from __future__ import annotations

from torch import nn


def linear(args, inputs):
    return nn.Linear(inputs[0].shape[-1], args.out_features, bias=args.bias)


def relu(args, inputs):
    return nn.ReLU()

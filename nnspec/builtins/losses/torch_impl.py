"""Torch implementations of the built-in losses: `factory(args) -> nn.Module`.

Every module's `forward(output, target)` returns the mean loss as a 0-dim tensor.

Shapes. Classification losses take logits (or log-probabilities for nll) shaped
[..., classes] and class indices shaped [...] (a trailing singleton [..., 1] is dropped), so a
sequence model's [N, T, classes] against [N, T] works; cross_entropy also takes class
probabilities of the output's own shape. Regression losses (and bce_with_logits) want target
and output of one shape, with one convenience: an output [..., 1] against a target [...] (a
single regression output with plain labels) reshapes the target to [..., 1]. Any other
mismatch raises instead of letting torch broadcast [N, 1] against [N] into an [N, N] loss.
Targets are cast to the output's dtype (labels may arrive as int64).
"""
from __future__ import annotations

from typing import Any, Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn


def match_target(name: str, output: Tensor, target: Tensor) -> Tensor:
    """The target in the output's shape and dtype; [N] against an [N, 1] output is reshaped."""
    if target.shape != output.shape:
        if output.dim() == target.dim() + 1 and output.shape[-1] == 1 and output.shape[:-1] == target.shape:
            target = target.unsqueeze(-1)
        else:
            raise ValueError(f"{name}: the model output has shape {list(output.shape)} but the target has shape "
                             f"{list(target.shape)}; they must match (or be [..., 1] and [...])")
    return target.to(output.dtype)


def _buffer(values: Any) -> Tensor | None:
    if values is None:
        return None
    return torch.tensor(values if isinstance(values, (tuple, list)) else [values], dtype=torch.float32)


class ClassLoss(nn.Module):
    """cross_entropy / nll over the last dimension of the output."""

    def __init__(self, name: str, fn: Callable[..., Tensor], weight: Any = None, soft_targets: bool = False,
                 **options: Any):
        super().__init__()
        self.name, self.fn, self.soft_targets, self.options = name, fn, soft_targets, options
        self.register_buffer("weight", _buffer(weight))

    def forward(self, output: Tensor, target: Tensor) -> Tensor:
        if self.weight is None and output.dim() == 2 and target.dim() == 1 and target.dtype == torch.int64 \
                and target.shape[0] == output.shape[0]:
            return self.fn(output, target, **self.options)         # the common case, without reshapes
        if output.dim() < 1:
            raise ValueError(f"{self.name}: the model output must end in a classes dimension")
        classes = output.shape[-1]
        if self.weight is not None and self.weight.numel() != classes:
            raise ValueError(f"{self.name}: weight has {self.weight.numel()} entries but the model "
                             f"outputs {classes} classes")
        weight = None if self.weight is None else self.weight.to(output.dtype)
        if self.soft_targets and target.shape == output.shape and target.is_floating_point():
            return self.fn(output.reshape(-1, classes), target.reshape(-1, classes).to(output.dtype),
                           weight=weight, **self.options)
        if target.dim() == output.dim() and target.shape[-1] == 1:
            target = target.squeeze(-1)
        if target.shape != output.shape[:-1]:
            raise ValueError(f"{self.name}: the model output has shape {list(output.shape)} (…, classes) so the "
                             f"target must have shape {list(output.shape[:-1])} of class indices; "
                             f"got {list(target.shape)}")
        return self.fn(output.reshape(-1, classes), target.reshape(-1).long(), weight=weight, **self.options)

    def extra_repr(self) -> str:
        return self.name + "".join(f", {k}={v}" for k, v in self.options.items())


class BCEWithLogits(nn.Module):
    def __init__(self, pos_weight: Any = None):
        super().__init__()
        self.register_buffer("pos_weight", _buffer(pos_weight))

    def forward(self, output: Tensor, target: Tensor) -> Tensor:
        target = match_target("bce_with_logits", output, target)
        pos_weight = None if self.pos_weight is None else self.pos_weight.to(output.dtype)
        if pos_weight is not None and pos_weight.numel() not in (1, output.shape[-1]):
            raise ValueError(f"bce_with_logits: pos_weight has {pos_weight.numel()} entries but the model "
                             f"has {output.shape[-1]} outputs")
        return F.binary_cross_entropy_with_logits(output, target, pos_weight=pos_weight)


class Regression(nn.Module):
    """A pointwise regression loss `fn(output, target, **options)` with target shape matching."""

    def __init__(self, name: str, fn: Callable[..., Tensor], **options: Any):
        super().__init__()
        self.name, self.fn, self.options = name, fn, options

    def forward(self, output: Tensor, target: Tensor) -> Tensor:
        return self.fn(output, match_target(self.name, output, target), **self.options)

    def extra_repr(self) -> str:
        return self.name + "".join(f", {k}={v}" for k, v in self.options.items())


def cross_entropy(args: Any) -> nn.Module:
    return ClassLoss("cross_entropy", F.cross_entropy, args.weight, soft_targets=True,
                     label_smoothing=args.label_smoothing)


def nll(args: Any) -> nn.Module:
    return ClassLoss("nll", F.nll_loss, args.weight)


def bce_with_logits(args: Any) -> nn.Module:
    return BCEWithLogits(args.pos_weight)


def mse(args: Any) -> nn.Module:
    return Regression("mse", F.mse_loss)


def l1(args: Any) -> nn.Module:
    return Regression("l1", F.l1_loss)


def huber(args: Any) -> nn.Module:
    return Regression("huber", F.huber_loss, delta=args.delta)


def smooth_l1(args: Any) -> nn.Module:
    return Regression("smooth_l1", F.smooth_l1_loss, beta=args.beta)

"""Torch implementations of the built-in optimizers: `factory(param_groups, args) -> Optimizer`.

`param_groups` are torch-style dicts ({"params": [...], plus overrides such as "weight_decay"
or "lr"}) and go to torch unchanged; `args` (the checked declaration arguments) supply the
defaults for every key a group does not override. Torch's own optimizers do the work, with
torch's default implementation choice (foreach on accelerators).
"""
from __future__ import annotations

from typing import Any

import torch


def gd(param_groups: list[dict], args: Any) -> torch.optim.Optimizer:
    """Gradient descent: SGD without momentum; the trainer feeds it the whole split (FULL_BATCH)."""
    return torch.optim.SGD(param_groups, lr=args.lr)


def sgd(param_groups: list[dict], args: Any) -> torch.optim.Optimizer:
    return torch.optim.SGD(param_groups, lr=args.lr, momentum=args.momentum, dampening=args.dampening,
                           nesterov=args.nesterov, weight_decay=args.weight_decay)


def adam(param_groups: list[dict], args: Any) -> torch.optim.Optimizer:
    return torch.optim.Adam(param_groups, lr=args.lr, betas=tuple(args.betas), eps=args.eps,
                            weight_decay=args.weight_decay, amsgrad=args.amsgrad)


def adamw(param_groups: list[dict], args: Any) -> torch.optim.Optimizer:
    return torch.optim.AdamW(param_groups, lr=args.lr, betas=tuple(args.betas), eps=args.eps,
                             weight_decay=args.weight_decay, amsgrad=args.amsgrad)


def adagrad(param_groups: list[dict], args: Any) -> torch.optim.Optimizer:
    return torch.optim.Adagrad(param_groups, lr=args.lr, lr_decay=args.lr_decay,
                               weight_decay=args.weight_decay, eps=args.eps)


def rmsprop(param_groups: list[dict], args: Any) -> torch.optim.Optimizer:
    return torch.optim.RMSprop(param_groups, lr=args.lr, alpha=args.alpha, eps=args.eps,
                               momentum=args.momentum, centered=args.centered, weight_decay=args.weight_decay)


def adadelta(param_groups: list[dict], args: Any) -> torch.optim.Optimizer:
    return torch.optim.Adadelta(param_groups, lr=args.lr, rho=args.rho, eps=args.eps,
                                weight_decay=args.weight_decay)


def lbfgs(param_groups: list[dict], args: Any) -> torch.optim.Optimizer:
    """L-BFGS keeps one flat history over all parameters, so torch allows a single group:
    groups without overrides are merged; a group that overrides anything is an error."""
    overridden = sorted({k for g in param_groups for k in g if k not in ("params", "name")})
    if overridden:
        raise ValueError(f"lbfgs does not support parameter groups with their own settings "
                         f"(got overrides of {', '.join(overridden)}); remove the `group` lines")
    params = [p for g in param_groups for p in _as_list(g["params"])]
    return torch.optim.LBFGS(params, lr=args.lr, max_iter=args.max_iter, history_size=args.history_size,
                             line_search_fn=None if args.line_search == "none" else args.line_search,
                             tolerance_grad=args.tolerance_grad, tolerance_change=args.tolerance_change)


def _as_list(params: Any) -> list:
    return [params] if isinstance(params, torch.Tensor) else list(params)

"""The torch implementation of Lion (Chen et al. 2023, "Symbolic Discovery of Optimization
Algorithms"). Per parameter θ with gradient g and momentum m (initially zero):

    c = β1·m + (1 − β1)·g
    θ ← θ − lr·(sign(c) + λ·θ)
    m ← β2·m + (1 − β2)·g

Every key of a torch parameter group (lr, betas, weight_decay) may be overridden per group,
which is how `group bias { weight_decay 0 }` in a spec reaches this optimizer.
"""
from __future__ import annotations

from typing import Any, Callable, Iterable

import torch


class Lion(torch.optim.Optimizer):
    def __init__(self, params: Iterable, lr: float = 1e-4, betas: tuple[float, float] = (0.9, 0.99),
                 weight_decay: float = 0.0):
        if not lr > 0:
            raise ValueError(f"lr must be > 0, got {lr}")
        if not all(0 <= b < 1 for b in betas):
            raise ValueError(f"betas must be in [0, 1), got {betas}")
        if weight_decay < 0:
            raise ValueError(f"weight_decay must be ≥ 0, got {weight_decay}")
        super().__init__(params, {"lr": lr, "betas": tuple(betas), "weight_decay": weight_decay})

    @torch.no_grad()
    def step(self, closure: Callable[[], Any] | None = None):
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            lr, (beta1, beta2), wd = group["lr"], group["betas"], group["weight_decay"]
            for p in group["params"]:
                if p.grad is None:
                    continue
                if p.grad.is_sparse:
                    raise RuntimeError("lion does not support sparse gradients")
                state = self.state[p]
                if not state:
                    state["exp_avg"] = torch.zeros_like(p, memory_format=torch.preserve_format)
                m, g = state["exp_avg"], p.grad
                c = m.mul(beta1).add_(g, alpha=1 - beta1)
                if wd != 0:
                    p.mul_(1 - lr * wd)          # θ − lr·λ·θ, with the θ before this step
                p.add_(c.sign_(), alpha=-lr)
                m.mul_(beta2).add_(g, alpha=1 - beta2)
        return loss


def lion(param_groups: list[dict], args: Any) -> torch.optim.Optimizer:
    """nnspec's factory: the checked spec arguments are the defaults every group starts from."""
    return Lion(param_groups, lr=args.lr, betas=tuple(args.betas), weight_decay=args.weight_decay)

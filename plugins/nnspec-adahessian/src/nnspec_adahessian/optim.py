"""The torch implementation of AdaHessian (Yao et al. 2021, "ADAHESSIAN: An Adaptive Second
Order Optimizer for Machine Learning").

Adam's second moment is replaced by a moving average of the squared Hessian diagonal, estimated
with Hutchinson's method: for z with independent ±1 (Rademacher) entries, E[z ⊙ (H z)] = diag(H),
and H z is one extra backward pass through the gradients (which is why the gradients must be
built with `backward(create_graph=True)`: the nnspec trainer does that for CREATE_GRAPH optimizers).
Per parameter, at step t with gradient g and diagonal estimate D (|D|, averaged over each conv
kernel's spatial positions when `spatial_average`):

    m ← β1·m + (1 − β1)·g                 v ← β2·v + (1 − β2)·D²
    θ ← θ − lr·( (m / (1 − β1ᵗ)) / ((√v / √(1 − β2ᵗ))^k + eps) + λ·θ )
"""
from __future__ import annotations

from typing import Any, Callable, Iterable, Sequence

import torch

_NO_GRAPH = ("adahessian needs gradients that can be differentiated again: call "
             "loss.backward(create_graph=True) before step() (the nnspec trainer does this for "
             "optimizers flagged CREATE_GRAPH)")


def rademacher(like: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    """A tensor shaped like `like` with independent entries ±1, each with probability ½."""
    bits = torch.randint(0, 2, like.shape, generator=generator, device=like.device, dtype=like.dtype)
    return bits.mul_(2).sub_(1)


def hutchinson_diagonal(params: Sequence[torch.Tensor], grads: Sequence[torch.Tensor], *, samples: int = 1,
                        generator: torch.Generator | None = None) -> list[torch.Tensor]:
    """Unbiased estimates of the Hessian diagonal, one per parameter: the mean over `samples`
    probes z of z ⊙ (H z). `grads` must carry their autograd graph (create_graph=True). A
    gradient that does not depend on any parameter (no graph) has a zero Hessian block."""
    out = [torch.zeros_like(p) for p in params]
    live = [i for i, g in enumerate(grads) if g.requires_grad]
    if not live:
        raise RuntimeError(_NO_GRAPH)
    with torch.enable_grad():
        for s in range(samples):
            zs = [rademacher(params[i], generator) for i in live]
            hzs = torch.autograd.grad([grads[i] for i in live], [params[i] for i in live], grad_outputs=zs,
                                      retain_graph=s < samples - 1, allow_unused=True)
            for i, z, hz in zip(live, zs, hzs):
                if hz is not None:
                    out[i].add_(z * hz.detach(), alpha=1.0 / samples)
    return out


def _spatial_mean(d: torch.Tensor) -> torch.Tensor:
    """Conv kernels ([out, in, *spatial]): one value per (out, in) pair, the mean over positions."""
    if d.dim() < 3:
        return d
    return d.mean(dim=tuple(range(2, d.dim())), keepdim=True).expand_as(d)


class AdaHessian(torch.optim.Optimizer):
    def __init__(self, params: Iterable, lr: float = 0.15, betas: tuple[float, float] = (0.9, 0.999),
                 eps: float = 1e-4, weight_decay: float = 0.0, hessian_power: float = 1.0,
                 spatial_average: bool = True, generator: torch.Generator | None = None):
        if not lr > 0 or not eps > 0:
            raise ValueError(f"lr and eps must be > 0, got lr={lr}, eps={eps}")
        if not all(0 <= b < 1 for b in betas):
            raise ValueError(f"betas must be in [0, 1), got {betas}")
        if weight_decay < 0 or not 0 <= hessian_power <= 1:
            raise ValueError(f"need weight_decay ≥ 0 and 0 ≤ hessian_power ≤ 1, "
                             f"got {weight_decay} and {hessian_power}")
        defaults = {"lr": lr, "betas": tuple(betas), "eps": eps, "weight_decay": weight_decay,
                    "hessian_power": hessian_power, "spatial_average": spatial_average}
        super().__init__(params, defaults)
        self.generator = generator           # the Rademacher probes' source (None: torch's global RNG)

    @torch.no_grad()
    def step(self, closure: Callable[[], Any] | None = None):
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        params = [p for g in self.param_groups for p in g["params"] if p.grad is not None]
        if not params:
            return loss
        if any(p.grad.is_sparse for p in params):
            raise RuntimeError("adahessian does not support sparse gradients")
        diagonals = dict(zip(params, hutchinson_diagonal(params, [p.grad for p in params],
                                                         generator=self.generator)))
        for group in self.param_groups:
            lr, (beta1, beta2), eps = group["lr"], group["betas"], group["eps"]
            wd, k = group["weight_decay"], group["hessian_power"]
            for p in group["params"]:
                if p not in diagonals:
                    continue
                d = diagonals[p].abs_()
                if group["spatial_average"]:
                    d = _spatial_mean(d)
                state = self.state[p]
                if not state:
                    state["step"] = 0
                    state["exp_avg"] = torch.zeros_like(p, memory_format=torch.preserve_format)
                    state["exp_hessian_diag_sq"] = torch.zeros_like(p, memory_format=torch.preserve_format)
                state["step"] += 1
                t = state["step"]
                m, v = state["exp_avg"], state["exp_hessian_diag_sq"]
                m.mul_(beta1).add_(p.grad.detach(), alpha=1 - beta1)
                v.mul_(beta2).addcmul_(d, d, value=1 - beta2)
                denom = (v.sqrt() / (1 - beta2 ** t) ** 0.5).pow_(k).add_(eps)
                update = (m / (1 - beta1 ** t)).div_(denom)
                if wd != 0:
                    update.add_(p, alpha=wd)
                p.add_(update, alpha=-lr)
        return loss


def adahessian(param_groups: list[dict], args: Any) -> torch.optim.Optimizer:
    """nnspec's factory: the checked spec arguments are the defaults every group starts from."""
    return AdaHessian(param_groups, lr=args.lr, betas=tuple(args.betas), eps=args.eps,
                      weight_decay=args.weight_decay, hessian_power=args.hessian_power,
                      spatial_average=args.spatial_average)

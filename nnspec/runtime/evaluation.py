"""Evaluation passes shared by training, `nnspec eval` and the pre-flight check."""
from __future__ import annotations

import math

import torch
from torch import nn

from nnspec.errors import error
from nnspec.runtime.assemble import Built


def evaluate_split(fwd, model: nn.Module, split, loss_fn, metrics, b: Built, batch_size: int) -> dict:
    """Loss (averaged over samples) and metrics of one split, in eval mode; one sync at the end."""
    model.eval()
    for m in metrics:
        m.reset()
    total, count = None, 0
    with torch.no_grad(), b.runtime.autocast():
        for x, y in split.batches(batch_size, shuffle=False, device=b.device):
            out = fwd(x)
            part = loss_fn(out, y).detach().float() * x.shape[0]
            total = part if total is None else total + part
            count += x.shape[0]
            for m in metrics:
                m.update(out, y)
    result = {"loss": total.item() / count if count else math.nan}
    for m in metrics:
        result.update(m.compute())
    model.train()
    return result


def preflight(b: Built) -> None:
    """Run two training samples through the model, loss and metrics (eval mode, no grad: no state
    changes), so a loss or metric that cannot take the model's output fails here, located in
    the spec, instead of as a bare exception in the first step."""
    spec = b.spec
    x, y = next(iter(b.data.train.batches(2, shuffle=False, device=b.device)))
    b.model.eval()
    try:
        with torch.no_grad(), b.runtime.autocast():
            out = b.model(x)
            try:
                b.loss(out, y)
            except (ValueError, RuntimeError) as err:
                raise error("E907", f"loss `{spec.loss.name}` cannot take this model's output: {err}",
                            spec.loss.span) from err
            for use, m in zip(b.metric_uses, b.metrics.values()):
                try:
                    m.update(out, y)
                except (ValueError, RuntimeError) as err:
                    raise error("E907", f"metric `{use.name}` cannot take this model's output: {err}",
                                use.span) from err
                finally:
                    m.reset()
    finally:
        b.model.train()

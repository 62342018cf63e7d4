"""Evaluation passes shared by training, `nnspec eval` and the pre-flight check."""
from __future__ import annotations

import math

import torch
from torch import nn

from nnspec.errors import error
from nnspec.runtime import distributed
from nnspec.runtime.assemble import Built


def evaluate_split(fwd, model: nn.Module, split, loss_fn, metrics, b: Built, batch_size: int) -> dict:
    """Loss (averaged over samples) and metrics of one split, in eval mode; one sync at the end.
    In a data-parallel run each process evaluates its share and the shares are combined (see
    distributed.eval_share); every process gets the same result."""
    model.eval()
    for m in metrics:
        m.reset()
    lo, hi = distributed.eval_share(len(split), metrics)
    total, count = torch.zeros((), dtype=torch.float64, device=b.device), 0
    with torch.no_grad(), b.runtime.autocast():
        for x, y in split.batches(batch_size, shuffle=False, device=b.device, start_sample=lo):
            if count + x.shape[0] > hi - lo:
                x, y = x[:hi - lo - count], y[:hi - lo - count]
            if x.shape[0] == 0:
                break
            out = fwd(x)
            total = total + loss_fn(out, y).detach().double() * x.shape[0]
            count += x.shape[0]
            for m in metrics:
                m.update(out, y)
    total, count = distributed.combine_eval(total, count, metrics, (lo, hi) != (0, len(split)))
    result = {"loss": total / count if count else math.nan}
    result.update(metric_values(b.metric_uses, metrics))
    model.train()
    return result


def metric_values(uses, metrics) -> dict:
    """Each metric's values under the keys its declaration reports (`Component.reported`, what
    the check matched `monitor` against); an implementation missing a declared key is an error."""
    out = {}
    for use, m in zip(uses, metrics):
        values = m.compute()
        for key in use.component.reported(use.args):
            if key.name not in values:
                raise error("E908", f"metric `{use.name}` did not report `{key.name}`, which its declaration "
                            f"promises (it reported: {', '.join(values) or 'nothing'})", use.span,
                            "a bug in the metric: its compute() and its `reports` declaration disagree")
            out[key.name] = values[key.name]
    return out


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

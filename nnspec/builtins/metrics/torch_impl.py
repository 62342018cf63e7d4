"""Torch implementations of the built-in metrics: `factory(args, *, num_classes) -> Metric`.

A metric accumulates on the device: `update` only queues tensor work (no `.item()`, no copies
to the host, no branching on tensor values — shapes are host-side facts and fine), so the
training loop never waits for the accelerator; `compute` syncs once and returns plain Python
numbers. State tensors are created at the first `update`, on its tensors' device.

Classification metrics read logits [..., classes] (argmax) or a single logit [..., 1]
(binary, positive when > 0) against class indices [...] (a trailing [..., 1] is dropped).
Regression metrics want output and target of one shape, or [..., 1] against [...].
"""
from __future__ import annotations

import math
from typing import Any

import torch
from torch import Tensor

from nnspec.builtins.losses.torch_impl import match_target


class Metric:
    """The interface the trainer uses. A metric that sets `mergeable` also gives its partial
    state (`state`: plain values and CPU tensors) and folds other partial states into its own
    (`merge_state`), so a data-parallel run evaluates each process's share of a split and
    combines them; other metrics make every process evaluate the whole split."""
    name = "metric"
    mergeable = False

    def state(self) -> dict[str, Any]:
        raise NotImplementedError

    def merge_state(self, state: dict[str, Any]) -> None:
        raise NotImplementedError

    def reset(self) -> None:
        raise NotImplementedError

    def update(self, output: Tensor, target: Tensor) -> None:
        raise NotImplementedError

    def compute(self) -> dict[str, float | list]:
        raise NotImplementedError


def _classes_of(output: Tensor) -> int:
    """How many classes an output scores: its last dimension, or 2 for a single logit."""
    if output.dim() < 1:
        raise ValueError("a classification metric needs an output ending in a classes dimension")
    return 2 if output.shape[-1] == 1 else output.shape[-1]


def _labels(name: str, output: Tensor, target: Tensor) -> Tensor:
    if target.dim() == output.dim() and target.dim() > 0 and target.shape[-1] == 1:
        target = target.squeeze(-1)
    if target.shape != output.shape[:-1]:
        raise ValueError(f"{name}: the model output has shape {list(output.shape)} (…, classes) so the target "
                         f"must have shape {list(output.shape[:-1])} of class indices; got {list(target.shape)}")
    return target.long()


def _predicted(output: Tensor) -> Tensor:
    if output.shape[-1] == 1:
        return (output[..., 0] > 0).long()
    return output.argmax(dim=-1)


class _Summed(Metric):
    """A metric whose state is counts and sums (None before the first update): merged by adding."""
    mergeable = True
    _sums: tuple[str, ...] = ()

    def state(self) -> dict[str, Any]:
        return {k: v.cpu() if isinstance(v, Tensor) else v for k in self._sums for v in [getattr(self, k)]}

    def merge_state(self, state: dict[str, Any]) -> None:
        for k in self._sums:
            mine, other = getattr(self, k), state[k]
            if other is None:
                continue
            if mine is None:
                setattr(self, k, other)
            else:
                setattr(self, k, mine + (other.to(mine.device) if isinstance(other, Tensor) else other))


class Accuracy(_Summed):
    name = "accuracy"
    _sums = ("correct", "total")

    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        self.correct: Tensor | None = None
        self.total = 0

    def _hits(self, output: Tensor, target: Tensor) -> Tensor:
        return _predicted(output) == target

    def update(self, output: Tensor, target: Tensor) -> None:
        target = _labels(self.name, output, target)
        hits = self._hits(output.detach(), target).sum()
        self.correct = hits if self.correct is None else self.correct + hits
        self.total += target.numel()

    def compute(self) -> dict[str, float | list]:
        if self.correct is None or self.total == 0:
            return {self.name: math.nan}
        return {self.name: int(self.correct.item()) / self.total}


class TopK(Accuracy):
    def __init__(self, k: int, num_classes: int | None) -> None:
        if num_classes is not None and k > num_classes:
            raise ValueError(f"top_k: k = {k} is more than the {num_classes} classes")
        self.k, self.name = k, f"top{k}_accuracy"
        super().__init__()

    def _hits(self, output: Tensor, target: Tensor) -> Tensor:
        if output.shape[-1] < self.k:
            raise ValueError(f"top_k: k = {self.k} but the model scores only {output.shape[-1]} classes")
        best = output.topk(self.k, dim=-1).indices
        return (best == target.unsqueeze(-1)).any(dim=-1)


class Confusion(_Summed):
    """A [classes, classes] count matrix (rows: labels, columns: predictions) and what
    precision, recall and f1 derive from it. `average = macro` averages over the classes that
    occur among labels or predictions (as scikit-learn does without explicit labels); a class
    with nothing to divide by scores 0."""

    _sums = ("matrix",)

    def __init__(self, name: str, num_classes: int | None, average: str = "macro") -> None:
        self.name, self.num_classes, self.average = name, num_classes, average
        self.reset()

    def reset(self) -> None:
        self.matrix: Tensor | None = None

    def update(self, output: Tensor, target: Tensor) -> None:
        target = _labels(self.name, output, target)
        if self.matrix is None:
            n = max(self.num_classes or 0, _classes_of(output))
            self.matrix = torch.zeros(n * n, dtype=torch.int64, device=output.device)
        n = math.isqrt(self.matrix.numel())
        if _classes_of(output) > n:
            raise ValueError(f"{self.name}: the model scores {_classes_of(output)} classes, expected at most {n}")
        index = (target * n + _predicted(output.detach())).reshape(-1)
        self.matrix.scatter_add_(0, index, torch.ones_like(index))   # scatter: no sync, unlike bincount

    def _counts(self) -> list[list[int]]:
        n = math.isqrt(self.matrix.numel())
        flat = self.matrix.tolist()                  # the one sync
        return [flat[i * n:(i + 1) * n] for i in range(n)]

    def compute(self) -> dict[str, float | list]:
        if self.matrix is None:
            return {self.name: [] if self.name == "confusion_matrix" or self.average == "per_class" else math.nan}
        rows = self._counts()
        if self.name == "confusion_matrix":
            return {self.name: rows}
        n = len(rows)
        tp = [rows[i][i] for i in range(n)]
        fp = [sum(rows[j][i] for j in range(n)) - tp[i] for i in range(n)]
        fn = [sum(rows[i]) - tp[i] for i in range(n)]
        num, den = {"precision": (tp, [tp[i] + fp[i] for i in range(n)]),
                    "recall": (tp, [tp[i] + fn[i] for i in range(n)]),
                    "f1": ([2 * t for t in tp], [2 * tp[i] + fp[i] + fn[i] for i in range(n)])}[self.name]
        scores = [a / b if b else 0.0 for a, b in zip(num, den)]
        present = [s for i, s in enumerate(scores) if tp[i] + fp[i] + fn[i] > 0]
        macro = sum(present) / len(present) if present else math.nan
        if self.average == "per_class":
            return {self.name: scores, f"{self.name}_macro": macro}
        return {self.name: macro}


def _float_dtype(device: torch.device) -> torch.dtype:
    return torch.float32 if device.type == "mps" else torch.float64   # mps has no float64


def _columns(name: str, output: Tensor, target: Tensor) -> tuple[Tensor, Tensor]:
    """Output and target as [rows, outputs] in the accumulation dtype."""
    target = match_target(name, output, target)
    dtype = _float_dtype(output.device)
    width = output.shape[-1] if output.dim() > 1 else 1
    return output.detach().reshape(-1, width).to(dtype), target.reshape(-1, width).to(dtype)


class ErrorMean(_Summed):
    """Mean of |error|^power over every element (mse: power 2, also reporting rmse; mae: 1)."""
    _sums = ("total", "count")

    def __init__(self, name: str, power: int) -> None:
        self.name, self.power = name, power
        self.reset()

    def reset(self) -> None:
        self.total: Tensor | None = None
        self.count = 0

    def update(self, output: Tensor, target: Tensor) -> None:
        out, tgt = _columns(self.name, output, target)
        err = (out - tgt).abs().pow(self.power).sum()
        self.total = err if self.total is None else self.total + err
        self.count += out.numel()

    def compute(self) -> dict[str, float | list]:
        if self.total is None or self.count == 0:
            return {self.name: math.nan}
        value = self.total.item() / self.count
        return {self.name: value, "rmse": math.sqrt(value)} if self.power == 2 else {self.name: value}


class R2(Metric):
    """1 - SSE/SST per output column, averaged (scikit-learn's uniform average). The target
    variance is merged batch by batch (Chan et al.), which stays accurate where the textbook
    Σy² - (Σy)²/n cancels. A constant target scores 1 if predicted exactly, else 0."""
    name = "r2"
    mergeable = True

    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        self.n = 0
        self.mean: Tensor | None = None
        self.m2: Tensor | None = None
        self.sse: Tensor | None = None

    def update(self, output: Tensor, target: Tensor) -> None:
        out, tgt = _columns(self.name, output, target)
        rows = tgt.shape[0]
        if rows == 0:
            return
        batch_mean = tgt.mean(dim=0)
        self._merge(rows, batch_mean, (tgt - batch_mean).square().sum(dim=0), (out - tgt).square().sum(dim=0))

    def _merge(self, rows: int, mean: Tensor, m2: Tensor, sse: Tensor) -> None:
        if self.mean is None:
            self.mean, self.m2, self.sse = mean, m2, sse
        else:
            mean, m2, sse = (t.to(self.mean.device) for t in (mean, m2, sse))
            total = self.n + rows
            delta = mean - self.mean
            self.mean = self.mean + delta * (rows / total)
            self.m2 = self.m2 + m2 + delta.square() * (self.n * rows / total)
            self.sse = self.sse + sse
        self.n += rows

    def state(self) -> dict[str, Any]:
        return {"n": self.n, **{k: None if v is None else v.cpu()
                                for k, v in (("mean", self.mean), ("m2", self.m2), ("sse", self.sse))}}

    def merge_state(self, state: dict[str, Any]) -> None:
        if state["n"]:
            self._merge(state["n"], state["mean"], state["m2"], state["sse"])

    def compute(self) -> dict[str, float | list]:
        if self.m2 is None:
            return {self.name: math.nan}
        m2, sse = torch.stack([self.m2, self.sse]).tolist()     # the one sync
        scores = [1.0 - e / v if v > 0 else (1.0 if e == 0 else 0.0) for v, e in zip(m2, sse)]
        return {self.name: sum(scores) / len(scores)}


# --- factories ------------------------------------------------------------------------------

def accuracy(args: Any, *, num_classes: int | None) -> Metric:
    return Accuracy()


def top_k(args: Any, *, num_classes: int | None) -> Metric:
    return TopK(args.k, num_classes)


def precision(args: Any, *, num_classes: int | None) -> Metric:
    return Confusion("precision", num_classes, args.average)


def recall(args: Any, *, num_classes: int | None) -> Metric:
    return Confusion("recall", num_classes, args.average)


def f1(args: Any, *, num_classes: int | None) -> Metric:
    return Confusion("f1", num_classes, args.average)


def confusion_matrix(args: Any, *, num_classes: int | None) -> Metric:
    return Confusion("confusion_matrix", num_classes)


def mse(args: Any, *, num_classes: int | None) -> Metric:
    return ErrorMean("mse", 2)


def mae(args: Any, *, num_classes: int | None) -> Metric:
    return ErrorMean("mae", 1)


def r2(args: Any, *, num_classes: int | None) -> Metric:
    return R2()

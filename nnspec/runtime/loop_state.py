"""The training loop's state, in small named pieces that runtime/trainer.py reads top to bottom:

  Position       where the run is: epoch, optimizer step, batches and samples of the epoch read
  LossLog        an epoch's training losses: a window of device tensors read at log points
  NanGuard       `on_nan`: stop (a located error) or skip (drop the step, count it)
  BestTracker    the best value of a monitored metric (best.pt); EarlyStopping adds patience
  Checkpointer   when a checkpoint is due and which file it goes to

None of them decides a rule of the language: they carry out what the checked spec says.
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import torch

from nnspec.errors import Span, error
from nnspec.runtime import distributed
from nnspec.spec.settings import CheckpointConfig


class InternalError(RuntimeError):
    """A state the check stage should have made impossible: a bug in nnspec, not in the spec."""


@dataclass
class Position:
    """Where the run is. `epoch` is 0-based; `step` counts optimizer steps of the whole run;
    `batch` counts the batches this process read in the epoch and `sample` the samples of the
    epoch's order read by all processes (a mid-epoch checkpoint resumes from there)."""
    epoch: int = 0
    step: int = 0
    batch: int = 0
    sample: int = 0


class LossLog:
    """One epoch's training losses. Each micro-batch's loss stays a detached device tensor in
    the window; `flush` reads the window (one device sync) into the epoch's sums at log points."""

    def __init__(self, epoch: int, step: int, total: float = 0.0, count: int = 0, samples: int = 0):
        self.epoch = epoch
        self.first_step = step                  # the epoch's first optimizer step
        self.window: list[torch.Tensor] = []    # micro-batch losses since the last flush
        self.window_step = step                 # optimizer step of window[0]
        self.total, self.count, self.samples = total, count, samples
        self.started = time.perf_counter()

    def add(self, loss: torch.Tensor) -> None:
        self.window.append(loss.detach())

    def flush(self, step: int, guard: "NanGuard") -> None:
        """Sum the window's finite losses; a non-finite one stops the run unless skipping."""
        if not self.window:
            return
        values = torch.stack(self.window).tolist()
        for i, v in enumerate(values):
            if math.isfinite(v):
                self.total += v
                self.count += 1
                guard.last_finite = v
            elif not guard.skip:
                raise guard.stop_error(v, self.window_step + i // guard.accumulate, self.epoch)
        self.window, self.window_step = [], step

    def running_mean(self) -> float:
        return self.total / max(self.count, 1)

    def mean(self) -> float:
        return self.total / self.count if self.count else math.nan

    def samples_per_s(self) -> float:
        return self.samples / max(time.perf_counter() - self.started, 1e-9)

    def partial(self, guard: "NanGuard") -> dict:
        """The sums a mid-epoch checkpoint keeps (resume.partial reads them back)."""
        return {"loss_total": self.total, "loss_count": self.count, "samples": self.samples,
                "last_finite": guard.last_finite}


class NanGuard:
    """`on_nan stop`: a non-finite loss read at a log point raises E901 naming its step.
    `on_nan skip`: a micro-batch whose loss is non-finite (on any process) skips the backward,
    and its optimizer step is dropped and counted; so is a step with a non-finite gradient
    (the fp16 scaler checks gradients itself). `last_finite` is the last finite loss read."""

    def __init__(self, skip: bool, accumulate: int, span: Span, lr: Callable[[], float],
                 skips: int = 0, last_finite: float | None = None):
        self.skip, self.accumulate, self.span, self.lr = skip, accumulate, span, lr
        self.skips, self.last_finite = skips, last_finite
        self.bad_step = False                  # a micro-batch of the current step was non-finite

    def loss_ok(self, loss: torch.Tensor) -> bool:
        """False (and the step marked bad) when skipping and the loss is not finite everywhere."""
        if self.skip and not distributed.all_finite(loss):
            self.bad_step = True
            return False
        return True

    def step_ok(self, params: list, scaler: Any) -> bool:
        """Whether the optimizer step may run; a dropped step is counted."""
        if self.bad_step or (self.skip and scaler is None and not _grads_finite(params)):
            self.skips += 1
            self.bad_step = False
            return False
        return True

    def stop_error(self, value: float, step: int, epoch: int) -> Exception:
        before = ("no finite loss before it" if self.last_finite is None
                  else f"the last finite loss was {self.last_finite:.6g}")
        return error("E901", f"the loss became {value} at step {step} (epoch {epoch + 1}); {before}; "
                             f"lr {self.lr():.3g}", self.span,
                     "lower the lr, add `clip_grad_norm 1.0`, check the data, or set `on_nan skip` in train { }")


def _grads_finite(params: list) -> bool:
    """One sync: the fp16 scaler does this itself; `on_nan skip` syncs every step anyway."""
    grads = [p.grad for p in params if p.grad is not None]
    return not grads or bool(torch.stack([torch.isfinite(g).all() for g in grads]).all())


class BestTracker:
    """The best value so far of one monitored metric (`mode` min or max, better by more than
    `min_delta`) and the epochs since it last improved."""

    def __init__(self, name: str, mode: str, min_delta: float = 0.0):
        self.name, self.mode, self.min_delta = name, mode, min_delta
        self.value: float | None = None
        self.epoch: int | None = None
        self.wait = 0

    def value_in(self, row: dict) -> Any:
        """The monitored value of an epoch's row. The check only lets through names the row
        has, so a missing one is a bug in nnspec."""
        if self.name in row:
            return row[self.name]
        raise InternalError(f"internal error: the monitored metric `{self.name}` is not among the epoch's "
                            f"values ({', '.join(sorted(row))}); the check should have refused it")

    def update(self, value: Any, epoch: int) -> bool:
        """Count an epoch's value; True when it is the new best."""
        ok = isinstance(value, (int, float)) and math.isfinite(value)
        if ok and (self.value is None or (value < self.value - self.min_delta if self.mode == "min"
                                          else value > self.value + self.min_delta)):
            self.value, self.epoch, self.wait = float(value), epoch, 0
            return True
        self.wait += 1
        return False

    def state(self) -> dict:
        return {"name": self.name, "mode": self.mode, "value": self.value, "epoch": self.epoch, "wait": self.wait}


class EarlyStopping(BestTracker):
    """`early_stop`: stop once the metric has not improved for `patience` epochs."""

    def __init__(self, name: str, mode: str, min_delta: float, patience: int):
        super().__init__(name, mode, min_delta)
        self.patience = patience

    @property
    def due(self) -> bool:
        return self.wait >= self.patience

    def message(self) -> str:
        best = ("no finite value yet" if self.value is None
                else f"best {self.value:.6g} at epoch {self.epoch}")
        return f"early stop: {self.name} did not improve for {self.wait} epochs ({best})"


class Checkpointer:
    """Which checkpoints a run writes (only a process with a run folder writes): numbered ones
    every `every_steps` steps and every `every_epochs` epochs (the newest `keep_last` kept),
    best.pt when the monitored metric improves, last.pt on a signal and at the end unless the
    end was just saved. `state` builds a checkpoint's contents for (epoch, batch, step)."""

    def __init__(self, run: Any, config: CheckpointConfig, state: Callable[[int, int, int], dict],
                 last_saved: int = -1):
        self.run, self.config, self.state = run, config, state
        self.last_saved = last_saved            # the step of the last epoch-end checkpoint

    @property
    def enabled(self) -> bool:
        return self.run is not None and (self.config.every_epochs is not None or self.config.every_steps is not None)

    def step_due(self, step: int) -> bool:
        return self.enabled and bool(self.config.every_steps) and step % self.config.every_steps == 0

    def save_step(self, pos: Position) -> None:
        self.run.save_periodic(self.state(pos.epoch, pos.batch, pos.step), pos.epoch + 1, pos.step,
                               self.config.keep_last)

    def save_epoch(self, epochs_done: int, step: int, improved: bool, model: torch.nn.Module) -> None:
        """The epoch-end checkpoint when due, and best.pt when the metric improved (never from
        diverged weights)."""
        if not self.enabled:
            return
        every = self.config.every_epochs
        if every and epochs_done % every == 0:
            self.run.save_periodic(self.state(epochs_done, 0, step), epochs_done, step, self.config.keep_last)
            self.last_saved = step
        if improved and all(bool(torch.isfinite(t).all()) for t in model.state_dict().values()
                            if t.is_floating_point()):
            self.run.save_best(self.state(epochs_done, 0, step))

    def save_interrupted(self, pos: Position) -> Path | None:
        return self.run.save_last(self.state(pos.epoch, pos.batch, pos.step)) if self.run is not None else None

    def save_final(self, epochs_done: int, step: int) -> None:
        if self.enabled and self.last_saved != step:
            self.run.save_last(self.state(epochs_done, 0, step))

"""One optimizer step of the training loop, from the batches that make it.

A step sets the schedule's lr (per-step schedules), then runs `accumulate` micro-batches'
forward and backward (all but the last of them under DDP's no_sync, so gradients are reduced
once), then clips, steps and zeroes the gradients, or drops the step under `on_nan skip`
(NanGuard). A closure optimizer (lbfgs) takes one batch per step and re-evaluates the loss
itself. Full-batch optimizers (gd) need nothing here: their one batch is the whole split.
"""
from __future__ import annotations

from contextlib import nullcontext

import torch
from torch import nn

from nnspec.registry.catalog import CREATE_GRAPH, NEEDS_CLOSURE
from nnspec.runtime import distributed
from nnspec.runtime.assemble import Built
from nnspec.runtime.distributed import Forwards
from nnspec.runtime.loop_state import LossLog, NanGuard


class Stepper:
    """Runs micro-batches into optimizer steps. `micro` counts the micro-batches of the step
    in progress; `feed` returns True when a batch completed an optimizer step."""

    def __init__(self, b: Built, forwards: Forwards, scaler, train_metrics: list, guard: NanGuard,
                 split, per_epoch_lr: bool):
        cfg = b.spec.train
        self.b, self.cfg, self.opt, self.loss_fn, self.runtime = b, cfg, b.optimizer, b.loss, b.runtime
        self.fwd, self.no_sync = forwards.train, forwards.no_sync
        self.scaler, self.train_metrics, self.guard = scaler, train_metrics, guard
        self.params = [p for g in b.optimizer.param_groups for p in g["params"]]
        self.closure = NEEDS_CLOSURE in b.flags
        self.create_graph = CREATE_GRAPH in b.flags
        self.autocast = b.runtime.autocast_dtype is not None
        self.clipping = cfg.clip_grad_norm is not None or cfg.clip_grad_value is not None
        self.per_step_lr = b.scheduler is not None and not per_epoch_lr
        self.sharded = split is not b.data.train           # distributed: the rank's shard
        self.split = split
        self.micro = 0

    def feed(self, x: torch.Tensor, y: torch.Tensor, log: LossLog, more: bool, step: int) -> bool:
        """Feed one batch (`more`: batches of the epoch still follow); True when it completed
        an optimizer step, which is then step number `step` (0-based)."""
        if self.closure:
            if self.per_step_lr:
                self.b.set_lr(step)
            log.add(self.opt.step(self._closure_for(x, y)))
            if self.cfg.clip_weights is not None:
                self._clip_weights()
            return True
        if self.micro == 0 and self.per_step_lr:
            self.b.set_lr(step)
        # micro-batches before the last of an accumulation keep their gradients local (DDP)
        with self.no_sync() if self.micro < self.cfg.accumulate - 1 and more else nullcontext():
            self._forward_backward(x, y, log)
        self.micro += 1
        if self.micro < self.cfg.accumulate:
            return False
        self.finish()
        return True

    def finish(self) -> None:
        """The optimizer step at the end of an accumulation (or after the epoch's leftover
        micro-batches), unless the NanGuard drops it."""
        self.micro = 0
        if not self.guard.step_ok(self.params, self.scaler):
            self.opt.zero_grad(set_to_none=True)
            return
        if self.scaler is not None:
            if self.clipping:
                self.scaler.unscale_(self.opt)
                self._clip_grads()
            self.scaler.step(self.opt)
            self.scaler.update()
        else:
            if self.clipping:
                self._clip_grads()
            self.opt.step()
        for p in self.params:       # what zero_grad(set_to_none=True) does, without its profiler hooks
            p.grad = None
        if self.cfg.clip_weights is not None:
            self._clip_weights()

    def _forward_backward(self, x, y, log: LossLog) -> None:
        if self.autocast:
            with self.runtime.autocast():
                out = self.fwd(x)
                loss = self.loss_fn(out, y)
        else:
            out = self.fwd(x)
            loss = self.loss_fn(out, y)
        for m in self.train_metrics:
            m.update(out, y)
        if self.sharded and (weight := distributed.batch_weight(self.split)) != 1.0:
            loss = loss * weight              # a short last global batch (distributed.py)
        log.add(loss)
        if self.guard.loss_ok(loss):
            acc = self.cfg.accumulate
            scaled = loss / acc if acc > 1 else loss
            if self.scaler is not None:
                scaled = self.scaler.scale(scaled)
            scaled.backward(create_graph=self.create_graph)

    def _closure_for(self, x, y):
        first = [True]

        def closure():
            self.opt.zero_grad(set_to_none=True)
            with self.runtime.autocast():
                out = self.fwd(x)
                loss = self.loss_fn(out, y)
            if first[0]:
                for m in self.train_metrics:
                    m.update(out, y)
            first[0] = False
            loss.backward(create_graph=self.create_graph)
            if self.clipping:
                self._clip_grads()
            return loss
        return closure

    def _clip_grads(self) -> None:
        if self.cfg.clip_grad_norm is not None:
            nn.utils.clip_grad_norm_(self.params, self.cfg.clip_grad_norm)
        if self.cfg.clip_grad_value is not None:
            nn.utils.clip_grad_value_(self.params, self.cfg.clip_grad_value)

    def _clip_weights(self) -> None:
        with torch.no_grad():
            for p in self.params:
                p.clamp_(-self.cfg.clip_weights, self.cfg.clip_weights)

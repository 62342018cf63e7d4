"""A checked spec → the torch objects of a run: seeded model, loss, metrics, data, optimizer,
schedule, on the run's device. `nnspec.build` returns this; the trainer starts from it, so a
built model has exactly the initial weights training would start from.
"""
from __future__ import annotations

import contextlib
import math
import random
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import nn

from nnspec.spec.settings import REQUIRED_FOR_TRAINING, Spec, Use
from nnspec.errors import NnspecError, Span, error
from nnspec.builtins.datasets.describe import targets_of
from nnspec.registry.catalog import CLASSIFICATION, FULL_BATCH, NEEDS_CLOSURE
from nnspec.runtime import distributed
from nnspec.runtime.device import Runtime, resolve


@dataclass
class Built:
    """Everything a spec builds. `metrics` maps each metric's name to its Metric object;
    `scheduler` is a Schedule (`lr(step, base_lr)`) or None. Sections a spec lacks are None."""
    spec: Spec
    model: nn.Module
    optimizer: torch.optim.Optimizer | None
    scheduler: Any
    loss: nn.Module | None
    metrics: dict[str, Any]
    data: Any                              # nnspec.runtime.data.Splits or None
    runtime: Runtime
    augment: Any = None                    # callable(x, generator) or None
    batch_size: int = 1
    steps_per_epoch: int = 1               # optimizer steps per epoch
    total_steps: int = 1                   # optimizer steps the run is planned for
    epochs: int | None = None              # epochs the run is planned for
    flags: frozenset[str] = frozenset()    # the optimizer's flags (closure, create_graph, full_batch)
    metric_uses: tuple[Use, ...] = field(default_factory=tuple)

    @property
    def device(self) -> torch.device:
        return self.runtime.device

    def set_lr(self, step: int) -> None:
        """Write the schedule's lr for optimizer step `step` into every parameter group."""
        if self.scheduler is None or self.optimizer is None:
            return
        for g in self.optimizer.param_groups:
            g["lr"] = self.scheduler.lr(step, g["initial_lr"])


@contextlib.contextmanager
def spec_errors(spec: Spec):
    """Give located errors raised while building or training the spec's source text, so they
    render with the offending line."""
    try:
        yield
    except NnspecError as err:
        texts = spec.source_texts
        if all(k in err.sources for k in texts):
            raise
        raise NnspecError(err.diagnostics, {**texts, **err.sources}) from err.__cause__


def seed_everything(seed: int) -> None:
    """Python, numpy and torch (every device) from one seed."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def missing_section(spec: Spec, name: str, example: str) -> Exception:
    lines = spec.sources.get(spec.path, "").splitlines() or [""]     # point just past the last line
    end = len(lines[-1]) + 1
    return error("E900", f"the spec has no `{name}` section", Span(spec.path, len(lines), end, len(lines), end + 1),
                 f"training needs one, e.g. `{example}`")


def require_trainable(spec: Spec) -> None:
    """Training needs data, a loss and an optimizer: a located error for the first one missing."""
    if spec.model is None:
        raise missing_section(spec, "model", "model name { input [4] ... }")
    for name, example in REQUIRED_FOR_TRAINING:
        if getattr(spec, name) is None:
            raise missing_section(spec, name, example)


def _load_data(spec: Spec, classification: bool):
    from nnspec.runtime.data import DataError, load_data
    model = spec.model
    _, num_outputs = targets_of(model.output.shape, spec.loss, spec.metrics)
    try:
        return load_data(spec.data, base_dir=spec.base_dir, seed=spec.train.seed, input_type=model.input,
                         classification=classification, num_outputs=num_outputs)
    except DataError as err:
        raise error("E903", err.message, err.span or spec.data.dataset.span, err.hint) from err


def _augment(spec: Spec):
    if spec.data is None or not spec.data.augment:
        return None
    from nnspec.builtins.augmentations.torch_impl import compose_augment
    from nnspec.runtime.data import DataError
    try:
        return compose_augment(spec.data.augment, spec.model.input)
    except DataError as err:
        raise error("E903", err.message, err.span or spec.data.span, err.hint) from err


def assemble(spec: Spec, *, load_data: bool = True) -> Built:
    """Seed, pick the device, then build model → loss → data → metrics → optimizer → schedule."""
    if spec.model is None:
        raise missing_section(spec, "model", "model name { input [4] ... }")
    cfg = spec.train
    seed_everything(cfg.seed)
    runtime = resolve(distributed.device_for(cfg.device), cfg.precision, cfg.span)
    from nnspec.lower.model import build_model
    model = build_model(spec.model).to(runtime.device)
    loss = spec.loss.component.build(spec.loss.args).to(runtime.device) if spec.loss is not None else None
    classification, _ = targets_of(spec.model.output.shape, spec.loss, spec.metrics)
    data = _load_data(spec, classification) if (spec.data is not None and load_data) else None
    # the model's output decides the classes (the check matched it against the loss and labels)
    scores_classes = classification or any(CLASSIFICATION in m.component.flags for m in spec.metrics)
    num_classes = spec.model.output.shape[-1] if scores_classes and spec.model.output.shape else None
    metrics = {}
    for use in spec.metrics:
        try:
            key = use.name if use.name not in metrics else f"{use.name}_{len(metrics) + 1}"
            metrics[key] = use.component.build(use.args, num_classes=num_classes)
        except ValueError as err:
            raise error("E905", f"metric `{use.name}`: {err}", use.span) from err

    flags = frozenset(spec.optimizer.optimizer.component.flags) if spec.optimizer is not None else frozenset()
    batch_size = spec.data.batch_size if spec.data is not None else 1
    micro_batches = 1
    if data is not None:
        batch_size = len(data.train) if FULL_BATCH in flags else batch_size
        micro_batches = distributed.num_batches(data.train, batch_size,      # per rank when distributed
                                                spec.data.drop_last and FULL_BATCH not in flags)
    steps_per_epoch = max(1, math.ceil(micro_batches / cfg.accumulate))
    epochs = cfg.epochs
    if cfg.steps is not None:
        total_steps = cfg.steps if epochs is None else min(cfg.steps, epochs * steps_per_epoch)
        epochs = math.ceil(total_steps / steps_per_epoch)
    else:
        total_steps = (epochs or 1) * steps_per_epoch
    optimizer = scheduler = None
    if spec.optimizer is not None:
        from nnspec.lower.optim import build_optimizer, build_schedule
        optimizer = build_optimizer(spec.optimizer, model)
        scheduler = build_schedule(spec.schedule, total_steps, steps_per_epoch)
    if NEEDS_CLOSURE in flags and cfg.accumulate > 1:
        raise error("E906", f"`accumulate {cfg.accumulate}` does not work with "
                            f"`{spec.optimizer.optimizer.name}`, which re-evaluates the loss itself", cfg.span,
                    "remove `accumulate` or use another optimizer")
    if NEEDS_CLOSURE in flags and runtime.use_scaler:
        raise error("E906", f"`{spec.optimizer.optimizer.name}` cannot run with fp16 loss scaling", cfg.span,
                    "use `precision bf16` or fp32")
    return Built(spec, model, optimizer, scheduler, loss, metrics, data, runtime, _augment(spec), batch_size,
                 steps_per_epoch, total_steps, epochs, flags, tuple(spec.metrics))

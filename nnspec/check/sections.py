"""Check pass for the settings sections: data, loss, metrics, optimizer, schedule, train.

Every key is declared like a component parameter (`Param` with a type and range), so
`train { epochs 0 }` or `data { batch -1 }` get the same located errors as layer arguments,
and unknown keys are errors with a did-you-mean.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from nnspec.syntax import nodes as n
from nnspec.spec.settings import (CheckpointConfig, DataConfig, EarlyStop, OptimizerConfig, ParamGroup, ScheduleConfig,
                           TrainConfig, Use)
from nnspec.errors import Diagnostics, did_you_mean
from nnspec.check.expressions import Names
from nnspec.check.param_groups import check_group_args
from nnspec.registry.catalog import Catalog
from nnspec.check.resolve import bind_args, use_of
from nnspec.registry.types import (ArgError, Bool, Choice, Float, NonNegativeInt, OneOf, Param, PositiveFloat, PositiveInt,
                          Symbol, Type, describe)


@dataclass(frozen=True)
class Word(Type):
    """A bare word or a string, e.g. a metric name `val_accuracy`."""
    name = "name"

    def check(self, value: Any) -> Any:
        if isinstance(value, Symbol):
            return value.name
        if isinstance(value, str) and value:
            return value
        raise ArgError(f"expected a name such as val_loss, got {describe(value)}")


@dataclass(frozen=True)
class Device(Type):
    name = "auto | cpu | cuda | cuda:N | mps"

    def check(self, value: Any) -> Any:
        word = value.name if isinstance(value, Symbol) else value
        if isinstance(word, str) and re.fullmatch(r"auto|cpu|cuda|mps|cuda:\d+", word):
            return word
        raise ArgError(f"unknown device `{word}`", 'use auto, cpu, cuda, "cuda:1" or mps')


Mode = Choice("min", "max")
Fraction = Float(0, 1)


def key(*params: Param, doc: str = "") -> tuple[tuple[Param, ...], str]:
    return params, doc


TRAIN_KEYS = {
    "epochs": key(Param("epochs", PositiveInt), doc="passes over the training split"),
    "steps": key(Param("steps", PositiveInt), doc="stop after this many optimizer steps"),
    "seed": key(Param("seed", NonNegativeInt), doc="seeds every random generator; same seed, same weights"),
    "device": key(Param("device", Device()), doc="auto picks cuda, then mps, then cpu"),
    "precision": key(Param("precision", Choice("fp32", "bf16", "fp16")), doc="autocast precision"),
    "compile": key(Param("compile", Bool()), doc="torch.compile the model"),
    "clip_grad_norm": key(Param("clip_grad_norm", PositiveFloat), doc="clip the global gradient norm"),
    "clip_grad_value": key(Param("clip_grad_value", PositiveFloat), doc="clip each gradient element"),
    "clip_weights": key(Param("clip_weights", PositiveFloat), doc="clamp parameters to [-c, c] after each step"),
    "accumulate": key(Param("accumulate", PositiveInt), doc="gradient accumulation: micro-batches per step"),
    "early_stop": key(Param("monitor", Word(), "val_loss"), Param("mode", Mode, "min"),
                      Param("patience", PositiveInt, 5), Param("min_delta", Float(min=0), 0.0),
                      doc="stop when the monitored metric stops improving (mode: the metric's own direction "
                          "unless given)"),
    "monitor": key(Param("metric", Word()), Param("mode", Mode, "min"),
                   doc="the metric that picks the best checkpoint (mode: the metric's own direction unless given)"),
    "checkpoint": key(Param("every_epochs", OneOf(PositiveInt, Choice("never")), 1),
                      Param("every_steps", OneOf(PositiveInt, Choice("never")), "never"),
                      Param("keep_last", PositiveInt, 2), doc="when to write checkpoints, how many to keep"),
    "on_nan": key(Param("on_nan", Choice("stop", "skip")), doc="a non-finite loss stops the run, or skips the step (skip also checks the gradients)"),
    "log_every": key(Param("log_every", NonNegativeInt), doc="steps between progress updates (0: automatic)"),
    "threads": key(Param("threads", OneOf(PositiveInt, Choice("auto", "measure"))),
                   doc="CPU threads for torch; auto: 1 for a small step, else torch's default (same count every run); "
                       "measure: time 1 and torch's default before the first step and keep the faster"),
}

DATA_KEYS = {
    "split": key(Param("train", Fraction, 0.8), Param("val", Fraction, 0.1), Param("test", Fraction, 0.1),
                 doc="fractions of the data; the rest of 1 is unused"),
    "batch": key(Param("batch", PositiveInt), doc="training batch size"),
    "eval_batch": key(Param("eval_batch", PositiveInt), doc="batch size for validation and test"),
    "normalize": key(Param("normalize", Choice("standard", "minmax", "none")), doc="fitted on the training split"),
    "shuffle": key(Param("shuffle", Bool()), doc="reshuffle the training split every epoch"),
    "drop_last": key(Param("drop_last", Bool()), doc="skip the last incomplete training batch"),
}

# Keys people put in the wrong section, and where they belong.
ELSEWHERE = {
    "batch_size": "the batch size is set in the data section: `data digits { batch 64 }`",
    "batch": "the batch size is set in the data section: `data digits { batch 64 }`",
    "lr": "the learning rate is an optimizer argument: `optimizer adam(lr = 1e-3)`",
    "weight_decay": "weight decay is an optimizer argument: `optimizer adamw(weight_decay = 1e-2)`",
    "epochs": "epochs are set in the train section: `train { epochs 10 }`",
    "seed": "the seed is set in the train section: `train { seed 0 }`",
}

SECTIONS = ("data", "loss", "metrics", "optimizer", "schedule", "train", "requires")


class SectionChecker:
    def __init__(self, catalog: Catalog, diags: Diagnostics, names: Names):
        self.catalog, self.diags, self.names = catalog, diags, names

    # --- helpers --------------------------------------------------------------------------

    def _keys(self, section: n.Setting, schema: dict, nested: set[str] = frozenset()) -> dict[str, tuple[Any, n.Setting]]:
        """Bind each `key value` / `key(args)` of a section body against `schema`."""
        out: dict[str, tuple[Any, n.Setting]] = {}
        for item in section.body or ():
            if item.name in nested:
                continue
            if item.name not in schema:
                self.diags.error("E501", f"unknown key `{item.name}` in `{section.name}`", item.name_span,
                                 did_you_mean(item.name, list(schema) + list(nested)) or ELSEWHERE.get(item.name)
                                 or "known keys: " + ", ".join(sorted(list(schema) + list(nested))))
                continue
            if item.name in out:
                self.diags.error("E502", f"`{item.name}` is set twice in `{section.name}`", item.name_span)
                continue
            if item.body is not None:
                self.diags.error("E503", f"`{item.name}` takes no `{{ ... }}` block", item.span)
                continue
            params, _ = schema[item.name]
            if item.args is not None and item.values:
                self.diags.error("E504", f"write `{item.name}(...)` or `{item.name} value`, not both", item.span)
                continue
            args = item.args if item.args is not None else tuple(n.Arg(None, v, v.span) for v in item.values)
            if not args and any(p.required for p in params):
                self.diags.error("E505", f"`{item.name}` needs a value", item.name_span,
                                 f"e.g. `{item.name} {_example(params[0])}`")
                continue
            bound = bind_args(params, args, item, item.name, None, self.names, self.diags)
            if bound is not None:
                out[item.name] = (bound, item)
        return out

    def _no_body(self, section: n.Setting) -> None:
        if section.body is not None:
            self.diags.error("E503", f"`{section.name}` takes no `{{ ... }}` block", section.span)
        if section.args is not None:
            self.diags.error("E506", f"write `{section.name} name(args)`, e.g. `{section.name} "
                                     f"{'mse' if section.name == 'loss' else 'name'}(...)`", section.span)

    def _one_value(self, section: n.Setting, what: str, example: str) -> n.Expr | None:
        if len(section.values) != 1:
            self.diags.error("E507", f"`{section.name}` needs exactly one {what}", section.name_span,
                             f"e.g. `{section.name} {example}`")
            return None
        return section.values[0]

    # --- sections ---------------------------------------------------------------------------

    def loss(self, section: n.Setting) -> Use | None:
        self._no_body(section)
        value = self._one_value(section, "loss", "cross_entropy")
        return use_of(self.catalog, "losses", value, self.names, self.diags) if value is not None else None

    def metrics(self, section: n.Setting) -> tuple[Use, ...]:
        self._no_body(section)
        if not section.values:
            self.diags.error("E507", "`metrics` needs at least one metric", section.name_span,
                             "e.g. `metrics accuracy, f1`")
        uses = [use_of(self.catalog, "metrics", v, self.names, self.diags) for v in section.values]
        return tuple(u for u in uses if u is not None)

    def schedule(self, section: n.Setting) -> ScheduleConfig | None:
        self._no_body(section)
        value = self._one_value(section, "schedule", "warmup(steps = 100) then cosine()")
        if value is None:
            return None
        items = value.items if isinstance(value, n.Then) else (value,)
        links = [use_of(self.catalog, "schedules", v, self.names, self.diags) for v in items]
        if any(u is None for u in links):
            return None
        return ScheduleConfig(tuple(links), span=section.span)

    def optimizer(self, section: n.Setting) -> OptimizerConfig | None:
        if section.args is not None:
            self._no_body(section)
        value = self._one_value(section, "optimizer", "adamw(lr = 1e-3)")
        use = use_of(self.catalog, "optimizers", value, self.names, self.diags) if value is not None else None
        groups = []
        for item in section.body or ():
            if item.name != "group":
                self.diags.error("E501", f"unknown key `{item.name}` in `optimizer`", item.name_span,
                                 "an optimizer block holds `group selector, ... { key value }` lines")
                continue
            groups.append(self._group(item, use))
        if use is None:
            return None
        return OptimizerConfig(use, tuple(g for g in groups if g is not None), section.span)

    def _group(self, item: n.Setting, use: Use | None) -> ParamGroup | None:
        selectors, spans = [], []
        for v in item.values:
            if isinstance(v, (n.Name, n.String)):
                selectors.append(v.name if isinstance(v, n.Name) else v.value)
                spans.append(v.span)
            else:
                self.diags.error("E508", "a group selector is a name (`bias`, `norm`, `weights`, a block or "
                                         "layer name) or a quoted glob such as \"head.*\"", v.span)
        if not item.values:
            self.diags.error("E508", "`group` needs at least one selector", item.name_span,
                             "e.g. `group bias, norm { weight_decay 0 }`")
        overrides: dict[str, Any] = {}
        if use is not None:
            schema = {p.name: ((p,), p.doc) for p in use.component.params}
            wrapper = n.Setting("group", None, (), item.body or (), item.span, item.name_span)
            keys = self._keys(wrapper, schema)
            overrides = {name: bound[name] for name, (bound, _) in keys.items()}
            check_group_args(use, overrides, {name: at.span for name, (_, at) in keys.items()}, self.diags)
        if item.body is None or not item.body:
            self.diags.error("E509", "a parameter group needs settings in braces", item.span,
                             "e.g. `group bias { weight_decay 0 }`")
        return ParamGroup(tuple(selectors), overrides, item.span, tuple(spans))

    def data(self, section: n.Setting) -> DataConfig | None:
        if section.args is not None:
            self.diags.error("E506", "write `data name(args) { ... }`, e.g. `data csv(path = \"x.csv\")`",
                             section.span)
        value = self._one_value(section, "dataset", "digits")
        dataset = use_of(self.catalog, "datasets", value, self.names, self.diags) if value is not None else None
        keys = self._keys(section, DATA_KEYS, nested={"augment"})
        augment = []
        for item in section.body or ():
            if item.name == "augment":
                if not item.values:
                    self.diags.error("E505", "`augment` needs at least one augmentation", item.name_span,
                                     "e.g. `augment random_flip(p = 0.5)`")
                augment += [use_of(self.catalog, "augmentations", v, self.names, self.diags) for v in item.values]
        if dataset is None:
            return None
        cfg: dict[str, Any] = {}
        if "split" in keys:
            split, item = keys["split"]
            if sum(split.values()) > 1 + 1e-9:
                self.diags.error("E510", f"split fractions add up to {sum(split.values()):g}, more than 1",
                                 item.span, "e.g. `split(train = 0.8, val = 0.1, test = 0.1)`")
            if split["train"] <= 0:
                self.diags.error("E510", "the training split is empty", item.span)
            cfg["split"] = dict(split)
        else:
            cfg["split"] = {"train": 0.8, "val": 0.1, "test": 0.1}
        simple = {"batch": "batch_size", "eval_batch": "eval_batch_size", "normalize": "normalize",
                  "shuffle": "shuffle", "drop_last": "drop_last"}
        for k, field in simple.items():
            if k in keys:
                bound, _ = keys[k]
                cfg[field] = next(iter(bound.values()))
        return DataConfig(dataset, augment=tuple(a for a in augment if a is not None), span=section.span, **cfg)

    def train(self, section: n.Setting | None) -> TrainConfig:
        if section is None:
            return TrainConfig()
        self._no_body_values(section)
        keys = self._keys(section, TRAIN_KEYS)
        cfg: dict[str, Any] = {"span": section.span}
        for k in ("epochs", "steps", "seed", "device", "precision", "compile", "clip_grad_norm", "clip_grad_value",
                  "clip_weights", "accumulate", "on_nan", "log_every", "threads"):
            if k in keys:
                cfg[{"compile": "compile", "accumulate": "accumulate"}.get(k, k)] = next(iter(keys[k][0].values()))
        if "steps" in keys and "epochs" not in keys:
            cfg["epochs"] = None
        if "early_stop" in keys:
            a, item = keys["early_stop"]
            cfg["early_stop"] = EarlyStop(a.monitor, a.mode, a.patience, a.min_delta, item.span)
            cfg["monitor"], cfg["monitor_mode"] = a.monitor, a.mode
        if "monitor" in keys:
            a, _ = keys["monitor"]
            cfg["monitor"], cfg["monitor_mode"] = a.metric, a.mode
        if "checkpoint" in keys:
            a, item = keys["checkpoint"]
            cfg["checkpoint"] = CheckpointConfig(None if a.every_steps == "never" else a.every_steps,
                                                 None if a.every_epochs == "never" else a.every_epochs,
                                                 a.keep_last, item.span)
        return TrainConfig(**cfg)

    def _no_body_values(self, section: n.Setting) -> None:
        if section.values or section.args is not None:
            self.diags.error("E506", f"`{section.name}` takes only a `{{ ... }}` block of settings", section.span,
                             f"e.g. `{section.name} {{ epochs 10 }}`")

    def requires(self, section: n.Setting) -> tuple[str, ...]:
        self._no_body(section)
        from nnspec.check.requirements import check_requirement
        out = []
        for v in section.values:
            if isinstance(v, n.String):
                out.append(v.value)
                problem = check_requirement(v.value)
                if problem:
                    self.diags.error("E530", problem[0], v.span, problem[1])
            else:
                self.diags.error("E511", "`requires` takes quoted requirements", v.span,
                                 'e.g. `requires "nnspec-lion>=0.1"`')
        return tuple(out)


def _example(p: Param) -> str:
    t = p.type
    if isinstance(t, Choice):
        return t.options[0]
    if isinstance(t, Bool):
        return "true"
    if getattr(t, "integer", False):
        return "10"
    return "0.1"

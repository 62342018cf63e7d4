"""Check pass for how the sections fit together: what metrics report and what is monitored,
which losses the metrics can score, class counts against the model's output, and schedule chains.

Each rule reads declarations (a metric's `reports`, the CLASSIFICATION / BINARY / PER_EPOCH /
NEEDS_METRIC flags, the per-sample target shape the data pass described) and the model IR,
so the runtime never meets these mistakes: it reads the facts decided here (the monitored keys
and their modes, `ScheduleConfig.interval`).
"""
from __future__ import annotations

from dataclasses import replace
from typing import Any

from nnspec.builtins.argtypes import link_length
from nnspec.errors import Diagnostics, Span, did_you_mean
from nnspec.registry.catalog import BINARY, CLASSIFICATION, NEEDS_METRIC, PER_EPOCH, Reported
from nnspec.registry.types import Args
from nnspec.spec.settings import REQUIRED_FOR_TRAINING, ScheduleConfig, TrainConfig, Use
from nnspec.syntax import nodes as n


def check_training(diags: Diagnostics, sections: dict, model, described, loss: Use | None, metrics: tuple[Use, ...],
                   schedule: ScheduleConfig | None, train: TrainConfig):
    """Report every rule broken; return (train, schedule) with derived modes and interval filled in.
    A spec with settings must have every section training needs.
    `described`: the data's parts as the data pass opened them (None when it did not), for the
    shape of one sample's labels; the number of classes and regression target widths against the
    model output are the data pass's rules (the ones training applies to the loaded data)."""
    _required_sections(diags, sections)
    keys = _metric_keys(diags, metrics)
    train = _monitors(diags, sections.get("train"), keys, train)
    if loss is not None:
        output = model.output.shape if model is not None else None
        for use in metrics:
            _metric_fits_loss(diags, use, loss, output)
        if output is not None:
            _class_counts(diags, model, described, loss, metrics)
    if schedule is not None:
        schedule = _schedule(diags, schedule, train)
    return train, schedule


def _required_sections(diags: Diagnostics, sections: dict) -> None:
    """A spec with settings but without data, loss or optimizer cannot train: W522 at the first
    section (an error with --strict), so a spec written to test one rule still checks. A spec with a
    model alone describes a model (`nnspec summary`); `nnspec train` says what it lacks (E900)."""
    if not sections:
        return
    first = min(sections.values(), key=lambda s: (s.span.line, s.span.column))
    for name, example in REQUIRED_FOR_TRAINING:
        if name not in sections:
            diags.warning("W522", f"this spec cannot train: it has no `{name}` section",
                        first.name_span, f"add e.g. `{example}`")


# --- 1. metric keys and monitors -----------------------------------------------------------------

def _metric_keys(diags: Diagnostics, metrics: tuple[Use, ...]) -> dict[str, Reported]:
    """Every key the metrics report (without the train_/val_ prefix); a key reported twice is an error."""
    keys: dict[str, Reported] = {}
    for use in metrics:
        for key in use.component.reported(use.args):
            if key.name in keys or key.name == "loss":
                diags.error("E540", f"metric `{use.name}` reports `{key.name}`, which another metric (or the loss) "
                            "already reports", use.span, "list each metric once")
                continue
            keys[key.name] = key
    return keys


def _given(item: n.Setting, position: int, name: str) -> n.Arg | None:
    """The argument `name` (declared at `position`) of a `key(args)` / `key value` setting, if written."""
    args = item.args if item.args is not None else tuple(n.Arg(None, v, v.span) for v in item.values)
    for a in args:
        if a.name == name:
            return a
    positional = [a for a in args if a.name is None]
    return positional[position] if position < len(positional) else None


def _monitors(diags: Diagnostics, section: n.Setting | None, keys: dict[str, Reported],
              train: TrainConfig) -> TrainConfig:
    """`monitor` and `early_stop(monitor = ...)` name exactly one reported number; a mode not
    written is the key's declared direction."""
    known = {"train_loss": "min", "val_loss": "min"}
    lists = set()
    for key in keys.values():
        for prefix in ("train_", "val_"):
            if key.better is None:
                lists.add(prefix + key.name)
            else:
                known[prefix + key.name] = key.better or "min"
    items = {item.name: item for item in (section.body or ())} if section is not None else {}
    early = train.early_stop
    if early is not None and "early_stop" in items:
        mode = _check_monitor(diags, items["early_stop"], "monitor", early.monitor, known, lists)
        if mode is not None:
            train = replace(train, early_stop=replace(early, mode=mode))
            if "monitor" not in items:
                train = replace(train, monitor_mode=mode)
    if "monitor" in items:
        mode = _check_monitor(diags, items["monitor"], "metric", train.monitor, known, lists)
        if mode is not None:
            train = replace(train, monitor_mode=mode)
    return train


def _check_monitor(diags: Diagnostics, item: n.Setting, arg: str, name: str, known: dict[str, str],
                   lists: set[str]) -> str | None:
    """Report a monitored `name` that is not a reported number (at the argument naming it);
    return the derived mode when the setting gives none (None: keep what was written)."""
    given = _given(item, 0, arg)
    span = given.value.span if given is not None else item.span
    if name in lists:
        diags.error("E512", f"cannot monitor `{name}`: it is not one number", span,
                    "monitor one of: " + ", ".join(sorted(known)))
        return None
    if name not in known:
        diags.error("E512", f"cannot monitor `{name}`: no metric reports it", span,
                    did_you_mean(name, known) or "monitor one of: " + ", ".join(sorted(known)))
        return None
    return None if _given(item, 1, "mode") is not None else known[name]


# --- 2. metrics against the loss ---------------------------------------------------------------------

def _metric_fits_loss(diags: Diagnostics, use: Use, loss: Use, output: tuple[int, ...] | None) -> None:
    classifies = CLASSIFICATION in use.component.flags
    loss_classifies = CLASSIFICATION in loss.component.flags
    binary = BINARY in loss.component.flags and output is not None and output[-1:] == (1,)
    if classifies and not (loss_classifies or binary):
        why = (f"loss `{loss.name}` scores 0/1 targets, which classification metrics read only from a "
               "single output" if BINARY in loss.component.flags else f"loss `{loss.name}` trains a regression")
        diags.error("E541", f"metric `{use.name}` compares predicted classes with class labels, but {why}",
                    use.span, "use a classification loss (cross_entropy, nll) or regression metrics (mse, mae, r2)")
    elif not classifies and loss_classifies:
        diags.error("E541", f"metric `{use.name}` measures a regression error, but loss `{loss.name}` trains "
                    "class scores against class labels", use.span,
                    "use classification metrics (accuracy, f1, top_k, ...) or a regression loss")


# --- 3. class counts and the model's output -----------------------------------------------------------

def _class_counts(diags: Diagnostics, model, described, loss: Use, metrics: tuple[Use, ...]) -> None:
    output = tuple(model.output.shape)
    last = _last_layer(model)
    shape = _label_shape(described)
    if CLASSIFICATION in loss.component.flags:
        if not output:
            diags.error("E543", f"loss `{loss.name}` needs an output ending in a classes dimension; the model "
                        "outputs one number per sample", loss.span, "end the model with `linear(classes)`")
            return
        classes = output[-1]
        for arg in loss.component.info.get("per_class_args", ()):
            value = loss.args.get(arg)
            if isinstance(value, tuple) and len(value) != classes:
                diags.error("E542", f"`{loss.name}` argument `{arg}` has {len(value)} entries but the model outputs "
                            f"{classes} classes", loss.span_of(arg), f"give one entry per class ({classes})")
        for use in metrics:
            for arg in use.component.info.get("class_count_args", ()):
                value = use.args.get(arg)
                if isinstance(value, int) and value > classes:
                    diags.error("E542", f"`{use.name}` argument `{arg}` = {value} is more than the model's "
                                f"{classes} classes", use.span_of(arg), f"allowed: {arg} ≤ {classes}")
        if shape is not None and output[:-1] != shape and output[:-1] + (1,) != shape:
            diags.error("E543", f"loss `{loss.name}` reads the model output {list(output)} as scores over "
                        f"{classes} classes at positions {list(output[:-1])}, but the labels have shape "
                        f"{list(shape)} per sample", loss.span, _reshape_hint(output, shape, last))
    else:
        _regression_counts(diags, output, loss)


def _regression_counts(diags: Diagnostics, output: tuple[int, ...], loss: Use) -> None:
    """Regression (and BINARY) losses compare the output with targets of the same shape."""
    outputs = output[-1] if output else 1
    for arg in loss.component.info.get("per_output_args", ()):
        value = loss.args.get(arg)
        if isinstance(value, tuple) and len(value) not in (1, outputs):
            diags.error("E542", f"`{loss.name}` argument `{arg}` has {len(value)} entries but the model has "
                        f"{outputs} outputs", loss.span_of(arg), "give one entry, or one per output")


def _label_shape(described) -> tuple[int, ...] | None:
    """One sample's label shape, as the data pass described the data (None: not known)."""
    for part in (described or {}).values():
        if part.target is not None:
            return tuple(part.target)
    return None


def _last_layer(model):
    layers = list(model.root.layers())
    return layers[-1] if layers else None


def _reshape_hint(output: tuple[int, ...], shape: tuple[int, ...], last) -> str:
    where = f" before `{last.kind}` (line {last.span.line})" if last is not None else ""
    if len(output) > len(shape) + 1:
        return (f"the labels are {list(shape) or 'one class index'} per sample: add `flatten`{where} so the model "
                f"outputs [classes]")
    return f"make the model output {list(shape) + [output[-1]]} ([..., classes])"


# --- 4. schedules ---------------------------------------------------------------------------------------

def _schedule(diags: Diagnostics, schedule: ScheduleConfig, train: TrainConfig) -> ScheduleConfig:
    links = list(schedule.links)
    for use in links[:-1]:
        if link_length(use.args, 1) is not None:        # the link's own length, as the runtime computes it
            continue
        if use.component.param("steps") or use.component.param("epochs"):
            diags.error("E544", f"`{use.name}` needs steps or epochs because another link follows it",
                        use.span, f"e.g. {use.name}(steps = 1000) then ...")
        else:
            diags.error("E544", f"`{use.name}` runs until training ends, so it can only be the last link",
                        use.span, "move it to the end of the chain")
    for i, use in enumerate(links):
        if NEEDS_METRIC in use.component.flags and use.component.param("mode") is not None:
            links[i] = _plateau_mode(diags, use, train)
    interval = "epoch" if all(PER_EPOCH in u.component.flags for u in links) else "step"
    return replace(schedule, links=tuple(links), interval=interval)


def _plateau_mode(diags: Diagnostics, use: Use, train: TrainConfig) -> Use:
    """A metric-driven schedule follows the monitored metric's direction unless told otherwise."""
    mode = use.args.get("mode")
    if "mode" not in use.arg_spans:
        return replace(use, args=Args(dict(use.args, mode=train.monitor_mode)))
    if mode != train.monitor_mode:
        diags.error("E545", f"`{use.name}(mode = {mode})` but `{train.monitor}` is monitored with mode "
                    f"{train.monitor_mode}", use.span_of("mode"),
                    f"use mode = {train.monitor_mode}, or monitor a metric that should {_verb(mode)}")
    return use


def _verb(mode: Any) -> str:
    return "fall" if mode == "min" else "rise"

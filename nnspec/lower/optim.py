"""Optimizer section → torch optimizer with parameter groups; schedule section → a Schedule.

Each torch param group carries two extra keys: `name` (the selectors that made it, or
"default") and `initial_lr` (the base lr a schedule scales; torch's own schedulers use the same
key). Torch keeps extra keys in `state_dict()`, so both survive a checkpoint.
"""
from __future__ import annotations

from typing import Iterable

import torch
from torch import nn

from nnspec.spec.settings import OptimizerConfig, ParamGroup, ScheduleConfig
from nnspec.errors import error


def param_groups(groups: Iterable[ParamGroup], model: nn.Module) -> list[dict]:
    """Torch param-group dicts: one per spec group in order, then a default group with the rest.
    The check resolved every group to parameter paths (and whole undeclared plugin layers); here
    they are only looked up. Frozen parameters are left out of the default group."""
    named = dict(model.named_parameters())
    taken: set[int] = set()
    out: list[dict] = []
    for group in groups:
        params = [_lookup(named, path) for path in group.params]
        for path in group.whole_layers:
            params += [p for p in _layer(model, path).parameters() if p.requires_grad]
        taken.update(id(p) for p in params)
        out.append({"params": params, "name": ", ".join(group.selectors), **dict(group.overrides)})
    rest = [p for p in named.values() if p.requires_grad and id(p) not in taken]
    if rest:
        out.append({"params": rest, "name": "default"})
    return out


def _lookup(named: dict, path: str) -> nn.Parameter:
    try:
        return named[path]
    except KeyError:
        raise RuntimeError(f"internal error: the checked parameter path `{path}` is not in the built model "
                           f"(a layer's declared parameters differ from its module's)") from None


def _layer(model: nn.Module, path: str) -> nn.Module:
    try:
        return model.get_submodule(path)
    except AttributeError:
        raise RuntimeError(f"internal error: the checked layer path `{path}` is not in the built model") from None


def build_optimizer(cfg: OptimizerConfig, model: nn.Module) -> torch.optim.Optimizer:
    """The optimizer of a checked `optimizer` section over `model`'s trainable parameters."""
    groups = param_groups(cfg.groups, model)
    try:
        opt = cfg.optimizer.component.build(groups, cfg.optimizer.args)
    except (ValueError, TypeError) as err:
        raise error("E905", f"cannot build optimizer `{cfg.optimizer.name}`: {err}", cfg.optimizer.span) from err
    for g in opt.param_groups:
        g.setdefault("initial_lr", g["lr"])
        g.setdefault("name", "default")
    return opt


def build_schedule(cfg: ScheduleConfig | None, total_steps: int, steps_per_epoch: int):
    """A `Schedule` (lr as a function of the optimizer step), or None without a schedule section."""
    if cfg is None or not cfg.links:
        return None
    from nnspec.builtins.schedules.functions import build
    try:
        return build(cfg.links, total_steps=max(1, total_steps), steps_per_epoch=max(1, steps_per_epoch))
    except (ValueError, TypeError) as err:
        raise error("E905", f"cannot build the schedule: {err}", cfg.span) from err

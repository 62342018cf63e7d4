"""Optimizer section → torch optimizer with parameter groups; schedule section → a Schedule.

Each torch param group carries two extra keys: `name` (the selectors that made it, or
"default") and `initial_lr` (the base lr a schedule scales; torch's own schedulers use the same
key). Torch keeps extra keys in `state_dict()`, so both survive a checkpoint.
"""
from __future__ import annotations

import fnmatch
from typing import Callable, Iterable

import torch
from torch import nn

from nnspec.spec.settings import OptimizerConfig, ParamGroup, ScheduleConfig
from nnspec.errors import error

_NORM_TYPES: tuple[type, ...] = tuple(t for t in (
    nn.modules.batchnorm._NormBase,              # BatchNorm*, InstanceNorm*, SyncBatchNorm
    nn.LayerNorm, nn.GroupNorm, getattr(nn, "RMSNorm", None), nn.LocalResponseNorm) if t is not None)


def is_norm(module: nn.Module) -> bool:
    """A normalization layer: torch's, or a plugin's whose class name says so (e.g. `RMSNorm`)."""
    return isinstance(module, _NORM_TYPES) or "Norm" in type(module).__name__


def _selector(sel: str, model: nn.Module) -> Callable[[str], bool]:
    """A predicate over parameter paths (`named_parameters()` names) for one selector."""
    if sel == "bias":
        return lambda path: path.rsplit(".", 1)[-1] == "bias"
    if sel == "weights":
        return lambda path: path.rsplit(".", 1)[-1] != "bias"
    if sel == "norm":
        prefixes = tuple(name + "." if name else "" for name, m in model.named_modules() if is_norm(m))
        if "" in prefixes:                      # the model itself is a norm layer
            return lambda path: True
        return lambda path: path.startswith(prefixes) if prefixes else False
    if any(ch in sel for ch in "*?["):
        return lambda path: fnmatch.fnmatchcase(path, sel)
    kinds = tuple(name + "." if name else "" for name, m in model.named_modules()
                  if getattr(m, "nnspec_kind", None) == sel)
    if kinds:                                   # a layer kind: every layer of it (`embedding`, `linear`)
        return lambda path: path.startswith(kinds)
    # a child name anywhere in the tree (`encoder_0`, `head`), or every instance of a block
    # (`encoder`: lowered blocks carry role "block" and the block's name as label)
    blocks = tuple(name + "." for name, m in model.named_modules()
                   if name and getattr(m, "role", None) == "block" and getattr(m, "label", None) == sel)
    return lambda path: sel in path.split(".")[:-1] or (bool(blocks) and path.startswith(blocks))


def param_groups(groups: Iterable[ParamGroup], model: nn.Module) -> list[dict]:
    """Torch param-group dicts: one per spec group in order, then a default group with the rest.
    A parameter matching several groups goes to the first. Frozen parameters are left out."""
    named = [(path, p) for path, p in model.named_parameters() if p.requires_grad]
    taken: set[int] = set()
    out: list[dict] = []
    for group in groups:
        params = []
        for sel in group.selectors:
            match = _selector(sel, model)
            hits = [(path, p) for path, p in named if match(path)]
            if not hits:
                raise error("E904", f"parameter group selector `{sel}` matches no trainable parameter", group.span,
                            _selector_hint(sel, [path for path, _ in named]))
            for _, p in hits:
                if id(p) not in taken:
                    taken.add(id(p))
                    params.append(p)
        out.append({"params": params, "name": ", ".join(group.selectors), **dict(group.overrides)})
    rest = [p for _, p in named if id(p) not in taken]
    if rest:
        out.append({"params": rest, "name": "default"})
    return out


def _selector_hint(sel: str, paths: list[str]) -> str:
    shown = ", ".join(paths[:6]) + (", …" if len(paths) > 6 else "")
    if sel in ("bias", "norm"):
        return f"the model has no {'bias' if sel == 'bias' else 'normalization'} parameters; parameters: {shown}"
    return f"parameter paths look like: {shown}"


def build_optimizer(cfg: OptimizerConfig, model: nn.Module) -> torch.optim.Optimizer:
    """The optimizer of a checked `optimizer` section over `model`'s trainable parameters."""
    groups = param_groups(cfg.groups, model)
    if not any(g["params"] for g in groups):
        raise error("E904", "the model has no trainable parameters to optimize", cfg.span)
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

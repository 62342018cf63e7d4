"""Check pass for parameter groups: `group bias, norm { weight_decay 0 }` resolved once, here.

Every selector is resolved on the model IR to the exact parameter paths the lowered model's
`named_parameters()` will have (a layer's path from the root, then the parameter names its
declaration gives), so lowering only looks them up. Selectors:

- `bias`: parameters named `bias` or `bias_*` / `*_bias` (`bias_ih_l0`, `in_proj_bias`);
  `weights`: every other parameter;
- `norm`: every parameter of a layer declaring the `norm` capability flag, and of the
  normalization parts a composite layer names in `info["norm_parts"]` (transformer_encoder);
- a layer kind used in the model (`linear`): every layer of that kind;
- a block name (every instance of it) or a child name anywhere in the tree (`encoder_0`, `head`);
- a quoted glob over parameter paths (`"stage4.*"`).

A plugin layer that declares no parameter names is known only whole: kind, `norm`, block and
child selectors take all of it (`ParamGroup.whole_layers`); `bias`, `weights` and globs cannot see
inside it and say so (W501). A parameter several groups select belongs to the first. A group's
overrides merged with the optimizer's arguments must pass the optimizer's own `check` (and an
optimizer declaring `info["group_overrides"] = False`, lbfgs, takes no group settings at all).
"""
from __future__ import annotations

import dataclasses
import fnmatch
from typing import Any, Mapping

from nnspec.errors import Diagnostics, Span, did_you_mean
from nnspec.registry.catalog import NORM
from nnspec.registry.types import ArgError, Args, describe
from nnspec.spec.graph_ir import Layer, Model
from nnspec.spec.settings import OptimizerConfig, ParamGroup, Use

RESERVED = ("bias", "weights", "norm")


def is_bias(name: str) -> bool:
    """A bias by torch's naming: `bias`, `bias_ih_l0`, `in_proj_bias` (the last dotted part)."""
    last = name.rsplit(".", 1)[-1]
    return last == "bias" or last.startswith("bias_") or last.endswith("_bias")


def is_glob(selector: str) -> bool:
    return any(ch in selector for ch in "*?[")


def check_group_args(use: Use, overrides: Mapping[str, Any], spans: Mapping[str, Span], diags: Diagnostics) -> None:
    """The group's effective arguments (the optimizer's, with the overrides) pass the optimizer's
    `check`; an error points at the override that makes the difference."""
    if overrides and use.component.info.get("group_overrides", True) is False:
        first = next(iter(overrides))
        diags.error("E515", f"`{use.name}` keeps a single parameter group, so a group cannot change its settings",
                    spans[first], f"set {first} on `{use.name}(...)` itself, or remove the `group` line")
        return
    check = use.component.check
    if check is None or not overrides or _refusal(check, use.args) is not None:
        return                                   # the optimizer's own arguments were reported already
    err = _refusal(check, {**use.args, **overrides})
    if err is None:
        return
    culprit = next((k for k in overrides if _refusal(check, {**use.args, **overrides, k: use.args[k]}) is None),
                   next(iter(overrides)))
    diags.error("E515", f"in this group, {culprit} = {describe(overrides[culprit])} does not fit `{use.name}`: "
                f"{err.message}", spans[culprit], err.hint)


def _refusal(check, values: Mapping[str, Any]) -> ArgError | None:
    try:
        check(Args(dict(values)))
    except ArgError as err:
        return err
    return None


def resolve_groups(optimizer: OptimizerConfig, model: Model, diags: Diagnostics) -> OptimizerConfig:
    """The optimizer section with every group's `params` / `whole_layers` filled in."""
    layers = [layer for layer in model.root.layers() if layer.trainable and layer.params]
    if not layers:
        diags.error("E516", "the model has no trainable parameters to optimize", optimizer.span,
                    "add a layer with parameters (linear, conv2d, ...) or remove the optimizer section")
        return optimizer
    resolver = _Resolver(model, layers, diags)
    taken_params: set[str] = set()
    taken_layers: set[str] = set()
    groups = []
    for group in optimizer.groups:
        params, whole, ok = resolver.group(group)
        params = [p for p in params if p not in taken_params]
        whole = [w for w in whole if w not in taken_layers]
        if not params and not whole and ok:
            diags.warning("W502", "this group takes no parameter: earlier groups took every parameter it selects",
                          group.span, "reorder the groups (the first one to select a parameter gets it)")
        taken_params.update(params)
        taken_layers.update(whole)
        groups.append(dataclasses.replace(group, params=tuple(params), whole_layers=tuple(whole)))
    return dataclasses.replace(optimizer, groups=tuple(groups))


class _Resolver:
    def __init__(self, model: Model, layers: list[Layer], diags: Diagnostics):
        self.model, self.layers, self.diags = model, layers, diags
        self.paths = [f"{layer.path}.{name}" for layer in layers for name in (layer.param_shapes or ())]
        self.opaque = [layer for layer in layers if layer.param_shapes is None]
        self.kinds = {layer.kind for layer in model.root.layers()}
        self.names: set[str] = set()
        for scope in model.root.scopes():
            self.names.update(scope.children)
            if scope.block:
                self.names.add(scope.block)      # a block's name selects every instance of it

    def group(self, group: ParamGroup) -> tuple[list[str], list[str], bool]:
        """(parameter paths, whole layers) the group's selectors take, in order without repeats,
        and whether every selector selected something."""
        params: dict[str, None] = {}
        whole: dict[str, None] = {}
        ok = True
        for i, sel in enumerate(group.selectors):
            span = group.selector_spans[i] if i < len(group.selector_spans) else group.span
            found = self.selector(sel, span)
            if found is None:
                ok = False
                continue
            p, w = found
            if not p and not w:
                ok = False
                self.diags.error("E514", f"parameter group selector `{sel}` selects no trainable parameter", span,
                                 self._hint(sel))
            params.update(dict.fromkeys(p))
            whole.update(dict.fromkeys(w))
        return list(params), list(whole), ok

    def selector(self, sel: str, span: Span) -> tuple[list[str], list[str]] | None:
        """(parameter paths, whole layers) one selector takes; None after reporting an unknown name."""
        if sel in ("bias", "weights") or is_glob(sel):
            self._blind(sel, span)
            if sel == "bias":
                return [p for p in self.paths if is_bias(p)], []
            if sel == "weights":
                return [p for p in self.paths if not is_bias(p)], []
            return [p for p in self.paths if fnmatch.fnmatchcase(p, sel)], []
        if sel == "norm":
            params, whole = self._take(layer for layer in self.layers if NORM in layer.use.component.flags)
            return params + self._norm_parts(), whole
        if sel in self.kinds:
            return self._take(layer for layer in self.layers if layer.kind == sel)
        if sel in self.names:
            return self._take(self._named(sel))
        self.diags.error("E513", f"no block, layer or layer kind named `{sel}` in the model", span,
                         did_you_mean(sel, sorted(self.names | self.kinds | set(RESERVED))) or
                         "selectors: bias, norm, weights, a layer kind used in the model (linear, embedding, …), "
                         "a block or layer name, or a quoted glob like \"head.*\"")
        return None

    def _named(self, sel: str):
        """Layers inside every scope called `sel` or instantiating block `sel`, and layers called `sel`."""
        for scope in self.model.root.scopes():
            if scope is not self.model.root and (scope.name == sel or scope.block == sel):
                yield from scope.layers()
        yield from (layer for layer in self.model.root.layers() if layer.name == sel)

    def _norm_parts(self) -> list[str]:
        """Parameters of the normalization parts a composite layer declares in `info["norm_parts"]`
        (transformer_encoder: its `norm1` and `norm2`)."""
        out = []
        for layer in self.layers:
            parts = tuple(f"{part}." for part in layer.use.component.info.get("norm_parts", ()))
            if parts and layer.param_shapes is not None and NORM not in layer.use.component.flags:
                out += [f"{layer.path}.{name}" for name in layer.param_shapes if name.startswith(parts)]
        return out

    def _take(self, layers) -> tuple[list[str], list[str]]:
        """Every parameter of these layers: declared paths, or the layer whole when undeclared."""
        params: dict[str, None] = {}
        whole: dict[str, None] = {}
        for layer in layers:
            if not layer.trainable or not layer.params:
                continue
            if layer.param_shapes is None:
                whole[layer.path] = None
            else:
                params.update(dict.fromkeys(f"{layer.path}.{name}" for name in layer.param_shapes))
        return list(params), list(whole)

    def _blind(self, sel: str, span: Span) -> None:
        """`bias`, `weights` and globs need parameter names, which undeclared plugin layers lack."""
        if not self.opaque:
            return
        shown = ", ".join(f"`{layer.path}` ({layer.kind})" for layer in self.opaque[:3])
        more = f" and {len(self.opaque) - 3} more" if len(self.opaque) > 3 else ""
        plugins = sorted({layer.use.component.distribution or "its plugin" for layer in self.opaque})
        self.diags.warning("W501", f"`{sel}` cannot select parameters inside {shown}{more}: the layer does not "
                           "declare its parameter names, so none of them join this group", span,
                           f"select such a layer whole by its name or kind, or ask {', '.join(plugins)} to declare "
                           "`parameters` on the layer's Component")

    def _hint(self, sel: str) -> str:
        shown = ", ".join(self.paths[:6]) + (", …" if len(self.paths) > 6 else "")
        if sel == "norm":
            return f"the model has no normalization layer with parameters; parameter paths look like: {shown}"
        if sel == "bias":
            return f"the model has no bias parameters; parameter paths look like: {shown}"
        return f"parameter paths look like: {shown}"

"""Located name resolution and argument binding, shared by the graph and section passes."""
from __future__ import annotations

from typing import Sequence

from nnspec.syntax import nodes as n
from nnspec.registry.binding import bind
from nnspec.errors import Diagnostics, NnspecError, Span, did_you_mean
from nnspec.check.expressions import Names, evaluate
from nnspec.registry.catalog import Catalog, Component, Conflict, PluginLoadError
from nnspec.registry.types import Args, Symbol

KIND_LABEL = {"layers": "layer", "optimizers": "optimizer", "schedules": "schedule", "losses": "loss",
              "metrics": "metric", "datasets": "dataset", "augmentations": "augmentation"}


def lookup(catalog: Catalog, kind: str, name: str, span: Span, diags: Diagnostics,
           extra_known: Sequence[str] = ()) -> Component | None:
    """The component `name` of `kind`, or None after reporting why not."""
    label = KIND_LABEL[kind]
    distribution, _, short = name.rpartition("::")
    try:
        found = catalog[kind].get(short, distribution or None)
    except PluginLoadError as err:
        diags.error("E210", str(err), span, "fix or reinstall that plugin (`pip install --force-reinstall ...`)")
        return None
    except Conflict as err:
        diags.error("E211", str(err), span, err.hint + ", or uninstall one of them")
        return None
    if found is None and distribution:
        providers = catalog[kind].distributions(short)
        diags.error("E212", f"{label} `{short}` is not provided by a distribution named `{distribution}`", span,
                    ("provided by: " + ", ".join(f"{d} {v}" for d, v in providers)) if providers
                    else f"`{short}` is not installed; run `nnspec plugins {kind}`")
    elif found is None:
        known = list(catalog[kind].names()) + list(extra_known)
        diags.error("E201", f"unknown {label} `{name}` (not installed)", span,
                    did_you_mean(name, known) or f"run `nnspec plugins {kind}` to list what is installed")
    return found


def bind_args(params, args: Sequence[n.Arg], node, label: str, check, names: Names,
              diags: Diagnostics) -> Args | None:
    """Evaluate and bind call arguments, reporting each problem at the argument it concerns.

    The one located binder: layers, blocks (see check/block_calls.py), sections and components
    all bind through it and `nnspec.registry.binding.bind`."""
    positional = [a for a in args if a.name is None]
    keyword = [a for a in args if a.name is not None]
    try:
        pos_values = [evaluate(a.value, names) for a in positional]
        kw_values = [(a.name, evaluate(a.value, names)) for a in keyword]
    except NnspecError as err:
        diags.extend(err.diagnostics)
        return None
    result, errors = bind(params, pos_values, kw_values, label, check)
    for e in errors:
        if isinstance(e.where, int):
            span, value = positional[e.where].value.span, pos_values[e.where]
        elif e.keyword_index is not None:
            arg = keyword[e.keyword_index]
            span = arg.name_span if e.code in ("E301", "E303") else arg.value.span
            value = kw_values[e.keyword_index][1]
        else:
            span, value = getattr(node, "name_span", node.span), None
        if e.code == "E304" and isinstance(value, Symbol) and _wants_number(e.param):
            # a bare word where a number was expected is most likely an undefined name; it is
            # reported where the word is written (inside a const, when it came through one)
            diags.error("E202", f"`{value.name}` is not defined", value.span or span,
                        did_you_mean(value.name, names.names()) or e.hint)
        else:
            diags.error(e.code, e.message, span, e.hint)
    return result


def use_of(catalog: Catalog, kind: str, expr: n.Expr, names: Names, diags: Diagnostics):
    """A component written as a value: `adamw(lr = 1e-3)` or a bare `accuracy`."""
    from nnspec.spec.settings import Use
    if isinstance(expr, n.Call):
        name, args, span = expr.name, expr.args, expr.name_span
    elif isinstance(expr, n.Name):
        name, args, span = expr.name, (), expr.span
    else:
        diags.error("E310", f"expected a {KIND_LABEL[kind]} such as `name(...)`", expr.span)
        return None
    component = lookup(catalog, kind, name, span, diags)
    if component is None:
        return None
    bound = bind_args(component.params, args, expr, name, component.check, names, diags)
    if bound is None:
        return None
    if component.warn is not None:
        message = component.warn(bound)
        if message:
            diags.warning("W301", message, expr.span)
    return Use(component, bound, expr.span, _arg_spans(component, args))


def _arg_spans(component, args) -> dict:
    """Argument name → the span of its value, for checks that concern one argument."""
    positional = [p.name for p in component.params if not p.keyword_only]
    out, i = {}, 0
    for a in args:
        if a.name is not None:
            out[a.name] = a.value.span
        else:
            if i < len(positional):
                out[positional[i]] = a.value.span
            i += 1
    return out


def _wants_number(param) -> bool:
    """A bare word given for a numeric parameter is most likely a misspelt const or parameter."""
    from nnspec.registry.types import Number, OneOf, Tuple
    t = getattr(param, "type", None)
    while isinstance(t, Tuple):
        t = t.item
    if isinstance(t, OneOf):
        return all(isinstance(o, (Number, Tuple)) for o in t.options)
    return isinstance(t, Number)

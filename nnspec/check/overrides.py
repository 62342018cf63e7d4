"""`--set KEY=VALUE`: edit the parsed spec before checking, so overrides get the same checks.

Each override is parsed as an expression in a pseudo-file named after the flag, so an error in
`--set optimizer.lr=-1` points at `-1` inside `--set optimizer.lr=-1`.
"""
from __future__ import annotations

import dataclasses
from typing import Any

from nnspec.syntax import nodes as n
from nnspec.errors import Diagnostic, NnspecError, Span, did_you_mean
from nnspec.syntax.parser import parse
from nnspec.check.sections import SECTIONS
from nnspec.spec.settings import Override

_COMPONENT_SECTIONS = ("optimizer", "loss", "schedule", "data")


def _shift(obj: Any, file: str, delta: int) -> Any:
    """Move every span of a parsed override value onto the `--set ...` line."""
    if isinstance(obj, Span):
        return Span(file, 1, obj.column + delta, 1, obj.end_column + delta, obj.start + delta, obj.end + delta)
    if isinstance(obj, tuple):
        return tuple(_shift(x, file, delta) for x in obj)
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return dataclasses.replace(obj, **{f.name: _shift(getattr(obj, f.name), file, delta)
                                           for f in dataclasses.fields(obj)})
    return obj


def _parse_value(key: str, value: str) -> tuple[n.Expr, str, str]:
    shown = f"--set {key}={value}"
    prefix = "const __value = "
    module = parse(prefix + value, shown)
    if len(module.items) != 1 or not isinstance(module.items[0], n.Const):
        raise NnspecError(Diagnostic("error", "E801", "an override value must be a single value",
                                     Span(shown, 1, 1, 1, len(shown) + 1)))
    delta = len(f"--set {key}=") - len(prefix)
    return _shift(module.items[0].value, shown, delta), shown, shown


def apply_overrides(module: n.Module, overrides: list[str]):
    """(module with the overrides applied, model parameter arguments, diagnostics, the overrides
    as `Override`s). `model.PARAM` values are arguments of the model, bound like a call's."""
    diags: list[Diagnostic] = []
    given: list[Override] = []
    model_args: list[n.Arg] = []
    items = list(module.items)
    for raw in overrides:
        key, eq, value = raw.partition("=")
        key = key.strip()
        shown = f"--set {raw}"
        given.append(Override(key, value, shown))
        whole = Span(shown, 1, 1, 1, len(shown) + 1)
        if not eq or not key or not value.strip():
            diags.append(Diagnostic("error", "E802", "an override is KEY=VALUE", whole,
                                    "e.g. --set optimizer.lr=3e-4 --set train.epochs=5"))
            continue
        try:
            expr, _, _ = _parse_value(key, value)
        except NnspecError as err:
            for d in err.diagnostics:
                diags.append(dataclasses.replace(d, span=Span(shown, 1, 1, 1, len(shown) + 1),
                                                 message=f"cannot parse the value: {d.message}"))
            continue
        key_span = Span(shown, 1, 7, 1, 7 + len(key))
        head, _, rest = key.partition(".")
        if head == "model":
            if not rest:
                diags.append(Diagnostic("error", "E803", "write --set model.PARAM=VALUE", key_span))
            else:                              # a later --set of the same parameter wins
                model_args = [a for a in model_args if a.name != rest] + [n.Arg(rest, expr, expr.span, key_span)]
            continue
        if head in SECTIONS:
            items = _set_section(items, head, rest, expr, key_span, diags)
            continue
        consts = [i for i in items if isinstance(i, n.Const)]
        if not rest and any(c.name == head for c in consts):
            items = [dataclasses.replace(i, value=expr) if isinstance(i, n.Const) and i.name == head else i
                     for i in items]
            continue
        diags.append(Diagnostic("error", "E804", f"cannot override `{key}`", key_span,
                                did_you_mean(head, list(SECTIONS) + ["model"] + [c.name for c in consts])
                                or "keys: model.PARAM, SECTION.KEY (e.g. train.epochs), SECTION=VALUE, or a const"))
    return dataclasses.replace(module, items=tuple(items)), model_args, diags, given


def _set_section(items: list, head: str, rest: str, expr: n.Expr, span: Span, diags: list) -> list:
    index = next((i for i, it in enumerate(items) if isinstance(it, n.Setting) and it.name == head), None)
    if not rest:                               # `--set loss=mse`: replace the section's value
        new = n.Setting(head, None, (expr,), None, span, span)
        if index is None:
            return items + [new]
        return items[:index] + [dataclasses.replace(items[index], values=(expr,))] + items[index + 1:]
    section = items[index] if index is not None else n.Setting(head, None, (), None, span, span)
    if head in _COMPONENT_SECTIONS and head != "data" or (head == "data" and rest not in _DATA_KEYS):
        # an argument of the section's component: optimizer.lr, loss.label_smoothing, data.path
        if len(section.values) != 1 or not isinstance(section.values[0], (n.Call, n.Name)):
            diags.append(Diagnostic("error", "E805", f"`{head}` has no single component to set `{rest}` on", span))
            return items
        value = section.values[0]
        call = value if isinstance(value, n.Call) else n.Call(value.name, (), value.span, value.span)
        args = [a for a in call.args if a.name != rest]
        args.append(n.Arg(rest, expr, expr.span, span))
        section = dataclasses.replace(section, values=(dataclasses.replace(call, args=tuple(args)),))
    else:                                      # a key of a settings body: train.epochs, data.batch
        body = [s for s in (section.body or ()) if s.name != rest]
        body.append(n.Setting(rest, None, (expr,), None, span, span))
        section = dataclasses.replace(section, body=tuple(body))
    if index is None:
        return items + [section]
    return items[:index] + [section] + items[index + 1:]


_DATA_KEYS = ("split", "batch", "eval_batch", "normalize", "shuffle", "drop_last", "augment")

"""Bind call arguments to a component's declared parameters (positional, keyword, defaults)."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

from nnspec.errors import did_you_mean
from nnspec.registry.types import REQUIRED, ArgError, Args, Param


@dataclass(frozen=True)
class BindError:
    """What went wrong with one argument. `where` is the positional index, the keyword name,
    or None for a problem with the call as a whole (a missing argument); `keyword_index` is the
    keyword argument's place among the keywords (a repeat is told from the first by it)."""
    code: str
    message: str
    hint: str | None
    where: int | str | None
    param: Param | None = None
    keyword_index: int | None = None


def bind(params: Sequence[Param], positional: Sequence[Any], keyword: Sequence[tuple[str, Any]],
         label: str, check=None) -> tuple[Args | None, list[BindError]]:
    """Match values to `params`; check each against its type. Returns Args (None on any error)
    and the errors, so a caller can locate every one of them."""
    errors: list[BindError] = []
    values: dict[str, Any] = {}
    positional_params = [p for p in params if not p.keyword_only]
    for i, value in enumerate(positional):
        if i >= len(positional_params):
            n = len(positional_params)
            errors.append(BindError("E302", f"`{label}` takes {n} positional argument{'s' if n != 1 else ''}, "
                                    f"got {len(positional)}", _signature_hint(params, label), i))
            break
        values[positional_params[i].name] = (value, i)
    by_name = {p.name: p for p in params}
    keyword_at: dict[str, int] = {}
    for k, (name, value) in enumerate(keyword):
        if name not in by_name:
            hint = did_you_mean(name, by_name) or _signature_hint(params, label)
            errors.append(BindError("E301", f"`{label}` has no argument `{name}`", hint, name, None, k))
            continue
        if name in values:
            first = "by position" if name not in keyword_at else "earlier in this call"
            errors.append(BindError("E303", f"argument `{name}` of `{label}` given twice",
                                    f"`{name}` is already given {first}; keep one", name, by_name[name], k))
            continue
        values[name] = (value, name)
        keyword_at[name] = k
    out: dict[str, Any] = {}
    for p in params:
        if p.name in values:
            value, where = values[p.name]
            try:
                out[p.name] = p.type.check(value)
            except ArgError as err:
                what = f"`{label}`" if p.name == label else f"`{label}` argument `{p.name}`"
                errors.append(BindError("E304", f"{what}: {err.message}", err.hint_for(p.name), where, p,
                                        keyword_at.get(p.name) if isinstance(where, str) else None))
        elif p.default is REQUIRED:
            errors.append(BindError("E305", f"`{label}` is missing required argument `{p.name}`",
                                    _signature_hint(params, label), None))
        else:
            out[p.name] = p.default
    if errors:
        return None, errors
    args = Args(out)
    if check is not None:
        try:
            check(args)
        except ArgError as err:
            return None, [BindError("E306", f"`{label}`: {err.message}", err.hint, None)]
    return args, []


def _signature_hint(params: Sequence[Param], label: str) -> str:
    parts = []
    for p in params:
        part = p.name if p.required else f"{p.name} = {_show(p.default)}"
        parts.append(part)
    return f"signature: {label}(" + ", ".join(parts) + ")"


def _show(value: Any) -> str:
    if value is None:
        return "none"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return value
    if isinstance(value, tuple):
        return "[" + ", ".join(_show(v) for v in value) + "]"
    return repr(value)


def signature(params: Sequence[Param], label: str) -> str:
    return _signature_hint(params, label).removeprefix("signature: ")

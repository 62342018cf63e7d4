"""Block instantiation: binding a block's (or the model's) parameters, expanding its body in a
scope of its own, and creating a `shared` declaration's one instance at its first use.

`BlockCalls` is the part of `GraphChecker` (check/model_graph.py) that does this; parameters
bind through the same located binder as layers (`check.resolve.bind_args`), so a misspelt or
repeated argument is underlined where it is written.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

from nnspec.check.expressions import Names, evaluate
from nnspec.check.graph_env import Env, Shared, Slot, join
from nnspec.check.resolve import bind_args
from nnspec.errors import Diagnostics, NnspecError, Span
from nnspec.registry.types import REQUIRED, AnyValue, Param
from nnspec.spec import graph_ir as ir
from nnspec.syntax import nodes as n


@dataclass(frozen=True)
class DeferredDefault:
    """A block parameter's default: an expression evaluated once the earlier parameters are bound."""
    expr: n.Expr

    def __repr__(self) -> str:       # shown in signature hints
        e = self.expr
        if isinstance(e, (n.Number, n.String)):
            return repr(e.value)
        if isinstance(e, n.Bool):
            return "true" if e.value else "false"
        return e.name if isinstance(e, n.Name) else "…"


def graph_params(gdef: n.GraphDef) -> tuple[Param, ...]:
    """A block's or model's parameters as binder parameters (untyped; a repeat is dropped here and
    reported by `check_params_declared_once`)."""
    seen: set[str] = set()
    out = []
    for p in gdef.params:
        if p.name not in seen:
            seen.add(p.name)
            out.append(Param(p.name, AnyValue(), REQUIRED if p.default is None else DeferredDefault(p.default)))
    return tuple(out)


def check_params_declared_once(gdef: n.GraphDef, diags: Diagnostics) -> None:
    first: dict[str, Span] = {}
    for p in gdef.params:
        name_span = Span(p.span.file, p.span.line, p.span.column, p.span.line, p.span.column + len(p.name),
                         p.span.start, p.span.start + len(p.name))
        if p.name in first:
            diags.error("E209", f"parameter `{p.name}` of `{gdef.name}` is declared twice", name_span,
                        f"first declared at column {first[p.name].column}; give each parameter its own name")
        else:
            first[p.name] = name_span


class BlockCalls:
    """Mixin of GraphChecker: needs catalog, diags, globals, expanding, used_blocks and the
    graph walk (`_body`, `_instantiate`, `_attach`)."""

    diags: Diagnostics
    globals: Names
    expanding: list[str]
    used_blocks: set[str]

    def bind_params(self, gdef: n.GraphDef, args: Sequence[n.Arg], node, names: Names) -> Names | None:
        """The scope of a block (or model) body: its parameters bound from `args` (evaluated in
        `names`, the caller's scope); defaults are evaluated in the definition scope, in order."""
        params = graph_params(gdef)
        bound = bind_args(params, args, node, gdef.name, None, names, self.diags)
        if bound is None:
            return None
        scope = self.globals.child()
        ok = True
        for p in params:
            value = bound[p.name]
            if isinstance(value, DeferredDefault):
                try:
                    value = evaluate(value.expr, scope)
                except NnspecError as err:
                    self.diags.extend(err.diagnostics)
                    ok = False
                    continue
            scope.values[p.name] = value
        return scope if ok else None

    def _block(self, node, gdef: n.GraphDef, args, env: Env, flow: int, label: str | None) -> int:
        self.used_blocks.add(gdef.name)
        if gdef.name in self.expanding:
            cycle = " → ".join(self.expanding[self.expanding.index(gdef.name):] + [gdef.name])
            self.diags.error("E207", f"block `{gdef.name}` uses itself ({cycle})", node.span,
                             "blocks cannot be recursive; use repetition `block(...) * n`")
            return env.new_slot(None, gdef.name, node.span)
        names = self.bind_params(gdef, args, node, env.names)
        if names is None:
            return env.new_slot(None, gdef.name, node.span)
        child = label or env.child_name(gdef.name)
        in_type = env.slots[flow].type
        scope = ir.Scope("block", child, join(env.scope.path, child), node.span, in_type, block=gdef.name)
        sub = Env(names, scope)
        sub.slots[0] = Slot(in_type, env.slots[flow].origin, env.slots[flow].span)
        self.expanding.append(gdef.name)
        try:
            result = self._body(gdef.body, sub)
        finally:
            self.expanding.pop()
        return self._attach(scope, sub, result, env, flow, f"block `{gdef.name}`", node.span)

    def _use_shared(self, sh: Shared, node, env: Env, flow: int) -> int:
        sh.used = True
        in_type = env.slots[flow].type
        if sh.instance is None:
            owner_env = Env(env.names, sh.owner, slots={0: env.slots[flow]})
            owner_env.next_slot = 10**9      # slots of this throwaway env are never read
            target = sh.node
            if not isinstance(target, (n.Call, n.Ref)):
                self.diags.error("E208", "`shared` takes one layer or block", target.span)
                return env.new_slot(None, sh.name, node.span)
            before = dict(sh.owner.children)
            ops_before = len(sh.owner.ops)
            slot = self._instantiate(target, target.name, getattr(target, "args", ()), owner_env, 0, sh.name)
            del sh.owner.ops[ops_before:]          # declaring applies nothing; uses do
            sh.instance = sh.owner.children.get(sh.name)
            sh.first_input, sh.first_span = in_type, node.span
            out = owner_env.slots[slot].type
            if sh.instance is None and sh.owner.children == before:
                return env.new_slot(None, sh.name, node.span)
            sh.out = out
        elif in_type is not None and sh.first_input is not None and in_type != sh.first_input:
            self.diags.error("E415", f"shared `{sh.name}` was first applied to {sh.first_input} "
                             f"(line {sh.first_span.line}), here to {in_type}", node.span,
                             "a shared layer has one set of weights, so every use needs the same input shape")
            return env.new_slot(None, sh.name, node.span)
        slot = env.new_slot(sh.out, f"shared `{sh.name}`", node.span)
        if sh.owner is env.scope:
            env.scope.ops.append(ir.Op(sh.name, (flow,), slot))
        else:
            env.scope.ops.append(ir.Op(join(sh.owner.path, sh.name), (flow,), slot, shared=True))
        return slot

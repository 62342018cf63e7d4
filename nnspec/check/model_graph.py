"""Check pass for model graphs: resolve names, bind arguments, infer every shape, count params.

Expands blocks and repeats into an `ir.Model`. Errors are collected, not raised: a node that
fails yields an *unknown* tensor (None) and checking continues downstream, so one run reports
every mistake. Pure Python: shape and count rules come from the registry declarations.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Sequence

from nnspec.check.block_calls import BlockCalls
from nnspec.check.expressions import Names, evaluate
from nnspec.check.graph_env import Env, Shared, Slot, Tensor, TooBig, join
from nnspec.check.resolve import bind_args, lookup
from nnspec.errors import Diagnostics, NnspecError, Span, did_you_mean
from nnspec.limits import LIMITS
from nnspec.registry.binding import bind
from nnspec.registry.catalog import MULTI_INPUT, Catalog, Component, Conflict, PluginLoadError
from nnspec.registry.types import ArgError, ShapeError, Symbol, TensorType
from nnspec.spec import graph_ir as ir
from nnspec.spec.settings import Use
from nnspec.syntax import nodes as n


class GraphChecker(BlockCalls):
    def __init__(self, catalog: Catalog, diags: Diagnostics, blocks: dict[str, n.GraphDef], names: Names):
        self.catalog = catalog
        self.diags = diags
        self.blocks = blocks
        self.globals = names
        self.layer_count = 0
        self.expanding: list[str] = []
        self.used_blocks: set[str] = set()

    # --- entry ------------------------------------------------------------------------------

    def check_model(self, model: n.GraphDef, param_args: Sequence[n.Arg] = ()) -> ir.Model | None:
        """The model's IR; `param_args` set its parameters (`--set model.width=16`)."""
        names = self.bind_params(model, param_args, model, self.globals)
        if names is None:
            return None
        decls = [s for s in model.body if isinstance(s, n.InputDecl)]
        if not decls:
            self.diags.error("E401", f"model `{model.name}` has no input declaration", model.name_span,
                             "start the model with its input shape, e.g. `input [3, 32, 32]`")
            input_type = None
        else:
            input_type = self._input_type(decls[0], names)
            for extra in decls[1:]:
                self.diags.error("E402", "a model has one `input` declaration", extra.span)
        root = ir.Scope("model", model.name, "", model.span, input_type or TensorType(()))
        env = Env(names, root)
        env.slots[0] = Slot(input_type, "the model input", decls[0].span if decls else None)
        try:
            result = self._body([s for s in model.body if not isinstance(s, n.InputDecl)], env, allow_input=False)
        except TooBig:
            return None
        root.result = result
        out = env.slots[result].type
        root.output = out
        for sh in env.shared.values():
            if not sh.used:
                self.diags.warning("W202", f"shared layer `{sh.name}` is never used", sh.node.span)
        if input_type is None or out is None or self.diags.has_errors:
            return None
        return ir.Model(model.name, root, input_type, out, model.span)

    def _input_type(self, decl: n.InputDecl, names: Names) -> Tensor:
        try:
            value = evaluate(decl.shape, names)
        except NnspecError as err:
            self.diags.extend(err.diagnostics)
            return None
        if not value or not all(isinstance(d, int) and not isinstance(d, bool) and d > 0 for d in value):
            self.diags.error("E403", "input shape must be a list of positive integers", decl.shape.span,
                             "e.g. `input [3, 32, 32]` (without the batch dimension)")
            return None
        dtype = decl.dtype or "float"
        if dtype not in ("float", "long"):
            self.diags.error("E404", f"unknown input dtype `{dtype}`", decl.span,
                             "use `float` (default) or `long` (integer token ids, for an embedding)")
            return None
        return TensorType(tuple(value), dtype)

    # --- bodies -----------------------------------------------------------------------------

    def _body(self, stmts, env: Env, allow_input: bool = False) -> int:
        flow = 0
        for stmt in stmts:
            if isinstance(stmt, n.Const):
                try:
                    env.names.values[stmt.name] = evaluate(stmt.value, env.names)
                except NnspecError as err:
                    self.diags.extend(err.diagnostics)
                    env.names.failed.add(stmt.name)      # its uses then say nothing more
            elif isinstance(stmt, n.Shared):
                if stmt.name in env.shared or stmt.name in env.tensors:
                    self.diags.error("E203", f"`{stmt.name}` is already defined in this body", stmt.name_span)
                self._warn_shadow(stmt.name, stmt.name_span)
                env.shared[stmt.name] = Shared(stmt.name, stmt.node, env.scope)
            elif isinstance(stmt, n.Bind):
                if stmt.name in env.tensors:
                    self.diags.error("E203", f"tensor `{stmt.name}` is already defined in this body", stmt.name_span,
                                     "give each named tensor its own name")
                self._warn_shadow(stmt.name, stmt.name_span)
                label = stmt.name if len(stmt.chain.nodes) == 1 else None
                flow = self._chain(stmt.chain, env, flow, label)
                env.tensors[stmt.name] = flow
            elif isinstance(stmt, n.Chain):
                flow = self._chain(stmt, env, flow, None)
            elif isinstance(stmt, n.InputDecl):
                self.diags.error("E402", "`input` is only allowed at the top of a model", stmt.span)
        return flow

    def _warn_shadow(self, name: str, span: Span) -> None:
        if name in self.blocks or self._layer(name, span, quiet=True) is not None:
            self.diags.warning("W201", f"`{name}` shadows a block or layer of the same name", span)

    def _chain(self, chain: n.Chain, env: Env, flow: int, label: str | None) -> int:
        for i, node in enumerate(chain.nodes):
            if isinstance(node, n.Ref) and node.name in env.tensors and node.name not in env.shared:
                if i != 0:
                    self.diags.error("E204", f"tensor `{node.name}` can only start a chain", node.span,
                                     f"start a new line with `{node.name} -> ...`")
                flow = env.tensors[node.name]
                continue
            flow = self._node(node, env, flow, label if len(chain.nodes) == 1 else None)
        return flow

    # --- nodes ------------------------------------------------------------------------------

    def _node(self, node: n.Node, env: Env, flow: int, label: str | None) -> int:
        if isinstance(node, n.Chain):            # `(a -> b)`: a group, e.g. to repeat a chain
            name = label or env.child_name("group")
            scope, sub = self._sub("group", name, env, flow, node.span)
            return self._attach(scope, sub, self._chain(node, sub, 0, None), env, flow, "group", node.span)
        if isinstance(node, n.Repeat):
            return self._repeat(node, env, flow, label)
        if isinstance(node, n.Residual):
            return self._residual(node, env, flow, label)
        if isinstance(node, n.Parallel):
            return self._parallel(node, env, flow, label)
        name = node.name
        args = node.args if isinstance(node, n.Call) else ()
        if name in env.shared:
            if args:
                self.diags.error("E205", f"shared layer `{name}` takes no arguments where it is used", node.span,
                                 f"arguments belong on its declaration `shared {name} = ...`")
            return self._use_shared(env.shared[name], node, env, flow)
        outer = self._outer_shared(env, name)
        if outer is not None:
            return self._use_shared(outer, node, env, flow)
        return self._instantiate(node, name, args, env, flow, label)

    def _outer_shared(self, env: Env, name: str) -> Shared | None:
        return env.shared.get(name)

    def _instantiate(self, node, name: str, args, env: Env, flow: int, label: str | None,
                     owner_env: Env | None = None) -> int:
        """Create a layer or block instance as a child of env.scope and apply it to `flow`."""
        if name in self.blocks:
            return self._block(node, self.blocks[name], args, env, flow, label)
        if name in env.tensors:
            self.diags.error("E206", f"tensor `{name}` cannot be called", node.span,
                             "a named tensor can only start a chain: `name -> layer`")
            return env.new_slot(None, name, node.span)
        component = lookup(self.catalog, "layers", name, getattr(node, "name_span", node.span), self.diags,
                           extra_known=list(self.blocks) + list(env.tensors) + list(env.shared))
        if component is None:
            return env.new_slot(None, name, node.span)
        return self._layer_node(component, node, args, env, flow, label)

    def _layer_names(self) -> list[str]:
        return self.catalog["layers"].names()

    def _layer(self, name: str, span: Span, quiet: bool = False) -> Component | None:
        if quiet:
            try:
                return self.catalog["layers"].get(name)
            except (PluginLoadError, Conflict):
                return None
        return lookup(self.catalog, "layers", name, span, self.diags)

    def _layer_node(self, component: Component, node, args, env: Env, flow: int | list[int],
                    label: str | None) -> int:
        inputs = list(flow) if isinstance(flow, list) else [flow]
        positional = list(a for a in args if a.name is None)
        if MULTI_INPUT in component.flags:   # tensor names among positional args are extra inputs
            rest = []
            for a in positional:
                if isinstance(a.value, n.Name) and a.value.name in env.tensors:
                    inputs.append(env.tensors[a.value.name])
                else:
                    rest.append(a)
            positional = rest
        bound = bind_args(component.params, positional + [a for a in args if a.name is not None], node,
                          component.name, component.check, env.names, self.diags)
        types = [env.slots[i].type for i in inputs]
        lo, hi = component.inputs
        if len(types) < lo or (hi is not None and len(types) > hi):
            want = f"{lo}" if lo == hi else (f"at least {lo}" if hi is None else f"{lo} to {hi}")
            self.diags.error("E405", f"`{component.name}` takes {want} inputs, got {len(types)}", node.span,
                             "name the other inputs: `concat(skip)` merges the flow with tensor `skip`"
                             if lo > 1 else None)
            bound = None
        out: Tensor = None
        params = buffers = 0
        shapes: dict[str, tuple[int, ...]] | None = None
        if bound is not None and all(t is not None for t in types):
            if component.warn is not None:
                message = component.warn(bound)
                if message:
                    self.diags.warning("W301", message, node.span)
            try:
                if component.shape is None and component.meta_shapes:
                    from nnspec.lower.meta import infer
                    out, shapes, buffers = infer(component, bound, types)
                else:
                    out = component.shape(bound, types) if component.shape else types[0]
                    params, buffers = component.count(bound, types) if component.count else (0, 0)
                    if component.parameters is not None:
                        shapes = {name: tuple(size) for name, size in component.parameters(bound, types).items()}
                if shapes is not None:           # declared parameters: the count is their sum
                    params = sum(math.prod(size) for size in shapes.values())
            except (ShapeError, ArgError) as err:
                message = err.message if err.message.startswith(component.name) else \
                    f"`{component.name}`: {err.message}"
                hint = "; ".join(h for h in (err.hint, self._origin_hint(env, inputs)) if h)
                self.diags.error("E410", message, node.span, hint or None)
                out = None
        self._count_layer(node)
        child = label or env.child_name(component.name)
        if child in env.scope.children:
            child = env.child_name(child)
        path = join(env.scope.path, child)
        if bound is not None and out is not None:
            layer = ir.Layer(child, path, Use(component, bound, node.span), tuple(types), out, params, buffers,
                             param_shapes=shapes)
            env.scope.children[child] = layer
        slot = env.new_slot(out, f"`{component.name}`", node.span)
        env.scope.ops.append(ir.Op(child, tuple(inputs), slot))
        return slot

    def _origin_hint(self, env: Env, inputs: list[int]) -> str | None:
        parts = []
        for i in inputs:
            s = env.slots[i]
            where = f" (line {s.span.line})" if s.span else ""
            parts.append(f"the input {s.type} comes from {s.origin}{where}")
        return "; ".join(parts) or None

    def _count_layer(self, node) -> None:
        self.layer_count += 1
        if self.layer_count > LIMITS.max_layers:
            self.diags.error("E603", f"the model expands to more than {LIMITS.max_layers:,} layers", node.span,
                             "check repeat counts (`block(...) * n`) and blocks that repeat blocks")
            raise TooBig

    # --- blocks, repeats, residuals, parallels -----------------------------------------------

    def _attach(self, scope: ir.Scope, sub: Env, result: int, env: Env, flow: int, origin: str, span) -> int:
        scope.result = result
        scope.output = sub.slots[result].type
        env.scope.children[scope.name] = scope
        slot = env.new_slot(scope.output, origin, span)
        env.scope.ops.append(ir.Op(scope.name, (flow,), slot))
        return slot

    def _sub(self, kind: str, name: str, env: Env, flow: int, span: Span) -> tuple[ir.Scope, Env]:
        """A nested scope that sees the same names and shared layers but has its own tensors."""
        in_type = env.slots[flow].type
        scope = ir.Scope(kind, name, join(env.scope.path, name), span, in_type)
        sub = Env(env.names.child(), scope, shared=dict(env.shared))
        sub.slots[0] = Slot(in_type, env.slots[flow].origin, env.slots[flow].span)
        return scope, sub

    def _repeat(self, node: n.Repeat, env: Env, flow: int, label: str | None) -> int:
        try:
            count = evaluate(node.count, env.names)
        except NnspecError as err:
            self.diags.extend(err.diagnostics)
            return env.new_slot(None, "repeat", node.span)
        if isinstance(count, Symbol):
            self.diags.error("E202", f"`{count.name}` is not defined", node.count.span,
                             did_you_mean(count.name, env.names.names()))
            return env.new_slot(None, "repeat", node.span)
        if isinstance(count, bool) or not isinstance(count, int) or count < 0:
            self.diags.error("E311", "a repeat count must be an integer ≥ 0", node.count.span,
                             f"got {count!r}")
            return env.new_slot(None, "repeat", node.span)
        if count == 0:                           # `block(...) * (n - 1)` with n = 1: nothing
            return flow
        base = getattr(node.node, "name", "group")
        name = label or env.child_name(base)
        scope, sub = self._sub("repeat", name, env, flow, node.span)
        inner = 0
        before = self.layer_count
        for i in range(count):
            inner = self._node(node.node, sub, inner, str(i))
            if i == 0:
                per_copy = self.layer_count - before
                if per_copy * count + before > LIMITS.max_layers:
                    self._count_layer_overflow(node, per_copy * count + before)
        return self._attach(scope, sub, inner, env, flow, f"`{base}` × {count}", node.span)

    def _count_layer_overflow(self, node, total: int) -> None:
        self.diags.error("E603", f"the model expands to {total:,} layers (limit {LIMITS.max_layers:,})", node.span,
                         "check repeat counts (`block(...) * n`) and blocks that repeat blocks")
        raise TooBig

    def _residual(self, node: n.Residual, env: Env, flow: int, label: str | None) -> int:
        name = label or env.child_name("residual")
        scope, sub = self._sub("residual", name, env, flow, node.span)
        body_scope, body_env = self._sub("body", "body", sub, 0, node.span)
        body_out = self._attach(body_scope, body_env, self._body(node.body, body_env), sub, 0, "the residual body",
                                node.span)
        x, y = sub.slots[0].type, sub.slots[body_out].type
        skip = 0
        if x is not None and y is not None and x != y:
            if node.no_shortcut:                 # `shortcut none`: plain body where shapes change
                return self._attach(scope, sub, body_out, env, flow, "residual", node.span)
            if node.shortcut is None:
                self.diags.error("E411", f"residual body changes the shape {x} → {y}, so the input cannot be added",
                                 node.span, "add a projection: `residual { ... } shortcut { conv2d(...) -> ... }`, "
                                 "or `shortcut none` to drop the skip connection there")
                y = None
            else:
                sc_scope, sc_env = self._sub("body", "shortcut", sub, 0, node.span)
                skip = self._attach(sc_scope, sc_env, self._body(node.shortcut, sc_env), sub, 0, "the shortcut",
                                    node.span)
                z = sub.slots[skip].type
                if z is not None and z != y:
                    self.diags.error("E412", f"shortcut gives {z} but the residual body gives {y}", node.span,
                                     "the shortcut must produce the body's output shape")
                    y = None
        result = self._merge_op("add", node, sub, [body_out, skip], y)
        return self._attach(scope, sub, result, env, flow, "residual", node.span)

    def _merge_op(self, merge: str, node, env: Env, inputs: list[int], out: Tensor) -> int:
        component = self._layer(merge, node.span)
        if component is None:
            return env.new_slot(None, merge, node.span)
        types = [env.slots[i].type for i in inputs]
        if out is not None and all(t is not None for t in types):
            args, _ = bind(component.params, [], [], merge)
            env.scope.children[merge] = ir.Layer(merge, join(env.scope.path, merge), Use(component, args, node.span),
                                                 tuple(types), out)
        slot = env.new_slot(out, merge, node.span)
        env.scope.ops.append(ir.Op(merge, tuple(inputs), slot))
        return slot

    def _parallel(self, node: n.Parallel, env: Env, flow: int, label: str | None) -> int:
        name = label or env.child_name("parallel")
        scope, sub = self._sub("parallel", name, env, flow, node.span)
        outs = []
        for i, branch in enumerate(node.branches):
            if not isinstance(branch, n.Chain):
                self.diags.error("E413", "each line of a `parallel` block is one branch: a chain of layers",
                                 branch.span, "use a block for a branch that needs its own names")
                continue
            b_scope, b_env = self._sub("body", f"branch_{i}", sub, 0, branch.span)
            outs.append(self._attach(b_scope, b_env, self._chain(branch, b_env, 0, None), sub, 0,
                                     f"branch {i + 1}", branch.span))
        merge = node.merge
        component = self._layer(merge.name, merge.span)
        if component is None or MULTI_INPUT not in component.flags:
            if component is not None:
                self.diags.error("E414", f"`{merge.name}` does not merge tensors", merge.span,
                                 "use add, concat or multiply")
            result = sub.new_slot(None, "parallel", node.span)
        else:
            args = merge.args if isinstance(merge, n.Call) else ()
            result = self._layer_node(component, merge, args, sub, outs, "merge")
        return self._attach(scope, sub, result, env, flow, "parallel", node.span)

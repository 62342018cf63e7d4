"""IR scopes → torch modules. Each scope becomes one module named after its role, so
`print(model)` mirrors the spec: blocks, residuals, parallels and repeats nest as written."""
from __future__ import annotations

from torch import nn

from nnspec.spec import graph_ir as ir


class SequentialScope(nn.Sequential):
    """A scope whose layers run one after another."""

    def __init__(self, role: str, label: str, modules: list[tuple[str, nn.Module]]):
        super().__init__()
        for name, module in modules:
            self.add_module(name, module)
        self.role, self.label = role, label

    def extra_repr(self) -> str:
        return f"{self.role} {self.label}".strip()


class GraphScope(nn.Module):
    """A scope with branches, named tensors or shared layers: runs its ops over tensor slots."""

    def __init__(self, role: str, label: str, owned: dict[str, nn.Module],
                 plan: list[tuple[nn.Module, tuple[int, ...], int]], result: int, slots: int):
        super().__init__()
        for name, module in owned.items():
            self.add_module(name, module)
        self.role, self.label = role, label
        # Shared layers owned elsewhere appear in the plan without being registered here, so
        # their parameters exist once in parameters() and state_dict().
        self._plan = plan
        self._result = result
        self._slots = slots

    def forward(self, x):
        slots = [None] * self._slots
        slots[0] = x
        for fn, inputs, out in self._plan:
            slots[out] = fn(*[slots[i] for i in inputs])
        return slots[self._result]

    def extra_repr(self) -> str:
        return f"{self.role} {self.label}".strip()


def build_model(model: ir.Model) -> nn.Module:
    """Instantiate every layer (each registry impl builds its own module) and wire the scopes."""
    layers: dict[str, nn.Module] = {}
    for layer in model.root.layers():
        layers[layer.path] = layer.use.component.build(layer.use.args, list(layer.inputs))
    return _scope(model.root, layers)


def _scope(scope: ir.Scope, layers: dict[str, nn.Module]) -> nn.Module:
    owned: dict[str, nn.Module] = {}
    for name, child in scope.children.items():
        owned[name] = layers[child.path] if isinstance(child, ir.Layer) else _scope(child, layers)
    label = scope.block or (scope.name if scope.kind == "model" else "")
    names = [op.child for op in scope.ops]
    if scope.is_chain and len(set(names)) == len(names):
        return SequentialScope(scope.kind, label, [(name, owned[name]) for name in names])
    dense = {0: 0}
    for op in scope.ops:
        dense.setdefault(op.output, len(dense))
    plan = [(layers[op.child] if op.shared else owned[op.child], tuple(dense[i] for i in op.inputs), dense[op.output])
            for op in scope.ops]
    return GraphScope(scope.kind, label, owned, plan, dense[scope.result], len(dense))

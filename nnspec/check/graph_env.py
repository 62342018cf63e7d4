"""What a graph body sees while it is checked: its tensors (slots), shared layers and names."""
from __future__ import annotations

from dataclasses import dataclass, field

from nnspec.check.expressions import Names
from nnspec.errors import Span
from nnspec.registry.types import TensorType
from nnspec.spec import graph_ir as ir
from nnspec.syntax import nodes as n

Tensor = TensorType | None          # None: unknown because of an earlier error


class TooBig(Exception):
    """The expanded model passed LIMITS.max_layers; unwinds the whole expansion."""


@dataclass
class Slot:
    type: Tensor
    origin: str                     # what produced it, for error hints
    span: Span | None


@dataclass
class Shared:
    """`shared name = layer(...)`: one instance, created at its first use, applied at every use."""
    name: str
    node: n.Node
    owner: ir.Scope
    instance: ir.Layer | ir.Scope | None = None
    first_input: Tensor = None
    first_span: Span | None = None
    out: Tensor = None
    used: bool = False


@dataclass
class Env:
    """What a graph body sees: names for expressions, its tensors, shared layers in scope."""
    names: Names
    scope: ir.Scope
    slots: dict[int, Slot] = field(default_factory=dict)
    tensors: dict[str, int] = field(default_factory=dict)
    shared: dict[str, Shared] = field(default_factory=dict)
    next_slot: int = 1
    counts: dict[str, int] = field(default_factory=dict)

    def new_slot(self, type_: Tensor, origin: str, span: Span | None) -> int:
        slot = self.next_slot
        self.next_slot += 1
        self.slots[slot] = Slot(type_, origin, span)
        return slot

    def child_name(self, base: str) -> str:
        """`conv2d_0`, `conv2d_1`, ...: unique, stable names for unnamed children."""
        i = self.counts.get(base, 0)
        while f"{base}_{i}" in self.scope.children:
            i += 1
        self.counts[base] = i + 1
        return f"{base}_{i}"


def join(path: str, name: str) -> str:
    return f"{path}.{name}" if path else name

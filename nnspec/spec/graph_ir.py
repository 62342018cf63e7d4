"""The model graph after checking: a tree of scopes (model, block instances, residuals,
parallels, repeats) whose leaves are registry layers, each op wiring tensor slots.

Lowering turns every Scope into one nn.Module (nn.Sequential when its ops form a plain chain),
so `print(model)` mirrors the spec. Everything here is pure data with inferred shapes and
parameter counts; nothing imports torch.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Iterator, Mapping, Union

from nnspec.spec.settings import Use
from nnspec.errors import Span
from nnspec.registry.types import TensorType


@dataclass
class Layer:
    """One instance of a registry layer."""
    name: str                       # child name inside its scope
    path: str                       # dotted path from the model root, e.g. "stage1.0.conv2d_0"
    use: Use
    inputs: tuple[TensorType, ...]
    output: TensorType
    params: int = 0                 # elements of nn.Parameters
    buffers: int = 0                # elements of buffers (running stats, ...)
    trainable: bool = True
    # {name: shape} of the module's named_parameters(), from the layer's declaration (or its meta
    # build); None when a plugin layer does not declare them (its parameters are known only whole)
    param_shapes: Mapping[str, tuple[int, ...]] | None = None

    @property
    def kind(self) -> str:
        return self.use.component.name

    @property
    def span(self) -> Span:
        return self.use.span


@dataclass(frozen=True)
class Op:
    """Apply child `child` to slots `inputs`, writing slot `output`. Slot 0 is the scope's input.
    `shared` marks a reference to a layer owned by an enclosing scope (weight sharing); then
    `child` is that layer's path from the model root."""
    child: str
    inputs: tuple[int, ...]
    output: int
    shared: bool = False


@dataclass
class Scope:
    kind: str                       # "model" | "block" | "residual" | "parallel" | "repeat" | "body"
    name: str
    path: str
    span: Span
    input: TensorType
    output: TensorType = None       # type: ignore[assignment]
    children: dict[str, Union["Scope", Layer]] = field(default_factory=dict)
    ops: list[Op] = field(default_factory=list)
    result: int = 0                 # slot holding the scope's output
    block: str | None = None        # the block's name, for kind "block"

    @property
    def is_chain(self) -> bool:
        """True when ops are a plain sequence (each takes the previous output, no sharing)."""
        prev = 0
        for op in self.ops:
            if op.shared or op.inputs != (prev,):
                return False
            prev = op.output
        return prev == self.result

    def layers(self) -> Iterator[Layer]:
        """Every layer owned by this scope, depth first, in definition order."""
        for child in self.children.values():
            if isinstance(child, Layer):
                yield child
            else:
                yield from child.layers()

    def scopes(self) -> Iterator["Scope"]:
        yield self
        for child in self.children.values():
            if isinstance(child, Scope):
                yield from child.scopes()


@dataclass
class Model:
    name: str
    root: Scope
    input: TensorType
    output: TensorType
    span: Span

    @property
    def params(self) -> int:
        return sum(l.params for l in self.root.layers())

    @property
    def trainable_params(self) -> int:
        return sum(l.params for l in self.root.layers() if l.trainable)

    @property
    def buffers(self) -> int:
        return sum(l.buffers for l in self.root.layers())

    def summary(self) -> dict:
        """The `nnspec summary --json` document."""
        return {
            "name": self.name,
            "input_shape": list(self.input.shape),
            "output_shape": list(self.output.shape),
            "params": self.params,
            "trainable_params": self.trainable_params,
            "buffers": self.buffers,
            "layers": [{"name": l.path, "kind": l.kind, "output_shape": list(l.output.shape),
                        "params": l.params} for l in self.root.layers()],
        }

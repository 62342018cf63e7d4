"""Shape inference by running a layer on torch's meta device: the opt-in for plugin layers
that declare no pure-Python shape rule (`Component(meta_shapes=True)`). Slower than a rule and it
imports torch, but allocates no memory. The module built there also gives the layer's parameter
names and shapes, so such a layer's parameters are as well known as a declared layer's."""
from __future__ import annotations

from nnspec.registry.types import ShapeError, TensorType


def infer(component, args, inputs: list[TensorType]) -> tuple[TensorType, dict[str, tuple[int, ...]], int]:
    """(output type, {parameter name: shape}, buffer elements) of the layer on these inputs."""
    import torch

    try:
        with torch.device("meta"):
            module = component.load()(args, list(inputs))
            xs = [torch.empty((2, *t.shape), dtype=torch.long if t.dtype == "long" else torch.float32)
                  for t in inputs]
            out = module(*xs)
    except Exception as err:  # a plugin's module rejecting its input is a shape error for the user
        raise ShapeError(f"{component.name} cannot take input {', '.join(map(str, inputs))}: "
                         f"{type(err).__name__}: {err}") from None
    if not isinstance(out, torch.Tensor) or out.dim() < 1:
        raise ShapeError(f"{component.name} must return one tensor with a batch dimension")
    dtype = "long" if not out.dtype.is_floating_point else "float"
    shapes = {name: tuple(p.shape) for name, p in module.named_parameters()}
    buffers = sum(b.numel() for b in module.buffers())
    return TensorType(tuple(out.shape[1:]), dtype), shapes, buffers

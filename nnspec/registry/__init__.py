"""The plugin API: one registry mechanism for every kind of component (catalog.py), the argument
and tensor types declarations are written in (types.py), and argument binding (binding.py).

Plugin authors import from here (or from the older `nnspec.types` and `nnspec.binding`, which
stay as aliases of `nnspec.registry.types` and `nnspec.registry.binding`)."""
from nnspec.registry.binding import BindError, bind, signature
from nnspec.registry.catalog import (
    BINARY, CLASSIFICATION, CREATE_GRAPH, FULL_BATCH, KINDS, MULTI_INPUT, NEEDS_CLOSURE, NEEDS_METRIC,
    NORM, PER_EPOCH, Catalog, Component, Reported, Conflict, PluginLoadError, Registry)
from nnspec.registry.types import (
    AnyValue, ArgError, Args, Bool, Choice, Float, Int, Number, OneOf, Optional, Param, ShapeError,
    Str, TensorType, Tuple)

__all__ = [
    "AnyValue", "ArgError", "Args", "BINARY", "BindError", "Bool", "CLASSIFICATION", "CREATE_GRAPH", "Catalog",
    "Choice", "Component", "Conflict", "FULL_BATCH", "Float", "Int", "KINDS", "MULTI_INPUT",
    "NEEDS_CLOSURE", "NEEDS_METRIC", "NORM", "Number", "OneOf", "Optional", "PER_EPOCH", "Param",
    "PluginLoadError", "Registry", "Reported", "ShapeError", "Str", "TensorType", "Tuple", "bind", "signature"]

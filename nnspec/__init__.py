"""nnspec: a declarative training language for PyTorch.

`import nnspec` stays light (no torch): `nnspec.load`, `nnspec.build` and `nnspec.train` are
imported on first use.
"""
from __future__ import annotations

__version__ = "0.1.0"
__all__ = ["load", "build", "train", "NnspecError"]


def __getattr__(name: str):
    if name in ("load", "build", "train"):
        from nnspec import api
        return getattr(api, name)
    if name == "NnspecError":
        from nnspec.errors import NnspecError
        return NnspecError
    raise AttributeError(f"module 'nnspec' has no attribute {name!r}")


def __dir__():
    return sorted(list(globals()) + __all__)

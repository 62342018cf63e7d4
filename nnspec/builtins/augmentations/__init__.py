"""Built-in augmentations: declarations (declare.py, pure Python) beside their implementation."""
from nnspec.builtins.augmentations.declare import COMPONENTS

__all__ = ["COMPONENTS"]

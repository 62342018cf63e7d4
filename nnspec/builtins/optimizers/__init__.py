"""Built-in optimizers: declarations (declare.py, pure Python) beside their implementation."""
from nnspec.builtins.optimizers.declare import COMPONENTS

__all__ = ["COMPONENTS"]

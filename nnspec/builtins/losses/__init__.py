"""Built-in losses: declarations (declare.py, pure Python) beside their implementation."""
from nnspec.builtins.losses.declare import COMPONENTS

__all__ = ["COMPONENTS"]

"""Built-in metrics: declarations (declare.py, pure Python) beside their implementation."""
from nnspec.builtins.metrics.declare import COMPONENTS

__all__ = ["COMPONENTS"]

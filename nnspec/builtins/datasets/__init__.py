"""Built-in datasets: declarations (declare.py, pure Python) beside their implementation."""
from nnspec.builtins.datasets.declare import COMPONENTS

__all__ = ["COMPONENTS"]

"""Built-in schedules: declarations (declare.py, pure Python) beside their implementation."""
from nnspec.builtins.schedules.declare import COMPONENTS

__all__ = ["COMPONENTS"]

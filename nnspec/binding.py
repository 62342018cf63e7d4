"""Alias of `nnspec.registry.binding`, kept so plugins written against `from nnspec.binding import
bind` keep working (the module object is the same)."""
import sys

from nnspec.registry import binding as _binding

sys.modules[__name__] = _binding

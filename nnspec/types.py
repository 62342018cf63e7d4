"""Alias of `nnspec.registry.types`, kept so plugins written against `from nnspec.types import ...`
keep working (the module object is the same, so classes compare identical)."""
import sys

from nnspec.registry import types as _types

sys.modules[__name__] = _types

"""Bounds that keep hostile or runaway specs from hanging or exhausting memory."""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Limits:
    max_file_bytes: int = 1_000_000      # a spec is a short text
    max_depth: int = 100                 # nesting of expressions, graphs and settings
    max_layers: int = 50_000             # layers after expanding blocks and repeats
    max_imports: int = 256               # files reachable through `import`
    max_int: int = 2**53                 # largest integer an argument may hold
    max_list: int = 10_000               # items in one list value


LIMITS = Limits()

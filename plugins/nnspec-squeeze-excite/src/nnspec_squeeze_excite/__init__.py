"""nnspec-squeeze-excite: a squeeze-and-excitation layer for nnspec.

`nnspec_squeeze_excite.declare` holds the declaration with pure-Python shape and parameter-count
rules (read by `nnspec validate`, no torch); `nnspec_squeeze_excite.layer` the torch module.
"""

__version__ = "0.1.0"

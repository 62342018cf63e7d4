"""nnspec-lion: the Lion optimizer for nnspec.

`nnspec_lion.declare` holds the declaration nnspec reads when it validates a spec (no torch);
`nnspec_lion.optim` holds the torch implementation, imported only when training starts.
Keep this file free of imports so that importing the declaration stays cheap.
"""

__version__ = "0.1.0"

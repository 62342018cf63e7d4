"""nnspec-adahessian: the AdaHessian optimizer for nnspec.

`nnspec_adahessian.declare` is the declaration `nnspec validate` reads (no torch);
`nnspec_adahessian.optim` is the torch implementation, imported only when training starts.
"""

__version__ = "0.1.0"

"""Built-in layer declarations: parameters and pure-Python shape and parameter-count rules.

Never import torch here (or from the modules below): `nnspec validate` reads these.
Implementations live in torch_impl.py beside them and are named by "module:attr" strings.

Conventions every rule follows: shapes exclude the batch dim; dims in arguments index the
non-batch dims (0-based, negatives from the end); sequences are [seq, features]; conv-style
inputs are channel-first ([C, L], [C, H, W]). `count` returns (parameter elements, buffer
elements), e.g. batchnorm's running mean/var plus its 1-element batch counter.
"""
from __future__ import annotations

from nnspec.builtins.layers import declare_conv, declare_dense, declare_seq, declare_shape

COMPONENTS = [*declare_dense.COMPONENTS, *declare_conv.COMPONENTS, *declare_seq.COMPONENTS,
              *declare_shape.COMPONENTS]

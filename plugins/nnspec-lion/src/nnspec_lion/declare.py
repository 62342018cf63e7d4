"""The declaration of `lion` that `nnspec validate` reads. Never import torch here.

Each `Param` below becomes a checked argument: its type and range produce the located errors a
user sees for `lion(lr = -1)` (E304), its name the did-you-mean for `lion(betaz = ...)` (E301),
and its `doc` the generated documentation.
"""
from __future__ import annotations

from nnspec.registry import Component
from nnspec.types import Float, Param, Tuple

_BETA = Float(0, 1, max_open=True)          # 0 ≤ beta < 1


def _warn(args) -> str | None:
    """Lion's steps have size lr in every coordinate, so AdamW-sized learning rates are too big."""
    if args.lr > 3e-3:
        return (f"lion(lr = {args.lr:g}) is large: Lion's update is lr·sign(...) in every coordinate, "
                f"so it usually needs an lr 3–10× smaller than AdamW's (e.g. 1e-4 to 3e-4)")
    return None


LION = Component(
    "lion", "optimizers",
    params=(
        Param("lr", Float(min=0, min_open=True), 1e-4, doc="learning rate: the size of every coordinate's step"),
        Param("betas", Tuple(_BETA, 2, broadcast=False), (0.9, 0.99),
              doc="[b1, b2]: b1 mixes momentum and gradient for the update's sign, "
                  "b2 is the momentum's decay; each in [0, 1)"),
        Param("weight_decay", Float(min=0), 0.0,
              doc="decoupled weight decay: parameters shrink by lr·weight_decay each step"),
    ),
    summary="Lion (Chen et al. 2023): sign of interpolated momentum; one state tensor per parameter.",
    impl="nnspec_lion.optim:lion",
    warn=_warn,
    info={"state_slots": 1},
)

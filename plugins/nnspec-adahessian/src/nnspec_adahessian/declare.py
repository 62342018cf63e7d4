"""The declaration of `adahessian` that `nnspec validate` reads. Never import torch here.

The CREATE_GRAPH flag tells the nnspec trainer to call `loss.backward(create_graph=True)`, so
the gradients this optimizer receives can be differentiated once more (Hessian-vector products).
"""
from __future__ import annotations

from nnspec.registry import CREATE_GRAPH, Component
from nnspec.types import Bool, Float, Param, Tuple

_BETA = Float(0, 1, max_open=True)          # 0 ≤ beta < 1

ADAHESSIAN = Component(
    "adahessian", "optimizers",
    params=(
        Param("lr", Float(min=0, min_open=True), 0.15, doc="learning rate"),
        Param("betas", Tuple(_BETA, 2, broadcast=False), (0.9, 0.999),
              doc="[b1, b2]: decay rates of the gradient average and of the squared Hessian-diagonal "
                  "average, each in [0, 1)"),
        Param("eps", Float(min=0, min_open=True), 1e-4, doc="added to the denominator for numerical stability"),
        Param("weight_decay", Float(min=0), 0.0,
              doc="decoupled weight decay: parameters shrink by lr·weight_decay each step"),
        Param("hessian_power", Float(0, 1), 1.0,
              doc="k in the denominator D^k: 1 is a Newton-like step, 0.5 is closer to Adam; 0 ≤ k ≤ 1"),
        Param("spatial_average", Bool(), True,
              doc="average the Hessian diagonal over each convolution kernel's spatial positions"),
    ),
    summary="AdaHessian (Yao et al. 2021): Adam-like steps scaled by a Hutchinson estimate of the Hessian "
            "diagonal; needs second derivatives.",
    impl="nnspec_adahessian.optim:adahessian",
    flags=frozenset({CREATE_GRAPH}),
    info={"state_slots": 2},
)

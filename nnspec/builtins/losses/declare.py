"""Built-in loss declarations. No torch here: `nnspec validate` reads this module.

Implementations (nnspec/runtime/losses.py): `factory(args) -> nn.Module` whose
`forward(output, target)` returns the mean loss as a scalar. Losses flagged CLASSIFICATION take
class indices as targets (the data loader keeps labels int64 and checks their range).
"""
from __future__ import annotations

from nnspec.builtins.argtypes import NonNegativeFloat, Optional
from nnspec.registry.catalog import BINARY, CLASSIFICATION, Component
from nnspec.registry.types import Float, OneOf, Param, PositiveFloat, Probability, Tuple

IMPL = "nnspec.builtins.losses.torch_impl:"

_WEIGHT = Param("weight", Optional(Tuple(Float(min=0, min_open=True))), None,
                doc="a positive weight per class (none: all 1)")
_CLASSES = frozenset({CLASSIFICATION})
_PER_CLASS = {"per_class_args": ("weight",)}      # a list with one entry per class (the model's outputs)

cross_entropy = Component(
    "cross_entropy", "losses",
    params=(Param("label_smoothing", Probability, 0.0, doc="mix this much of a uniform distribution into the "
                  "targets, in [0, 1)"), _WEIGHT),
    summary="Softmax cross-entropy of logits [..., classes] against class indices [...].",
    impl=IMPL + "cross_entropy", flags=_CLASSES, info=_PER_CLASS)

nll = Component(
    "nll", "losses", params=(_WEIGHT,),
    summary="Negative log-likelihood of log-probabilities [..., classes] against class indices [...].",
    impl=IMPL + "nll", flags=_CLASSES, info=_PER_CLASS)

bce_with_logits = Component(
    "bce_with_logits", "losses",
    params=(Param("pos_weight", Optional(OneOf(PositiveFloat, Tuple(PositiveFloat))), None,
                  doc="weight of positive examples, one number or one per output (none: 1)"),),
    summary="Binary cross-entropy of logits against 0/1 (or soft) targets of the same shape.",
    impl=IMPL + "bce_with_logits", flags=frozenset({BINARY}),
    info={"per_output_args": ("pos_weight",)})      # one number, or a list with one entry per output

mse = Component("mse", "losses", summary="Mean squared error.", impl=IMPL + "mse")

l1 = Component("l1", "losses", summary="Mean absolute error.", impl=IMPL + "l1")

huber = Component(
    "huber", "losses",
    params=(Param("delta", PositiveFloat, 1.0, doc="where the loss turns from quadratic to linear"),),
    summary="Huber loss: squared error for small errors, linear beyond delta.", impl=IMPL + "huber")

smooth_l1 = Component(
    "smooth_l1", "losses",
    params=(Param("beta", NonNegativeFloat, 1.0, doc="where the loss turns from quadratic to linear (0: plain l1)"),),
    summary="Smooth L1: huber(delta = beta) divided by beta.", impl=IMPL + "smooth_l1")

COMPONENTS = [cross_entropy, nll, bce_with_logits, mse, l1, huber, smooth_l1]

"""Built-in metric declarations. No torch here: `nnspec validate` reads this module.

Implementations (nnspec/runtime/metrics.py): `factory(args, *, num_classes) -> Metric` with
`reset()`, `update(output, target)` (stays on the device: no host sync) and `compute()` (one
sync) returning a dict with exactly the keys the declaration `reports` (top_k: "top{k}_accuracy"):
the trainer writes those keys, and `monitor`/`early_stop` are checked against them.
Classification metrics take logits [..., classes] (or one logit [..., 1] for binary
problems, thresholded at 0) and class indices [...].
"""
from __future__ import annotations

from nnspec.registry.catalog import CLASSIFICATION, Component, Reported
from nnspec.registry.types import Choice, Param, PositiveInt

IMPL = "nnspec.builtins.metrics.torch_impl:"
_CLASSES = frozenset({CLASSIFICATION})


def _averaged(name: str):
    """precision/recall/f1: one macro number, or a per-class list plus its macro average."""
    def reports(args) -> tuple[Reported, ...]:
        if args.average == "per_class":
            return Reported(name, None), Reported(f"{name}_macro", "max")
        return (Reported(name, "max"),)
    return reports


_AVERAGE = Param("average", Choice("macro", "per_class"), "macro",
                 doc="mean over the classes that occur in targets or predictions (macro), or a list per class")

accuracy = Component("accuracy", "metrics", summary="Fraction of predictions (argmax) equal to the label.",
                     impl=IMPL + "accuracy", flags=_CLASSES, reports=(Reported("accuracy", "max"),))

top_k = Component(
    "top_k", "metrics", params=(Param("k", PositiveInt, 5, doc="how many of the highest scores may hold the label"),),
    summary='Fraction of labels among the k highest scores (reported as "top{k}_accuracy").',
    impl=IMPL + "top_k", flags=_CLASSES, reports=lambda args: (Reported(f"top{args.k}_accuracy", "max"),),
    info={"class_count_args": ("k",)})      # k ≤ the model's classes

# A confusion-matrix metric keeps classes × classes int64 counts: `info["state_bytes"](classes)`, which
# the memory check adds (100,000 classes would be an 80 GB matrix).
_MATRIX = {"state_bytes": lambda classes: 8 * classes * classes}

precision = Component("precision", "metrics", params=(_AVERAGE,),
                      summary="Of the examples predicted as a class, the fraction that belong to it.",
                      impl=IMPL + "precision", flags=_CLASSES, reports=_averaged("precision"),
                      info=_MATRIX)

recall = Component("recall", "metrics", params=(_AVERAGE,),
                   summary="Of the examples of a class, the fraction predicted as it.",
                   impl=IMPL + "recall", flags=_CLASSES, reports=_averaged("recall"), info=_MATRIX)

f1 = Component("f1", "metrics", params=(_AVERAGE,),
               summary="Harmonic mean of precision and recall, per class.", impl=IMPL + "f1", flags=_CLASSES,
               reports=_averaged("f1"), info=_MATRIX)

confusion_matrix = Component(
    "confusion_matrix", "metrics",
    summary="Counts of (label, prediction) pairs: rows are labels, columns predictions.",
    impl=IMPL + "confusion_matrix", flags=_CLASSES, reports=(Reported("confusion_matrix", None),), info=_MATRIX)

mse = Component("mse", "metrics", summary="Mean squared error (also reports rmse).", impl=IMPL + "mse",
                reports=(Reported("mse", "min"), Reported("rmse", "min")))

mae = Component("mae", "metrics", summary="Mean absolute error.", impl=IMPL + "mae", reports=(Reported("mae", "min"),))

r2 = Component("r2", "metrics", summary="Coefficient of determination, averaged over outputs.", impl=IMPL + "r2",
               reports=(Reported("r2", "max"),))

COMPONENTS = [accuracy, top_k, precision, recall, f1, confusion_matrix, mse, mae, r2]

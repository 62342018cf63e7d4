"""The data pass: what the `data` section names, checked against the model and the loss.

Opens the data cheaply through the dataset's `info["describe"]` rule (headers, archive listings,
a CSV's first row and line count; never whole files, never torch) and applies the rules that
training applies to the loaded arrays (nnspec/builtins/datasets/describe.py), so a spec whose
data file is present and validates does not fail on the same rule when training loads it.
Augmentations are checked against the model input whether or not data is opened.
Every problem is E903 (as in training), located at the dataset (or the augmentation).
"""
from __future__ import annotations

from typing import Mapping

from nnspec.builtins.augmentations.declare import check_augment
from nnspec.builtins.datasets.describe import (POOL, DataShape, check_label_range, check_sample_shape,
                                               check_target_width, check_train_batches, split_counts, targets_of)
from nnspec.errors import DataError, Diagnostics
from nnspec.spec.settings import DataConfig


def check_data(data: DataConfig, model, loss, metrics, base_dir: str, diags: Diagnostics, *,
               open_data: bool = True) -> Mapping[str, DataShape] | None:
    """Report every data problem knowable without loading the data into `diags`; return what the
    dataset's parts are known to hold (None when the data was not opened or could not be)."""
    if model is not None:
        _report(diags, data.span, check_augment, data.augment, model.input)
    describe = data.dataset.component.info.get("describe")
    if not open_data or describe is None:
        return None
    try:
        parts = describe(data.dataset.args, base_dir)
    except DataError as err:
        diags.error("E903", err.message, err.span or data.dataset.span, err.hint)
        return None
    except OSError as err:
        diags.error("E903", f"dataset `{data.dataset.name}` could not be read: {err}", data.dataset.span)
        return None
    if model is not None:
        _report(diags, data.dataset.span, _against_model, parts, data, model, loss, metrics)
    return parts


def _report(diags: Diagnostics, span, rule, *args) -> None:
    try:
        rule(*args)
    except DataError as err:
        diags.error("E903", err.message, err.span or span, err.hint)


def _against_model(parts: Mapping[str, DataShape], data: DataConfig, model, loss, metrics) -> None:
    classification, num_outputs = targets_of(model.output.shape, loss, metrics)
    known = loss is not None or bool(metrics)        # without either, what the targets are is open
    for part in parts.values():
        if part.sample is not None:
            check_sample_shape(part.sample, tuple(model.input.shape), part.origin)
        if part.target is not None and known and not classification:
            check_target_width(part.target[-1] if part.target else 1, num_outputs, part.origin)
        if part.classes is not None and known and classification:
            labels = min(part.classes, part.rows or part.classes)
            check_label_range(labels - 1, num_outputs, lambda p=part: f"{p.origin} (classes = {p.classes})")
        if part.max_token is not None and model.input.dtype == "long":
            _check_vocab(part, model)
    pool = parts.get(POOL)
    if pool is not None and pool.rows is not None:
        counts = split_counts(pool.rows, data.split, set(parts) - {POOL}, pool.origin)
        if "train" in counts:
            check_train_batches(counts["train"], data.batch_size, data.drop_last)


def _check_vocab(part: DataShape, model) -> None:
    """Token ids reach `max_token`: every embedding fed token ids must have a row for each."""
    for layer in model.root.layers():
        size = layer.use.args.get("num_embeddings") if "num_embeddings" in layer.use.args else None
        if size is None or not layer.inputs or layer.inputs[0].dtype != "long":
            continue
        if part.max_token >= size:
            raise DataError(f"token ids of {part.origin} go up to {part.max_token}, but embedding "
                            f"`{layer.path}` has num_embeddings = {size} (ids 0..{size - 1})",
                            f"make num_embeddings at least {part.max_token + 1}, or lower the data's vocab")

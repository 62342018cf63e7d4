"""Data for training: load a dataset, validate it, split it, fit normalization, batch it.

A dataset implementation (`"nnspec.builtins.datasets.readers:csv"`, or a plugin's) is called as
`fn(args, ctx: DataContext)` and returns `{part: Arrays}` (or one `Arrays`, meaning "data").
Part "data" is divided by the `split(...)` fractions; parts "train", "val", "test" are used whole
(separate files), and the fractions then divide "data" among the splits not given. `load_data`
owns the arrays it receives: in-memory inputs may be normalized in place; an `np.memmap` input is
never written and is read batch by batch (see nnspec/runtime/batching.py).

Every problem with the data itself is a `DataError` (message + hint) raised before training
starts; the trainer locates it at the dataset's span in the spec (or at `span` when set).
"""
from __future__ import annotations

import math
import zlib
from dataclasses import dataclass
from typing import Callable, Mapping

import numpy as np
import torch
from torch import Tensor

from nnspec.builtins.datasets.describe import (POOL, SPLITS, check_label_range, check_numeric, check_sample_shape,
                                               check_samples, check_target_width, check_train_batches,
                                               resolve_path, split_counts)
from nnspec.errors import DataError
from nnspec.spec.settings import DataConfig, Use
from nnspec.runtime.batching import MappedSplit, Split, TensorSplit, TensorStore, epoch_order, mix_seed
from nnspec.runtime.mapped import MappedArray, iter_chunks
from nnspec.registry.types import TensorType

__all__ = ["DataError", "Arrays", "DataContext", "Splits", "Split", "load_data", "normalize_tensor",
           "epoch_order"]

_SPLIT_TAG = 0x5B117


@dataclass
class Arrays:
    """Samples as loaded: `x` and `y` share their first axis. `x` may be a read-only np.memmap.
    `locate(i)` names sample i for messages (e.g. "line 14" of a CSV file; default "row i")."""
    x: np.ndarray
    y: np.ndarray
    origin: str
    locate: Callable[[int], str] | None = None

    def where(self, i: int) -> str:
        at = self.locate(int(i)) if self.locate else f"row {int(i)}"
        return f"{at} of {self.origin}"


@dataclass(frozen=True)
class DataContext:
    """What a dataset implementation may use: where relative paths start, and the run's seed."""
    base_dir: str
    seed: int
    input_type: TensorType
    classification: bool = True

    def resolve(self, path: str) -> str:
        """The absolute path of a data file; DataError for URLs and files that do not exist."""
        return resolve_path(self.base_dir, path)

    def rng(self, tag: str) -> np.random.Generator:
        """A numpy generator for `tag` (e.g. "blobs"), determined by the run seed."""
        return np.random.default_rng(mix_seed(self.seed, zlib.crc32(tag.encode())))


@dataclass
class Splits:
    """The splits of one run. `norm` is JSON-able: save it with the run to normalize new inputs."""
    train: Split
    val: Split | None
    test: Split | None
    norm: dict

    def items(self):
        """(name, split) for every split present."""
        return [(k, s) for k, s in (("train", self.train), ("val", self.val), ("test", self.test))
                if s is not None]


def load_data(cfg: DataConfig, *, base_dir: str, seed: int, input_type: TensorType,
              classification: bool, num_outputs: int | None) -> Splits:
    """Load, validate, split and normalize `cfg`'s dataset. Raises DataError on bad data."""
    ctx = DataContext(str(base_dir), seed, input_type, classification)
    parts = _load_parts(cfg.dataset, ctx)
    long_inputs = input_type.dtype == "long"
    shape = tuple(input_type.shape)
    sources = {}
    for name, part in parts.items():
        _fit_shape(part, shape)
        sources[name] = MappedArray(part.x) if isinstance(part.x, np.memmap) else part.x
        _check_inputs(part, sources[name], long_inputs)
    targets = {name: _targets(part, classification, num_outputs) for name, part in parts.items()}
    assigned = _assign(parts, cfg.split, seed)
    norm = _fit_norm(cfg.normalize, sources, assigned["train"], long_inputs, shape)
    scale, shift = norm_scale_shift(norm)
    built = _build(parts, sources, targets, assigned, scale, shift, long_inputs, shape)
    train = built["train"]
    check_train_batches(len(train), cfg.batch_size, cfg.drop_last)
    return Splits(train, built.get("val"), built.get("test"), norm)


# --- loading and validation -------------------------------------------------------------------

def _load_parts(use: Use, ctx: DataContext) -> dict[str, Arrays]:
    from nnspec.registry.catalog import PluginBuildError
    try:
        out = use.component.build(use.args, ctx)
    except PluginBuildError as err:       # a data problem the user can fix, or a broken implementation
        if isinstance(err.cause, DataError):
            raise err.cause from None
        if isinstance(err.cause, OSError):
            raise DataError(f"dataset `{use.name}` could not be read: {err.cause}") from err.cause
        raise
    if isinstance(out, Arrays):
        out = {POOL: out}
    if not isinstance(out, Mapping) or not out:
        raise DataError(f"dataset `{use.name}` returned {type(out).__name__}, not {{part: Arrays}}")
    parts = {}
    for name, part in out.items():
        if name not in (POOL, *SPLITS) or not isinstance(part, Arrays):
            raise DataError(f"dataset `{use.name}` returned part {name!r}: expected Arrays for one of "
                            f"{', '.join((POOL, *SPLITS))}")
        x, y = part.x, part.y
        if not isinstance(x, np.ndarray):
            part.x = x = np.asarray(x)
        if not isinstance(y, np.ndarray):
            part.y = y = np.asarray(y)
        check_samples(x.shape, y.shape, part.origin)
        check_numeric(x.dtype.kind, x.dtype, part.origin)
        if x.ndim == 1:
            part.x = x.reshape(len(x), 1)
        parts[name] = part
    return parts


def _fit_shape(part: Arrays, want: tuple[int, ...]) -> None:
    """Reshape in-memory samples to the model's input shape when the element counts match.
    (Memory-mapped samples keep their shape; batches are reshaped as they are read.)"""
    have = tuple(part.x.shape[1:])
    if have == want:
        return
    check_sample_shape(have, want, part.origin)
    if not isinstance(part.x, np.memmap):
        part.x = part.x.reshape((len(part.x),) + want)


def _check_inputs(part: Arrays, source, long_inputs: bool) -> None:
    """NaN/Inf anywhere in float inputs; integer, non-negative values for token inputs."""
    x = part.x
    check_finite = x.dtype.kind == "f"
    check_tokens = long_inputs
    if not (check_finite or check_tokens):
        return
    bad, bad_rows, first = 0, 0, None
    for lo, block in iter_chunks(source):
        flat = block.reshape(len(block), -1)
        if check_finite:
            wrong = ~np.isfinite(flat)
            rows = wrong.any(axis=1)
            if rows.any():
                bad += int(wrong.sum())
                bad_rows += int(rows.sum())
                first = lo + int(rows.argmax()) if first is None else first
        if check_tokens:
            wrong_tok = flat < 0
            if flat.dtype.kind == "f":
                with np.errstate(invalid="ignore"):
                    wrong_tok = wrong_tok | (flat != np.floor(flat))
            if wrong_tok.any():
                i, j = np.unravel_index(int(wrong_tok.argmax()), wrong_tok.shape)
                raise DataError(f"the model input is integer tokens (long) but {part.where(lo + i)} has "
                                f"the value {flat[i, j]!r}: token ids must be integers ≥ 0",
                                "give integer token ids, or declare a float input")
    if bad:
        raise DataError(f"inputs have {bad} NaN/Inf value{'s' if bad != 1 else ''} in {bad_rows} "
                        f"sample{'s' if bad_rows != 1 else ''}, the first at {part.where(first)}",
                        "remove or fill in those values before training")


def _targets(part: Arrays, classification: bool, num_outputs: int | None) -> np.ndarray:
    """Targets checked and converted: int64 labels for classification, float32 otherwise."""
    y = np.asarray(part.y)
    check_numeric(y.dtype.kind, y.dtype, part.origin, "targets")
    per = math.prod(y.shape[1:])

    def where(flat_index: int) -> str:
        return part.where(flat_index // max(per, 1))

    if y.dtype.kind == "f":
        finite = np.isfinite(y)
        if not finite.all():
            count = int((~finite).sum())
            raise DataError(f"targets have {count} NaN/Inf value{'s' if count != 1 else ''}, the first at "
                            f"{where(int((~finite).reshape(-1).argmax()))}", "remove those samples or fix their targets")
    if not classification:
        y = y.astype(np.float32)
        if y.ndim == 1:
            y = y.reshape(-1, 1)
        check_target_width(y.shape[-1], num_outputs, part.origin)
        return y
    if y.ndim == 2 and y.shape[1] == 1:
        y = y[:, 0]
    if y.dtype.kind == "f":
        fractional = y != np.round(y)
        if fractional.any():
            k = int(fractional.reshape(-1).argmax())
            raise DataError(f"classification labels must be integers, but {where(k)} has the label "
                            f"{y.reshape(-1)[k]!r}",
                            "use a regression loss (e.g. mse) for continuous targets, or give class indices")
    y = y.astype(np.int64)
    if y.size == 0:
        return y
    flat = y.reshape(-1)
    low = int(flat.argmin())
    if flat[low] < 0:
        raise DataError(f"label {flat[low]} at {where(low)} is negative: class labels must be 0, 1, 2, …",
                        "map the classes to 0..classes-1")
    high = int(flat.argmax())
    check_label_range(int(flat[high]), num_outputs, lambda: where(high))
    return np.ascontiguousarray(y)


def _assign(parts: dict[str, Arrays], fractions: Mapping[str, float], seed: int) -> dict[str, tuple[str, np.ndarray | None]]:
    """Which rows of which part each split gets: given parts whole; "data" by a seeded permutation."""
    out: dict[str, tuple[str, np.ndarray | None]] = {k: (k, None) for k in SPLITS if k in parts}
    if POOL in parts:
        pool = parts[POOL]
        n = len(pool.x)
        counts = split_counts(n, fractions, set(out), pool.origin)
        perm = np.random.default_rng(mix_seed(seed, _SPLIT_TAG)).permutation(n)
        start = 0
        for k in counts:
            out[k] = (POOL, None if counts[k] == n else np.sort(perm[start:start + counts[k]]))
            start += counts[k]
    if "train" not in out:
        raise DataError("there is no training data", "give split(...) a train fraction")
    return out


# --- normalization ------------------------------------------------------------------------------

def _fit_norm(method: str, sources, train: tuple[str, np.ndarray | None], long_inputs: bool,
              shape: tuple[int, ...]) -> dict:
    """Per-feature statistics of the training rows only, in one streaming pass (float64)."""
    if method == "none" or long_inputs:
        return {"method": "none"}
    name, rows = train
    count, mean, m2, low, high = 0, None, None, None, None
    for _, block in iter_chunks(sources[name], rows):
        block = block.reshape(len(block), -1).astype(np.float64)
        k = len(block)
        b_mean = block.mean(axis=0)
        b_m2 = ((block - b_mean) ** 2).sum(axis=0)
        if mean is None:
            count, mean, m2, low, high = k, b_mean, b_m2, block.min(axis=0), block.max(axis=0)
            continue
        delta = b_mean - mean
        total = count + k
        mean = mean + delta * (k / total)
        m2 = m2 + b_m2 + delta ** 2 * (count * k / total)
        low, high = np.minimum(low, block.min(axis=0)), np.maximum(high, block.max(axis=0))
        count = total
    if method == "standard":
        return {"method": "standard", "shape": list(shape), "mean": mean.tolist(),
                "std": np.sqrt(m2 / count).tolist()}
    if method == "minmax":
        return {"method": "minmax", "shape": list(shape), "min": low.tolist(), "max": high.tolist()}
    raise DataError(f"unknown normalization `{method}`", "use standard, minmax or none")


def norm_scale_shift(norm: dict) -> tuple[Tensor | None, Tensor | None]:
    """`x * scale + shift` normalizes (float32, per-feature, in the sample shape). A constant
    feature (std 0, or max = min) is only shifted."""
    method = norm.get("method", "none")
    if method == "none":
        return None, None
    if method == "standard":
        center, spread = np.asarray(norm["mean"]), np.asarray(norm["std"])
    elif method == "minmax":
        center, spread = np.asarray(norm["min"]), np.asarray(norm["max"]) - np.asarray(norm["min"])
    else:
        raise ValueError(f"unknown normalization {method!r}")
    spread = np.where(spread > 0, spread, 1.0)
    scale = 1.0 / spread
    shift = -center * scale
    shape = tuple(norm["shape"])
    return (torch.from_numpy(scale.astype(np.float32).reshape(shape)),
            torch.from_numpy(shift.astype(np.float32).reshape(shape)))


def normalize_tensor(x: Tensor, norm: dict) -> Tensor:
    """Apply saved normalization stats (`Splits.norm`) to new inputs [N, *shape]."""
    scale, shift = norm_scale_shift(norm)
    if scale is None:
        return x
    return x.to(torch.float32) * scale.to(x.device) + shift.to(x.device)


# --- building the splits ------------------------------------------------------------------------

def _build(parts, sources, targets, assigned, scale, shift, long_inputs, shape) -> dict[str, Split]:
    dtype, kind = (torch.int64, "long") if long_inputs else (torch.float32, "float")
    stores: dict[str, TensorStore] = {}
    out: dict[str, Split] = {}
    for split, (name, rows) in assigned.items():
        y = torch.from_numpy(targets[name])
        if isinstance(sources[name], MappedArray):
            out[split] = MappedSplit(sources[name], rows, y, kind, shape, scale, shift)
            continue
        if name not in stores:
            x = np.ascontiguousarray(parts[name].x)
            if not x.flags.writeable:
                x = x.copy()
            xt = torch.from_numpy(x).to(dtype).reshape((len(x),) + shape)
            if scale is not None:
                xt.mul_(scale).add_(shift)
            stores[name] = TensorStore(xt, y)
        out[split] = TensorSplit(stores[name], None if rows is None else torch.from_numpy(rows), kind)
    return out

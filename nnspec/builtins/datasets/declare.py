"""Built-in dataset declarations: the bundled digits, files (csv, npy, npz, pt) and synthetic data.

Never import torch here: `nnspec validate` reads these. Loaders live in nnspec/runtime/datasets.py
(`fn(args, ctx) -> {part: Arrays}`, see nnspec/runtime/data.py for the protocol).

File datasets name one main file whose samples the `split(...)` fractions divide. A split given
as its own file (`val = "val.csv"`, `test = "test.csv"`) is used whole, and the fractions then
divide the main file among the remaining splits only (`split(train = 0.8, val = 0.1, test = 0.1)`
with a val file puts 8/9 of the main file in train and 1/9 in test).
"""
from __future__ import annotations

import math
import re

from nnspec.registry.catalog import Component
from nnspec.registry.types import (ArgError, Bool, Float, Param, PositiveFloat, PositiveInt, Str, Tuple,
                          Int, OneOf)

IMPL = "nnspec.builtins.datasets.readers:"


def _targets(shape, classes=None) -> dict:
    """Facts the check reads about a dataset's targets: `info["target_shape"](args)`, the shape
    of one sample's target, and `info["classes"](args)`, how many classes its labels hold (when
    it is a classification dataset with a known count). Datasets whose targets are only known
    once files are read (npy, npz, pt) declare neither."""
    out = {"target_shape": shape}
    if classes is not None:
        out["classes"] = classes
    return out


def _one_label(args) -> tuple[int, ...]:
    return ()


def _classes_arg(args) -> int:
    return args.classes

_URL = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*://")
_PATH_DOC = "relative paths start at the spec's folder; absolute paths are fine; URLs are not"


def is_url(text: str) -> bool:
    return bool(_URL.match(text))


def _check_paths(*names: str):
    """A cross-argument check refusing URLs (and empty paths) at validate time."""
    def check(args) -> None:
        for name in names:
            value = args[name]
            for item in (value if isinstance(value, tuple) else (value,)):
                if item is None:
                    continue
                if not item:
                    raise ArgError(f"argument `{name}` is an empty path")
                if is_url(item):
                    raise ArgError(f"argument `{name}` is a URL ({item}); nnspec reads local files only",
                                   "download the file and give its local path")
    return check


def _split_files(what: str, type_=None) -> tuple[Param, ...]:
    type_ = type_ or Str()
    return (
        Param("val", type_, None, keyword_only=True,
              doc=f"{what} used whole as the validation split (its `split` fraction is then ignored)"),
        Param("test", type_, None, keyword_only=True,
              doc=f"{what} used whole as the test split (its `split` fraction is then ignored)"),
    )


def _check_digits(args) -> None:
    if math.prod(args.shape) != 64:
        raise ArgError(f"digits samples have 64 pixels; shape {list(args.shape)} has {math.prod(args.shape)}",
                       "use [64] for dense models or [1, 8, 8] for conv models")


digits = Component(
    "digits", "datasets",
    params=(Param("shape", Tuple(PositiveInt), (64,),
                  doc="per-sample shape of the 8×8 images: [64] or [1, 8, 8] (64 elements)"),),
    summary="The bundled UCI handwritten digits: 1,797 8×8 images, pixels 0..16, labels 0–9.",
    impl=IMPL + "digits", check=_check_digits, info=_targets(_one_label, lambda args: 10))


def _check_csv(args) -> None:
    _check_paths("path", "val", "test")(args)
    if len(args.delimiter) != 1:
        raise ArgError(f"delimiter must be one character, got \"{args.delimiter}\"", 'e.g. delimiter = ";"')
    if not args.header and isinstance(args.target, str):
        raise ArgError("without a header row, `target` must be a column index",
                       "target = -1 is the last column, 0 the first")


csv = Component(
    "csv", "datasets",
    params=(Param("path", Str(), doc="the CSV file (numeric columns only); " + _PATH_DOC),
            Param("target", OneOf(Str(), Int()), "label",
                  doc="the label column: its header name, or a 0-based index (negative counts from the end)"),
            Param("header", Bool(), True, doc="the first row holds column names"),
            Param("delimiter", Str(), ",", doc="the one-character field separator"),
            *_split_files("a CSV file with the same columns")),
    summary="A numeric CSV file: one sample per row, one column is the target.",
    impl=IMPL + "csv", check=_check_csv, info=_targets(_one_label))


_PAIR = Tuple(Str(), 2, broadcast=False)

npy = Component(
    "npy", "datasets",
    params=(Param("x", Str(), "x.npy", doc="inputs, first axis the samples; " + _PATH_DOC),
            Param("y", Str(), "y.npy", doc="targets, first axis the samples"),
            Param("mmap", Bool(), True,
                  doc="memory-map x and read batches from disk (memory stays flat); false loads it into memory"),
            *_split_files('a pair of files ["x.npy", "y.npy"]', _PAIR)),
    summary="Two .npy files (inputs and targets), memory-mapped so data larger than memory works.",
    impl=IMPL + "npy", check=_check_paths("x", "y", "val", "test"))

npz = Component(
    "npz", "datasets",
    params=(Param("path", Str(), doc="the .npz archive; " + _PATH_DOC),
            Param("x", Str(), "x", doc="name of the inputs array in the archive"),
            Param("y", Str(), "y", doc="name of the targets array in the archive"),
            Param("mmap", Bool(), True,
                  doc="memory-map x when the archive is uncompressed (np.savez); compressed archives are loaded"),
            *_split_files("an .npz archive with the same array names")),
    summary="An .npz archive with input and target arrays (uncompressed ones are memory-mapped).",
    impl=IMPL + "npz", check=_check_paths("path", "val", "test"))

pt = Component(
    "pt", "datasets",
    params=(Param("path", Str(), doc='a file saved with torch.save({"x": tensor, "y": tensor}); ' + _PATH_DOC),
            Param("x", Str(), "x", doc="key of the inputs tensor"),
            Param("y", Str(), "y", doc="key of the targets tensor"),
            *_split_files("a .pt file with the same keys")),
    summary="Tensors saved with torch.save, loaded safely (weights_only: tensors only, no code).",
    impl=IMPL + "pt", check=_check_paths("path", "val", "test"))


_SAMPLES = Int(min=2, max=100_000_000)


def _check_image_shape(args) -> None:
    if len(args.shape) not in (2, 3):
        raise ArgError("an image shape is [channels, height, width] or [height, width]")
    if math.prod(args.shape) * args.samples > 2_000_000_000:
        raise ArgError("that many images would not fit in memory", "reduce `samples` or the shape")

blobs = Component(
    "blobs", "datasets",
    params=(Param("samples", _SAMPLES, 1000, doc="number of samples (2 ≤ samples ≤ 1e8)"),
            Param("features", PositiveInt, 2, doc="dimensions of each point"),
            Param("classes", Int(min=2), 3, doc="number of clusters, one label each (≥ 2)"),
            Param("spread", PositiveFloat, 1.0, doc="standard deviation of each cluster (> 0)")),
    summary="Gaussian clusters around random centers (classification), seeded by the run seed.",
    impl=IMPL + "blobs", info=_targets(_one_label, _classes_arg))

spirals = Component(
    "spirals", "datasets",
    params=(Param("samples", _SAMPLES, 1000, doc="number of samples (2 ≤ samples ≤ 1e8)"),
            Param("classes", Int(min=2), 2, doc="number of interleaved spiral arms, one label each (≥ 2)"),
            Param("noise", Float(min=0), 0.1, doc="standard deviation of the noise added to each point (≥ 0)")),
    summary="Interleaved 2-D spirals (classification that a linear model cannot solve), seeded by the run seed.",
    impl=IMPL + "spirals", info=_targets(_one_label, _classes_arg))

regression = Component(
    "regression", "datasets",
    params=(Param("samples", _SAMPLES, 1000, doc="number of samples (2 ≤ samples ≤ 1e8)"),
            Param("features", PositiveInt, 8, doc="input features per sample"),
            Param("targets", PositiveInt, 1, doc="regression targets per sample"),
            Param("noise", Float(min=0), 0.1, doc="standard deviation of the noise added to the targets (≥ 0)")),
    summary="Targets a random linear function of Gaussian inputs plus noise, seeded by the run seed.",
    impl=IMPL + "regression", info=_targets(lambda args: (args.targets,)))

images = Component(
    "images", "datasets",
    params=(Param("shape", Tuple(PositiveInt), (3, 32, 32), doc="image shape [channels, height, width]"),
            Param("classes", Int(min=2), 10, doc="number of classes (≥ 2)"),
            Param("samples", _SAMPLES, 512, doc="number of images"),
            Param("noise", Float(min=0), 1.0, doc="standard deviation of the noise around each class pattern")),
    summary="Synthetic images: a random pattern per class plus noise — for smoke tests and benchmarks of "
            "image models.",
    impl=IMPL + "images", check=_check_image_shape, info=_targets(_one_label, _classes_arg))

tokens = Component(
    "tokens", "datasets",
    params=(Param("vocab", Int(min=2), 1000, doc="vocabulary size: token ids are 0 … vocab − 1"),
            Param("length", PositiveInt, 32, doc="tokens per sequence"),
            Param("classes", Int(min=2), 2, doc="number of classes (≥ 2)"),
            Param("samples", _SAMPLES, 512, doc="number of sequences")),
    summary="Synthetic token sequences (int64 ids) whose class shifts which tokens are frequent — for smoke "
            "tests of embedding, recurrent and transformer models (`input [length] long`).",
    impl=IMPL + "tokens", info=_targets(_one_label, _classes_arg))

COMPONENTS = [digits, csv, npy, npz, pt, blobs, spirals, regression, images, tokens]

"""What a dataset holds, told cheaply, and the data rules both `validate` and training apply.

A dataset declares `info={"describe": fn}`: `fn(args, base_dir) -> {part: DataShape}` says the
sample shape, dtype, number of rows and target shape of each part ("data", "val", "test") from
what is cheap to know: declared arguments, .npy headers, .npz member headers (read through
zipfile without decompressing whole arrays), a CSV's first row and its line count. It never reads
every value, so value-level problems (NaN, labels out of range in a file, token ids of a file)
are found only when training loads the data (nnspec/runtime/data.py, with the same rules).

No torch here, and numpy only inside the .npy/.npz header readers: declarations import this.
"""
from __future__ import annotations

import csv as _csv
import math
import os
import re
import zipfile
import zlib
from dataclasses import dataclass
from typing import Callable, Mapping

from nnspec.errors import DataError, did_you_mean
from nnspec.registry.catalog import CLASSIFICATION

POOL = "data"
SPLITS = ("train", "val", "test")
_EXTRA_SPLITS = ("val", "test")
_URL = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*://")


@dataclass(frozen=True)
class DataShape:
    """One part of a dataset as far as it is known without reading it (None: not known)."""
    origin: str                               # the file as the spec names it, or the dataset
    rows: int | None = None                   # samples
    sample: tuple[int, ...] | None = None     # per-sample input shape
    dtype: str | None = None                  # numpy dtype name of the inputs, e.g. "float32"
    target: tuple[int, ...] | None = None     # per-sample target shape
    classes: int | None = None                # declared number of classes
    max_token: int | None = None              # declared largest token id


Describe = Callable[[object, str], Mapping[str, DataShape]]


# --- paths --------------------------------------------------------------------------------------

def is_url(text: str) -> bool:
    return bool(_URL.match(text))


def resolve_path(base_dir: str, path: str) -> str:
    """The absolute path of a data file: relative paths start at the spec's folder (Spec.base_dir).
    DataError for URLs, files that do not exist and folders. Training and `validate` both use it."""
    if is_url(path):
        raise DataError(f"`{path}` is a URL; nnspec reads local files only", "download the file and give its local path")
    full = os.path.abspath(os.path.join(base_dir, os.path.expanduser(path)))
    if not os.path.exists(full):
        raise DataError(f"data file not found: {full}",
                        f"relative paths start at the spec's folder ({os.path.abspath(base_dir)})")
    if os.path.isdir(full):
        raise DataError(f"{full} is a folder, not a data file")
    return full


# --- the rules (training applies them to loaded arrays, validate to described ones) ----------------

def show_shape(shape) -> str:
    return "[" + ", ".join(str(d) for d in shape) + "]"


def check_samples(x_shape: tuple[int, ...], y_shape: tuple[int, ...], origin: str) -> None:
    """Inputs and targets have a first axis of samples, of the same length, and not empty."""
    if len(x_shape) == 0 or len(y_shape) == 0:
        raise DataError(f"{origin}: inputs and targets need a first axis of samples")
    if x_shape[0] != y_shape[0]:
        raise DataError(f"{origin} has {x_shape[0]} input samples but {y_shape[0]} targets",
                        "inputs and targets must have one row per sample")
    if x_shape[0] == 0:
        raise DataError(f"{origin} has no samples")


def check_numeric(kind: str, dtype, origin: str, what: str = "inputs") -> None:
    """`kind` is a numpy dtype kind: bool, signed, unsigned or float only."""
    if kind not in "biuf":
        raise DataError(f"{what} of {origin} are not numeric (dtype {dtype})")


def check_sample_shape(have: tuple[int, ...], want: tuple[int, ...], origin: str) -> None:
    """Samples fit the model input when their element counts match (they are reshaped)."""
    n_have, n_want = math.prod(have), math.prod(want)
    if n_have == n_want:
        return
    what = (f"{n_have} features per sample" if len(have) == 1
            else f"samples of shape {show_shape(have)} ({n_have} values)")
    raise DataError(f"data has {what} but the model input is {show_shape(want)}"
                    + ("" if len(want) == 1 else f" ({n_want} values)") + f" ({origin})",
                    f"make the model's input {show_shape(have)}, or any shape with {n_have} elements")


def check_target_width(width: int, num_outputs: int | None, origin: str) -> None:
    """Regression: targets per sample equal the model's outputs."""
    if num_outputs is not None and width != num_outputs:
        raise DataError(f"data has {width} target{'s' if width != 1 else ''} per sample but the "
                        f"model has {num_outputs} output{'s' if num_outputs != 1 else ''} ({origin})",
                        f"make the last layer output {width}")


def check_label_range(label: int, num_outputs: int | None, where: Callable[[], str]) -> None:
    """Classification: the largest label is below the model's outputs (`where()` names its sample)."""
    if num_outputs is not None and label >= num_outputs:
        raise DataError(f"label {label} at {where()} is out of range: the model has "
                        f"{num_outputs} outputs, so labels must be 0..{num_outputs - 1}",
                        f"make the last layer output at least {label + 1} classes "
                        "(max label + 1), or fix the labels")


def split_counts(rows: int, fractions: Mapping[str, float], given: set[str], origin: str) -> dict[str, int]:
    """How many of the main file's `rows` each split not `given` as its own file gets (in split order).
    The largest-but-train remainder goes to train; an empty split is an error."""
    wanted = [(k, float(fractions.get(k, 0.0))) for k in SPLITS if k not in given and fractions.get(k, 0.0) > 0]
    if not wanted:
        raise DataError(f"every split is given as its own file, so {origin} would be unused",
                        "drop the separate files or give the main file a share in split(...)")
    total = sum(f for _, f in wanted)
    rest = "train" if any(k == "train" for k, _ in wanted) else max(wanted, key=lambda kf: kf[1])[0]
    counts = {k: int(rows * f / total + 0.5) for k, f in wanted if k != rest}
    counts[rest] = rows - sum(counts.values())
    for k, f in wanted:
        if counts[k] <= 0:
            raise DataError(f"the {k} split is empty: its share ({f / total:.1%}) of the {rows} samples in "
                            f"{origin} is less than one sample",
                            f"raise the {k} fraction, drop {k} from split(...), or use more data")
    return {k: counts[k] for k, _ in wanted}


def check_train_batches(train_rows: int, batch_size: int, drop_last: bool) -> None:
    if drop_last and train_rows < batch_size:
        raise DataError(f"the train split has {train_rows} samples, fewer than one batch of {batch_size}, "
                        "and drop_last is on: training would see no batches", "lower `batch` or turn drop_last off")


def target_column(target, names, columns: int, shown: str) -> int:
    """The 0-based index of a CSV's target column (by header name or index)."""
    if isinstance(target, str):
        if names is None:
            raise DataError(f"{shown} has no header row, so `target` must be a column index",
                            "target = -1 is the last column")
        if target not in names:
            raise DataError(f"{shown} has no column `{target}`; its columns are: {', '.join(names)}",
                            did_you_mean(target, names) or "set target = \"<column name>\" in csv(...)")
        return names.index(target)
    if not -columns <= target < columns:
        raise DataError(f"target column {target} is out of range: {shown} has {columns} columns",
                        f"use an index from 0 to {columns - 1}, or -1 for the last column")
    return target % columns


def csv_head(path: str, shown: str, args) -> tuple[list[str] | None, int | None]:
    """A CSV file's column names (None without a header) and the field count of its first data
    row (None when it has none), from its first lines only."""
    try:
        with open(path, newline="", encoding="utf-8-sig") as f:
            reader = _csv.reader(f, delimiter=args.delimiter)
            first = next(reader, None)
            if first is None:
                raise DataError(f"{shown} is empty")
            rows = (first,) if not args.header else ()
            for row in (*rows, *reader):
                if row and not (len(row) == 1 and not row[0].strip()):
                    return ([n.strip() for n in first] if args.header else None), len(row)
    except UnicodeDecodeError:
        from nnspec.syntax.source_text import HINT, not_utf8_message
        raise DataError(not_utf8_message(path, shown), HINT) from None
    except _csv.Error as err:
        raise DataError(f"{shown} could not be read as CSV: {err}", "save it as plain comma-separated text") from err
    return ([n.strip() for n in first] if args.header else None), None


def check_header_width(names: list[str] | None, columns: int, shown: str) -> None:
    if names is not None and len(names) != columns:
        raise DataError(f"{shown} has {len(names)} column names in its header but {columns} columns of data",
                        "every row needs the same number of fields as the header")


def npz_members(names, keys, shown: str) -> dict[str, str]:
    """{array name: member name} of an .npz archive; DataError when a wanted array is missing."""
    members = {n[:-4]: n for n in names if n.endswith(".npy")}
    for key in keys:
        if key not in members:
            raise DataError(f"{shown} has no array `{key}`; it holds: {', '.join(members) or 'nothing'}",
                            did_you_mean(key, members) or "set x = \"...\" and y = \"...\" in npz(...)")
    return members


def targets_of(output_shape, loss, metrics) -> tuple[bool, int]:
    """(classification?, number of model outputs) — what the targets must fit. Classification
    when the loss (or, without a loss, any metric) is flagged "classification"."""
    uses = [loss] if loss is not None else list(metrics)
    classification = any(CLASSIFICATION in u.component.flags for u in uses)
    out = tuple(output_shape)
    return classification, (out[-1] if out else 1)


# --- files: read headers and line counts, never whole files ------------------------------------

def _with_split_files(args, one: Callable[[object], DataShape]) -> dict[str, DataShape]:
    parts = {POOL: one(args.path if "path" in args else (args.x, args.y))}
    for split in _EXTRA_SPLITS:
        if args.get(split) is not None:
            parts[split] = one(args[split])
    return parts


def describe_csv(args, base_dir: str) -> dict[str, DataShape]:
    def one(shown: str) -> DataShape:
        path = resolve_path(base_dir, shown)
        names, columns = csv_head(path, shown, args)
        if names is not None:
            target_column(args.target, names, len(names), shown)      # a missing column first
        if columns is None:
            raise DataError(f"{shown} has no data rows")
        check_header_width(names, columns, shown)
        target_column(args.target, names, columns, shown)
        with open(path, "rb") as f:                  # a line count, not a parse
            rows = sum(1 for line in f if line.strip()) - (1 if args.header else 0)
        return DataShape(shown, rows, (columns - 1,), "float32", ())
    return _with_split_files(args, one)


def npy_header(f, shown: str):
    """(shape, dtype) from an open .npy stream's header alone."""
    from numpy.lib import format as fmt
    try:
        version = fmt.read_magic(f)
        read = fmt.read_array_header_1_0 if version == (1, 0) else fmt.read_array_header_2_0
        shape, _, dtype = read(f)
    except (ValueError, EOFError, zlib.error, zipfile.BadZipFile) as err:   # zip: a damaged member
        raise DataError(f"{shown} could not be read as .npy: {err}",
                        "write it with np.save / np.savez, and check that it was copied completely") from err
    if dtype.hasobject:
        raise DataError(f"{shown} is not a numeric .npy array: it holds Python objects",
                        "save plain numeric arrays with np.save (object arrays are never unpickled)")
    return tuple(shape), dtype


def _described(x_shape, x_dtype, y_shape, y_dtype, origin: str) -> DataShape:
    check_samples(x_shape, y_shape, origin)
    check_numeric(x_dtype.kind, x_dtype, origin)
    check_numeric(y_dtype.kind, y_dtype, origin, "targets")
    return DataShape(origin, x_shape[0], x_shape[1:] or (1,), str(x_dtype), y_shape[1:])


def npz_not_npy(shown: str) -> DataError:
    return DataError(f"{shown} is an .npz archive, not an .npy file", f'use npz(path = "{shown}")')


def open_npz(path: str, shown: str) -> zipfile.ZipFile:
    """The archive's listing (members are read one by one, on demand)."""
    try:
        return zipfile.ZipFile(path)
    except (zipfile.BadZipFile, OSError) as err:
        raise DataError(f"{shown} is not an .npz archive: {err}",
                        "write it with np.savez or np.savez_compressed") from err


def describe_npy(args, base_dir: str) -> dict[str, DataShape]:
    def header(shown: str):
        with open(resolve_path(base_dir, shown), "rb") as f:
            if f.read(4) == b"PK\x03\x04":
                raise npz_not_npy(shown)
            f.seek(0)
            return npy_header(f, shown)

    def one(pair) -> DataShape:
        xs, ys = pair
        return _described(*header(xs), *header(ys), xs)
    return _with_split_files(args, one)


def describe_npz(args, base_dir: str) -> dict[str, DataShape]:
    def one(shown: str) -> DataShape:
        with open_npz(resolve_path(base_dir, shown), shown) as archive:
            members = npz_members(archive.namelist(), (args.x, args.y), shown)
            heads = []
            for key in (args.x, args.y):
                try:
                    with archive.open(members[key]) as f:      # streams: only the header is inflated
                        heads.extend(npy_header(f, f"array `{key}` in {shown}"))
                except (NotImplementedError, RuntimeError) as err:   # compression method, encryption
                    raise DataError(f"array `{key}` in {shown} could not be read: {err}",
                                    "write it with np.savez or np.savez_compressed (no encryption)") from err
        return _described(*heads, shown)
    return _with_split_files(args, one)


def describe_pt(args, base_dir: str) -> dict[str, DataShape]:
    """torch.save files need torch to open: only that they exist is checked."""
    def one(shown: str) -> DataShape:
        resolve_path(base_dir, shown)
        return DataShape(shown)
    return _with_split_files(args, one)


# --- bundled and synthetic: everything follows from the arguments ------------------------------

DIGITS_ROWS = 1797


def describe_digits(args, base_dir: str) -> dict[str, DataShape]:
    return {POOL: DataShape("the digits data", DIGITS_ROWS, tuple(args.shape), "float32", (), classes=10)}


def describe_blobs(args, base_dir: str) -> dict[str, DataShape]:
    return {POOL: DataShape("blobs", args.samples, (args.features,), "float32", (), classes=args.classes)}


def describe_spirals(args, base_dir: str) -> dict[str, DataShape]:
    return {POOL: DataShape("spirals", args.samples, (2,), "float32", (), classes=args.classes)}


def describe_regression(args, base_dir: str) -> dict[str, DataShape]:
    return {POOL: DataShape("regression", args.samples, (args.features,), "float32", (args.targets,))}


def describe_images(args, base_dir: str) -> dict[str, DataShape]:
    return {POOL: DataShape("images", args.samples, tuple(args.shape), "float32", (), classes=args.classes)}


def describe_tokens(args, base_dir: str) -> dict[str, DataShape]:
    return {POOL: DataShape("tokens", args.samples, (args.length,), "int64", (), classes=args.classes,
                            max_token=args.vocab - 1)}

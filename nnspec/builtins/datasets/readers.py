"""Implementations of the built-in datasets: `fn(args, ctx) -> {part: Arrays}`.

Part "data" is divided by the spec's split fractions; "val"/"test" come from separate files.
Declarations (parameters, docs) are in nnspec/builtins/datasets.py. Only local files are read,
and nothing here can run code from a data file: .npy/.npz load with allow_pickle=False and .pt
with torch.load(weights_only=True).
"""
from __future__ import annotations

import csv as _csv
import math
import pickle
import struct
import warnings
import zipfile
from importlib import resources

import numpy as np

from nnspec.builtins.datasets.describe import (check_header_width, csv_head, npz_members, npz_not_npy, open_npz,
                                               target_column)
from nnspec.errors import did_you_mean
from nnspec.runtime.data import POOL, Arrays, DataContext, DataError

_EXTRA_SPLITS = ("val", "test")


def _with_split_files(args, ctx: DataContext, read) -> dict[str, Arrays]:
    """The main file as "data", plus whole-split files given as `val = ...` / `test = ...`."""
    parts = {POOL: read(args.path if "path" in args else None)}
    for split in _EXTRA_SPLITS:
        if args.get(split) is not None:
            parts[split] = read(args[split])
    return parts


# --- bundled ------------------------------------------------------------------------------------

def digits(args, ctx: DataContext) -> dict[str, Arrays]:
    with resources.as_file(resources.files("nnspec.data") / "digits.csv.gz") as path:
        table = np.loadtxt(path, delimiter=",", dtype=np.float32)
    x = np.ascontiguousarray(table[:, :64]).reshape((len(table),) + tuple(args.shape))
    return {POOL: Arrays(x, table[:, 64].astype(np.int64), "the digits data")}


# --- csv ----------------------------------------------------------------------------------------

def csv(args, ctx: DataContext) -> dict[str, Arrays]:
    return _with_split_files(args, ctx, lambda p: _read_csv(ctx.resolve(p), p, args))


def _read_csv(path: str, shown: str, args) -> Arrays:
    try:
        return _read_csv_table(path, shown, args)
    except UnicodeDecodeError:
        from nnspec.syntax.source_text import HINT, not_utf8_message
        raise DataError(not_utf8_message(path, shown), HINT) from None


def _read_csv_table(path: str, shown: str, args) -> Arrays:
    names, _ = csv_head(path, shown, args)
    if names is not None:
        target_column(args.target, names, len(names), shown)      # a missing column first
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")     # "input contained no data": reported below
            table = np.loadtxt(path, delimiter=args.delimiter, skiprows=1 if args.header else 0,
                               dtype=np.float64, ndmin=2, comments=None, quotechar='"', encoding="utf-8-sig")
    except ValueError as err:
        _find_bad_cell(path, shown, args, names)
        raise DataError(f"{shown} could not be read as numbers: {err}") from err
    if table.size == 0:
        raise DataError(f"{shown} has no data rows")
    columns = table.shape[1]
    check_header_width(names, columns, shown)
    target = target_column(args.target, names, columns, shown)
    x = np.delete(table, target, axis=1).astype(np.float32)
    return Arrays(x, table[:, target], shown, locate=_line_locator(path, args.header))


def _find_bad_cell(path: str, shown: str, args, names) -> None:
    """Name the first row and column that numpy could not read (the slow path, on error only)."""
    with open(path, newline="", encoding="utf-8-sig") as f:
        reader = _csv.reader(f, delimiter=args.delimiter)
        if args.header:
            next(reader, None)
        width = len(names) if names is not None else None
        for row in reader:
            if not row or (len(row) == 1 and not row[0].strip()):
                continue
            if width is None:
                width = len(row)
            if len(row) != width:
                raise DataError(f"{shown}, line {reader.line_num}: {len(row)} columns, expected {width}",
                                "every row needs the same number of fields")
            for j, cell in enumerate(row):
                try:
                    float(cell)
                except ValueError:
                    col = f"column {j + 1}" + (f" (`{names[j]}`)" if names else "")
                    what = "an empty cell" if not cell.strip() else f'"{cell}" is not a number'
                    raise DataError(f"{shown}, line {reader.line_num}, {col}: {what}",
                                    "CSV data must be numeric: encode categories as numbers, "
                                    "fill in missing values") from None


def _line_locator(path: str, header: bool):
    """Sample index → "line N" of the file (blank lines are skipped when reading)."""
    lines: list[int] = []

    def locate(i: int) -> str:
        if not lines:
            with open(path, encoding="utf-8-sig") as f:
                for number, text in enumerate(f, start=1):
                    if text.strip() and not (header and number == 1):
                        lines.append(number)
        return f"line {lines[i]}" if i < len(lines) else f"row {i}"
    return locate


# --- npy / npz ----------------------------------------------------------------------------------

def npy(args, ctx: DataContext) -> dict[str, Arrays]:
    def read(pair):
        xs, ys = pair
        x = _load_npy(ctx.resolve(xs), xs, args.mmap)
        return Arrays(x, _load_npy(ctx.resolve(ys), ys, False), xs)
    parts = {POOL: read((args.x, args.y))}
    for split in _EXTRA_SPLITS:
        if args[split] is not None:
            parts[split] = read(args[split])
    return parts


def _load_npy(path: str, shown: str, mmap: bool) -> np.ndarray:
    try:
        arr = np.load(path, mmap_mode="r" if mmap else None, allow_pickle=False)
    except ValueError as err:
        raise DataError(f"{shown} is not a numeric .npy array: {err}",
                        "save plain numeric arrays with np.save (object arrays are never unpickled)") from err
    except (OSError, EOFError) as err:
        raise DataError(f"{shown} could not be read as .npy: {err}") from err
    if not isinstance(arr, np.ndarray):
        arr.close()
        raise npz_not_npy(shown)
    return arr


def npz(args, ctx: DataContext) -> dict[str, Arrays]:
    return _with_split_files(args, ctx, lambda p: _read_npz(ctx.resolve(p), p, args))


def _read_npz(path: str, shown: str, args) -> Arrays:
    with open_npz(path, shown) as archive:
        members = npz_members(archive.namelist(), (args.x, args.y), shown)
        x = _npz_member(archive, path, shown, archive.getinfo(members[args.x]), args.mmap)
        y = _npz_member(archive, path, shown, archive.getinfo(members[args.y]), False)
    return Arrays(x, y, shown)


def _npz_member(archive: zipfile.ZipFile, path: str, shown: str, info: zipfile.ZipInfo, mmap: bool) -> np.ndarray:
    """A member array, memory-mapped in place when it is stored uncompressed (np.savez)."""
    if mmap and info.compress_type == zipfile.ZIP_STORED and not info.flag_bits & 0x1:
        mapped = _map_stored(path, info)
        if mapped is not None:
            return mapped
    try:
        with archive.open(info) as f:
            return np.lib.format.read_array(f, allow_pickle=False)
    except ValueError as err:
        raise DataError(f"array `{info.filename[:-4]}` in {shown} is not numeric: {err}") from err


def _map_stored(path: str, info: zipfile.ZipInfo) -> np.ndarray | None:
    """np.memmap over an uncompressed member: skip the zip local header, then the .npy header."""
    fmt = np.lib.format
    with open(path, "rb") as f:
        f.seek(info.header_offset)
        local = f.read(30)
        if len(local) < 30 or local[:4] != b"PK\x03\x04":
            return None
        name_len, extra_len = struct.unpack("<HH", local[26:30])
        f.seek(info.header_offset + 30 + name_len + extra_len)
        version = fmt.read_magic(f)
        if version == (1, 0):
            shape, fortran, dtype = fmt.read_array_header_1_0(f)
        elif version == (2, 0):
            shape, fortran, dtype = fmt.read_array_header_2_0(f)
        else:
            return None
        offset = f.tell()
    if dtype.hasobject or math.prod(shape) == 0:
        return None
    return np.memmap(path, dtype=dtype, mode="r", offset=offset, shape=shape, order="F" if fortran else "C")


# --- torch.save files ---------------------------------------------------------------------------

def pt(args, ctx: DataContext) -> dict[str, Arrays]:
    return _with_split_files(args, ctx, lambda p: _read_pt(ctx.resolve(p), p, args))


def _read_pt(path: str, shown: str, args) -> Arrays:
    import torch
    try:
        obj = torch.load(path, weights_only=True, map_location="cpu")
    except pickle.UnpicklingError as err:
        first = str(err).strip().splitlines()[0] if str(err).strip() else ""
        raise DataError(f"{shown} holds more than tensors, and nnspec loads .pt files only with "
                        f"weights_only=True (no code runs from data files): {first}",
                        'save it as torch.save({"x": tensor, "y": tensor})') from err
    except (RuntimeError, EOFError, OSError, ValueError) as err:
        raise DataError(f"{shown} could not be read as a torch.save file: {err}") from err
    if not isinstance(obj, dict):
        raise DataError(f"{shown} holds a {type(obj).__name__}, not a dict of tensors",
                        'save it as torch.save({"x": tensor, "y": tensor})')
    out = []
    for key in (args.x, args.y):
        if key not in obj:
            keys = ", ".join(map(str, obj)) or "nothing"
            raise DataError(f"{shown} has no key `{key}`; it holds: {keys}", did_you_mean(key, map(str, obj)))
        t = obj[key]
        if not isinstance(t, torch.Tensor):
            raise DataError(f"`{key}` in {shown} is a {type(t).__name__}, not a tensor")
        t = t.detach()
        if t.dtype in (torch.bfloat16, torch.float16):
            t = t.float()
        out.append(t.contiguous().numpy())
    return Arrays(out[0], out[1], shown)


# --- synthetic ----------------------------------------------------------------------------------

def _balanced_labels(rng: np.random.Generator, samples: int, classes: int) -> np.ndarray:
    y = np.arange(samples, dtype=np.int64) % classes
    rng.shuffle(y)
    return y


def blobs(args, ctx: DataContext) -> dict[str, Arrays]:
    rng = ctx.rng("blobs")
    centers = rng.uniform(-10.0, 10.0, size=(args.classes, args.features))
    y = _balanced_labels(rng, args.samples, args.classes)
    x = centers[y] + args.spread * rng.standard_normal((args.samples, args.features))
    return {POOL: Arrays(x.astype(np.float32), y, "blobs")}


def spirals(args, ctx: DataContext) -> dict[str, Arrays]:
    rng = ctx.rng("spirals")
    y = _balanced_labels(rng, args.samples, args.classes)
    t = rng.uniform(0.05, 1.0, size=args.samples)             # position along the arm
    angle = 3.0 * math.pi * t + 2.0 * math.pi * y / args.classes
    x = np.stack([t * np.cos(angle), t * np.sin(angle)], axis=1)
    x += args.noise * rng.standard_normal(x.shape)
    return {POOL: Arrays(x.astype(np.float32), y, "spirals")}


def regression(args, ctx: DataContext) -> dict[str, Arrays]:
    rng = ctx.rng("regression")
    x = rng.standard_normal((args.samples, args.features))
    weight = rng.standard_normal((args.features, args.targets)) / math.sqrt(args.features)
    bias = rng.standard_normal(args.targets)
    y = x @ weight + bias + args.noise * rng.standard_normal((args.samples, args.targets))
    return {POOL: Arrays(x.astype(np.float32), y.astype(np.float32), "regression")}


def images(args, ctx: DataContext) -> dict[str, Arrays]:
    rng = ctx.rng("images")
    patterns = rng.standard_normal((args.classes, *args.shape))
    y = _balanced_labels(rng, args.samples, args.classes)
    x = patterns[y] + args.noise * rng.standard_normal((args.samples, *args.shape))
    return {POOL: Arrays(x.astype(np.float32), y, "images")}


def tokens(args, ctx: DataContext) -> dict[str, Arrays]:
    rng = ctx.rng("tokens")
    y = _balanced_labels(rng, args.samples, args.classes)
    # each class draws half its tokens from its own slice of the vocabulary, the rest uniformly
    width = max(1, args.vocab // args.classes)
    own = (y[:, None] * width + rng.integers(0, width, size=(args.samples, args.length))) % args.vocab
    anywhere = rng.integers(0, args.vocab, size=(args.samples, args.length))
    x = np.where(rng.random((args.samples, args.length)) < 0.5, own, anywhere).astype(np.int64)
    return {POOL: Arrays(x, y, "tokens")}

"""Splits and their batches: in-memory tensors, and memory-mapped files read batch by batch.

The batch order of an epoch is a pure function of (seed, epoch), so a resumed run replays the
same order and skips to `start_batch`. In memory, a batch is one `index_select` per tensor (no
per-sample Python). From a memory-mapped file, each batch's rows are read in file order
(locality), put in the shuffled order and converted while a worker thread reads the next
batches; resident memory stays flat however large the file is (see MappedArray).
"""
from __future__ import annotations

import math
import mmap
import os
import weakref
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from typing import Iterator

import numpy as np
import torch
from torch import Tensor

_ORDER_TAG = 0xBA7C4      # separates the batch-order stream from other seeded streams
PREFETCH = 3              # batches read ahead from a memory-mapped file
WORKERS = 1               # threads reading them


def mix_seed(*parts: int) -> int:
    """A well-mixed 64-bit seed from integers (any sign), stable across runs and platforms."""
    words = [int(p) % 2**64 for p in parts]
    return int(np.random.SeedSequence(words).generate_state(1, np.uint64)[0])


def epoch_order(n: int, seed: int, epoch: int) -> Tensor:
    """The shuffled order of `n` samples for one epoch: a function of (seed, epoch) only."""
    g = torch.Generator()
    g.manual_seed(mix_seed(seed, epoch, _ORDER_TAG))
    return torch.randperm(n, generator=g)


def _device(device) -> torch.device | None:
    if device is None:
        return None
    device = torch.device(device)
    if device.type == "cuda" and device.index is None and torch.cuda.is_available():
        device = torch.device("cuda", torch.cuda.current_device())
    return device


class Split:
    """One split (train, val or test). Iterate with `batches`; batches are read-only views or
    fresh tensors: never modify them in place."""

    x_dtype: str                   # "float" | "long"
    sample_shape: tuple[int, ...]  # per-sample input shape (the model's input shape)
    mapped: bool = False           # read from a memory-mapped file

    def __len__(self) -> int:
        raise NotImplementedError

    def num_batches(self, batch_size: int, drop_last: bool = False) -> int:
        if batch_size < 1:
            raise ValueError(f"batch_size must be ≥ 1, got {batch_size}")
        n = len(self)
        return n // batch_size if drop_last else -(-n // batch_size)

    def batches(self, batch_size: int, *, shuffle: bool, epoch: int = 0, seed: int = 0, device=None,
                drop_last: bool = False, start_batch: int = 0) -> Iterator[tuple[Tensor, Tensor]]:
        raise NotImplementedError

    def _plan(self, batch_size, drop_last, start_batch):
        total = self.num_batches(batch_size, drop_last)
        if start_batch < 0:
            raise ValueError(f"start_batch must be ≥ 0, got {start_batch}")
        return range(min(start_batch, total), total)


class TensorStore:
    """Inputs and targets of one source held as tensors, moved to a device once and shared by
    the splits cut from them."""

    def __init__(self, x: Tensor, y: Tensor):
        self.x, self.y = x, y
        self._device: torch.device | None = None
        self._moved: tuple[Tensor, Tensor] | None = None

    def on(self, device) -> tuple[Tensor, Tensor]:
        device = _device(device)
        if device is None or device == self.x.device:
            return self.x, self.y
        if self._device != device:
            self._moved = None          # free the previous copy first
            self._moved = (self.x.to(device), self.y.to(device))
            self._device = device
        return self._moved


class TensorSplit(Split):
    """A split over in-memory tensors: all rows of a store, or the rows listed in `rows`."""

    def __init__(self, store: TensorStore, rows: Tensor | None, x_dtype: str):
        self.store, self.rows, self.x_dtype = store, rows, x_dtype
        self.sample_shape = tuple(store.x.shape[1:])
        self._rows_on: dict[torch.device, Tensor] = {}

    def __len__(self) -> int:
        return len(self.store.x) if self.rows is None else len(self.rows)

    def _rows_to(self, device: torch.device) -> Tensor | None:
        if self.rows is None or self.rows.device == device:
            return self.rows
        if device not in self._rows_on:
            self._rows_on = {device: self.rows.to(device)}
        return self._rows_on[device]

    def batches(self, batch_size: int, *, shuffle: bool, epoch: int = 0, seed: int = 0, device=None,
                drop_last: bool = False, start_batch: int = 0) -> Iterator[tuple[Tensor, Tensor]]:
        plan = self._plan(batch_size, drop_last, start_batch)
        x, y = self.store.on(device)
        n = len(self)
        if shuffle:
            order = epoch_order(n, seed, epoch)
            if self.rows is not None:
                order = self.rows.index_select(0, order)
            order = order.to(x.device)
        else:
            order = self._rows_to(x.device)
        return _slices(x, y, order, plan, batch_size, n)


def _slices(x: Tensor, y: Tensor, order: Tensor | None, plan: range, batch_size: int, n: int):
    if order is None:
        for b in plan:
            lo = b * batch_size
            yield x[lo:lo + batch_size], y[lo:lo + batch_size]
    else:
        for b in plan:
            lo = b * batch_size
            idx = order[lo:lo + batch_size]
            yield x.index_select(0, idx), y.index_select(0, idx)


class MappedArray:
    """Rows of a memory-mapped array (an np.memmap, samples on the first axis), read on demand.

    Rows are not gathered through the mapping itself: on current Linux kernels a page fault in
    a file mapping maps a whole large folio of the page cache (measured: ~0.8 MB per random
    1 KB row), so resident memory would grow toward the file's size. Instead rows are read with
    positional reads (os.preadv) from the file region the memmap describes, in increasing file
    order, adjacent rows in one call, straight into the batch. Resident memory is then the
    batches alone. Arrays that are not plain C-ordered maps of a file (or platforms without
    preadv) fall back to numpy indexing of the map."""

    def __init__(self, arr: np.ndarray):
        self.array = arr
        self.shape, self.dtype = tuple(arr.shape), arr.dtype
        self.row_bytes = arr.dtype.itemsize * math.prod(self.shape[1:])
        self._fd: int | None = None
        self._offset = 0
        if hasattr(os, "preadv") and self.row_bytes > 0 and _is_whole_map(arr):
            self._fd = os.open(os.fspath(arr.filename), os.O_RDONLY)
            self._offset = int(arr.offset)
            weakref.finalize(self, os.close, self._fd)

    def __len__(self) -> int:
        return self.shape[0]

    def _empty(self, n: int) -> tuple[np.ndarray, np.ndarray]:
        out = np.empty((n,) + self.shape[1:], self.dtype)
        return out, out.reshape(n, -1).view(np.uint8)          # the same memory as [n, row_bytes]

    def _pread(self, buffers: list, row: int, nbytes: int) -> None:
        got = os.preadv(self._fd, buffers, self._offset + row * self.row_bytes)
        if got != nbytes:
            raise OSError(f"{self.array.filename} is shorter than its header says (was it changed "
                          "while training?)")

    def take(self, idx: np.ndarray) -> np.ndarray:
        """Rows `idx` in that order (read in increasing file order, placed where they belong)."""
        idx = np.asarray(idx, dtype=np.int64)
        ordered = len(idx) < 2 or bool(np.all(idx[1:] >= idx[:-1]))
        if self._fd is None:
            if ordered:
                return np.asarray(self.array[idx])
            sort = np.argsort(idx, kind="stable")
            out = np.empty((len(idx),) + self.shape[1:], self.dtype)
            out[sort] = self.array[idx[sort]]
            return out
        out, rows = self._empty(len(idx))
        if ordered:                                  # runs of adjacent rows: one read each
            breaks = (np.flatnonzero(np.diff(idx) != 1) + 1).tolist()
            first = idx.tolist()
            for a, b in zip([0] + breaks, breaks + [len(idx)]):
                self._pread([rows[a:b]], first[a], (b - a) * self.row_bytes)
            return out
        sort = np.argsort(idx, kind="stable")       # shuffled: one read per row, in file order
        size, fd, preadv = self.row_bytes, self._fd, os.preadv
        flat = memoryview(rows.reshape(-1))
        for dest, at in zip((sort * size).tolist(), (idx[sort] * size + self._offset).tolist()):
            if preadv(fd, [flat[dest:dest + size]], at) != size:
                raise OSError(f"{self.array.filename} is shorter than its header says")
        return out

    def read(self, lo: int, hi: int) -> np.ndarray:
        """Rows lo..hi-1 as a new array."""
        if self._fd is None:
            return np.array(self.array[lo:hi])
        out, rows = self._empty(hi - lo)
        if hi > lo:
            self._pread([rows], lo, (hi - lo) * self.row_bytes)
        return out

    def chunks(self, rows: np.ndarray | None = None, chunk_bytes: int = 8 << 20):
        """Yield (position, block) over all rows, or over the sorted `rows`, in bounded blocks."""
        step = max(1, chunk_bytes // max(1, self.row_bytes))
        if rows is None:
            for lo in range(0, len(self), step):
                yield lo, self.read(lo, min(lo + step, len(self)))
        else:
            for lo in range(0, len(rows), step):
                yield lo, self.take(rows[lo:lo + step])


def _is_whole_map(arr: np.ndarray) -> bool:
    """An np.memmap whose data starts at its `offset` in `filename` (not a slice of one), C order."""
    mm = getattr(arr, "_mmap", None)
    if mm is None or not isinstance(getattr(arr, "filename", None), (str, os.PathLike)) or not arr.flags.c_contiguous:
        return False
    start = arr.offset - arr.offset % mmap.ALLOCATIONGRANULARITY
    base = np.frombuffer(mm, dtype=np.uint8)
    try:
        return arr.ctypes.data == base.ctypes.data + (arr.offset - start)
    finally:
        del base


def iter_chunks(arr: np.ndarray | MappedArray, rows: np.ndarray | None = None, chunk_bytes: int = 8 << 20):
    """Bounded blocks of an array (mapped or in memory), optionally only the sorted `rows`."""
    if isinstance(arr, MappedArray):
        yield from arr.chunks(rows, chunk_bytes)
        return
    step = max(1, chunk_bytes // max(1, arr.dtype.itemsize * math.prod(arr.shape[1:])))
    count = len(arr) if rows is None else len(rows)
    for lo in range(0, count, step):
        yield lo, arr[lo:lo + step] if rows is None else arr[rows[lo:lo + step]]


class MappedSplit(Split):
    """A split read from a memory-mapped array: the inputs stay on disk, the targets in memory.

    `scale`/`shift` (per-feature float32 tensors, or None) normalize each batch as it is made."""

    mapped = True

    def __init__(self, source: MappedArray, rows: np.ndarray | None, y: Tensor, x_dtype: str,
                 sample_shape: tuple[int, ...], scale: Tensor | None = None, shift: Tensor | None = None):
        self.source, self.rows, self.y, self.x_dtype = source, rows, y, x_dtype
        self.sample_shape = tuple(sample_shape)
        self._torch_dtype = torch.float32 if x_dtype == "float" else torch.int64
        self._norm = (scale, shift) if scale is not None else None
        self._norm_on: dict[torch.device, tuple[Tensor, Tensor]] = {}

    def __len__(self) -> int:
        return len(self.source) if self.rows is None else len(self.rows)

    def _load(self, order: np.ndarray | None, lo: int, hi: int, pin: bool) -> tuple[Tensor, Tensor]:
        if order is None:
            rows = self.source.read(lo, hi)
            yb = self.y[lo:hi]
        else:
            idx = order[lo:hi]
            rows = self.source.take(idx)
            yb = self.y.index_select(0, torch.from_numpy(idx))
        xb = torch.from_numpy(rows).to(self._torch_dtype).reshape((len(rows),) + self.sample_shape)
        if pin:
            xb, yb = xb.pin_memory(), yb.pin_memory()
        return xb, yb

    def _norm_to(self, device: torch.device) -> tuple[Tensor, Tensor]:
        if device not in self._norm_on:
            self._norm_on[device] = tuple(t.to(device) for t in self._norm)
        return self._norm_on[device]

    def batches(self, batch_size: int, *, shuffle: bool, epoch: int = 0, seed: int = 0, device=None,
                drop_last: bool = False, start_batch: int = 0) -> Iterator[tuple[Tensor, Tensor]]:
        plan = self._plan(batch_size, drop_last, start_batch)
        device = _device(device) or torch.device("cpu")
        n = len(self)
        if shuffle:
            order = epoch_order(n, seed, epoch).numpy()
            if self.rows is not None:
                order = self.rows[order]
        else:
            order = self.rows
        return self._iterate(order, plan, batch_size, n, device)

    def _iterate(self, order, plan: range, batch_size: int, n: int, device: torch.device):
        pin = device.type == "cuda"
        pending: deque = deque()
        todo = iter(plan)
        with ThreadPoolExecutor(max_workers=WORKERS, thread_name_prefix="nnspec-data") as pool:
            try:
                for b in todo:
                    pending.append(pool.submit(self._load, order, b * batch_size,
                                               min(n, (b + 1) * batch_size), pin))
                    if len(pending) >= PREFETCH:
                        break
                while pending:
                    xb, yb = pending.popleft().result()
                    nxt = next(todo, None)
                    if nxt is not None:
                        pending.append(pool.submit(self._load, order, nxt * batch_size,
                                                   min(n, (nxt + 1) * batch_size), pin))
                    if device.type != "cpu":
                        xb, yb = xb.to(device, non_blocking=pin), yb.to(device, non_blocking=pin)
                    if self._norm is not None:
                        scale, shift = self._norm_to(device)
                        xb = xb.mul_(scale).add_(shift)
                    yield xb, yb
            finally:
                for f in pending:
                    f.cancel()

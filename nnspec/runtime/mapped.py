"""Rows of memory-mapped .npy/.npz arrays, read on demand with resident memory kept flat.

Why not gather rows through the mapping itself: on current Linux kernels a page fault in a file
mapping maps a whole large folio of the page cache (measured on 6.18: 51,200 random 1 KB rows of
a 500 MB file left all 506 MB resident), so the process's memory would grow to the file's size.
Rows are instead read with positional reads (os.preadv) into fresh arrays, so resident memory is
the arrays asked for.

A system call costs about as much as copying a few KB, so reads are planned: the wanted rows are
visited in file order, and rows separated by a small gap are read in one call, the gap's bytes
landing in a scratch buffer. A shuffled batch of 256 rows out of 50,000 has no such neighbours,
but a window of many batches does: callers that read ahead (MappedSplit) ask for whole windows.
"""
from __future__ import annotations

import math
import mmap
import os
import weakref

import numpy as np
import torch

GAP_BYTES = 16384      # a gap up to this long between two wanted rows is read through
MIN_RUN = 4            # rows in a run worth one read through its gaps
CHUNK_BYTES = 4 << 20  # the most read in one call (the scratch buffer's size)


class MappedArray:
    """Rows of a memory-mapped array (an np.memmap, samples on the first axis), read on demand
    with positional reads (see the module doc). Arrays that are not plain C-ordered maps of a
    file (or platforms without preadv) fall back to numpy indexing of the map."""

    def __init__(self, arr: np.ndarray):
        self.array = arr
        self.shape, self.dtype = tuple(arr.shape), arr.dtype
        self.row_bytes = arr.dtype.itemsize * math.prod(self.shape[1:])
        self._tensor_dtype = _torch_dtype(arr.dtype)
        self._fd: int | None = None
        self._offset = 0
        if hasattr(os, "preadv") and self.row_bytes > 0 and _is_whole_map(arr):
            self._fd = os.open(os.fspath(arr.filename), os.O_RDONLY)
            self._offset = int(arr.offset)
            weakref.finalize(self, os.close, self._fd)
        self._gap_rows = GAP_BYTES // max(1, self.row_bytes)

    def __len__(self) -> int:
        return self.shape[0]

    def _empty(self, n: int) -> tuple[np.ndarray, np.ndarray]:
        """A new batch array and its [n, row_bytes] byte view. torch allocates it where it can:
        its memory is 64-byte aligned (numpy's is not always), which the first layer's kernels
        read faster, and the tensor made from it owns it."""
        shape = (n,) + self.shape[1:]
        if self._tensor_dtype is None:
            out = np.empty(shape, self.dtype)
        else:
            out = torch.empty(shape, dtype=self._tensor_dtype).numpy()
        return out, out.view(np.uint8).reshape(n, self.row_bytes)

    def _pread(self, buffers: list, row: int, nbytes: int) -> None:
        got = os.preadv(self._fd, buffers, self._offset + row * self.row_bytes)
        if got != nbytes:
            raise OSError(f"{self.array.filename} is shorter than its header says (was it changed "
                          "while training?)")

    def take(self, idx: np.ndarray) -> np.ndarray:
        """Rows `idx` (any order, repeats allowed) as a new array in that order."""
        idx = np.asarray(idx, dtype=np.int64)
        if self._fd is None:
            return self._take_from_map(idx)
        out, rows = self._empty(len(idx))
        if len(idx) == 0:
            return out
        sort = np.argsort(idx, kind="stable")
        wanted = idx[sort]
        step = np.diff(wanted)
        if (step == 1).all() and not (sort[1:] - sort[:-1] - 1).any():
            self._pread([rows], int(wanted[0]), rows.nbytes)     # already one run in file order
            return out
        # Runs: wanted rows close enough to read through the gaps between them, within one
        # chunk of the file. A run of MIN_RUN rows or more is read in one call into a scratch
        # buffer and copied out; the other rows (all of them in a sparse batch) one call each.
        chunk_rows = max(1, CHUNK_BYTES // self.row_bytes)
        split_at = (step == 0) | (step > self._gap_rows + 1) | (np.diff(wanted // chunk_rows) != 0)
        bounds = np.concatenate(([0], np.flatnonzero(split_at) + 1, [len(idx)]))
        counts = np.diff(bounds)
        long_runs = counts >= MIN_RUN
        in_long = np.repeat(long_runs, counts)
        size, fd, preadv = self.row_bytes, self._fd, os.preadv
        flat = memoryview(rows.reshape(-1))
        for d, at in zip((sort[~in_long] * size).tolist(), (wanted[~in_long] * size + self._offset).tolist()):
            if preadv(fd, [flat[d:d + size]], at) != size:
                raise OSError(f"{self.array.filename} is shorter than its header says")
        if long_runs.any():
            row = np.dtype((np.void, size))                # whole rows: numpy copies each at once
            scratch, placed = np.empty(chunk_rows, row), rows.view(row).reshape(-1)
            for a, b in zip(bounds[:-1][long_runs].tolist(), bounds[1:][long_runs].tolist()):
                first, last = int(wanted[a]), int(wanted[b - 1])
                span = scratch[:last - first + 1]
                self._pread([span], first, span.nbytes)
                placed[sort[a:b]] = span if len(span) == b - a else span[wanted[a:b] - first]
        return out

    def _take_from_map(self, idx: np.ndarray) -> np.ndarray:
        if len(idx) < 2 or bool(np.all(idx[1:] >= idx[:-1])):
            return np.asarray(self.array[idx])
        sort = np.argsort(idx, kind="stable")
        out = np.empty((len(idx),) + self.shape[1:], self.dtype)
        out[sort] = self.array[idx[sort]]
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


def _torch_dtype(dtype: np.dtype) -> torch.dtype | None:
    """torch's dtype for a numpy one, or None where torch has none (e.g. big-endian)."""
    try:
        return torch.from_numpy(np.empty(0, dtype)).dtype
    except TypeError:
        return None


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



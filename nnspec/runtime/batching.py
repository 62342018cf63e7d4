"""Splits and their batches: in-memory tensors, and memory-mapped files read a window at a time.

The sample order of an epoch is a pure function of (seed, epoch), so a resumed run replays the
same order and skips its first `start_sample` samples (the rest is batched from there, so a run
resumed with another batch or number of processes still sees every sample once). In memory, a batch is one `index_select` per tensor (no
per-sample Python). From a memory-mapped file, the rows of a window of consecutive batches
(WINDOW_BYTES) are read together with planned reads (nnspec.runtime.mapped), and its batches
are views of it; resident memory is a few windows however large the file is. Windows are read
ahead by a worker thread when a core is free for it (see `reads_ahead`).
"""
from __future__ import annotations

from collections import deque
from concurrent.futures import ThreadPoolExecutor
from typing import Iterator

import numpy as np
import torch
from torch import Tensor

from nnspec.runtime.mapped import MappedArray

_ORDER_TAG = 0xBA7C4      # separates the batch-order stream from other seeded streams
WINDOW_BYTES = 8 << 20    # rows read at once from a memory-mapped file (whole batches, at least one)
PREFETCH = 1              # windows read ahead, when a worker thread reads ahead
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
        """Batches of a whole epoch."""
        return self.batch_count(batch_size, drop_last)

    def batches(self, batch_size: int, *, shuffle: bool, epoch: int = 0, seed: int = 0, device=None,
                drop_last: bool = False, start_sample: int = 0) -> Iterator[tuple[Tensor, Tensor]]:
        raise NotImplementedError

    def batch_count(self, batch_size: int, drop_last: bool = False, start_sample: int = 0) -> int:
        """How many batches `batches` yields with these arguments."""
        return len(self._plan(batch_size, drop_last, start_sample)[1])

    def _plan(self, batch_size: int, drop_last: bool, start_sample: int) -> tuple[int, range]:
        """(first sample of the epoch's order to read, the batches of what is left)."""
        if batch_size < 1:
            raise ValueError(f"batch_size must be ≥ 1, got {batch_size}")
        if start_sample < 0:
            raise ValueError(f"start_sample must be ≥ 0, got {start_sample}")
        start = min(start_sample, len(self))
        left = len(self) - start
        return start, range(left // batch_size if drop_last else -(-left // batch_size))


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
                drop_last: bool = False, start_sample: int = 0) -> Iterator[tuple[Tensor, Tensor]]:
        start, plan = self._plan(batch_size, drop_last, start_sample)
        x, y = self.store.on(device)
        n = len(self)
        if shuffle:
            order = epoch_order(n, seed, epoch)
            if self.rows is not None:
                order = self.rows.index_select(0, order)
            order = order.to(x.device)
        else:
            order = self._rows_to(x.device)
        if start:
            order = (torch.arange(n, device=x.device) if order is None else order)[start:]
        return _slices(x, y, order, plan, batch_size, n - start)


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
                drop_last: bool = False, start_sample: int = 0) -> Iterator[tuple[Tensor, Tensor]]:
        start, plan = self._plan(batch_size, drop_last, start_sample)
        device = _device(device) or torch.device("cpu")
        n = len(self)
        if shuffle:
            order = epoch_order(n, seed, epoch).numpy()
            if self.rows is not None:
                order = self.rows[order]
        else:
            order = self.rows
        if start:
            order = (np.arange(n, dtype=np.int64) if order is None else order)[start:]
        return self._iterate(order, plan, batch_size, n - start, device)

    def _iterate(self, order, plan: range, batch_size: int, n: int, device: torch.device):
        """Read whole windows of consecutive batches (one planned read each, see
        nnspec.runtime.mapped) and yield their batches as views."""
        pin = device.type == "cuda"
        per_window = max(1, WINDOW_BYTES // max(1, batch_size * self.source.row_bytes))
        windows = [plan[i:i + per_window] for i in range(0, len(plan), per_window)]
        spans = ((w[0] * batch_size, min(n, (w[-1] + 1) * batch_size)) for w in windows)
        loaded = (_read_ahead(self._load, order, spans, pin) if reads_ahead(device)
                  else (self._load(order, lo, hi, pin) for lo, hi in spans))
        for (xw, yw), window in zip(loaded, windows):
            if device.type != "cpu":
                xw, yw = xw.to(device, non_blocking=pin), yw.to(device, non_blocking=pin)
            base = window[0] * batch_size
            for b in window:
                lo, hi = b * batch_size - base, min(n, (b + 1) * batch_size) - base
                xb, yb = xw[lo:hi], yw[lo:hi]
                if self._norm is not None:
                    scale, shift = self._norm_to(device)
                    xb = xb.mul_(scale).add_(shift)
                yield xb, yb


def reads_ahead(device: torch.device) -> bool:
    """Whether a worker thread reads batches ahead of the training step.

    Yes when the step runs on an accelerator, or when torch's threads (over all local ranks)
    leave a CPU core free. When every core already computes on the CPU, a reader thread can only
    take time from the compute, and preempting one of torch's threads stalls the others at the
    end of each parallel region: reading in the foreground is then faster when reads are many
    small system calls (benchmarks/memmap_training.py --samples 500000, 2 cores: 0.85–0.91× of
    in-memory in the foreground, 0.81–0.83× with the thread)."""
    if device.type != "cpu":
        return True
    from nnspec.runtime.threads import cores, local_ranks
    return torch.get_num_threads() * local_ranks() < cores()


def _read_ahead(load, order, spans, pin: bool):
    """`load(order, lo, hi, pin)` for each span, up to PREFETCH spans ahead on WORKERS threads."""
    pending: deque = deque()
    with ThreadPoolExecutor(max_workers=WORKERS, thread_name_prefix="nnspec-data") as pool:
        try:
            for lo, hi in spans:
                pending.append(pool.submit(load, order, lo, hi, pin))
                if len(pending) >= PREFETCH:
                    break
            while pending:
                ready = pending.popleft().result()
                for lo, hi in spans:
                    pending.append(pool.submit(load, order, lo, hi, pin))
                    break
                yield ready
        finally:
            for f in pending:
                f.cancel()

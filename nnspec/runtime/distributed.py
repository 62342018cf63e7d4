"""Data-parallel training over several processes (torch.distributed), and the forward wrappers
(DistributedDataParallel, torch.compile with an eager fallback, channels_last).

A process is part of a distributed run when torchrun (or `nnspec train --nproc N`, which uses
the same elastic launcher) sets WORLD_SIZE > 1, RANK and LOCAL_RANK. Without them every helper
here is a no-op and the trainer runs exactly as a single process.

Sharding. Each rank reads the spec's `batch` samples per step, so the global batch is
world × batch. Every rank computes the same epoch order (a function of seed and epoch); global
batch k is order[k·G : (k+1)·G] with G = world × batch, and rank r takes its r-th contiguous
slice of it. So global batch k of an N-process run holds exactly the samples of batch k of a
one-process run with batch N × batch, and with a mean-reduced loss the averaged gradient is the
same. A short last global batch of m samples is split as evenly as possible (sizes differ by at
most one) and each rank's loss is weighted by world × local / m, so the averaged gradient is
still the mean over the m samples; a tail with fewer samples than ranks is dropped. Every rank
therefore runs the same number of steps. Checkpoints count the samples of the epoch's order
read so far (by all ranks), so a run resumed with any number of ranks shards the rest of the
epoch the same way and reads each remaining sample once.

What crosses processes: gradients (DDP, averaged; not for the micro-batches of an accumulation
before its last), a stop vote about every 0.25 s (StopVote), a finite-loss vote when `on_nan skip`, and
once per epoch the training loss and sample counts (summed) plus the train_* metrics (merged
over the ranks, or rank 0's where a plugin metric cannot merge; broadcast either way, so every
rank takes the same monitoring and early-stop decisions). Validation and
test splits are split into contiguous shares, one per rank, and the loss sums and metric states
are combined (`eval_share`, `combine_eval`); when a (plugin) metric cannot merge partial states,
every rank evaluates the whole split instead. Only rank 0 prints and writes the run folder.

Collectives time out after NNSPEC_DIST_TIMEOUT seconds (default 120), so a dead peer ends the
run instead of hanging it; the elastic launcher also ends every rank when one fails.
"""
from __future__ import annotations

import contextlib
import datetime
import gc
import math
import os
import time
import warnings
from dataclasses import dataclass
from typing import Any, Callable, Iterator

import numpy as np
import torch
from torch import Tensor, nn

from nnspec.runtime.batching import MappedSplit, Split, TensorSplit, _slices, epoch_order, mix_seed

DEFAULT_TIMEOUT_S = 120.0
_RANK_SEED_TAG = 0xD15


@dataclass(frozen=True)
class World:
    """This process's place in the run. `size == 1`: a single process (everything is local)."""
    rank: int = 0
    size: int = 1
    local_rank: int = 0

    @property
    def active(self) -> bool:
        return self.size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def world() -> World:
    """Read from the launcher's environment (RANK, WORLD_SIZE, LOCAL_RANK)."""
    size = int(os.environ.get("WORLD_SIZE", "1") or 1)
    if size <= 1:
        return World()
    return World(int(os.environ.get("RANK", "0")), size, int(os.environ.get("LOCAL_RANK", "0")))


def timeout_s() -> float:
    return float(os.environ.get("NNSPEC_DIST_TIMEOUT", DEFAULT_TIMEOUT_S))


def device_for(name: str) -> str:
    """The device a rank uses: under a distributed launch with CUDA, its own card cuda:LOCAL_RANK."""
    w = world()
    if not w.active:
        return name
    if name.startswith("cuda") or (name == "auto" and torch.cuda.is_available()):
        return f"cuda:{w.local_rank}"
    return name


def ensure_group(device: torch.device) -> None:
    """Join the process group (nccl on CUDA, gloo otherwise) once, with a timeout."""
    w = world()
    if not w.active or not torch.distributed.is_available():
        return
    if torch.distributed.is_initialized():
        return
    backend = "nccl" if device.type == "cuda" else "gloo"
    if device.type == "cuda":
        torch.cuda.set_device(device)
    torch.distributed.init_process_group(backend, timeout=datetime.timedelta(seconds=timeout_s()))
    global _control_group
    _control_group = torch.distributed.new_group(backend="gloo") if backend != "gloo" else None


_control_group = None     # a gloo group for small CPU messages when the main group is nccl


class StopVote:
    """Agrees across ranks on when a signal stops the run, so every rank stops after the same step.

    A signal reaches the ranks at different moments (the launcher forwards it, a terminal sends
    it to all); a rank that stopped alone would leave the others waiting in the next gradient
    all-reduce. So the ranks vote: at a vote step each rank waits for the previous vote (a MAX
    over the ranks' [flag, steps to the next vote], on CPU: no GPU synchronization), stops if
    any rank had a signal, and sends its own vote without waiting. Votes are spaced about
    INTERVAL_S apart (each rank proposes a spacing from its step time; the MAX is used by all),
    because a collective per step costs tiny models a third of their speed. A signal is acted on
    within about two intervals, everywhere after the same step. In one process the flag is read
    directly after every step."""

    INTERVAL_S = 0.25

    def __init__(self, flag):
        self.flag = flag
        self._vote: Tensor | None = None
        self._work = None
        self._countdown = 1                   # steps until the next vote
        self._spacing = 1                     # steps between the last two votes
        self._since = time.perf_counter()

    def __call__(self) -> bool:
        if self.flag is None:
            return False
        if not world().active:
            return self.flag.requested is not None
        self._countdown -= 1
        if self._countdown > 0:
            return False
        if self._work is not None:
            self._work.wait()
            self._work = None
            stop, self._countdown = self._vote.tolist()
            if stop:
                return True
        else:
            self._countdown = 1
        now = time.perf_counter()
        step_s = (now - self._since) / self._spacing
        self._since, self._spacing = now, self._countdown
        proposal = max(1, min(10_000, int(self.INTERVAL_S / max(step_s, 1e-6))))
        self._vote = torch.tensor([self.flag.requested is not None, proposal], dtype=torch.int64)
        self._work = torch.distributed.all_reduce(self._vote, op=torch.distributed.ReduceOp.MAX,
                                                  group=_control_group, async_op=True)
        return False

    def close(self) -> None:
        """Wait for the last vote (every rank sent it) before the group is torn down."""
        if self._work is not None:
            self._work.wait()
            self._work = None


def finish() -> None:
    """Leave the process group (after a barrier, so no rank tears it down under another).
    Callers drop their DistributedDataParallel wrapper first; the collection here frees it if
    it sits in a reference cycle, so the group is destroyed through its own (GIL-releasing)
    destructor, not the reducer's."""
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        gc.collect()
        try:
            torch.distributed.barrier()
        finally:
            torch.distributed.destroy_process_group()


# ---- sharding ------------------------------------------------------------------------------------

def _shard_plan(n: int, batch: int, size: int, rank: int, drop_last: bool) -> tuple[int, int, int]:
    """(full global batches, this rank's tail size, the whole tail size) for n samples."""
    g = batch * size
    full, tail = divmod(n, g)
    if drop_last or tail < size:
        return full, 0, 0
    base, extra = divmod(tail, size)
    return full, base + (rank < extra), tail


def num_batches(split: Split, batch_size: int, drop_last: bool) -> int:
    """Steps per epoch of one rank: global batches of world × batch_size samples."""
    return shard(split).num_batches(batch_size, drop_last)


class ShardedSplit(Split):
    """One rank's part of a training split (see the module doc). `batch_weight` is the loss
    weight of the batch last yielded: 1.0 except in a short last global batch."""

    def __init__(self, split: Split, w: World):
        self.split, self.world = split, w
        self.x_dtype, self.sample_shape, self.mapped = split.x_dtype, split.sample_shape, split.mapped
        self.batch_weight = 1.0

    def __len__(self) -> int:
        return len(self.split)

    def batch_count(self, batch_size: int, drop_last: bool = False, start_sample: int = 0) -> int:
        start, _ = self._plan(batch_size, drop_last, start_sample)
        full, mine, _ = _shard_plan(len(self.split) - start, batch_size, self.world.size, self.world.rank, drop_last)
        return full + (mine > 0)

    def local_order(self, batch_size: int, shuffle: bool, epoch: int, seed: int, drop_last: bool,
                    start: int = 0) -> Tensor:
        """Positions (0..n-1 in the split) this rank reads this epoch, in order, after the first
        `start` samples of the epoch's order (read before a resume, by any number of ranks)."""
        size, rank = self.world.size, self.world.rank
        order = epoch_order(len(self.split), seed, epoch) if shuffle else torch.arange(len(self.split))
        order = order[start:]
        full, mine, tail = _shard_plan(len(order), batch_size, size, rank, drop_last)
        g = batch_size * size
        parts = [order[:full * g].view(full, size, batch_size)[:, rank].reshape(-1)]
        if mine:
            base, extra = divmod(tail, size)
            lo = full * g + rank * base + min(rank, extra)
            parts.append(order[lo:lo + mine])
        return torch.cat(parts)

    def batches(self, batch_size: int, *, shuffle: bool, epoch: int = 0, seed: int = 0, device=None,
                drop_last: bool = False, start_sample: int = 0) -> Iterator[tuple[Tensor, Tensor]]:
        start, _ = self._plan(batch_size, drop_last, start_sample)
        positions = self.local_order(batch_size, shuffle, epoch, seed, drop_last, start)
        n_local = len(positions)
        plan = range(-(-n_local // batch_size))
        _, mine, tail = _shard_plan(len(self.split) - start, batch_size, self.world.size, self.world.rank, drop_last)
        tail_weight = self.world.size * mine / tail if tail else 1.0
        last = len(plan) - 1
        inner = self._rows(positions, plan, batch_size, n_local, device)
        for b, xy in zip(plan, inner):
            self.batch_weight = tail_weight if (tail and b == last) else 1.0
            yield xy

    def _rows(self, positions: Tensor, plan: range, batch_size: int, n: int, device):
        split = self.split
        if isinstance(split, TensorSplit):
            x, y = split.store.on(device)
            rows = positions if split.rows is None else split.rows.index_select(0, positions)
            return _slices(x, y, rows.to(x.device), plan, batch_size, n)
        if isinstance(split, MappedSplit):
            rows = positions.numpy() if split.rows is None else split.rows[positions.numpy()]
            dev = torch.device(device) if device is not None else torch.device("cpu")
            return split._iterate(np.asarray(rows, dtype=np.int64), plan, batch_size, n, dev)
        raise TypeError(f"cannot shard a {type(split).__name__} across processes")


def shard(split: Split) -> Split:
    """The rank's view of a training split (the split itself in a single process)."""
    w = world()
    return ShardedSplit(split, w) if w.active else split


def batch_weight(split: Split) -> float:
    """The loss weight of the batch `split` last yielded (1.0 unless sharded with a short tail)."""
    return getattr(split, "batch_weight", 1.0)


# ---- sharded evaluation ---------------------------------------------------------------------------

def eval_share(n: int, metrics) -> tuple[int, int]:
    """The samples [lo, hi) of an n-sample split this rank evaluates: a contiguous share when
    every metric can merge partial states (built-ins can), else the whole split on every rank
    (exact for any plugin metric, but not divided by the number of ranks)."""
    w = world()
    if not w.active or not _mergeable(metrics):
        return 0, n
    return n * w.rank // w.size, n * (w.rank + 1) // w.size


def combine_eval(total: Tensor, count: int, metrics, sharded: bool) -> tuple[float, int]:
    """Sum the loss over the ranks' shares and merge the metrics' states (each rank merges all
    states in rank order, so every rank computes the same numbers)."""
    if not sharded:
        return total.item(), count
    sums = torch.stack([total.double(), torch.tensor(float(count), dtype=torch.float64, device=total.device)])
    torch.distributed.all_reduce(sums)
    _merge_states(metrics)
    total_sum, all_count = sums.tolist()
    return total_sum, int(all_count)


def merge_metrics(metrics) -> None:
    """Make training metrics cover every rank's batches (when all of them can merge; otherwise
    `sync_row` shares rank 0's)."""
    if world().active and metrics and _mergeable(metrics):
        _merge_states(metrics)


def _mergeable(metrics) -> bool:
    return all(getattr(m, "mergeable", False) for m in metrics)


def _merge_states(metrics) -> None:
    """Every rank gathers all ranks' metric states and merges them in rank order."""
    states: list = [None] * world().size
    torch.distributed.all_gather_object(states, [m.state() for m in metrics])
    for i, m in enumerate(metrics):
        m.reset()
        for rank_states in states:
            m.merge_state(rank_states[i])


# ---- collectives the loop uses -----------------------------------------------------------------

def all_finite(loss: Tensor) -> bool:
    """Whether the loss is finite on every rank (one small all-reduce when distributed)."""
    ok = torch.isfinite(loss.detach()).all()
    if not world().active:
        return bool(ok)
    flag = ok.to(torch.int32).reshape(1)
    torch.distributed.all_reduce(flag, op=torch.distributed.ReduceOp.MIN)
    return bool(flag.item())


def sync_row(row: dict, loss_total: float, loss_count: int, samples: int, seconds: float,
             device: torch.device) -> dict:
    """Make an epoch row the same on every rank: training loss over all ranks, samples/s of the
    whole run, and rank 0's train_* metrics (already merged over the ranks by `merge_metrics`
    when they can be)."""
    if not world().active:
        return row
    sums = torch.tensor([loss_total, float(loss_count), float(samples)], dtype=torch.float64, device=device)
    torch.distributed.all_reduce(sums)
    total, count, all_samples = sums.tolist()
    row["train_loss"] = total / count if count else math.nan
    if "samples_per_s" in row:
        row["samples_per_s"] = all_samples / seconds if seconds > 0 else math.nan
    shared = [{k: v for k, v in row.items() if k.startswith("train_") and k not in ("train_loss", "train_seconds")}]
    torch.distributed.broadcast_object_list(shared, src=0)
    row.update(shared[0])
    return row


# ---- the forward: DDP, compile, channels_last ---------------------------------------------------

class _CompileFallback:
    """A compiled forward that falls back to eager when its first call fails."""

    def __init__(self, compiled: Callable, eager: Callable):
        self.compiled, self.eager, self.checked = compiled, eager, False

    def __call__(self, x):
        if self.checked:
            return self.compiled(x)
        try:
            out = self.compiled(x)
        except Exception as err:                      # torch.compile backends raise many types
            warnings.warn(f"nnspec: `compile true` failed ({type(err).__name__}: {str(err).splitlines()[0][:200]}); "
                          "training continues without compilation", RuntimeWarning, stacklevel=2)
            self.compiled = self.eager
            out = self.eager(x)
        self.checked = True
        return out


def _compile(module: Callable) -> Callable:
    dynamo = getattr(torch, "_dynamo", None)
    supported = getattr(dynamo, "is_dynamo_supported", lambda: True)
    try:
        ok = supported()
    except Exception:
        ok = False
    if not hasattr(torch, "compile") or not ok:
        warnings.warn("nnspec: `compile true` is not supported by this torch/Python; training without "
                      "compilation", RuntimeWarning, stacklevel=3)
        return module
    return _CompileFallback(torch.compile(module), module)


def _has_conv2d(model: nn.Module) -> bool:
    return any(isinstance(m, nn.Conv2d) for m in model.modules())


class _ChannelsLast:
    """Feeds 4-D inputs in channels_last layout (the model's weights are converted once)."""

    def __init__(self, fwd: Callable):
        self.fwd = fwd

    def __call__(self, x):
        if isinstance(x, Tensor) and x.dim() == 4:
            x = x.contiguous(memory_format=torch.channels_last)
        return self.fwd(x)


def check_supported(flags: frozenset, needs_closure: str, create_graph: str, span=None) -> None:
    """Optimizers that re-evaluate the loss or differentiate twice cannot run data-parallel."""
    if not world().active:
        return
    from nnspec.errors import error
    if needs_closure in flags or create_graph in flags:
        raise error("E906", "this optimizer cannot run on several processes (it re-evaluates the loss "
                            "or needs second derivatives, which DistributedDataParallel does not support)",
                    span, "train with one process (no --nproc / torchrun)")


@dataclass(frozen=True)
class Forwards:
    """The model's forwards. `no_sync()`: a context in which a training forward and backward
    leave gradients local (DDP's no_sync: the micro-batches of an accumulation before the last
    one); a no-op in a single process."""
    train: Callable
    eval: Callable
    no_sync: Callable[[], Any] = contextlib.nullcontext


def prepare(model: nn.Module, device: torch.device, *, compile: bool, seed: int) -> Forwards:
    """Training and evaluation forwards for `model`. Distributed: joins the group, wraps
    the model in DDP for training (evaluation uses the plain model: no collectives), and gives
    each rank its own random stream (dropout) from here on. CUDA conv models use channels_last.
    `compile`: torch.compile with an eager fallback. `model` itself stays unwrapped, so its
    state_dict (checkpoints, weights) does not depend on the number of processes."""
    w = world()
    channels_last = device.type == "cuda" and _has_conv2d(model)
    if channels_last:
        model.to(memory_format=torch.channels_last)
    train_fwd: Callable = model
    no_sync: Callable[[], Any] = contextlib.nullcontext
    if w.active:
        ensure_group(device)
        from torch.nn.parallel import DistributedDataParallel
        ids = [device.index] if device.type == "cuda" else None
        train_fwd = DistributedDataParallel(model, device_ids=ids, output_device=device.index if ids else None)
        no_sync = train_fwd.no_sync
        if w.rank:
            torch.manual_seed(mix_seed(seed, w.rank, _RANK_SEED_TAG) % 2**63)
    eval_fwd: Callable = model
    if compile:
        train_fwd = _compile(train_fwd)
        eval_fwd = _compile(model) if w.active else train_fwd
    if channels_last:
        train_fwd, eval_fwd = _ChannelsLast(train_fwd), _ChannelsLast(eval_fwd)
    return Forwards(train_fwd, eval_fwd, no_sync)


def rank_key() -> tuple[int, ...]:
    """What sets a rank's random streams apart: () in a single process (so one process keeps
    its single-process streams), (rank,) in a distributed run."""
    w = world()
    return (w.rank,) if w.active else ()


def reseed_after_resume(seed: int, step: int, generator: torch.Generator | None) -> None:
    """A checkpoint holds rank 0's random streams, which every rank loads. Ranks > 0 then draw
    fresh streams from (seed, rank, step), so dropout and augmentation stay independent across
    ranks after a resume (rank 0 continues exactly; the others are not bitwise those of an
    uninterrupted run)."""
    w = world()
    if not w.active or w.is_main:
        return
    torch.manual_seed(mix_seed(seed, w.rank, step, _RANK_SEED_TAG) % 2**63)
    if generator is not None:
        generator.manual_seed(mix_seed(seed, w.rank, step, _RANK_SEED_TAG, 1) % 2**63)


def describe() -> str:
    w = world()
    return f", {w.size} processes (rank {w.rank})" if w.active else ""


def info(**extra: Any) -> dict:
    """What a checkpoint records about the run's processes (positions stay in global batches)."""
    return {"world_size": world().size, **extra}

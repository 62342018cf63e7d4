"""How many intra-op threads torch uses on the CPU, decided once per run.

Why it matters. On a 2-core machine with one busy process beside it, the digits MLP trained with
torch's default two threads fell from about 60,000 to 12,000–16,000 samples/s: every parallel
region waits at its end for the thread that the other process preempted. One thread held about
59,000. Small models lose little or nothing by running on one thread when the machine is quiet.

The rule (`train { threads ... }`, CPU only; on an accelerator torch's setting is left alone):
  threads N       N threads.
  threads auto    (the default) decided from the model and the batch alone, so the same spec on
                  the same machine always runs on the same count and gives the same bits: a small
                  step (batch × (parameters + activations per sample) under SMALL_STEP elements, the
                  digits MLP and most tabular and toy models) runs on 1 thread, which loses little
                  on a quiet machine and keeps its speed when another process competes for the
                  cores; a larger step uses torch's default.
  threads measure before the first step, time a few training steps on a scratch copy of the model
                  and optimizer (same batch, torch's RNG restored, so the run itself is untouched)
                  with 1 thread and with torch's default, and keep the faster; torch's default must
                  be 5% faster to win. It adapts to the load at start-up, at the price of
                  reproducibility: two fresh runs can pick different counts.
  distributed     no measuring (ranks must agree): torch's count capped at this rank's share of
                  the cores, cores // local ranks — the share `nnspec train --nproc N` gives each
                  worker (`share_of_cores`).
  resume          a resumed run uses the count its checkpoint recorded (same number of processes),
                  so it continues bitwise like the uninterrupted run.

Why the count is fixed for a run and not re-checked while training: the thread count changes the
bits. MKL's GEMM splits its work differently with 1 and 2 threads (for the digits MLP, the last
layer's weight gradient differs in the last bit), so weights after 3 epochs differ by ~1e-7.
Switching counts when the load changes would make the weights depend on the load's timing, and a
resume could not replay it. So the count is printed when a run starts, recorded in summary.json
and in every checkpoint.

The previous count is restored when training ends (`kept`), so `nnspec.train` does not change
the thread count of the process that called it.
"""
from __future__ import annotations

import contextlib
import copy
import math
import os
import statistics
import time
from dataclasses import dataclass, field
from typing import Any

import torch

ROUNDS = 3                 # interleaved timing rounds per candidate count
ROUND_S = 0.02             # aim for this much stepping per candidate per round
MAX_STEPS_PER_ROUND = 10
SLOW_STEP_S = 1.0          # a step slower than this is timed once per candidate (measuring is not free)
MORE_THREADS_GAIN = 1.05   # more threads must be this much faster than 1 to be chosen
SMALL_STEP = 20_000_000    # `auto`: batch × (parameters + activation elements per sample) below this: 1 thread


def cores() -> int:
    """CPU cores this process may run on."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


def local_ranks() -> int:
    return int(os.environ.get("LOCAL_WORLD_SIZE", "1") or 1)


def share_of_cores(ranks: int) -> int:
    """Threads per process when `ranks` processes share this machine's cores."""
    return max(1, cores() // max(1, ranks))


@dataclass
class Threads:
    """The run's thread count. `count` None: torch's setting left alone (accelerator)."""
    count: int | None
    how: str          # set | small step | large step | measured | resumed | shared | default | accelerator
    step_s: dict[int, float] = field(default_factory=dict)    # measured seconds per step, by count

    def apply(self) -> "Threads":
        if self.count is not None:
            torch.set_num_threads(self.count)
        return self

    def describe(self) -> str:
        if self.count is None:
            return ""
        timed = ", ".join(f"{s * 1e3:.2f} on {n}" for n, s in sorted(self.step_s.items()))
        return f", {self.count} thread{'s' if self.count != 1 else ''} ({self.how}{', ms/step ' + timed if timed else ''})"

    def record(self) -> dict[str, Any]:
        return {"count": self.count, "how": self.how,
                "step_ms": {str(n): s * 1e3 for n, s in sorted(self.step_s.items())}}


@contextlib.contextmanager
def kept():
    """Restore torch's thread count on leaving (a run sets its own)."""
    previous = torch.get_num_threads()
    try:
        yield
    finally:
        if torch.get_num_threads() != previous:
            torch.set_num_threads(previous)


def step_elements(model, batch_size: int) -> int:
    """The `auto` rule's measure of a step's work, from the checked model graph: batch × (parameters
    + the elements of every layer's output for one sample)."""
    activations = sum(math.prod(layer.output.shape) for layer in model.root.layers())
    return batch_size * (model.params + activations)


def choose(setting: int | str, built, split, model, *, seed: int = 0, resumed_state: dict | None = None,
           world_size: int = 1) -> Threads:
    """Decide the run's thread count (see the module docstring) and apply it."""
    if built.device.type != "cpu":
        return Threads(None, "accelerator")
    if setting not in ("auto", "measure"):
        return Threads(int(setting), "set").apply()
    if world_size > 1:
        return Threads(min(torch.get_num_threads(), share_of_cores(local_ranks())), "shared").apply()
    recorded = (resumed_state or {}).get("threads")
    if recorded and resumed_state.get("world_size", 1) == world_size:
        return Threads(int(recorded), "resumed").apply()
    default = torch.get_num_threads()
    if default == 1:
        return Threads(1, "default").apply()
    if setting == "auto":
        small = step_elements(model, built.batch_size) < SMALL_STEP
        return Threads(1 if small else default, "small step" if small else "large step").apply()
    timings = measure(built, split, (1, default), seed)
    if not timings:
        return Threads(default, "default").apply()
    best = default if timings[1] > MORE_THREADS_GAIN * timings[default] else 1
    return Threads(best, "measured", step_s=timings).apply()


def measure(built, split, counts: tuple[int, ...], seed: int) -> dict[int, float]:
    """Median seconds per training step with each thread count, on scratch copies of the model
    and optimizer and the first training batch. Empty when the step cannot be copied or run
    (the real first step then reports the error in its own words)."""
    rng = torch.get_rng_state()
    previous = torch.get_num_threads()
    try:
        model, optimizer = copy.deepcopy((built.model, built.optimizer))
        batches = split.batches(built.batch_size, shuffle=False, epoch=0, seed=seed, device=built.device)
        x, y = next(iter(batches))
        batches.close()
        step = _scratch_step(model, optimizer, built)
        first = {}
        for n in counts:              # warm-up: allocations and optimizer state, then one timed step
            torch.set_num_threads(n)
            step(x, y)
            t = time.perf_counter()
            step(x, y)
            first[n] = time.perf_counter() - t
        if max(first.values()) > SLOW_STEP_S:
            return first
        per_round = {n: max(1, min(MAX_STEPS_PER_ROUND, int(ROUND_S / max(s, 1e-6)))) for n, s in first.items()}
        samples: dict[int, list[float]] = {n: [first[n]] for n in counts}
        for _ in range(ROUNDS):
            for n in counts:
                torch.set_num_threads(n)
                t = time.perf_counter()
                for _ in range(per_round[n]):
                    step(x, y)
                samples[n].append((time.perf_counter() - t) / per_round[n])
        return {n: statistics.median(s) for n, s in samples.items()}
    except Exception:          # a plugin optimizer that cannot be deep-copied, an odd data source, ...
        return {}
    finally:
        torch.set_num_threads(previous)
        torch.set_rng_state(rng)


def _scratch_step(model, optimizer, built):
    from nnspec.registry.catalog import NEEDS_CLOSURE
    loss_fn, runtime = built.loss, built.runtime
    model.train()

    def closure(x, y):
        optimizer.zero_grad(set_to_none=True)
        with runtime.autocast():
            loss = loss_fn(model(x), y)
        loss.backward()
        return loss

    if NEEDS_CLOSURE in built.flags:
        return lambda x, y: optimizer.step(lambda: closure(x, y))

    def step(x, y):
        closure(x, y)
        optimizer.step()
    return step

"""Training throughput with a busy process beside it: `nnspec.train` (`threads auto`, the
default) against a minimal hand-written PyTorch loop with torch's default thread count.

Same model (64→256→256→10 MLP), data (the digits training split, standardized, in memory),
batch 64, Adam(lr 1e-3), cross-entropy with label smoothing 0.05, fp32 on the CPU, a fixed
number of optimizer steps. Each is measured quiet and loaded: loaded means one competing
process (`python -c "while True: pass"`, started once it says it is running, killed after the
measurement) takes a core. Rounds interleave the four measurements (quiet/loaded × nnspec/hand,
order alternating) so drifting machine noise hits all of them; the report is the median.

What is timed:
  nnspec  the epochs of `nnspec.train` (`summary["samples_per_s"]`). `threads auto` decides its
          thread count from the spec (1 thread for the digits MLP's small step).
  hand    randperm → index slices → forward → loss → zero_grad → backward → step, nothing else,
          with torch's default thread count (`--hand-threads` to change it).

    python benchmarks/under_load.py [--steps 600] [--rounds 3] [--hand-threads N]

Per round it also prints the CPU seconds this process used per wall second of the measurement
("cores used"; for nnspec the whole `nnspec.train` call, set-up included): a one-thread run that
slows down under load while using well under one core got less of the machine from the
scheduler; it did not waste what it got.

The question it answers: does loaded throughput stay ≥ 0.8× of quiet (the "loaded/quiet" column),
without quiet throughput dropping below the hand loop's. On a machine shared with other work
the numbers are noisy; run it several times.
"""
from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from contextlib import contextmanager
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import nnspec  # noqa: E402

SPEC = """
model digits_mlp {
    input [64]
    linear(256) -> relu
    linear(256) -> relu
    linear(10)
}
data digits { split(train = 0.8, val = 0, test = 0); batch 64; normalize standard }
loss cross_entropy(label_smoothing = 0.05)
optimizer adam(lr = 1e-3)
train { steps STEPS; seed 0; device cpu; precision fp32; checkpoint(every_epochs = never) }
"""

BUSY = "import sys; print('running', flush=True)\nwhile True: pass"


@contextmanager
def busy_process(on: bool):
    """One Python process spinning on a core while the block runs (nothing when `on` is False)."""
    if not on:
        yield
        return
    proc = subprocess.Popen([sys.executable, "-c", BUSY], stdout=subprocess.PIPE, text=True)
    try:
        proc.stdout.readline()                  # it is spinning from here on
        yield
    finally:
        proc.kill()
        proc.wait()


def spec_file(folder: Path, steps: int) -> Path:
    path = folder / f"under_load_{steps}.nn"
    path.write_text(SPEC.replace("STEPS", str(steps)))
    return path


def train_tensors(path: Path) -> tuple[torch.Tensor, torch.Tensor]:
    """The exact training tensors nnspec trains on (its split and normalization)."""
    built = nnspec.build(path)
    xs, ys = zip(*built.data.train.batches(4096, shuffle=False))
    return torch.cat(xs).contiguous(), torch.cat(ys).contiguous()


def hand_loop(x: torch.Tensor, y: torch.Tensor, steps: int, threads: int) -> float:
    """Samples per second of a minimal PyTorch loop."""
    torch.set_num_threads(threads)
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(64, 256), nn.ReLU(), nn.Linear(256, 256), nn.ReLU(), nn.Linear(256, 10))
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    g = torch.Generator().manual_seed(0)
    n, bs, done, samples = len(x), 64, 0, 0
    start = time.perf_counter()
    while done < steps:
        perm = torch.randperm(n, generator=g)
        for i in range(0, n, bs):
            idx = perm[i:i + bs]
            loss = F.cross_entropy(model(x[idx]), y[idx], label_smoothing=0.05)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            samples += len(idx)
            done += 1
            if done == steps:
                break
    return samples / (time.perf_counter() - start)


def nnspec_loop(path: Path) -> tuple[float, int]:
    """(samples/s of the epoch loop, the thread count `threads auto` chose)."""
    result = nnspec.train(path, out_dir=False, progress=False)
    return result.summary["samples_per_s"], result.summary["threads"]["count"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--steps", type=int, default=600)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--hand-threads", type=int, default=None, help="threads for the hand loop "
                        "(default: what torch picks for this machine)")
    args = parser.parse_args()
    default = torch.get_num_threads()
    hand_threads = args.hand_threads or default
    with tempfile.TemporaryDirectory() as tmp:
        path = spec_file(Path(tmp), args.steps)
        x, y = train_tensors(path)
        print(f"torch {torch.__version__}, {default} threads by default; {len(x)} training samples, "
              f"{args.steps} steps per measurement, {args.rounds} interleaved rounds")
        hand_loop(x, y, 50, hand_threads)               # warm up both (allocator, kernels, imports)
        nnspec_loop(spec_file(Path(tmp), 50))
        speed: dict[tuple[str, bool], list[float]] = {}
        cores_used: dict[tuple[str, bool], list[float]] = {}      # CPU seconds per wall second
        chosen: dict[bool, Counter] = {False: Counter(), True: Counter()}
        for r in range(args.rounds):
            order = [("nnspec", False), ("hand", False), ("nnspec", True), ("hand", True)]
            for which, loaded in order if r % 2 == 0 else order[::-1]:
                with busy_process(loaded):
                    wall, cpu = time.perf_counter(), time.process_time()
                    if which == "hand":
                        value = hand_loop(x, y, args.steps, hand_threads)
                    else:
                        value, count = nnspec_loop(path)
                        chosen[loaded][count] += 1
                    share = (time.process_time() - cpu) / (time.perf_counter() - wall)
                speed.setdefault((which, loaded), []).append(value)
                cores_used.setdefault((which, loaded), []).append(share)
        med = statistics.median
        print(f"{'':34s} {'quiet':>12s} {'1 busy process':>16s} {'loaded/quiet':>13s}")
        for which, label in (("nnspec", "nnspec.train (threads auto)"),
                             ("hand", f"hand loop ({hand_threads} thread{'s' if hand_threads > 1 else ''})")):
            quiet, loaded = med(speed[(which, False)]), med(speed[(which, True)])
            print(f"{label:34s} {quiet:12,.0f} {loaded:16,.0f} {loaded / quiet:13.2f}")
        for which in ("nnspec", "hand"):
            for loaded in (False, True):
                runs = ", ".join(f"{v:,.0f}" for v in speed[(which, loaded)])
                used = ", ".join(f"{c:.2f}" for c in cores_used[(which, loaded)])
                print(f"  {which} {'loaded' if loaded else 'quiet '} per round: {runs}; cores used: {used}")
        for loaded in (False, True):
            picks = ", ".join(f"{n} thread(s) × {k}" for n, k in sorted(chosen[loaded].items()))
            print(f"threads auto chose, {'loaded' if loaded else 'quiet'}: {picks}")


if __name__ == "__main__":
    main()

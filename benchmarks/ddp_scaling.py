"""Data-parallel scaling on the CPU: `nnspec train --nproc N` for N = 1, 2, ... on an MLP over
the digits data (or synthetic `features` data with --samples, for a longer epoch).

Every configuration trains the same global batch (--batch, split as batch/N per process), so
all of them compute the same updates (tests/test_distributed.py checks that they agree); the
number is samples/s of the whole run, from metrics.jsonl (the trainer sums samples over ranks),
median over epochs after the first. Each process gets cores/N threads. Process start-up and
the process-group setup are not timed (they are in `setup`, a few seconds).

    python benchmarks/ddp_scaling.py [--procs 1 2] [--hidden 1024] [--epochs 6] [--batch 256]

On 2 cores expect little: the gradient all-reduce (gloo, through the loopback) and the Python
per step are paid by every process, and one process already uses both cores for its matmuls.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

SPEC = """\
model mlp {{
    input [64]
    linear({hidden}) -> relu
    linear({hidden}) -> relu
    linear(10)
}}
data digits {{
    split(train = 0.8, val = 0.1, test = 0.1)
    batch {batch}
    normalize standard
}}
loss cross_entropy
optimizer adam(lr = 1e-3)
train {{
    epochs {epochs}
    seed 0
    device cpu
}}
"""


def run(procs: int, args, folder: Path) -> tuple[float, float]:
    spec = folder / f"p{procs}.nn"
    spec.write_text(SPEC.format(hidden=args.hidden, batch=args.batch // procs, epochs=args.epochs))
    out = folder / f"run{procs}"
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK")}
    env["OMP_NUM_THREADS"] = str(max(1, (os.cpu_count() or 1) // procs))
    cmd = [sys.executable, "-m", "nnspec", "train", str(spec), "--quiet", "--out", str(out), "--nproc", str(procs)]
    done = subprocess.run(cmd, capture_output=True, text=True, env=env)
    if done.returncode:
        sys.exit(f"{' '.join(cmd)} failed:\n{done.stderr[-3000:]}")
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    rates = [r["samples_per_s"] for r in rows[1:]] or [rows[0]["samples_per_s"]]
    return statistics.median(rates), rows[-1]["train_loss"]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--procs", type=int, nargs="+", default=[1, 2])
    p.add_argument("--hidden", type=int, default=256)
    p.add_argument("--batch", type=int, default=128, help="global batch (split across processes)")
    p.add_argument("--epochs", type=int, default=6)
    args = p.parse_args()
    import torch
    print(f"digits MLP 64→{args.hidden}→{args.hidden}→10, global batch {args.batch}, Adam, fp32, "
          f"{os.cpu_count()} CPU cores, torch {torch.__version__}, gloo")
    base = None
    with tempfile.TemporaryDirectory() as tmp:
        for n in args.procs:
            rate, loss = run(n, args, Path(tmp))
            base = base or rate
            print(f"  {n} process{'es' if n > 1 else '  '}  batch {args.batch // n:>4} each  "
                  f"{rate:>10,.0f} samples/s  ×{rate / base:.2f}  (final train_loss {loss:.4f})")


if __name__ == "__main__":
    main()

"""Training throughput with memory-mapped data vs the same data in memory.

benchmarks/data_memmap.py times raw batch iteration. What users feel is training: this runs
`nnspec.train` on the same .npy files with `mmap = true` and `mmap = false`, the two modes
alternating within each round (so both see the same machine load), and prints the ratio of each
round's pair, their median and range. 1 KB rows and a small MLP are the hard case: reading is
a large share of each step.

    python benchmarks/memmap_training.py [--samples 50000] [--features 256] [--rounds 5]
"""
from __future__ import annotations

import argparse
import statistics
import tempfile
from pathlib import Path

import numpy as np

SPEC = """
model m {{
    input [{features}]
    linear(512) -> relu -> linear(512) -> relu -> linear(2)
}}
data npy(x = "x.npy", y = "y.npy", mmap = {mmap}) {{ split(train = 0.9, val = 0.05, test = 0.05); batch 256 }}
loss cross_entropy
optimizer adam(lr = 1e-3)
train {{ epochs 2; seed 0; checkpoint(every_epochs = never) }}
"""


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--samples", type=int, default=50_000)
    ap.add_argument("--features", type=int, default=256)
    ap.add_argument("--rounds", type=int, default=5)
    args = ap.parse_args()
    import nnspec
    with tempfile.TemporaryDirectory() as tmp:
        rng = np.random.default_rng(0)
        x = rng.standard_normal((args.samples, args.features)).astype(np.float32)
        np.save(Path(tmp, "x.npy"), x)
        np.save(Path(tmp, "y.npy"), (x[:, 0] > 0).astype(np.int64))
        for mode in ("true", "false"):
            Path(tmp, f"{mode}.nn").write_text(SPEC.format(features=args.features, mmap=mode))
        seconds: dict[str, list[float]] = {"true": [], "false": []}
        for r in range(args.rounds):
            for mode in (("true", "false") if r % 2 == 0 else ("false", "true")):
                result = nnspec.train(Path(tmp, f"{mode}.nn"), out_dir=False, progress=False)
                seconds[mode].append(result.summary["seconds"]["loop"])
    ratios = [mem / mm for mm, mem in zip(seconds["true"], seconds["false"])]
    print(f"{args.samples:,} × {args.features} float32 ({x.nbytes / 1e6:.0f} MB), MLP 512-512, batch 256, 2 epochs")
    print("training loop (s), memory-mapped:", " ".join(f"{t:.2f}" for t in seconds["true"]))
    print("training loop (s), in memory:    ", " ".join(f"{t:.2f}" for t in seconds["false"]))
    print(f"memory-mapped throughput / in-memory, per round: median {statistics.median(ratios):.2f}, "
          f"range {min(ratios):.2f}–{max(ratios):.2f}  (target ≥ 0.9)")

if __name__ == "__main__":
    main()

"""Train specs/digits_mlp.nn and print its test accuracy and wall time (target: ≥ 97%, well
under a minute on 2 CPU cores).

    python benchmarks/digits_accuracy.py [--seeds 0 1 2] [--set train.epochs=20 ...]

Each seed also changes the train/val/test split, so several seeds check that the accuracy is
not one lucky split. Wall time is the whole `nnspec.train` call: checking the spec, loading the
data, training, testing (no run folder is written).
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import nnspec  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--spec", default=str(ROOT / "specs" / "digits_mlp.nn"))
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    args = parser.parse_args()
    import torch
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, spec {args.spec}")
    accuracies = []
    for seed in args.seeds:
        start = time.perf_counter()
        result = nnspec.train(args.spec, overrides=[*args.overrides, f"train.seed={seed}"], out_dir=False,
                              progress=False)
        wall = time.perf_counter() - start
        acc = result.test_metrics["accuracy"]
        accuracies.append(acc)
        print(f"seed {seed}: test accuracy {acc:.2%}  (f1 {result.test_metrics.get('f1', float('nan')):.4f}, "
              f"{len(result.history)} epochs, {wall:.1f}s wall, {result.summary['seconds']['loop']:.1f}s training)")
    if len(accuracies) > 1:
        print(f"min {min(accuracies):.2%}  median {statistics.median(accuracies):.2%}")
    print("target ≥ 97%:", "met" if min(accuracies) >= 0.97 else "NOT met")


if __name__ == "__main__":
    main()

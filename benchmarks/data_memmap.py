"""Memory-mapped vs in-memory batching: peak resident memory and one-epoch throughput.

Writes .npy files of growing size to a temporary folder, then for each size runs one fresh
subprocess per mode (so peak RSS, VmHWM, is that mode's alone):

  mmap    npy(mmap = true): rows read from the file a window of batches at a time (planned
          reads, nnspec.runtime.mapped), read ahead by a thread (torch uses 1 thread here)
  memory  npy(mmap = false): the file loaded into a tensor, batches by index_select
  hand    a hand-written loop over the same tensor (X.index_select(0, perm[i:i+b])), the floor
          the in-memory path should match

Usage: python benchmarks/data_memmap.py [--sizes 50 500] [--features 256] [--batch 256] [--epochs 3]
The files are written through a memory map (the parent stays small) and read while still in the
page cache, so throughput is the warm-cache case.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

import numpy as np


def _status_kb(field: str) -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    return 0


def child(folder: str, mode: str, batch: int, epochs: int) -> dict:
    import torch
    from nnspec.registry.binding import bind
    from nnspec.spec.settings import DataConfig, Use
    from nnspec.errors import Span
    from nnspec.registry.catalog import Catalog
    from nnspec.runtime.data import load_data
    from nnspec.registry.types import TensorType

    torch.set_num_threads(1)
    features = np.load(os.path.join(folder, "x.npy"), mmap_mode="r").shape[1]
    base_kb = _status_kb("VmRSS")
    t0 = time.perf_counter()
    if mode == "hand":
        x = torch.from_numpy(np.load(os.path.join(folder, "x.npy")))
        y = torch.from_numpy(np.load(os.path.join(folder, "y.npy")))
        load_s = time.perf_counter() - t0

        def epoch(e):
            perm = torch.randperm(len(x), generator=torch.Generator().manual_seed(e))
            n = 0
            for i in range(0, len(x), batch):
                idx = perm[i:i + batch]
                xb, yb = x.index_select(0, idx), y.index_select(0, idx)
                n += len(xb)
            return n
    else:
        comp = Catalog.default().get("datasets", "npy")
        args, errors = bind(comp.params, [], [("mmap", mode == "mmap")], "npy", comp.check)
        assert not errors, errors
        cfg = DataConfig(Use(comp, args, Span.unknown()), {"train": 1.0}, batch_size=batch, normalize="none")
        splits = load_data(cfg, base_dir=folder, seed=0, input_type=TensorType((features,)),
                           classification=True, num_outputs=None)
        load_s = time.perf_counter() - t0

        def epoch(e):
            n = 0
            for xb, yb in splits.train.batches(batch, shuffle=True, epoch=e, seed=0):
                n += len(xb)
            return n
    times = []
    for e in range(epochs):                  # the best of a few epochs: less noise from other load
        t1 = time.perf_counter()
        n = epoch(e)
        times.append(time.perf_counter() - t1)
    epoch_s = min(times)
    return {"mode": mode, "samples": n, "load_s": load_s, "epoch_s": epoch_s,
            "base_mb": base_kb / 1024, "peak_mb": _status_kb("VmHWM") / 1024}


def write(folder: str, megabytes: int, features: int) -> int:
    rows = megabytes * 2**20 // (4 * features)
    x = np.lib.format.open_memmap(os.path.join(folder, "x.npy"), mode="w+", dtype=np.float32,
                                  shape=(rows, features))
    rng = np.random.default_rng(0)
    step = max(1, (16 << 20) // (4 * features))
    for lo in range(0, rows, step):
        x[lo:lo + step] = rng.standard_normal((min(step, rows - lo), features), dtype=np.float32)
    x.flush()
    del x
    np.save(os.path.join(folder, "y.npy"), (np.arange(rows) % 10).astype(np.int64))
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", type=int, nargs="+", default=[50, 500], help="file sizes in MB")
    ap.add_argument("--features", type=int, default=256)
    ap.add_argument("--batch", type=int, default=256)
    ap.add_argument("--epochs", type=int, default=3, help="epochs per mode; the fastest is reported")
    ap.add_argument("--child", nargs=4, metavar=("FOLDER", "MODE", "BATCH", "EPOCHS"), help=argparse.SUPPRESS)
    opts = ap.parse_args()
    if opts.child:
        folder, mode, batch, epochs = opts.child
        print(json.dumps(child(folder, mode, int(batch), int(epochs))))
        return
    print(f"{'size':>7} {'mode':>7} {'peak RSS':>9} {'+data':>8} {'load s':>7} {'epoch s':>8} {'MB/s':>8}")
    by_size = {}
    for mb in opts.sizes:
        with tempfile.TemporaryDirectory(prefix="nnspec-bench-") as folder:
            write(folder, mb, opts.features)
            results = {}
            for mode in ("mmap", "memory", "hand"):
                out = subprocess.run([sys.executable, __file__, "--child", folder, mode, str(opts.batch),
                                      str(opts.epochs)],
                                     check=True, capture_output=True, text=True).stdout
                r = results[mode] = json.loads(out.strip().splitlines()[-1])
                print(f"{mb:>5}MB {mode:>7} {r['peak_mb']:>7.0f}MB {r['peak_mb'] - r['base_mb']:>6.0f}MB "
                      f"{r['load_s']:>7.2f} {r['epoch_s']:>8.2f} {mb / r['epoch_s']:>8.0f}")
            by_size[mb] = results
            m, mem, hand = results["mmap"], results["memory"], results["hand"]
            print(f"        mmap/memory: peak RSS ×{m['peak_mb'] / mem['peak_mb']:.2f}, "
                  f"epoch time ×{m['epoch_s'] / mem['epoch_s']:.2f};  "
                  f"memory/hand-written epoch time ×{mem['epoch_s'] / hand['epoch_s']:.2f}")
    if len(by_size) > 1:
        small, large = by_size[min(by_size)], by_size[max(by_size)]
        growth = {k: large[k]["peak_mb"] - small[k]["peak_mb"] for k in ("mmap", "memory")}
        print(f"peak RSS growth from {min(by_size)}MB to {max(by_size)}MB of data: "
              f"mmap {growth['mmap']:+.0f}MB, memory {growth['memory']:+.0f}MB")


if __name__ == "__main__":
    main()

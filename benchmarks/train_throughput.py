"""Training throughput: `nnspec.train` against a minimal hand-written PyTorch loop.

Same model (64→256→256→10 MLP), same data (the digits training split, standardized, as
tensors in memory), batch 64, Adam(lr 1e-3), cross-entropy with label smoothing 0.05, fp32 on
CPU with torch's default thread count. Both run in this process, interleaved (hand, nnspec,
nnspec, hand, …) so machine noise hits both alike; the report is the median ratio.

What is timed, to keep it fair:
  nnspec  the epoch loop of `nnspec.train` (`summary["seconds"]["loop"]`): batching, steps,
          its per-epoch bookkeeping (loss read-back, history row). Excluded: parsing/checking,
          data loading, model building (setup) and the final test pass. The spec has no
          validation or test split and no checkpoints or run folder, because the hand loop
          does none of that either.
  hand    the same number of epochs of: randperm → index slices → forward → loss → zero_grad →
          backward → step, and nothing else (not even reading the loss: the strictest baseline).
          A second variant reads `loss.item()` every step, as many hand loops do.
Also runs PyTorch Lightning (its idiomatic DataLoader over a TensorDataset) and Keras 3 (torch
backend, `fit` on the arrays) on the same model and data when they are importable, timing their
epochs only (a callback from train start to train end); they are not nnspec dependencies and
are skipped with a note otherwise.

    python benchmarks/train_throughput.py [--epochs 20] [--rounds 5] [--threads N]

On a shared machine, multi-threaded CPU kernels slow down erratically when another process
takes a core; `--threads 1` gives steadier numbers there.
"""
from __future__ import annotations

import argparse
import logging
import os
import statistics
import sys
import tempfile
import time
import warnings
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
metrics accuracy
optimizer adam(lr = 1e-3)
train { epochs EPOCHS; seed 0; device cpu; precision fp32; checkpoint(every_epochs = never) }
"""


def spec_file(folder: Path, epochs: int) -> Path:
    path = folder / f"bench_digits_{epochs}.nn"
    path.write_text(SPEC.replace("EPOCHS", str(epochs)))
    return path


def train_tensors(path: Path) -> tuple[torch.Tensor, torch.Tensor]:
    """The exact training tensors nnspec trains on (its split and normalization)."""
    built = nnspec.build(path)
    xs, ys = zip(*built.data.train.batches(4096, shuffle=False))
    return torch.cat(xs).contiguous(), torch.cat(ys).contiguous()


def mlp() -> nn.Module:
    return nn.Sequential(nn.Linear(64, 256), nn.ReLU(), nn.Linear(256, 256), nn.ReLU(), nn.Linear(256, 10))


def hand_loop(x: torch.Tensor, y: torch.Tensor, epochs: int, read_loss: bool = False) -> float:
    """Samples per second of a minimal PyTorch loop."""
    torch.manual_seed(0)
    model = mlp()
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    g = torch.Generator().manual_seed(0)
    n, bs = len(x), 64
    total = 0.0
    start = time.perf_counter()
    for _ in range(epochs):
        perm = torch.randperm(n, generator=g)
        for i in range(0, n, bs):
            idx = perm[i:i + bs]
            loss = F.cross_entropy(model(x[idx]), y[idx], label_smoothing=0.05)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            if read_loss:
                total += loss.item()
    return epochs * n / (time.perf_counter() - start)


def nnspec_loop(path: Path, n: int) -> tuple[float, float]:
    """(samples/s of the epoch loop, samples/s end to end including setup)."""
    start = time.perf_counter()
    result = nnspec.train(path, out_dir=False, progress=False)
    total = time.perf_counter() - start
    samples = len(result.history) * n
    return samples / result.summary["seconds"]["loop"], samples / total


def lightning_loop(x, y, epochs: int) -> float | None:
    try:
        import lightning as L
    except ImportError:
        try:
            import pytorch_lightning as L
        except ImportError:
            return None

    class Module(L.LightningModule):
        def __init__(self):
            super().__init__()
            self.net = mlp()

        def training_step(self, batch, _):
            xb, yb = batch
            return F.cross_entropy(self.net(xb), yb, label_smoothing=0.05)

        def configure_optimizers(self):
            return torch.optim.Adam(self.parameters(), lr=1e-3)

    class Clock(L.Callback):        # time the epochs only, not Trainer.fit's own start-up
        def on_train_start(self, *_):
            self.start = time.perf_counter()

        def on_train_end(self, *_):
            self.seconds = time.perf_counter() - self.start

    logging.getLogger("lightning.pytorch").setLevel(logging.ERROR)
    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x, y), batch_size=64, shuffle=True)
    clock = Clock()
    trainer = L.Trainer(max_epochs=epochs, accelerator="cpu", logger=False, enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False, callbacks=[clock])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        trainer.fit(Module(), loader)
    return epochs * len(x) / clock.seconds


def keras_loop(x, y, epochs: int) -> float | None:
    try:
        os.environ.setdefault("KERAS_BACKEND", "torch")
        import keras
    except ImportError:
        return None
    model = keras.Sequential([keras.Input((64,)), keras.layers.Dense(256, activation="relu"),
                              keras.layers.Dense(256, activation="relu"), keras.layers.Dense(10)])
    model.compile(optimizer=keras.optimizers.Adam(1e-3),
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    class Clock(keras.callbacks.Callback):      # time the epochs only, not fit's start-up
        def on_train_begin(self, logs=None):
            self.start = time.perf_counter()

        def on_train_end(self, logs=None):
            self.seconds = time.perf_counter() - self.start

    clock = Clock()
    model.fit(x.numpy(), y.numpy(), batch_size=64, epochs=epochs, shuffle=True, verbose=0, callbacks=[clock])
    return epochs * len(x) / clock.seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--threads", type=int, default=None,
                        help="torch threads (default: what torch picks for this machine)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory() as tmp:
        path = spec_file(Path(tmp), args.epochs)
        x, y = train_tensors(path)
        print(f"torch {torch.__version__}, {torch.get_num_threads()} threads; {len(x)} training samples, "
              f"{args.epochs} epochs per measurement, {args.rounds} interleaved rounds")
        hand_loop(x, y, 2)                       # warm up both (allocator, kernels, imports)
        nnspec_loop(spec_file(Path(tmp), 2), len(x))
        hand, hand_item, ours, ours_e2e = [], [], [], []
        for r in range(args.rounds):
            order = ("hand", "nnspec", "item") if r % 2 == 0 else ("nnspec", "hand", "item")
            for which in order:
                if which == "hand":
                    hand.append(hand_loop(x, y, args.epochs))
                elif which == "item":
                    hand_item.append(hand_loop(x, y, args.epochs, read_loss=True))
                else:
                    loop, e2e = nnspec_loop(path, len(x))
                    ours.append(loop)
                    ours_e2e.append(e2e)
        ratios = [o / h for o, h in zip(ours, hand)]
        med = statistics.median
        print(f"{'hand loop (no loss read-back)':34s} {med(hand):10,.0f} samples/s")
        print(f"{'hand loop (loss.item() per step)':34s} {med(hand_item):10,.0f} samples/s")
        print(f"{'nnspec.train, epoch loop':34s} {med(ours):10,.0f} samples/s")
        print(f"{'nnspec.train, end to end':34s} {med(ours_e2e):10,.0f} samples/s  (incl. setup and checks)")
        for name, fn in (("PyTorch Lightning", lightning_loop), ("Keras 3 (torch backend)", keras_loop)):
            speed = fn(x, y, args.epochs)
            if speed is None:
                print(f"{name:34s} skipped: not installed (optional, not an nnspec dependency)")
            else:
                print(f"{name:34s} {speed:10,.0f} samples/s")
        print(f"nnspec / hand loop, per round: {', '.join(f'{r:.3f}' for r in ratios)}")
        print(f"median ratio {med(ratios):.3f}  (target ≥ 0.97)")


if __name__ == "__main__":
    main()

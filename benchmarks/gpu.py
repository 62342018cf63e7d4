"""GPU throughput: ResNet-18 (specs/zoo/resnet18.nn, 10 classes) on synthetic 3×32×32 images,
fp32 vs bf16 vs bf16 + compile, `nnspec.train` next to a hand-written PyTorch loop on the same
model (built from the same spec) and the same data. Writes the table to docs/performance.md
(section "GPU"), naming the card, torch and CUDA versions.

    python benchmarks/gpu.py [--samples 20000] [--batch 256] [--epochs 3] [--no-write]

Needs a CUDA device (exits with a message otherwise). Timed: the training epochs after the
first (compilation and cuDNN autotuning happen in the first); nnspec's number is its own
samples/s per epoch (metrics.jsonl), the hand loop's is timed with torch.cuda.synchronize().
Both use channels_last on the GPU, SGD(momentum 0.9), cross-entropy, no validation split.
"""
from __future__ import annotations

import argparse
import re
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

SPEC = """\
import "common.nn"

block basic(c, stride = 1) {{
    residual {{
        conv_bn_relu(c, 3, stride)
        conv_bn(c, 3)
    }} shortcut {{
        conv_bn(c, 1, stride)
    }}
    relu
}}

model resnet18_cifar {{
    input [3, 32, 32]
    conv_bn_relu(64, 3)
    basic(64) * 2
    basic(128, 2) -> basic(128)
    basic(256, 2) -> basic(256)
    basic(512, 2) -> basic(512)
    global_avgpool -> linear(10)
}}

data images(shape = [3, 32, 32], classes = 10, samples = {samples}) {{
    split(train = 1.0, val = 0, test = 0)
    batch {batch}
}}

loss cross_entropy
optimizer sgd(lr = 0.05, momentum = 0.9)

train {{
    epochs {epochs}
    seed 0
    device cuda
    precision {precision}
    compile {compile}
}}
"""

VARIANTS = [("fp32", "fp32", "false"), ("bf16", "bf16", "false"), ("bf16 + compile", "bf16", "true")]


def nnspec_rate(folder: Path, args, precision: str, compile: str) -> float:
    import nnspec
    spec = folder / f"r18-{precision}-{compile}.nn"
    spec.write_text(SPEC.format(samples=args.samples, batch=args.batch, epochs=args.epochs,
                                precision=precision, compile=compile))
    result = nnspec.train(spec, out_dir=False, progress=False)
    rates = [r["samples_per_s"] for r in result.history[1:]]
    return statistics.median(rates)


def hand_rate(folder: Path, args, precision: str, compile: str) -> float:
    """The same model and data through a minimal loop: randperm, slice, forward, backward, step."""
    import torch
    import nnspec
    spec = folder / f"r18-{precision}-{compile}.nn"
    built = nnspec.build(spec)
    model, device = built.model.train(), built.device
    model.to(memory_format=torch.channels_last)
    x, y = built.data.train.store.on(device)
    x = x.contiguous(memory_format=torch.channels_last)
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    fwd = torch.compile(model) if compile == "true" else model
    dtype = {"bf16": torch.bfloat16}.get(precision)
    rates = []
    for epoch in range(args.epochs):
        torch.cuda.synchronize()
        t = time.perf_counter()
        order = torch.randperm(len(x), device=device)
        for lo in range(0, len(x), args.batch):
            idx = order[lo:lo + args.batch]
            with torch.autocast("cuda", dtype=dtype, enabled=dtype is not None):
                loss = torch.nn.functional.cross_entropy(fwd(x[idx]), y[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
        torch.cuda.synchronize()
        rates.append(len(x) / (time.perf_counter() - t))
    return statistics.median(rates[1:])


def write_doc(table: str, machine: str) -> None:
    doc = ROOT / "docs" / "performance.md"
    text = doc.read_text(encoding="utf-8") if doc.exists() else "# Performance\n"
    section = f"## GPU\n\n{machine}\n\n{table}\n"
    pattern = re.compile(r"## GPU\n.*?(?=\n## |\Z)", re.S)
    text = pattern.sub(lambda _: section.rstrip("\n"), text) if pattern.search(text) else text.rstrip() + "\n\n" + section
    doc.write_text(text if text.endswith("\n") else text + "\n", encoding="utf-8")
    print(f"wrote {doc}")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--samples", type=int, default=20000)
    p.add_argument("--batch", type=int, default=256)
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument("--no-write", action="store_true", help="print only; leave docs/performance.md alone")
    args = p.parse_args()
    import torch
    if not torch.cuda.is_available():
        sys.exit("benchmarks/gpu.py needs a CUDA device; see docs/performance.md for the CPU numbers")
    args.epochs = max(args.epochs, 2)
    machine = (f"{torch.cuda.get_device_name(0)}, torch {torch.__version__}, CUDA {torch.version.cuda}; "
               f"ResNet-18 (CIFAR stem) on {args.samples:,} synthetic 3×32×32 images, batch {args.batch}, "
               f"median samples/s over epochs 2–{args.epochs}")
    rows = ["| variant | nnspec samples/s | hand loop samples/s | nnspec / hand |", "|---|---:|---:|---:|"]
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        shutil.copy(ROOT / "specs" / "zoo" / "common.nn", folder / "common.nn")
        for name, precision, compile in VARIANTS:
            ours = nnspec_rate(folder, args, precision, compile)
            hand = hand_rate(folder, args, precision, compile)
            print(f"{name:<16} nnspec {ours:>10,.0f}/s   hand {hand:>10,.0f}/s   ratio {ours / hand:.2f}")
            rows.append(f"| {name} | {ours:,.0f} | {hand:,.0f} | {ours / hand:.2f} |")
    print(machine)
    if not args.no_write:
        write_doc("\n".join(rows), machine)


if __name__ == "__main__":
    main()

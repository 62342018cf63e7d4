"""The model zoo (specs/zoo): every reference architecture has exactly its published parameter
count, statically (the checker, no torch) and in the compiled torch module, and trains.

Full-size counts of the big nets are taken from modules built on torch's meta device, which
allocates nothing; forward passes and training steps run at a reduced input size and width,
set through model parameters (`--set model.size=32`).
"""
from __future__ import annotations

import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from nnspec.check.checker import load
from nnspec.lower.model import build_model

ZOO = Path(__file__).resolve().parent.parent / "specs" / "zoo"


def _count(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


# --- independent torch references for the models without a published count -------------------

def _text_transformer_ref() -> int:
    vocab, seq, d, heads, ff, layers, classes = 20000, 256, 256, 4, 1024, 4, 2
    parts = [nn.Embedding(vocab, d), nn.Linear(d, classes)]
    parts += [nn.TransformerEncoderLayer(d, heads, ff, batch_first=True) for _ in range(layers)]
    return sum(map(_count, parts)) + seq * d          # + the learned position table


def _lstm_ref() -> int:
    return sum(map(_count, [nn.Embedding(20000, 128), nn.LSTM(128, 256, 2, bidirectional=True),
                            nn.Linear(512, 2)]))


def _unet_ref() -> int:
    def double(cin, c):
        return [nn.Conv2d(cin, c, 3, padding=1, bias=False), nn.BatchNorm2d(c),
                nn.Conv2d(c, c, 3, padding=1, bias=False), nn.BatchNorm2d(c)]
    w = 16
    parts = double(1, w) + double(w, 2 * w) + double(2 * w, 4 * w) + double(4 * w, 8 * w)
    for c in (4 * w, 2 * w, w):                      # up-convolution, then convs over [up, skip]
        parts += [nn.ConvTranspose2d(2 * c, c, 2, stride=2)] + double(2 * c, c)
    parts.append(nn.Conv2d(w, 2, 1))
    return sum(map(_count, parts))


def _recursive_ref() -> int:
    # the tied unit (two 3×3 convs) is counted once although it is applied three times
    return sum(map(_count, [nn.Conv2d(1, 32, 3, padding=1), nn.Conv2d(32, 32, 3, padding=1),
                            nn.Conv2d(32, 32, 3, padding=1), nn.Linear(32, 10)]))


@dataclass(frozen=True)
class Case:
    spec: str
    published: int | Callable[[], int]    # the published count, or a hand-built torch reference
    small: tuple[str, ...] = ()            # model overrides for the forward pass and training
    meta: bool = True                      # count on the meta device (big conv nets)
    classes: int = 10


CASES = [
    Case("lenet5", 61_706),
    Case("alexnet", 61_100_840, ("size=64", "width=8", "hidden=32", "num_classes=10")),
    Case("vgg16", 138_357_544, ("size=32", "width=4", "hidden=32", "num_classes=10")),
    Case("resnet18", 11_689_512, ("size=32", "width=8", "num_classes=10")),
    Case("resnet50", 25_557_032, ("size=32", "width=8", "num_classes=10")),
    Case("mobilenet_v2", 3_504_872, ("size=32", "num_classes=10")),
    Case("googlenet", 6_624_904, ("size=32", "num_classes=10")),
    # Embedding / normal_ init on the meta device imports torch._dynamo (seconds), so the
    # small sequence models are counted on the CPU.
    Case("text_transformer", _text_transformer_ref,
         ("vocab=50", "seq=12", "d=32", "heads=4", "ff=64", "layers=2", "num_classes=3"), meta=False, classes=3),
    Case("lstm_classifier", _lstm_ref, ("vocab=50", "seq=10", "d=16", "hidden=16", "num_classes=3"),
         meta=False, classes=3),
    Case("unet", _unet_ref, ("size=32", "width=4"), classes=2),
    Case("recursive_net", _recursive_ref),
]


def _batch(model, classes: int):
    """A batch of 2 random inputs for `model` and matching targets for cross-entropy."""
    shape = model.input.shape
    if model.input.dtype == "long":
        x = torch.randint(0, 50, (2, *shape))
    else:
        x = torch.randn(2, *shape)
    y = torch.randint(0, classes, (2, *model.output.shape[:-1]))
    return x, y


@pytest.mark.parametrize("case", CASES, ids=[c.spec for c in CASES])
def test_zoo_model(case: Case):
    path = ZOO / f"{case.spec}.nn"
    published = case.published() if callable(case.published) else case.published

    # 1. the static count at full size, from the checker alone
    spec = load(path, open_data=False)          # the zoo's data files are not in the repository
    assert spec.model.params == published

    # 2. the compiled module has the same parameters (meta: nothing is allocated)
    if case.meta:
        with torch.device("meta"):
            full = build_model(spec.model)
    else:
        full = build_model(spec.model)
    assert _count(full) == published
    del full

    # 3. a reduced model runs, has the inferred output shape, and trains two steps
    small = load(path, overrides=[f"model.{o}" for o in case.small], open_data=False)
    torch.manual_seed(0)
    module = build_model(small.model)
    assert _count(module) == small.model.params
    x, y = _batch(small.model, case.classes)
    optimizer = torch.optim.Adam(module.parameters(), lr=1e-3)
    before = [p.detach().clone() for p in module.parameters()]
    module.train()
    for _ in range(2):
        out = module(x)
        assert tuple(out.shape) == (2, *small.model.output.shape)
        loss = F.cross_entropy(out.reshape(-1, out.shape[-1]), y.reshape(-1))
        assert torch.isfinite(loss)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    assert any(not torch.equal(a, b) for a, b in zip(before, module.parameters()))


def test_zoo_covers_every_model_spec():
    models = {p.stem for p in ZOO.glob("*.nn") if "\nmodel " in "\n" + p.read_text()}
    assert models == {c.spec for c in CASES}


def test_recursive_net_applies_one_unit_three_times():
    """The shared unit's weights are one set: changing them changes all three applications."""
    spec = load(ZOO / "recursive_net.nn", open_data=False)
    module = build_model(spec.model)
    convs = [m for m in module.modules() if isinstance(m, nn.Conv2d)]
    assert len(convs) == 3                       # stem + the unit's two convs, registered once
    x = torch.randn(2, 1, 8, 8)
    calls = []
    hook = convs[1].register_forward_hook(lambda *_: calls.append(1))
    module(x)
    hook.remove()
    assert len(calls) == 3


def test_validate_zoo():
    result = subprocess.run([sys.executable, "-m", "nnspec", "validate", "--no-data", str(ZOO)],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "0 invalid" in result.stdout

"""Precision and compile paths (runtime/device.py, runtime/distributed.prepare): bf16 autocast
trains with fp32 parameters, fp16 on the CPU falls back to bf16 with a note, `compile true`
trains like eager and falls back to eager when compilation fails. CUDA paths are skipped here."""
from __future__ import annotations

import math

import pytest
import torch

import nnspec
from nnspec.runtime.device import resolve
from nnspec.runtime.distributed import _CompileFallback, prepare

SPEC = """\
model m {{
    input [64]
    linear(16) -> relu
    linear(10)
}}
data digits {{
    split(train = 0.8, val = 0.1, test = 0.1)
    batch 64
    normalize standard
}}
loss cross_entropy
metrics accuracy
optimizer adam(lr = 1e-2)
train {{
    epochs 2
    seed 0
    device {device}
    precision {precision}
    compile {compile}
}}
"""


def _run(tmp_path, precision="fp32", compile="false", device="cpu"):
    path = tmp_path / f"{precision}-{compile}.nn"
    path.write_text(SPEC.format(precision=precision, compile=compile, device=device))
    return nnspec.train(path, out_dir=False, progress=False)


def test_bf16_trains_with_fp32_parameters(tmp_path):
    result = _run(tmp_path, "bf16")
    assert result.summary["precision"] == "bf16"
    losses = [r["train_loss"] for r in result.history]
    assert all(math.isfinite(v) for v in losses) and losses[-1] < losses[0]
    assert all(p.dtype == torch.float32 for p in result.model.parameters())
    assert result.test_metrics["accuracy"] > 0.5


def test_fp16_on_cpu_falls_back_to_bf16_with_a_note():
    rt = resolve("cpu", "fp16")
    assert rt.precision == "bf16" and rt.autocast_dtype == torch.bfloat16 and rt.scaler() is None
    assert "fp16" in rt.note and "CUDA" in rt.note
    assert resolve("cpu", "fp32").note is None


def test_compile_trains_like_eager(tmp_path):
    if not hasattr(torch, "compile"):
        pytest.skip("torch.compile is not available")
    with _no_fallback_warning():
        compiled = _run(tmp_path, compile="true")
    eager = _run(tmp_path)
    for a, b in zip(compiled.model.parameters(), eager.model.parameters()):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)


class _no_fallback_warning:
    """Fails the test if `compile true` fell back to eager (so the comparison above is real)."""

    def __enter__(self):
        import warnings
        self._catch = warnings.catch_warnings(record=True)
        self.records = self._catch.__enter__()
        warnings.simplefilter("always")
        return self

    def __exit__(self, *exc):
        self._catch.__exit__(*exc)
        if exc[0] is None:
            failed = [w for w in self.records if str(w.message).startswith("nnspec: `compile true`")]
            if failed:
                pytest.skip(f"torch.compile is unusable here: {failed[0].message}")
        return False


def test_a_failing_compile_falls_back_to_eager_with_a_warning():
    model = torch.nn.Linear(3, 2)

    def broken(x):
        raise RuntimeError("backend compiler failed\nlong details")

    fwd = _CompileFallback(broken, model)
    x = torch.randn(4, 3)
    with pytest.warns(RuntimeWarning, match="compile true` failed .*backend compiler failed"):
        out = fwd(x)
    torch.testing.assert_close(out, model(x))
    torch.testing.assert_close(fwd(x), model(x))        # stays eager, no second warning needed


def test_prepare_single_process_cpu_is_the_plain_model():
    model = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.Flatten())
    forwards = prepare(model, torch.device("cpu"), compile=False, seed=0)
    assert forwards.train is model and forwards.eval is model
    with forwards.no_sync():                             # nothing to hold back in one process
        pass
    assert model[0].weight.is_contiguous()               # channels_last is for CUDA only


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("precision", ["bf16", "fp16"])
def test_cuda_mixed_precision_trains(tmp_path, precision):
    if precision == "bf16" and not torch.cuda.is_bf16_supported():
        pytest.skip("no bf16 on this card")
    result = _run(tmp_path, precision, device="cuda")
    assert result.summary["precision"] == precision
    assert all(math.isfinite(r["train_loss"]) for r in result.history)
    assert all(p.dtype == torch.float32 for p in result.model.parameters())


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_conv_models_use_channels_last():
    model = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.Flatten()).cuda()
    train_fwd = prepare(model, torch.device("cuda", 0), compile=False, seed=0).train
    assert model[0].weight.is_contiguous(memory_format=torch.channels_last)
    assert train_fwd(torch.randn(2, 3, 8, 8, device="cuda")).shape == (2, 4 * 36)

"""The trainer end to end on small real data: learning, determinism, early stopping, on_nan,
steps, the run folder, checkpoints, safetensors weights and the Python API."""
from __future__ import annotations

import csv
import dataclasses
import json
import math
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import nnspec
from nnspec.errors import NnspecError
from nnspec.runtime.loop_state import InternalError
from nnspec.runtime.outputs import load_checkpoint, load_weights

ROOT = Path(__file__).resolve().parent.parent

MLP = """
model digits_mlp {
    input [64]
    linear(64) -> relu
    dropout(0.1)
    linear(10)
}
"""
DATA = "data digits { split(train = 0.8, val = 0.1, test = 0.1); batch 64; normalize standard }\n"


def write(tmp_path: Path, body: str, name: str = "spec.nn", model: str = MLP, data: str = DATA) -> Path:
    path = tmp_path / name
    path.write_text(model + data + body)
    return path


def run(path, tmp_path: Path, overrides=None, out="run"):
    return nnspec.train(path, overrides=overrides, out_dir=tmp_path / out, progress=False)


def test_digits_mlp_beats_chance_in_a_few_epochs(tmp_path):
    path = write(tmp_path, "loss cross_entropy\nmetrics accuracy, f1\noptimizer adam(lr = 3e-3)\n"
                           "train { epochs 3; seed 0; checkpoint(every_epochs = never) }\n")
    result = run(path, tmp_path)
    assert [r["epoch"] for r in result.history] == [1, 2, 3]
    assert [r["step"] for r in result.history] == [23, 46, 69]          # 1437 samples / 64
    assert result.history[-1]["train_loss"] < result.history[0]["train_loss"]
    assert result.history[-1]["val_accuracy"] > 0.85                     # chance is 0.1
    assert result.test_metrics["accuracy"] > 0.85
    assert set(result.test_metrics) == {"loss", "accuracy", "f1"}
    assert result.best == min(r["val_loss"] for r in result.history)


def test_same_seed_gives_bitwise_identical_weights(tmp_path):
    body = ("loss cross_entropy\noptimizer adam(lr = 1e-3)\n"
            "train { epochs 2; seed 7; checkpoint(every_epochs = never) }\n")
    # dropout and a random augmentation: every random stream must be seeded
    path = write(tmp_path, body, data=DATA.replace("standard }", "standard; augment gaussian_noise(std = 0.2) }"))
    a = run(path, tmp_path, out="a").model.state_dict()
    b = run(path, tmp_path, out="b").model.state_dict()
    assert a.keys() == b.keys()
    assert all(torch.equal(a[k], b[k]) for k in a)
    c = run(path, tmp_path, overrides=["train.seed=8"], out="c").model.state_dict()
    assert not all(torch.equal(a[k], c[k]) for k in a)


def test_early_stopping_stops_after_patience_epochs(tmp_path):
    # lr so small that val_loss cannot improve by min_delta: best at epoch 1, stop after 1 + patience
    path = write(tmp_path, "loss cross_entropy\noptimizer sgd(lr = 1e-9)\n"
                           "train { epochs 20; seed 0; early_stop(monitor = val_loss, patience = 2, min_delta = 0.01);"
                           " checkpoint(every_epochs = never) }\n")
    result = run(path, tmp_path)
    assert len(result.history) == 3
    assert result.summary["stopped"] == "early_stop"
    assert result.best == result.history[0]["val_loss"]


def test_early_stop_ends_cleanly_when_the_monitored_metric_was_never_finite(tmp_path):
    # the loss diverges in the first epoch (skipped steps), so val_loss is nan from the start
    path = write(tmp_path, "loss cross_entropy\noptimizer sgd(lr = 1e8)\n"
                           "train { epochs 10; seed 2; on_nan skip; early_stop(monitor = val_loss, patience = 2);"
                           " checkpoint(every_epochs = never) }\n")
    result = run(path, tmp_path)
    assert not any(math.isfinite(r["val_loss"]) for r in result.history)
    assert result.summary["stopped"] == "early_stop" and len(result.history) == 2
    assert result.best is None


def test_a_monitored_metric_missing_from_the_rows_is_an_internal_error(tmp_path):
    # the check only lets through names an epoch's row has; a spec built around it must not
    # end in a TypeError but in an error that says the check missed it
    path = write(tmp_path, "loss cross_entropy\noptimizer adam\n"
                           "train { epochs 3; seed 0; early_stop(monitor = val_loss, patience = 1) }\n")
    spec = nnspec.load(path)
    train = dataclasses.replace(spec.train, early_stop=dataclasses.replace(spec.train.early_stop, monitor="val_nope"))
    with pytest.raises(InternalError, match=r"internal error: the monitored metric `val_nope` is not among"):
        nnspec.train(dataclasses.replace(spec, train=train), out_dir=False, progress=False)


def test_steps_limit_stops_mid_epoch(tmp_path):
    path = write(tmp_path, "loss cross_entropy\noptimizer adam\ntrain { steps 30; seed 0 }\n")
    result = run(path, tmp_path)
    assert [r["step"] for r in result.history] == [23, 30]
    assert result.summary["steps"] == 30 and result.summary["stopped"] == "steps"


def test_on_nan_stop_names_the_step(tmp_path):
    path = write(tmp_path, "loss cross_entropy\noptimizer sgd(lr = 1e12)\ntrain { epochs 3; seed 0 }\n")
    with pytest.raises(NnspecError) as info:
        run(path, tmp_path)
    d = info.value.diagnostics[0]
    assert d.code == "E901" and "at step" in d.message and "lr 1e+12" in d.message
    assert d.span.line == MLP.count("\n") + DATA.count("\n") + 1       # points at the loss


def test_on_nan_skip_skips_steps_and_keeps_weights_finite(tmp_path):
    path = write(tmp_path, "loss cross_entropy\noptimizer sgd(lr = 1e12)\n"
                           "train { epochs 2; seed 0; on_nan skip; checkpoint(every_epochs = never) }\n")
    result = run(path, tmp_path)
    assert result.summary["nan_skips"] > 0
    assert result.history[-1]["nan_skips"] == result.summary["nan_skips"]
    assert all(torch.isfinite(p).all() for p in result.model.parameters())


def test_missing_sections_are_located_errors(tmp_path):
    path = write(tmp_path, "optimizer adam\n")
    with pytest.raises(NnspecError) as info:
        nnspec.train(path, out_dir=False, progress=False)
    assert info.value.diagnostics[0].code == "E900"
    assert "no `loss` section" in info.value.diagnostics[0].message
    path = write(tmp_path, "loss cross_entropy\n", name="no_opt.nn")
    with pytest.raises(NnspecError, match="no `optimizer` section"):
        nnspec.train(path, out_dir=False, progress=False)
    path = write(tmp_path, "loss cross_entropy\noptimizer adam\n", name="no_data.nn", data="")
    with pytest.raises(NnspecError, match="no `data` section"):
        nnspec.train(path, out_dir=False, progress=False)


def test_run_folder_contents_parse(tmp_path):
    path = write(tmp_path, "loss cross_entropy\nmetrics accuracy\noptimizer adam(lr = 3e-3)\n"
                           "train { epochs 3; seed 0; checkpoint(every_epochs = 1, keep_last = 2) }\n")
    result = run(path, tmp_path, overrides=["train.epochs=4"])
    out = result.out_dir
    assert out == tmp_path / "run"
    spec_text = (out / "spec.nn").read_text()
    assert "--set train.epochs=4" in spec_text and "model digits_mlp" in spec_text
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in rows] == [1, 2, 3, 4]
    with open(out / "metrics.csv", newline="") as f:
        table = list(csv.DictReader(f))
    assert len(table) == 4
    for key in ("epoch", "step", "lr", "train_loss", "val_loss", "val_accuracy", "seconds"):
        assert key in table[0]
    assert float(table[-1]["val_loss"]) == pytest.approx(rows[-1]["val_loss"])
    versions = json.loads((out / "versions.json").read_text())
    assert versions["torch"] == torch.__version__ and "nnspec" in versions["plugins"]
    assert {"python", "nnspec", "numpy"} <= set(versions)
    summary = json.loads((out / "summary.json").read_text())
    assert summary["test"]["accuracy"] == pytest.approx(result.test_metrics["accuracy"])
    assert {"train", "val", "test", "best"} <= set(summary)
    names = sorted(p.name for p in (out / "checkpoints").iterdir())
    assert names == ["best.pt", "epoch0003-step00000069.pt", "epoch0004-step00000092.pt", "last.pt"]
    last = load_checkpoint(out / "checkpoints" / "last.pt")
    assert last["epoch"] == 4 and last["step"] == 92 and len(last["history"]) == 4
    assert last["spec"]["digest"] == nnspec.load(path, ["train.epochs=4"]).digest
    assert {"model", "optimizer", "schedule", "rng", "best", "norm"} <= set(last)
    final = result.model.state_dict()
    assert all(torch.equal(last["model"][k], final[k].cpu()) for k in final)
    best = load_checkpoint(out / "checkpoints" / "best.pt")
    assert best["best"]["value"] == result.best


def test_checkpoint_restores_model_and_optimizer(tmp_path):
    path = write(tmp_path, "loss cross_entropy\noptimizer adam(lr = 3e-3)\ntrain { epochs 1; seed 0 }\n")
    result = run(path, tmp_path)
    state = load_checkpoint(result.out_dir / "checkpoints" / "last.pt")
    built = nnspec.build(path)
    built.model.load_state_dict(state["model"])
    built.optimizer.load_state_dict(state["optimizer"])
    assert built.optimizer.state_dict()["state"][0]["step"] == 23
    torch.set_rng_state(state["rng"]["torch"])


def test_safetensors_weights_load_into_a_fresh_model(tmp_path):
    path = write(tmp_path, "loss cross_entropy\noptimizer adam(lr = 3e-3)\n"
                           "train { epochs 1; seed 0; checkpoint(every_epochs = never) }\n")
    result = run(path, tmp_path)
    assert not (result.out_dir / "checkpoints" / "last.pt").exists()
    fresh = nnspec.build(path).model
    x = torch.randn(16, 64)
    fresh.eval(), result.model.eval()
    assert not torch.equal(fresh(x), result.model(x))
    load_weights(fresh, result.out_dir / "weights.safetensors")
    assert torch.equal(fresh(x), result.model(x))


def test_shared_weights_save_once(tmp_path):
    model = """
model tied {
    input [64]
    shared enc = linear(64)
    enc -> relu -> enc -> relu
    linear(10)
}
"""
    path = write(tmp_path, "loss cross_entropy\noptimizer adam\ntrain { epochs 1; seed 0 }\n", model=model)
    try:
        nnspec.load(path)
    except NnspecError as err:
        pytest.skip(f"weight sharing syntax not available: {err}")
    result = run(path, tmp_path)
    fresh = nnspec.build(path).model
    load_weights(fresh, result.out_dir / "weights.safetensors")
    x = torch.randn(4, 64)
    assert torch.equal(fresh(x), result.model(x))


def test_build_matches_the_initial_training_state(tmp_path):
    path = write(tmp_path, "loss cross_entropy(label_smoothing = 0.1)\nmetrics accuracy, top_k(k = 3)\n"
                           "optimizer adam(lr = 2e-3)\nschedule cosine()\ntrain { epochs 2; seed 3 }\n")
    a, b = nnspec.build(path), nnspec.build(nnspec.load(path))
    assert all(torch.equal(p, q) for p, q in zip(a.model.parameters(), b.model.parameters()))
    assert set(a.metrics) == {"accuracy", "top_k"}
    assert a.steps_per_epoch == 23 and a.total_steps == 46
    assert a.scheduler.lr(46, 2e-3) == pytest.approx(0.0, abs=1e-12)
    assert a.optimizer.param_groups[0]["lr"] == 2e-3
    with pytest.raises(ValueError):
        nnspec.train(nnspec.load(path), overrides=["train.epochs=1"])


def test_monitor_falls_back_to_train_without_a_val_split(tmp_path):
    data = "data digits { split(train = 0.9, val = 0, test = 0.1); batch 128 }\n"
    path = write(tmp_path, "loss cross_entropy\nmetrics accuracy\noptimizer adam\n"
                           "train { epochs 2; seed 0; early_stop(monitor = val_accuracy, mode = max, patience = 5) }\n",
                 data=data)
    result = run(path, tmp_path)
    assert "val_loss" not in result.history[0]
    assert result.best == max(r["train_accuracy"] for r in result.history)


def test_monitor_reads_the_declared_key_with_its_declared_direction(tmp_path):
    path = write(tmp_path, "loss cross_entropy\nmetrics top_k(k = 3), f1(average = per_class)\noptimizer adam\n"
                           "train { epochs 3; seed 0; early_stop(monitor = val_top3_accuracy, patience = 5) }\n")
    result = run(path, tmp_path)
    row = result.history[-1]
    assert {k for k in row if k.startswith("val_")} == {"val_loss", "val_top3_accuracy", "val_f1", "val_f1_macro"}
    assert len(row["val_f1"]) == 10                         # the model's 10 outputs decide the classes
    assert result.best == max(r["val_top3_accuracy"] for r in result.history)     # mode max, undeclared


def test_import_nnspec_does_not_import_torch():
    code = ("import sys, nnspec; assert callable(nnspec.load); "
            "assert 'torch' not in sys.modules, 'torch was imported'; "
            "nnspec.build; assert 'torch' not in sys.modules")
    subprocess.run([sys.executable, "-c", code], check=True, cwd=ROOT)


def test_plain_progress_prints_one_line_per_epoch(tmp_path, capsys):
    path = write(tmp_path, "loss cross_entropy\nmetrics accuracy\noptimizer adam\n"
                           "train { epochs 2; seed 0; checkpoint(every_epochs = never) }\n")
    nnspec.train(path, out_dir=False, progress=None)
    lines = capsys.readouterr().out.splitlines()
    epoch_lines = [l for l in lines if l.startswith("epoch ")]
    assert len(epoch_lines) == 2 and "val_accuracy" in epoch_lines[0] and "samples/s" in epoch_lines[0]
    assert any(l.startswith("test: ") for l in lines)
    nnspec.train(path, out_dir=False, progress=False)
    assert capsys.readouterr().out == ""


def test_rich_progress_renders(tmp_path):
    import io

    from rich.console import Console

    from nnspec.runtime.progress import RichProgress
    path = write(tmp_path, "loss cross_entropy\nmetrics accuracy\noptimizer adam\n"
                           "train { epochs 2; seed 0; log_every 5; checkpoint(every_epochs = never) }\n")
    buf = io.StringIO()
    nnspec.train(path, out_dir=False, progress=RichProgress(Console(file=buf, force_terminal=True, width=150)))
    text = buf.getvalue()
    assert "epoch 2/2" in text and "final metrics" in text and "accuracy" in text


def test_official_digits_spec_checks():
    spec = nnspec.load(ROOT / "specs" / "digits_mlp.nn")
    assert spec.model.params == 64 * 256 + 256 + 256 * 256 + 256 + 256 * 10 + 10
    assert spec.train.epochs and spec.data.batch_size == 64
    assert math.isclose(sum(spec.data.split.values()), 1.0)


def test_step_checkpoints_mid_epoch_keep_last(tmp_path):
    path = write(tmp_path, "loss cross_entropy\noptimizer adam\n"
                           "train { steps 30; seed 0; checkpoint(every_epochs = never, every_steps = 10, keep_last = 1) }\n")
    result = run(path, tmp_path)
    names = sorted(p.name for p in (result.out_dir / "checkpoints").iterdir())
    assert names == ["best.pt", "epoch0002-step00000030.pt", "last.pt"]
    mid = load_checkpoint(result.out_dir / "checkpoints" / "epoch0002-step00000030.pt")
    assert (mid["epoch"], mid["batch"], mid["step"]) == (1, 7, 30)      # 1 epoch done, 7 batches into the next
    assert mid["partial_epoch"]["loss_count"] == 7
    last = load_checkpoint(result.out_dir / "checkpoints" / "last.pt")
    assert last["step"] == 30 and len(last["history"]) == 2


def test_weights_with_tied_tensors_save_and_load(tmp_path):
    from torch import nn

    from nnspec.runtime.outputs import RunDir

    class Tied(nn.Module):
        def __init__(self):
            super().__init__()
            self.embed = nn.Embedding(10, 4)
            self.out = nn.Linear(4, 10, bias=False)
            self.out.weight = self.embed.weight          # two state_dict keys, one tensor

        def forward(self, x):
            return self.out(self.embed(x))

    torch.manual_seed(0)
    model = Tied()
    spec = nnspec.load(write(tmp_path, "loss cross_entropy\n"))
    run_dir = RunDir(tmp_path / "tied", spec)
    path = run_dir.save_weights(model, {"note": "tied"})
    run_dir.close()
    fresh = Tied()
    load_weights(fresh, path)
    x = torch.arange(10)
    assert torch.equal(fresh(x), model(x))
    assert fresh.out.weight is fresh.embed.weight


def test_default_run_folder_is_named_after_the_spec(tmp_path, monkeypatch):
    import re
    path = write(tmp_path, "loss cross_entropy\noptimizer adam\ntrain { steps 2; checkpoint(every_epochs = never) }\n",
                 name="tiny.nn")
    monkeypatch.chdir(tmp_path)
    first = nnspec.train(path, progress=False).out_dir
    second = nnspec.train(path, progress=False).out_dir
    assert first.parent == Path("runs") and re.fullmatch(r"tiny-\d{8}-\d{6}(-\d+)?", first.name)
    assert first != second and (tmp_path / second / "weights.safetensors").exists()

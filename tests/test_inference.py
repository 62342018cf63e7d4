"""`nnspec eval` and `nnspec predict` on a real trained run, through the real CLI."""
from __future__ import annotations

import csv
import gzip
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parent.parent
SPEC = ROOT / "specs" / "digits_mlp.nn"


def nnspec(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "nnspec", *args], capture_output=True, text=True, timeout=300)


@pytest.fixture(scope="module")
def run(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("run") / "digits"
    done = nnspec("train", str(SPEC), "--out", str(out), "--set", "train.epochs=2", "--quiet")
    assert done.returncode == 0, done.stderr
    return out


def test_eval_reproduces_the_test_metrics_of_training(run):
    done = nnspec("eval", str(SPEC), "--weights", str(run), "--set", "train.epochs=2", "--json")
    assert done.returncode == 0, done.stderr
    got = json.loads(done.stdout)
    summary = json.loads((run / "summary.json").read_text())
    test = summary.get("test") or {k[5:]: v for k, v in summary.items() if k.startswith("test_")}
    assert got["test_accuracy"] == pytest.approx(test["accuracy"], abs=1e-9)


def test_predict_writes_one_row_per_input(run, tmp_path):
    data = np.loadtxt(gzip.open(ROOT / "nnspec" / "data" / "digits.csv.gz"), delimiter=",")
    np.save(tmp_path / "x.npy", data[:20, :64])
    out = tmp_path / "pred.csv"
    done = nnspec("predict", str(SPEC), "--weights", str(run / "weights.safetensors"),
                  "--input", str(tmp_path / "x.npy"), "--output", str(out))
    assert done.returncode == 0, done.stderr
    rows = list(csv.reader(out.open()))
    assert rows[0][:2] == ["prediction", "p0"] and len(rows) == 21
    predicted = np.array([int(r[0]) for r in rows[1:]])
    assert (predicted == data[:20, 64]).mean() > 0.6


def test_bad_weights_and_inputs_are_located_errors(run, tmp_path):
    missing = nnspec("eval", str(SPEC), "--weights", str(tmp_path / "nope.safetensors"))
    assert missing.returncode == 1 and "E950" in missing.stderr and "Traceback" not in missing.stderr
    np.save(tmp_path / "bad.npy", np.zeros((3, 5)))
    bad = nnspec("predict", str(SPEC), "--weights", str(run), "--input", str(tmp_path / "bad.npy"))
    assert bad.returncode == 1 and "do not fit the model input" in bad.stderr
    other = tmp_path / "other.nn"
    other.write_text(SPEC.read_text().replace("const hidden = 256", "const hidden = 32"))
    wrong = nnspec("eval", str(other), "--weights", str(run))
    assert wrong.returncode == 1 and "do not fit the spec's model" in wrong.stderr


def test_eval_accepts_a_checkpoint_of_the_run(run):
    checkpoint = run / "checkpoints" / "last.pt"
    assert checkpoint.is_file()
    from_weights = nnspec("eval", str(SPEC), "--weights", str(run), "--set", "train.epochs=2", "--json")
    from_checkpoint = nnspec("eval", str(SPEC), "--weights", str(checkpoint), "--set", "train.epochs=2", "--json")
    assert from_checkpoint.returncode == 0, from_checkpoint.stderr
    assert json.loads(from_checkpoint.stdout) == json.loads(from_weights.stdout)
    (run.parent / "not_a_checkpoint.pt").write_bytes(b"garbage")
    bad = nnspec("eval", str(SPEC), "--weights", str(run.parent / "not_a_checkpoint.pt"))
    assert bad.returncode == 1 and "E950" in bad.stderr and "Traceback" not in bad.stderr


def test_predict_never_overwrites_its_input_or_an_existing_file(run, tmp_path):
    x = tmp_path / "x.npy"
    np.save(x, np.zeros((4, 64)))
    original = x.read_bytes()
    link = tmp_path / "link.npy"
    link.symlink_to(x)
    for output in (x, link, tmp_path / "." / "x.npy"):
        same = nnspec("predict", str(SPEC), "--weights", str(run), "--input", str(x), "--output", str(output),
                      "--force")
        assert same.returncode == 2 and "is the --input file" in same.stderr, same.stderr
    assert x.read_bytes() == original
    existing = tmp_path / "pred.csv"
    existing.write_text("keep me\n")
    refused = nnspec("predict", str(SPEC), "--weights", str(run), "--input", str(x), "--output", str(existing))
    assert refused.returncode == 2 and "exists; pass --force" in refused.stderr
    assert existing.read_text() == "keep me\n"
    forced = nnspec("predict", str(SPEC), "--weights", str(run), "--input", str(x), "--output", str(existing),
                    "--force")
    assert forced.returncode == 0, forced.stderr
    assert existing.read_text().startswith("prediction,p0")
    default = nnspec("predict", str(SPEC), "--weights", str(run), "--input", str(x))
    assert default.returncode == 0 and (tmp_path / "x.predictions.csv").is_file()
    again = nnspec("predict", str(SPEC), "--weights", str(run), "--input", str(x))
    assert again.returncode == 2 and "x.predictions.csv exists" in again.stderr


def test_predict_explains_how_to_shape_one_flat_sample(run, tmp_path):
    np.save(tmp_path / "one.npy", np.zeros(64))
    out = nnspec("predict", str(SPEC), "--weights", str(run), "--input", str(tmp_path / "one.npy"))
    assert out.returncode == 1 and "one flat vector" in out.stderr and "x.reshape(1, -1)" in out.stderr
    assert "Traceback" not in out.stderr

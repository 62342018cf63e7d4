"""Runs that survive faults: SIGKILL at random steps then --resume ends bitwise equal to an
uninterrupted run; kills during checkpoint writes never leave an unloadable last.pt; corrupt
and malicious checkpoints are refused and skipped; SIGTERM checkpoints and exits 3; a changed
spec is refused with a diff; on_nan skip/stop.

Test hook: NNSPEC_TEST_SLEEP_IN_SAVE=<seconds> sleeps between a checkpoint's fsync and its
rename (runtime/outputs.py), which slows every step when checkpointing each step and widens
the window in which a kill lands mid-write."""
from __future__ import annotations

import json
import math
import os
import random
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

import nnspec
from nnspec.cli import commands as cli
from nnspec.errors import NnspecError
from nnspec.runtime import outputs, resume
from nnspec.runtime.signals import StopFlag

pytestmark = pytest.mark.slow

SPEC = """model tiny {
    input [8]
    linear(16) -> relu
    dropout(0.3)
    linear(3)
}
data blobs(samples = 200, features = 8, classes = 3) {
    split(train = 0.8, val = 0.1, test = 0.1); batch 16; augment gaussian_noise(std = 0.1)
}
loss cross_entropy
optimizer adam(lr = 1e-2)
schedule cosine()
train { epochs 3; seed 1; checkpoint(every_steps = 1, keep_last = 3) }
"""
STEPS = 30          # 160 training samples / 16, 3 epochs


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    """The spec and the weights of an uninterrupted run (in process)."""
    root = tmp_path_factory.mktemp("resume")
    spec = root / "tiny.nn"
    spec.write_text(SPEC)
    nnspec.train(spec, out_dir=root / "reference", progress=False)
    return root, spec, load_file(root / "reference" / "weights.safetensors")


def _start(spec: Path, out: Path, *extra: str, sleep: float = 0.03) -> subprocess.Popen:
    env = {**os.environ, "NNSPEC_TEST_SLEEP_IN_SAVE": str(sleep)}
    return subprocess.Popen([sys.executable, "-m", "nnspec", "train", str(spec), "--out", str(out), "--quiet",
                             *extra], cwd=spec.parent, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)


def _newest_step(out: Path) -> int:
    steps = [int(p.stem.split("-step")[1]) for p in (out / "checkpoints").glob("epoch*-step*.pt")]
    return max(steps, default=0)


def _wait_for_step(out: Path, step: int, proc: subprocess.Popen, timeout: float = 180) -> None:
    end = time.monotonic() + timeout
    while _newest_step(out) < step:
        assert proc.poll() is None, f"run ended before step {step}: {proc.stderr.read()}"
        assert time.monotonic() < end, f"no checkpoint of step {step}"
        time.sleep(0.005)


def _identical(out: Path, reference: dict) -> bool:
    got = load_file(out / "weights.safetensors")
    return got.keys() == reference.keys() and all(torch.equal(got[k], reference[k]) for k in reference)


def test_sigkill_at_random_steps_then_resume_is_bitwise_identical(setup):
    root, spec, reference = setup
    rng = random.Random(int(os.environ.get("NNSPEC_TEST_SEED", "1234")))
    kill_steps = [rng.randrange(2, STEPS - 1) for _ in range(4)]
    procs = []
    for i, k in enumerate(kill_steps):
        out = root / f"killed{i}"
        procs.append((out, k, _start(spec, out)))
    kills_in_save, pending, end = 0, list(procs), time.monotonic() + 180
    delays = {id(p): rng.uniform(0, 0.04) for _, _, p in procs}    # often lands inside a checkpoint write
    reached: dict[int, float] = {}
    while pending:                                   # all runs at once: kill each at its step
        assert time.monotonic() < end, "runs too slow"
        for item in list(pending):
            out, k, proc = item
            assert proc.poll() is None, f"run ended before step {k}: {proc.stderr.read()}"
            if _newest_step(out) >= k:
                reached.setdefault(id(proc), time.monotonic())
            if id(proc) in reached and time.monotonic() - reached[id(proc)] >= delays[id(proc)]:
                proc.send_signal(signal.SIGKILL)
                proc.wait()
                pending.remove(item)
        time.sleep(0.002)
    for out, k, proc in procs:
        proc.stdout.close(), proc.stderr.close()
        kills_in_save += bool(list((out / "checkpoints").glob(".*.tmp")))
        # the newest valid checkpoint is at the kill step or later; last.pt, linked after the
        # numbered file is written, may be one behind when the kill lands in between
        assert resume.newest_valid(out)[1]["step"] >= k
    # resume three ways: --out DIR --resume, --resume DIR, --resume FILE
    resumed = []
    for i, (out, k, _) in enumerate(procs):
        extra = ("--resume",) if i % 3 == 0 else ("--resume", str(out)) if i % 3 == 1 else \
            ("--resume", str(out / "checkpoints" / "last.pt"))
        resumed.append(_start(spec, out, *extra, sleep=0))
    identical = 0
    for (out, k, _), proc in zip(procs, resumed):
        _, err = proc.communicate(timeout=180)
        assert proc.returncode == 0, err
        assert "resuming from" in err
        rows = (out / "metrics.jsonl").read_text().splitlines()
        assert len(rows) == 3                                              # no duplicated rows
        identical += _identical(out, reference)
    print(f"\nSIGKILL trials at steps {kill_steps}: {identical}/{len(procs)} bitwise identical; "
          f"{kills_in_save} killed during a checkpoint write")
    assert identical == len(procs)


def test_kills_during_checkpoint_writes_never_break_last(tmp_path):
    """Fork a writer that saves checkpoints (numbered + last.pt link) in a loop with a sleep
    between write and rename; SIGKILL it at random times; last.pt must always load."""
    state = {"format": 1, "w": torch.randn(64, 64)}
    rng = random.Random(7)
    trials, mid_write = 20, 0
    for trial in range(trials):
        folder = tmp_path / f"t{trial}"
        pid = os.fork()
        if pid == 0:                                     # child: write forever
            try:
                outputs._SLEEP_BEFORE_REPLACE = "0.003"
                run = object.__new__(outputs.RunDir)
                run.checkpoints, run._periodic = folder, []
                folder.mkdir()
                step = 0
                while True:
                    step += 1
                    run.save_periodic({**state, "step": step}, 1, step, 2)
            finally:
                os._exit(1)
        deadline = time.monotonic() + 60               # a loaded machine may start the child slowly:
        while not (folder / "last.pt").exists() and time.monotonic() < deadline:   # kill only after
            time.sleep(0.005)                          # the first save, so a last.pt must exist
        time.sleep(rng.uniform(0.0, 0.12))
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
        mid_write += bool(list(folder.glob(".*.tmp")))
        last = outputs.load_checkpoint(folder / "last.pt")
        numbered = sorted(folder.glob("epoch*.pt"))
        assert 1 <= len(numbered) <= 3 and last["step"] >= 1
        assert all(outputs.load_checkpoint(p)["format"] == 1 for p in numbered)
    print(f"\n{trials} kills during saves ({mid_write} with a temp file left mid-write): last.pt loaded every time")


class _Evil:
    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


def test_corrupt_checkpoints_are_named_and_skipped(setup, capsys):
    root, spec, reference = setup
    out = root / "corrupt"
    shutil.copytree(root / "reference", out)
    ck = out / "checkpoints"
    numbered = sorted(ck.glob("epoch*.pt"))             # steps 28, 29, 30; last.pt links to 30
    good = numbered[-1].read_bytes()
    marker = root / "pwned"
    (ck / "last.pt").unlink()
    (ck / "last.pt").write_bytes(good[: len(good) // 2])                           # truncated
    numbered[-1].unlink()
    numbered[-1].write_bytes(random.Random(0).randbytes(4096))                     # random bytes
    numbered[-2].unlink()
    torch.save({"format": 1, "model": _Evil(marker)}, numbered[-2])               # code in a pickle
    for bad in (ck / "last.pt", numbered[-1], numbered[-2]):
        with pytest.raises(ValueError, match=str(bad.name)):
            resume.read(bad)
    assert not marker.exists()                          # weights_only never ran the reduce
    with pytest.raises(NnspecError, match="E911|unreadable") as info:
        nnspec.train(spec, out_dir=out, resume=ck / "last.pt", progress=False)
    assert "last.pt" in str(info.value)
    # the folder falls back to step 28, says so, and still ends at the reference weights
    nnspec.train(spec, out_dir=out, resume=True, progress=False)
    err = capsys.readouterr().err
    assert err.count("skipping") == 3 and "epoch0003-step00000028.pt" in err
    assert _identical(out, reference) and not marker.exists()


def test_changed_spec_is_refused_with_a_diff_unless_allowed(setup, capsys):
    root, spec, _ = setup
    out = root / "changed"
    shutil.copytree(root / "reference", out)
    code = cli.main(["train", str(spec), "--out", str(out), "--resume", "--set", "train.epochs=4", "--quiet"])
    err = capsys.readouterr().err
    assert code == cli.EXIT_INVALID and "E912" in err and "+++ --set train.epochs=4 (now)" in err
    changed = spec.parent / "tiny4.nn"
    changed.write_text(SPEC.replace("epochs 3", "epochs 4"))
    with pytest.raises(NnspecError) as info:
        nnspec.train(changed, out_dir=out, resume=True, progress=False)
    assert "-train { epochs 3" in str(info.value) and "+train { epochs 4" in str(info.value)
    result = nnspec.train(changed, out_dir=out, resume=True, allow_changed_spec=True, progress=False)
    assert [r["epoch"] for r in result.history] == [1, 2, 3, 4] and result.summary["steps"] == 40


@pytest.mark.parametrize("change, where, needle", [
    ("linear(16)", "linear(20)", "linear_0.weight is [16, 8] in the checkpoint, [20, 8] here"),
    ("optimizer adam(lr = 1e-2)", "optimizer sgd(lr = 1e-2, momentum = 0.9)", "written by an optimizer with amsgrad"),
])
def test_an_allowed_change_that_does_not_fit_the_checkpoint_is_a_located_error(setup, capsys, change, where, needle):
    root, spec, _ = setup
    out = root / f"misfit-{where[:6]}"
    shutil.copytree(root / "reference", out)
    changed = spec.parent / f"misfit-{where[:6]}.nn"
    changed.write_text(SPEC.replace(change, where))
    code = cli.main(["train", str(changed), "--out", str(out), "--resume", "--allow-changed-spec", "--quiet"])
    err = capsys.readouterr().err
    line = next(i for i, text in enumerate(SPEC.replace(change, where).splitlines(), 1) if where in text)
    assert code == cli.EXIT_INVALID and "E913" in err and needle in err, err
    assert "Traceback" not in err and (f":{line}:" in err or ":1:1:" in err)


def test_sigterm_checkpoints_exits_3_and_resume_completes(setup):
    root, spec, reference = setup
    out = root / "term"
    proc = _start(spec, out)
    _wait_for_step(out, 12, proc)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=180)
    assert proc.returncode == 3, err
    assert "stopped by SIGTERM after step" in err
    command = next(line for line in err.splitlines() if line.startswith("resume with: "))
    assert command.endswith(f"--resume {out}")
    args = command[len("resume with: nnspec "):].split()
    done = subprocess.run([sys.executable, "-m", "nnspec", *args, "--quiet"], cwd=spec.parent,
                          capture_output=True, text=True, timeout=180)
    assert done.returncode == 0, done.stderr
    assert _identical(out, reference)


def _cli(spec: Path, *args: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "nnspec", "train", str(spec), "--quiet", *args],
                          cwd=cwd or spec.parent, capture_output=True, text=True, timeout=180)


def test_an_earlier_run_folder_is_refused_unless_resume_or_force(setup, tmp_path):
    root, spec, _ = setup
    out = tmp_path / "run"
    shutil.copytree(root / "reference", out)
    before = {p.relative_to(out): p.read_bytes() for p in out.rglob("*") if p.is_file()}
    other = tmp_path / "other.nn"          # another run: one epoch, a checkpoint per epoch
    other.write_text(SPEC.replace("epochs 3", "epochs 1").replace("every_steps = 1, keep_last = 3", "every_epochs = 1"))
    done = _cli(other, "--out", str(out))
    assert done.returncode == 1 and "E914" in done.stderr and "Traceback" not in done.stderr, done.stderr
    assert "--resume" in done.stderr and "--force" in done.stderr
    assert {p.relative_to(out): p.read_bytes() for p in out.rglob("*") if p.is_file()} == before   # untouched
    # --force starts clean: none of the earlier run's checkpoints, rows or weights survive
    (out / "notes.txt").write_text("mine")
    forced = _cli(other, "--out", str(out), "--force")
    assert forced.returncode == 0, forced.stderr
    assert sorted(p.name for p in (out / "checkpoints").iterdir()) == ["best.pt", "epoch0001-step00000010.pt",
                                                                      "last.pt"]
    assert len((out / "metrics.jsonl").read_text().splitlines()) == 1
    assert json.loads((out / "summary.json").read_text())["steps"] == 10
    assert (out / "weights.safetensors").read_bytes() != before[Path("weights.safetensors")]
    assert (out / "notes.txt").read_text() == "mine"                      # not an nnspec file: kept
    assert "DELETES" in _help("train")


def _help(command: str) -> str:
    return subprocess.run([sys.executable, "-m", "nnspec", command, "--help"], capture_output=True, text=True,
                          timeout=60).stdout


def test_a_killed_resume_of_a_finished_run_no_longer_looks_finished(setup, tmp_path):
    """summary.json (the completion marker) and the weights go before a run moves past them: a
    kill after that never leaves a folder whose weights and summary disagree with its checkpoints."""
    root, spec, _ = setup
    out = tmp_path / "longer"
    shutil.copytree(root / "reference", out)
    proc = _start(spec, out, "--resume", "--set", "train.epochs=9", "--allow-changed-spec")
    _wait_for_step(out, STEPS + 3, proc)
    proc.send_signal(signal.SIGKILL)
    proc.communicate()
    assert not (out / "summary.json").exists() and not (out / "weights.safetensors").exists()
    newest = resume.newest_valid(out)[1]
    rows = [json.loads(r) for r in (out / "metrics.jsonl").read_text().splitlines()]
    assert rows[:len(newest["history"])] == json.loads(json.dumps(newest["history"]))
    again = _cli(spec, "--out", str(out), "--resume", "--set", "train.epochs=9", "--allow-changed-spec")
    assert again.returncode == 0, again.stderr
    assert json.loads((out / "summary.json").read_text())["epochs"] == 9


def test_resume_takes_the_newest_valid_checkpoint_by_step_not_the_last_link(setup, tmp_path):
    root, spec, reference = setup
    out = tmp_path / "lagging"
    shutil.copytree(root / "reference", out)
    ck = out / "checkpoints"
    (ck / "last.pt").unlink()                      # a kill between writing step 30 and linking last.pt
    shutil.copy(ck / "epoch0003-step00000029.pt", ck / "last.pt")
    found = resume.locate(nnspec.load(spec), True, out)
    assert found.path.name == "epoch0003-step00000030.pt" and found.state["step"] == 30
    (ck / "epoch0003-step00000030.pt").write_bytes(b"cut")     # unusable: last.pt (29) is the newest valid
    found = resume.locate(nnspec.load(spec), True, out)
    assert found.path.name == "last.pt" and found.state["step"] == 29 and len(found.skipped) == 1


def test_a_resumed_run_folder_drops_what_is_past_its_checkpoint(setup, tmp_path):
    root, spec, _ = setup
    out = tmp_path / "back"
    shutil.copytree(root / "reference", out)
    state = resume.read(out / "checkpoints" / "epoch0003-step00000028.pt")
    run = outputs.RunDir(out, nnspec.load(spec), history=state["history"], resumed_step=28)
    run.close()
    assert sorted(p.name for p in (out / "checkpoints").glob("epoch*")) == ["epoch0003-step00000028.pt"]
    assert not (out / "summary.json").exists() and not (out / "weights.safetensors").exists()
    assert len((out / "metrics.jsonl").read_text().splitlines()) == len(state["history"]) == 2
    assert (out / "metrics.csv").read_text().splitlines()[0].startswith("epoch,step,")


def test_resume_without_a_checkpoint_yet_starts_fresh(setup, tmp_path):
    """One command line for a preemptible job's first and later starts: `--out DIR --resume`
    and plain `--resume` (the newest runs/<stem>-* folder) start fresh when there is nothing yet."""
    root, spec, reference = setup
    work = tmp_path / "job"
    work.mkdir()
    shutil.copy(spec, work / "tiny.nn")
    first = _cli(work / "tiny.nn", "--out", str(work / "out"), "--resume")
    assert first.returncode == 0, first.stderr
    assert "starting fresh" in first.stderr and _identical(work / "out", reference)
    plain = _cli(work / "tiny.nn", "--resume", "--set", "train.epochs=1")
    assert plain.returncode == 0 and "starting fresh" in plain.stderr, plain.stderr
    (made,) = (work / "runs").glob("tiny-*")
    assert len((made / "metrics.jsonl").read_text().splitlines()) == 1
    # killed before its first checkpoint: the unfinished run's files are replaced by a fresh start
    for name in ("summary.json", "weights.safetensors"):
        (made / name).unlink()
    shutil.rmtree(made / "checkpoints")
    again = _cli(work / "tiny.nn", "--out", str(made), "--resume", "--set", "train.epochs=1")
    assert again.returncode == 0 and "starting fresh" in again.stderr, again.stderr
    # a finished run without checkpoints is not silently trained over
    shutil.rmtree(made / "checkpoints")
    kept = _cli(work / "tiny.nn", "--out", str(made), "--resume", "--set", "train.epochs=1")
    assert kept.returncode == 1 and "E914" in kept.stderr and "--force" in kept.stderr, kept.stderr


def test_second_sigint_raises_at_once():
    before = signal.getsignal(signal.SIGINT)     # SIG_IGN when pytest runs in a background job
    with StopFlag() as flag:
        os.kill(os.getpid(), signal.SIGINT)
        assert flag.requested == "SIGINT"
        with pytest.raises(KeyboardInterrupt):
            os.kill(os.getpid(), signal.SIGINT)
    assert signal.getsignal(signal.SIGINT) is before


def test_on_nan_skip_counts_one_bad_batch(tmp_path, monkeypatch):
    from nnspec.runtime import trainer
    real = trainer.assemble
    calls = [0]

    def assemble(spec):
        b = real(spec)
        loss = b.loss

        def poisoned(out, y):
            value = loss(out, y)
            if torch.is_grad_enabled():
                calls[0] += 1
                if calls[0] == 5:
                    return value * float("nan")
            return value
        b.loss = poisoned
        return b
    monkeypatch.setattr(trainer, "assemble", assemble)
    spec = tmp_path / "s.nn"
    spec.write_text(SPEC.replace("every_steps = 1, keep_last = 3", "every_epochs = 1")
                    .replace("seed 1;", "seed 1; on_nan skip;"))
    result = nnspec.train(spec, out_dir=tmp_path / "run", progress=False)
    assert result.summary["nan_skips"] == 1 and result.history[-1]["nan_skips"] == 1
    assert all(torch.isfinite(p).all() for p in result.model.parameters())
    assert all(torch.isfinite(t).all() for t in
               outputs.load_checkpoint(tmp_path / "run" / "checkpoints" / "best.pt")["model"].values())


def test_on_nan_skip_also_skips_a_non_finite_gradient_behind_a_finite_loss(tmp_path, monkeypatch):
    from nnspec.runtime import trainer
    real = trainer.assemble
    calls = [0]

    def assemble(spec):
        b = real(spec)
        first = next(b.model.parameters())

        def poison(grad):
            calls[0] += 1
            return grad * float("nan") if calls[0] == 5 else grad
        first.register_hook(poison)
        return b
    monkeypatch.setattr(trainer, "assemble", assemble)
    spec = tmp_path / "s.nn"
    spec.write_text(SPEC.replace("every_steps = 1, keep_last = 3", "every_epochs = 1")
                    .replace("seed 1;", "seed 1; on_nan skip;"))
    result = nnspec.train(spec, out_dir=False, progress=False)
    assert result.summary["nan_skips"] == 1
    assert all(torch.isfinite(p).all() for p in result.model.parameters())
    assert all(math.isfinite(r["train_loss"]) for r in result.history)


def test_on_nan_stop_names_step_last_loss_and_lr(tmp_path):
    spec = tmp_path / "s.nn"
    spec.write_text(SPEC.replace("adam(lr = 1e-2)", "sgd(lr = 1e10)").replace("schedule cosine()\n", ""))
    with pytest.raises(NnspecError) as info:
        nnspec.train(spec, out_dir=tmp_path / "run", progress=False)
    message = info.value.diagnostics[0].message
    assert "at step" in message and "lr 1e+10" in message and ("last finite loss" in message
                                                               or "no finite loss" in message)
    assert not (tmp_path / "run" / "checkpoints" / "best.pt").exists()

"""Data-parallel training (runtime/distributed.py): the sharding is exact, two gloo processes
with per-rank batch B end with the weights of one process with batch 2B, and a failing rank
ends the whole run with its error."""
from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import pytest
import torch
from safetensors.torch import load_file

from nnspec.runtime.batching import TensorSplit, TensorStore
from nnspec.runtime.distributed import ShardedSplit, World, _shard_plan

SPEC = """\
model m {{
    input [64]
    linear(24) -> tanh
    linear(10)
}}
data digits {{
    split(train = 0.8, val = 0.1, test = 0.1)
    batch {batch}
    normalize standard
}}
loss cross_entropy
metrics accuracy
optimizer {optimizer}
train {{
    epochs 2
    seed 3
    device cpu
}}
"""


def _split(n: int) -> TensorSplit:
    x = torch.arange(n, dtype=torch.float32).unsqueeze(1)
    return TensorSplit(TensorStore(x, torch.arange(n)), torch.arange(n - 1, -1, -1), "float")


@pytest.mark.parametrize("n,batch,size,drop_last", [(23, 3, 2, False), (24, 4, 3, False), (23, 3, 2, True),
                                                    (13, 2, 3, False), (7, 4, 2, False)])
def test_global_batch_k_is_the_single_process_batch_k(n, batch, size, drop_last):
    split = _split(n)
    single = [y.tolist() for _, y in split.batches(batch * size, shuffle=True, epoch=1, seed=5, drop_last=drop_last)]
    ranks = [ShardedSplit(split, World(r, size, r)) for r in range(size)]
    per_rank, weights = [], []
    for s in ranks:
        got = []
        for _, y in s.batches(batch, shuffle=True, epoch=1, seed=5, drop_last=drop_last):
            got.append((y.tolist(), s.batch_weight))
        per_rank.append(got)
    steps = {len(p) for p in per_rank}
    assert len(steps) == 1 and steps == {ranks[0].num_batches(batch, drop_last)}     # same steps everywhere
    full, _, tail = _shard_plan(n, batch, size, 0, drop_last)
    for k in range(steps.pop()):
        union = sum((p[k][0] for p in per_rank), [])
        assert union == single[k]                       # the same samples, in the same order
        sizes = [len(p[k][0]) for p in per_rank]
        assert max(sizes) - min(sizes) <= 1
        # weight = world × local / global: the average of the weighted per-rank means is the global mean
        w = [p[k][1] for p in per_rank]
        assert all(wi == 1.0 for wi in w) or k == full
        assert all(wi == pytest.approx(size * s_ / len(union)) for wi, s_ in zip(w, sizes))
    # resuming at a batch gives the tail of the same stream
    again = [y.tolist() for _, y in ranks[-1].batches(batch, shuffle=True, epoch=1, seed=5, drop_last=drop_last,
                                                      start_sample=batch * size)]
    assert again == [p[0] for p in per_rank[-1][1:]]


@pytest.mark.parametrize("n,batch,before,after,consumed", [(23, 3, 2, 3, 12), (40, 4, 3, 1, 24), (40, 4, 1, 2, 13),
                                                              (17, 2, 2, 3, 16)])
def test_a_resume_with_another_number_of_processes_reads_each_remaining_sample_once(n, batch, before, after, consumed):
    """`consumed` samples of the epoch's order were read by `before` ranks; `after` ranks read the rest."""
    split = _split(n)
    order = [y.tolist() for _, y in split.batches(n, shuffle=True, epoch=2, seed=9)][0]
    g = batch * after
    left = order[consumed:]
    if len(left) % g < after:                   # a tail smaller than the number of ranks is dropped
        left = left[:len(left) - len(left) % g]
    expected = [left[i:i + g] for i in range(0, len(left), g)]
    per_rank = [[y.tolist() for _, y in ShardedSplit(split, World(r, after, r)).batches(
        batch, shuffle=True, epoch=2, seed=9, start_sample=consumed)] for r in range(after)]
    assert {len(p) for p in per_rank} == {len(expected)}
    assert [sum((p[k] for p in per_rank), []) for k in range(len(expected))] == expected


def _env(**extra) -> dict:
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR",
                                                             "MASTER_PORT")}
    env.update(OMP_NUM_THREADS="1", NNSPEC_DIST_TIMEOUT="30", PYTHONUNBUFFERED="1", **extra)
    return env


def _train(spec_path, out, *args, env=None):
    try:
        return subprocess.run([sys.executable, "-m", "nnspec", "train", str(spec_path), "--quiet", "--out", str(out),
                               *args], capture_output=True, text=True, timeout=120, env=env or _env())
    except subprocess.TimeoutExpired as err:     # show where it stood: the run's own output so far
        def text(b):
            return b.decode(errors="replace") if isinstance(b, bytes) else (b or "")
        pytest.fail(f"`nnspec train {' '.join(args)}` did not finish in 120 s\n--- stdout\n{text(err.stdout)[-3000:]}"
                    f"\n--- stderr\n{text(err.stderr)[-3000:]}")


@pytest.mark.slow
@pytest.mark.parametrize("optimizer", ["sgd(lr = 0.1, momentum = 0.9)", "adam(lr = 3e-3)"])
def test_two_processes_match_one_process_with_double_batch(tmp_path, optimizer):
    # 1437 training samples: 44 full global batches of 32 and a short one of 29 (15 + 14)
    two, one = tmp_path / "two.nn", tmp_path / "one.nn"
    monitored = "    device cpu\n    monitor(train_accuracy, mode = max)\n"     # train metrics are tracked
    two.write_text(SPEC.format(batch=16, optimizer=optimizer).replace("    device cpu\n", monitored))
    one.write_text(SPEC.format(batch=32, optimizer=optimizer).replace("    device cpu\n", monitored))
    r2 = _train(two, tmp_path / "r2", "--nproc", "2")
    assert r2.returncode == 0, r2.stderr[-3000:]
    r1 = _train(one, tmp_path / "r1")
    assert r1.returncode == 0, r1.stderr[-3000:]
    w2, w1 = load_file(tmp_path / "r2" / "weights.safetensors"), load_file(tmp_path / "r1" / "weights.safetensors")
    assert w2.keys() == w1.keys()
    for k in w1:
        torch.testing.assert_close(w2[k], w1[k], rtol=1e-5, atol=1e-6)
    import json
    rows2 = [json.loads(x) for x in (tmp_path / "r2" / "metrics.jsonl").read_text().splitlines()]
    rows1 = [json.loads(x) for x in (tmp_path / "r1" / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows2] == [r["step"] for r in rows1] == [45, 90]
    for a, b in zip(rows2, rows1):           # the logged loss is the mean over both ranks
        assert a["train_loss"] == pytest.approx(b["train_loss"], rel=1e-5)
        assert a["val_accuracy"] == b["val_accuracy"]          # val is sharded over the ranks, then merged
        assert a["train_accuracy"] == b["train_accuracy"]      # over both ranks' batches, not rank 0's
        assert a["val_loss"] == pytest.approx(b["val_loss"], rel=1e-5)


@pytest.mark.slow
def test_accumulation_syncs_gradients_once_per_step_and_matches_one_process(tmp_path, monkeypatch):
    """2 ranks × batch 8 × accumulate 4 vs 1 process × batch 16 × accumulate 4. 90 micro-batches
    per epoch (the last a short one of 13): 22 steps, then a step of the 2 left over, which must
    sync too. A DDP communication hook counts the gradient buckets all-reduced: the same
    number at every optimizer step, and none for the micro-batches in between."""
    hook = tmp_path / "hook"
    hook.mkdir()
    (hook / "sitecustomize.py").write_text(textwrap.dedent("""\
        import atexit, os
        from torch.distributed.algorithms.ddp_comm_hooks.default_hooks import allreduce_hook
        from torch.nn.parallel import DistributedDataParallel
        calls = [0]
        real_init = DistributedDataParallel.__init__
        def counting(state, bucket):
            calls[0] += 1
            return allreduce_hook(state, bucket)
        def init(self, *a, **k):
            real_init(self, *a, **k)
            self.register_comm_hook(None, counting)
        DistributedDataParallel.__init__ = init
        atexit.register(lambda: open(os.environ["COUNT_FILE"] + os.environ.get("RANK", "x"), "w").write(str(calls[0])))
    """))
    accumulate = "    accumulate 4\n"
    two, one = tmp_path / "two.nn", tmp_path / "one.nn"
    two.write_text(SPEC.format(batch=8, optimizer="sgd(lr = 0.1, momentum = 0.9)").replace("    device cpu\n", "    device cpu\n" + accumulate))
    one.write_text(SPEC.format(batch=16, optimizer="sgd(lr = 0.1, momentum = 0.9)").replace("    device cpu\n", "    device cpu\n" + accumulate))
    r2 = _train(two, tmp_path / "r2", "--nproc", "2", env=_env(PYTHONPATH=str(hook), COUNT_FILE=str(tmp_path / "count")))
    assert r2.returncode == 0, r2.stderr[-3000:]
    r1 = _train(one, tmp_path / "r1")
    assert r1.returncode == 0, r1.stderr[-3000:]
    w2, w1 = load_file(tmp_path / "r2" / "weights.safetensors"), load_file(tmp_path / "r1" / "weights.safetensors")
    for k in w1:
        torch.testing.assert_close(w2[k], w1[k], rtol=1e-5, atol=1e-6)
    steps, micro_batches = 2 * 23, 2 * 90
    for rank in "01":
        buckets = int((tmp_path / f"count{rank}").read_text())
        assert buckets > 0 and buckets % steps == 0 and buckets // steps < micro_batches // steps, buckets


@pytest.mark.slow
def test_a_failing_rank_ends_the_run_with_its_error(tmp_path):
    hook = tmp_path / "hook"
    hook.mkdir()
    (hook / "sitecustomize.py").write_text(textwrap.dedent("""\
        import os
        if os.environ.get("RANK") == "1":
            import torch.optim
            def _boom(self, *a, **k):
                raise RuntimeError("rank one exploded on purpose")
            torch.optim.SGD.step = _boom
        """))
    spec = tmp_path / "s.nn"
    spec.write_text(SPEC.format(batch=16, optimizer="sgd(lr = 0.1)"))
    env = _env(PYTHONPATH=os.pathsep.join([str(hook), os.environ.get("PYTHONPATH", "")]))
    r = _train(spec, tmp_path / "r", "--nproc", "2", env=env)
    assert r.returncode != 0
    assert "rank one exploded on purpose" in r.stderr
    assert "worker rank 1 of 2 failed" in r.stderr
    assert not (tmp_path / "r" / "weights.safetensors").exists()


@pytest.mark.slow
def test_a_two_process_checkpoint_resumes_mid_epoch_in_one_process(tmp_path):
    """Written by 2 ranks × batch 16 at step 20 of 45; resumed by 1 process × batch 32, which
    reads the rest of the epoch in the same global batches: the weights of the uninterrupted run."""
    spec = tmp_path / "two.nn"
    spec.write_text(SPEC.format(batch=16, optimizer="sgd(lr = 0.1, momentum = 0.9)").replace(
        "    device cpu\n", "    device cpu\n    checkpoint(every_steps = 20, keep_last = 10)\n"))
    r2 = _train(spec, tmp_path / "r2", "--nproc", "2")
    assert r2.returncode == 0, r2.stderr[-3000:]
    import shutil
    shutil.copytree(tmp_path / "r2", tmp_path / "r1")
    (tmp_path / "r1" / "weights.safetensors").unlink()
    ck = tmp_path / "r1" / "checkpoints" / "epoch0001-step00000020.pt"
    r1 = _train(spec, tmp_path / "r1", "--resume", str(ck), "--set", "data.batch=32", "--allow-changed-spec")
    assert r1.returncode == 0, r1.stderr[-3000:]
    assert "written by 2 process(es), this run has 1" in r1.stderr
    w2, w1 = load_file(tmp_path / "r2" / "weights.safetensors"), load_file(tmp_path / "r1" / "weights.safetensors")
    for k in w2:
        torch.testing.assert_close(w1[k], w2[k], rtol=1e-5, atol=1e-6)


@pytest.mark.slow
def test_sigterm_to_the_launcher_stops_every_rank_after_one_step_and_resumes(tmp_path):
    """The launcher passes SIGTERM on; the ranks agree on a step, rank 0 checkpoints and prints the
    resume command (with --nproc), the launcher exits 3 without a traceback, and the resumed run
    ends with the weights of an uninterrupted one."""
    import json
    import signal
    import time
    spec = tmp_path / "s.nn"
    spec.write_text(SPEC.format(batch=16, optimizer="sgd(lr = 0.05, momentum = 0.9)").replace("epochs 2", "epochs 40"))
    out = tmp_path / "stopped"
    proc = subprocess.Popen([sys.executable, "-m", "nnspec", "train", str(spec), "--quiet", "--out", str(out),
                             "--nproc", "2"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=_env())
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline and proc.poll() is None:
        rows = (out / "metrics.jsonl").read_text().splitlines() if (out / "metrics.jsonl").exists() else []
        if len(rows) >= 2:
            break
        time.sleep(0.05)
    assert proc.poll() is None, "the run ended before it could be stopped"
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=90)
    assert proc.returncode == 3, err[-3000:]
    assert "Traceback" not in err and "stopped by SIGTERM after step" in err
    assert "--nproc 2" in next(line for line in err.splitlines() if line.startswith("resume with: "))
    stopped_at = json.loads((out / "metrics.jsonl").read_text().splitlines()[-1])["epoch"]
    assert stopped_at < 40
    done = _train(spec, out, "--resume", str(out), "--nproc", "2")
    assert done.returncode == 0, done.stderr[-3000:]
    reference = _train(spec, tmp_path / "reference", "--nproc", "2")
    assert reference.returncode == 0, reference.stderr[-3000:]
    w, ref = load_file(out / "weights.safetensors"), load_file(tmp_path / "reference" / "weights.safetensors")
    for k in ref:
        torch.testing.assert_close(w[k], ref[k], rtol=1e-5, atol=1e-6)


@pytest.mark.slow
def test_a_signal_to_one_rank_stops_all_ranks_after_the_same_step(tmp_path):
    """Only rank 1 gets SIGTERM: the vote still stops both ranks after one step, nothing hangs,
    rank 0 writes the checkpoint and says how to resume."""
    hook = tmp_path / "hook"
    hook.mkdir()
    (hook / "sitecustomize.py").write_text(textwrap.dedent("""\
        import os, signal
        if os.environ.get("RANK") == "1":            # at its 20th optimizer step: training is under way
            import torch.optim
            real_step, steps = torch.optim.SGD.step, [0]
            def step(self, *a, **k):
                steps[0] += 1
                if steps[0] == 20:
                    os.kill(os.getpid(), signal.SIGTERM)
                return real_step(self, *a, **k)
            torch.optim.SGD.step = step
    """))
    spec = tmp_path / "s.nn"
    spec.write_text(SPEC.format(batch=16, optimizer="sgd(lr = 0.05)").replace("epochs 2", "epochs 300"))
    r = _train(spec, tmp_path / "run", "--nproc", "2", env=_env(PYTHONPATH=str(hook)))
    assert r.returncode == 3, r.stderr[-3000:]
    assert "stopped by a signal to another process after step" in r.stderr and "Traceback" not in r.stderr
    assert (tmp_path / "run" / "checkpoints" / "last.pt").exists()


def test_evaluation_is_shared_out_only_when_every_metric_can_merge(monkeypatch):
    from nnspec.runtime.distributed import eval_share
    from nnspec.builtins.metrics.torch_impl import Accuracy, Metric

    class Plugin(Metric):                       # a third-party metric that cannot merge
        pass

    assert eval_share(10, [Accuracy()]) == (0, 10)                     # one process
    monkeypatch.setenv("WORLD_SIZE", "3")
    shares = []
    for rank in range(3):
        monkeypatch.setenv("RANK", str(rank))
        shares.append(eval_share(10, [Accuracy()]))
        assert eval_share(10, [Accuracy(), Plugin()]) == (0, 10)
    assert shares == [(0, 3), (3, 6), (6, 10)]
    assert eval_share(2, [])[0] <= eval_share(2, [])[1]

"""`train { threads ... }`: the run's CPU thread count (runtime/threads.py). Behaviour only, no
timing: the count torch uses inside the training steps, where the choice is recorded, that a
resumed `threads auto` run takes the recorded count, the distributed rule, and the located
errors. (How fast each count is: benchmarks/under_load.py.)"""
from __future__ import annotations

import json
from types import SimpleNamespace

import pytest
import torch

import nnspec
from nnspec.check.checker import check_source
from nnspec.runtime import threads, trainer
from nnspec.runtime.assemble import assemble as real_assemble

SPEC = """model tiny {
    input [8]
    linear(16) -> relu
    linear(3)
}
data blobs(samples = 96, features = 8, classes = 3) { split(train = 1, val = 0, test = 0); batch 16 }
loss cross_entropy
optimizer adam(lr = 1e-2)
train {
    epochs 2
    seed 0
    device cpu
    THREADS
}
"""


@pytest.fixture
def seen_threads(monkeypatch):
    """torch.get_num_threads() at every training forward pass of the model the trainer builds."""
    seen: list[int] = []

    def assemble(spec, **kw):
        built = real_assemble(spec, **kw)
        model = built.model                  # not the scratch copies `threads auto` times steps on
        model.register_forward_hook(lambda module, *_: seen.append(torch.get_num_threads())
                                    if module is model and module.training else None)
        return built
    monkeypatch.setattr(trainer, "assemble", assemble)
    before = torch.get_num_threads()
    yield seen
    torch.set_num_threads(before)


def spec_file(tmp_path, setting: str):
    path = tmp_path / "tiny.nn"
    path.write_text(SPEC.replace("THREADS", setting))
    return path


@pytest.mark.parametrize("before, setting, during", [(2, "threads 1", 1), (1, "threads 2", 2)])
def test_threads_n_is_the_count_inside_every_training_step_and_is_restored_after(tmp_path, seen_threads, before,
                                                                                  setting, during):
    torch.set_num_threads(before)
    result = nnspec.train(spec_file(tmp_path, setting), out_dir=tmp_path / "run", progress=False)
    assert seen_threads and set(seen_threads) == {during}        # 6 steps, every one at `during`
    assert torch.get_num_threads() == before                     # the caller's count is back
    assert result.summary["threads"] == {"count": during, "how": "set", "step_ms": {}}
    assert json.loads((tmp_path / "run" / "summary.json").read_text())["threads"]["count"] == during


def test_measure_times_one_and_the_default_then_records_its_choice_for_resume(tmp_path, seen_threads):
    torch.set_num_threads(2)
    result = nnspec.train(spec_file(tmp_path, "threads measure"), out_dir=tmp_path / "run", progress=False)
    record = result.summary["threads"]
    assert record["how"] == "measured" and set(record["step_ms"]) == {"1", "2"}
    assert record["count"] in (1, 2) and set(seen_threads) == {record["count"]}
    checkpoint = torch.load(tmp_path / "run" / "checkpoints" / "last.pt", weights_only=True)
    assert checkpoint["threads"] == record["count"]


def test_a_resumed_measured_run_uses_the_count_its_checkpoint_recorded(tmp_path, seen_threads):
    spec = spec_file(tmp_path, "threads measure")
    nnspec.train(spec, out_dir=tmp_path / "run", progress=False)
    first = tmp_path / "run" / "checkpoints" / "epoch0001-step00000006.pt"
    state = torch.load(first, weights_only=True)
    state["threads"] = 3                       # as if the run had started on a machine that chose 3
    torch.save(state, first)
    seen_threads.clear()
    torch.set_num_threads(1)
    result = nnspec.train(spec, out_dir=tmp_path / "run", resume=first, progress=False)
    assert set(seen_threads) == {3}            # the second epoch: not measured again
    assert result.summary["threads"]["how"] == "resumed"
    assert torch.load(tmp_path / "run" / "checkpoints" / "last.pt", weights_only=True)["threads"] == 3


def test_auto_decides_from_the_step_size_alone_and_the_same_spec_gets_the_same_count(tmp_path, seen_threads,
                                                                                     monkeypatch):
    torch.set_num_threads(2)
    result = nnspec.train(spec_file(tmp_path, ""), out_dir=False, progress=False)      # auto is the default
    assert result.summary["threads"] == {"count": 1, "how": "small step", "step_ms": {}}
    assert set(seen_threads) == {1}
    monkeypatch.setattr(threads, "SMALL_STEP", 1)            # the same spec, counted as a large step
    seen_threads.clear()
    result = nnspec.train(spec_file(tmp_path, "threads auto"), out_dir=False, progress=False)
    assert result.summary["threads"] == {"count": 2, "how": "large step", "step_ms": {}}
    assert set(seen_threads) == {2}
    torch.set_num_threads(1)


def test_auto_on_one_default_thread_does_not_measure(tmp_path, seen_threads):
    torch.set_num_threads(1)
    result = nnspec.train(spec_file(tmp_path, ""), out_dir=False, progress=False)      # auto is the default
    assert result.summary["threads"] == {"count": 1, "how": "default", "step_ms": {}}


def test_distributed_ranks_share_the_cores_and_accelerators_are_left_alone(monkeypatch):
    monkeypatch.setattr(threads.os, "sched_getaffinity", lambda pid: {0, 1, 2, 3}, raising=False)
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "2")
    before = torch.get_num_threads()
    cpu = SimpleNamespace(device=torch.device("cpu"))
    try:
        torch.set_num_threads(4)
        chosen = threads.choose("auto", cpu, None, None, world_size=2)      # no measuring: ranks must agree
        assert (chosen.count, chosen.how, torch.get_num_threads()) == (2, "shared", 2)
        torch.set_num_threads(1)
        assert threads.choose("auto", cpu, None, None, world_size=2).count == 1          # never more than asked
        assert threads.choose(3, cpu, None, None, world_size=2).count == 3
        torch.set_num_threads(4)
        gpu = threads.choose(1, SimpleNamespace(device=torch.device("meta")), None, None)
        assert gpu.count is None and torch.get_num_threads() == 4
    finally:
        torch.set_num_threads(before)
    assert threads.share_of_cores(2) == 2 and threads.share_of_cores(8) == 1


@pytest.mark.parametrize("timings, chosen", [({1: 1.0, 2: 0.5}, (2, "measured")),
                                             ({1: 1.0, 2: 0.97}, (1, "measured")),    # a near-tie: 1 thread
                                             ({1: 0.3, 2: 1.2}, (1, "measured")),
                                             ({}, (2, "default"))])                   # measuring failed
def test_measure_keeps_the_faster_count_and_near_ties_go_to_one_thread(monkeypatch, timings, chosen):
    monkeypatch.setattr(threads, "measure", lambda *a: timings)
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(2)
        got = threads.choose("measure", SimpleNamespace(device=torch.device("cpu")), None, None)
        assert (got.count, got.how) == chosen and torch.get_num_threads() == chosen[0]
    finally:
        torch.set_num_threads(before)


@pytest.mark.parametrize("value", ["0", "-2", "many", "1.5"])
def test_a_thread_count_below_one_or_not_a_count_is_a_located_error(value):
    text = SPEC.replace("THREADS", f"threads {value}")
    errors = [d for d in check_source(text).diagnostics if d.severity == "error"]
    assert [d.code for d in errors] == ["E304"]
    line = text.splitlines().index(f"    threads {value}") + 1
    assert (errors[0].span.line, errors[0].span.column) == (line, 13)
    assert "threads" in errors[0].message


def test_threads_is_a_documented_train_key():
    from nnspec.check.sections import TRAIN_KEYS
    assert "threads" in TRAIN_KEYS
    assert check_source(SPEC.replace("THREADS", "threads auto")).ok

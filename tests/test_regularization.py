"""What the trainer does to gradients, weights and learning rates, checked against torch done by
hand on the same batch: clipping, weight clipping, parameter groups, schedules, label smoothing,
accumulation, and the closure (lbfgs) and full-batch (gd) optimizers."""
from __future__ import annotations

import contextlib
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch.optim.optimizer import register_optimizer_step_pre_hook

import nnspec
from nnspec.errors import NnspecError

MLP = """
model digits_mlp {
    input [64]
    linear(32) -> relu
    linear(10)
}
"""
DATA = "data digits { split(train = 0.8, val = 0.1, test = 0.1); batch 64; normalize standard }\n"


def write(tmp_path: Path, body: str, model: str = MLP, data: str = DATA, name: str = "spec.nn") -> Path:
    path = tmp_path / name
    path.write_text(model + data + body)
    return path


def train(path, **kw):
    return nnspec.train(path, out_dir=False, progress=False, **kw)


@contextlib.contextmanager
def steps_seen():
    """Per optimizer step: each group's lr and a copy of every gradient, as the step sees them."""
    seen = []

    def hook(opt, args, kwargs):
        seen.append({"lr": [g["lr"] for g in opt.param_groups],
                     "grads": [p.grad.detach().clone() for g in opt.param_groups for p in g["params"]
                               if p.grad is not None]})
    handle = register_optimizer_step_pre_hook(hook)
    try:
        yield seen
    finally:
        handle.remove()


def first_batch_grads(path, clip=None):
    """The first training step done by hand: same init, same batch, plain backward (+ clipping)."""
    b = nnspec.build(path)
    x, y = next(b.data.train.batches(b.batch_size, shuffle=True, epoch=0, seed=b.spec.train.seed))
    loss = b.loss(b.model(x), y)
    loss.backward()
    params = [p for g in b.optimizer.param_groups for p in g["params"]]
    raw = torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(p.grad) for p in params]))
    if clip is not None:
        clip(params)
    return raw, [p.grad for p in params], loss


def total_norm(grads) -> torch.Tensor:
    return torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(g) for g in grads]))


def test_clip_grad_norm_matches_torch_by_hand(tmp_path):
    path = write(tmp_path, "loss cross_entropy\noptimizer sgd(lr = 0.1)\n"
                           "train { steps 1; seed 0; clip_grad_norm 0.05 }\n")
    with steps_seen() as seen:
        train(path)
    raw, hand, _ = first_batch_grads(path, lambda ps: torch.nn.utils.clip_grad_norm_(ps, 0.05))
    assert raw > 0.05                                   # clipping was needed
    got = seen[0]["grads"]
    assert len(got) == len(hand)
    for g, h in zip(got, hand):
        torch.testing.assert_close(g, h)
    assert total_norm(got).item() == pytest.approx(0.05, rel=1e-4)


def test_clip_grad_value_bounds_every_gradient(tmp_path):
    path = write(tmp_path, "loss cross_entropy\noptimizer sgd(lr = 0.1)\n"
                           "train { steps 1; seed 0; clip_grad_value 1e-3 }\n")
    with steps_seen() as seen:
        train(path)
    _, hand, _ = first_batch_grads(path, lambda ps: torch.nn.utils.clip_grad_value_(ps, 1e-3))
    got = seen[0]["grads"]
    assert max(g.abs().max().item() for g in got) == pytest.approx(1e-3)
    for g, h in zip(got, hand):
        torch.testing.assert_close(g, h)


def test_clip_weights_bounds_every_parameter_after_a_step(tmp_path):
    path = write(tmp_path, "loss cross_entropy\noptimizer adam(lr = 1e-2)\n"
                           "train { steps 3; seed 0; clip_weights 0.05 }\n")
    assert max(p.abs().max().item() for p in nnspec.build(path).model.parameters()) > 0.05
    model = train(path).model
    assert max(p.abs().max().item() for p in model.parameters()) == pytest.approx(0.05)


def test_weight_decay_per_param_group(tmp_path):
    path = write(tmp_path, "loss cross_entropy\n"
                           "optimizer adamw(lr = 1e-3, weight_decay = 0.1) { group bias { weight_decay 0 } }\n"
                           "train { steps 2; seed 0 }\n")
    b = nnspec.build(path)
    names = {id(p): n for n, p in b.model.named_parameters()}
    groups = b.optimizer.param_groups
    assert [g["name"] for g in groups] == ["bias", "default"]
    assert groups[0]["weight_decay"] == 0.0 and groups[1]["weight_decay"] == 0.1
    assert sorted(names[id(p)] for p in groups[0]["params"]) == ["linear_0.bias", "linear_1.bias"]
    assert sorted(names[id(p)] for p in groups[1]["params"]) == ["linear_0.weight", "linear_1.weight"]
    with steps_seen() as seen:
        train(path)
    assert len(seen) == 2


ENCODER_MODEL = """
block encoder(width) {
    linear(width) -> relu
    layernorm
}
model m {
    input [64]
    encoder(32)
    linear(10)
}
"""


def test_named_block_and_glob_groups_get_their_lr(tmp_path):
    model = ENCODER_MODEL
    body = ("loss cross_entropy\noptimizer sgd(lr = 1e-3) {\n    group encoder_0 { lr 1e-2 }\n"
            "    group \"linear_*\" { lr 5e-3 }\n}\ntrain { steps 2; seed 0 }\n")
    path = write(tmp_path, body, model=model)
    b = nnspec.build(path)
    names = {id(p): n for n, p in b.model.named_parameters()}
    groups = b.optimizer.param_groups
    assert [(g["name"], g["lr"]) for g in groups] == [("encoder_0", 1e-2), ("linear_*", 5e-3)]
    assert all(names[id(p)].startswith("encoder_0.") for p in groups[0]["params"]) and len(groups[0]["params"]) == 4
    assert sorted(names[id(p)] for p in groups[1]["params"]) == ["linear_0.bias", "linear_0.weight"]
    with steps_seen() as seen:
        train(path)
    assert [s["lr"] for s in seen] == [[1e-2, 5e-3]] * 2


def test_a_layer_kind_selects_every_layer_of_that_kind_including_inside_blocks(tmp_path):
    model = ENCODER_MODEL
    body = ("loss cross_entropy\noptimizer sgd(lr = 1e-3) {\n    group layernorm { lr 1e-2 }\n"
            "    group linear { lr 5e-3 }\n}\ntrain { steps 1; seed 0 }\n")
    b = nnspec.build(write(tmp_path, body, model=model))
    names = {id(p): n for n, p in b.model.named_parameters()}
    groups = b.optimizer.param_groups
    assert [g["name"] for g in groups] == ["layernorm", "linear"]          # nothing left for a default group
    assert sorted(names[id(p)] for p in groups[0]["params"]) == ["encoder_0.layernorm_0.bias", "encoder_0.layernorm_0.weight"]
    assert sorted(names[id(p)] for p in groups[1]["params"]) == [
        "encoder_0.linear_0.bias", "encoder_0.linear_0.weight", "linear_0.bias", "linear_0.weight"]
    path = write(tmp_path, body.replace("group linear", "group embedding"), model=model)
    with pytest.raises(NnspecError) as info:                              # a kind the model does not use
        nnspec.load(path)
    assert info.value.diagnostics[0].code == "E513" and "layer kind" in info.value.diagnostics[0].message


def test_group_selector_matching_nothing_is_located(tmp_path):
    path = write(tmp_path, "loss cross_entropy\noptimizer adam {\n    group norm { weight_decay 0 }\n}\n")
    with pytest.raises(NnspecError) as info:
        nnspec.load(path)                                                 # the check refuses it, not training
    d = info.value.diagnostics[0]
    assert d.code == "E514" and "`norm`" in d.message and "linear_0.weight" in d.hint
    assert d.span.line == path.read_text().splitlines().index("    group norm { weight_decay 0 }") + 1


def test_schedule_lr_is_applied_at_every_step(tmp_path):
    body = ("loss cross_entropy\noptimizer sgd(lr = 0.1) { group bias { lr 0.05 } }\n"
            "schedule warmup(steps = 5) then cosine(min_lr = 1e-3)\ntrain { steps 30; seed 0 }\n")
    path = write(tmp_path, body)
    schedule = nnspec.build(path).scheduler
    with steps_seen() as seen:
        train(path)
    assert len(seen) == 30
    for step, s in enumerate(seen):
        assert s["lr"] == [schedule.lr(step, 0.05), schedule.lr(step, 0.1)]
    assert seen[0]["lr"][1] == 0.0 and seen[5]["lr"][1] == pytest.approx(0.1)


def test_label_smoothing_reaches_the_training_loss(tmp_path):
    path = write(tmp_path, "loss cross_entropy(label_smoothing = 0.2)\noptimizer sgd(lr = 0.1)\n"
                           "train { steps 1; seed 0 }\n")
    b = nnspec.build(path)
    x, y = next(b.data.train.batches(64, shuffle=True, epoch=0, seed=0))
    out = b.model(x)
    expected = F.cross_entropy(out, y, label_smoothing=0.2)
    assert b.loss(out, y).item() == pytest.approx(expected.item())
    assert expected.item() != pytest.approx(F.cross_entropy(out, y).item())
    result = train(path)
    assert result.history[0]["train_loss"] == pytest.approx(expected.item(), rel=1e-6)
    smoothed = nnspec.build(path, overrides=["loss.label_smoothing=0.3"]).loss
    assert smoothed(out, y).item() == pytest.approx(F.cross_entropy(out, y, label_smoothing=0.3).item())


def test_accumulation_equals_one_big_batch(tmp_path):
    big = write(tmp_path, "loss cross_entropy\noptimizer sgd(lr = 0.5)\ntrain { steps 1; seed 0 }\n", name="big.nn")
    acc = write(tmp_path, "loss cross_entropy\noptimizer sgd(lr = 0.5)\ntrain { steps 1; seed 0; accumulate 2 }\n",
                data=DATA.replace("batch 64", "batch 32"), name="acc.nn")
    a, b = train(big).model.state_dict(), train(acc).model.state_dict()
    for k in a:
        torch.testing.assert_close(a[k], b[k])
    assert nnspec.build(acc).steps_per_epoch == 23          # 45 micro-batches of 32 → 23 steps


def test_lbfgs_trains_through_the_closure(tmp_path):
    path = write(tmp_path, "loss cross_entropy\nmetrics accuracy\noptimizer lbfgs(lr = 1, max_iter = 4)\n"
                           "train { epochs 2; seed 0 }\n", data=DATA.replace("batch 64", "batch 256"))
    result = train(path)
    assert result.history[-1]["step"] == 12                          # 1437 / 256 → 6 per epoch
    assert result.history[-1]["train_loss"] < result.history[0]["train_loss"]
    assert result.history[-1]["val_accuracy"] > 0.8


def test_lbfgs_rejects_groups_with_settings(tmp_path):
    path = write(tmp_path, "loss cross_entropy\noptimizer lbfgs { group bias { lr 0.1 } }\n")
    with pytest.raises(NnspecError, match="lbfgs") as info:
        nnspec.load(path)                                   # refused by validate, located at the setting
    d = info.value.diagnostics[0]
    lines = path.read_text().splitlines()
    line = next(i for i, text in enumerate(lines, 1) if text.startswith("optimizer lbfgs"))
    assert d.code == "E515" and (d.span.line, d.span.column) == (line, lines[line - 1].index("lr 0.1") + 1)


def test_gd_uses_the_whole_split_as_one_batch(tmp_path):
    path = write(tmp_path, "loss cross_entropy\noptimizer gd(lr = 0.5)\ntrain { epochs 3; seed 0 }\n")
    sizes = []

    def hook(module, args):
        if module.training and isinstance(module, torch.nn.Linear) and module.in_features == 64:
            sizes.append(args[0].shape[0])
    handle = torch.nn.modules.module.register_module_forward_pre_hook(hook)
    try:
        result = train(path)
    finally:
        handle.remove()
    assert [r["step"] for r in result.history] == [1, 2, 3]
    assert sizes == [1437] * 3
    assert result.history[-1]["train_loss"] < result.history[0]["train_loss"]


def test_bf16_autocast_on_cpu_trains(tmp_path):
    path = write(tmp_path, "loss cross_entropy\nmetrics accuracy\noptimizer adam(lr = 3e-3)\n"
                           "train { epochs 1; seed 0; precision bf16; device cpu }\n")
    result = train(path)
    assert result.summary["precision"] == "bf16"
    assert result.history[0]["val_accuracy"] > 0.5
    assert all(p.dtype == torch.float32 for p in result.model.parameters())


def test_plateau_schedule_observes_the_monitored_metric_each_epoch(tmp_path):
    # val_loss cannot improve by 10% with this lr, so every epoch after the first halves the lr
    path = write(tmp_path, "loss cross_entropy\noptimizer sgd(lr = 1e-9)\n"
                           "schedule reduce_on_plateau(factor = 0.5, patience = 0, threshold = 0.1)\n"
                           "train { epochs 4; seed 0 }\n")
    result = train(path)
    assert [r["lr"] for r in result.history] == pytest.approx([1e-9, 1e-9, 5e-10, 2.5e-10])

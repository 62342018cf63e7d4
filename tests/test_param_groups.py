"""Parameter groups are resolved by the check: selectors become the exact parameter paths the
optimizer receives in a real training run, a selector selecting nothing is a located validate
error, and a group's overrides must satisfy the optimizer's own declaration."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import torch
from torch import nn
from torch.optim.optimizer import register_optimizer_step_pre_hook

import nnspec
from nnspec.check import check_source
from nnspec.registry import Catalog, Component
from nnspec.registry.types import Param, PositiveInt, TensorType

DATA = "data digits { split(train = 0.8, val = 0.1, test = 0.1); batch 64; normalize standard }\nloss cross_entropy\n"

# repeats of a block, a residual whose shortcut projection is built (the width changes), a
# parallel, a tied layer used at the root and inside a parallel branch, normalization layers
MODEL = """
block stage(width) {
    residual {
        linear(width) -> layernorm -> relu
        linear(width)
    } shortcut {
        linear(width)
    }
}
model net {
    input [64]
    shared proj = linear(64)
    proj -> relu
    stage(32) -> stage(32) * 2
    parallel concat {
        linear(16) -> batchnorm1d
        linear(32) -> linear(64) -> proj -> linear(16)
    }
    head = linear(10)
}
"""


def spec_text(optimizer: str, model: str = MODEL) -> str:
    return model + DATA + optimizer + "\ntrain { steps 1; seed 0 }\n"


def errors(result):
    return [d for d in result.diagnostics if d.severity == "error"]


def line_col(text: str, needle: str) -> tuple[int, int]:
    """1-based line and column of the first `needle` in `text`."""
    for i, line in enumerate(text.splitlines(), 1):
        if needle in line:
            return i, line.index(needle) + 1
    raise AssertionError(needle)


def test_norm_selecting_nothing_is_a_located_validate_error_with_example_paths():
    model = "model net {\n    input [64]\n    linear(32) -> relu\n    linear(10)\n}\n"
    text = spec_text("optimizer adamw { group bias, norm { weight_decay 0 } }", model)
    (d,) = errors(check_source(text))
    assert d.code == "E514" and "`norm`" in d.message
    assert (d.span.line, d.span.column) == line_col(text, "norm {")
    assert "no normalization layer" in d.hint and "linear_0.weight" in d.hint


def test_a_glob_selecting_nothing_is_a_located_validate_error(tmp_path):
    text = spec_text('optimizer sgd(lr = 0.1) {\n    group "decoder.*" { lr 0.01 }\n}')
    (d,) = errors(check_source(text))
    assert d.code == "E514" and "`decoder.*`" in d.message
    assert (d.span.line, d.span.column) == line_col(text, '"decoder.*"')
    assert "proj.weight" in d.hint
    path = tmp_path / "spec.nn"                          # the CLI refuses it too, before any training
    path.write_text(text)
    run = subprocess.run([sys.executable, "-m", "nnspec", "validate", str(path)], capture_output=True, text=True,
                         env={**os.environ, "NO_COLOR": "1"}, timeout=120)
    assert run.returncode != 0 and "E514" in run.stdout + run.stderr


def test_a_group_override_breaking_the_optimizers_own_check_is_located_at_the_override():
    base = "optimizer sgd(lr = 0.1, momentum = 0.9, nesterov = true)"
    assert check_source(spec_text(base)).ok
    text = spec_text(base + " {\n    group bias { momentum 0 }\n}")
    (d,) = errors(check_source(text))
    assert d.code == "E515" and "nesterov" in d.message and "momentum" in d.message
    assert (d.span.line, d.span.column) == line_col(text, "momentum 0")
    text = spec_text("optimizer sgd(lr = 0.1) {\n    group bias { lr 0.01; nesterov true }\n}")
    (d,) = errors(check_source(text))                    # the override that makes the difference
    assert d.code == "E515" and (d.span.line, d.span.column) == line_col(text, "nesterov true")


def test_resolved_paths_are_what_the_optimizer_receives_in_training(tmp_path):
    optimizer = ("optimizer sgd(lr = 0.1) {\n    group bias, norm { lr 0.01 }\n    group stage { lr 0.02 }\n"
                 '    group proj, "parallel_0.branch_1.*" { lr 0.03 }\n    group head { lr 0.04 }\n}')
    path = tmp_path / "spec.nn"
    path.write_text(spec_text(optimizer))
    spec = nnspec.load(path)
    checked = [list(g.params) for g in spec.optimizer.groups]
    assert all(p.endswith("bias") or "norm" in p for p in checked[0])
    assert "stage_0.residual_0.shortcut.linear_0.weight" in checked[1]             # a built shortcut
    assert "stage_1.1.residual_0.body.linear_1.weight" in checked[1]               # a repeat's copy
    assert "stage_0.residual_0.body.layernorm_0.weight" in checked[0]              # norm beat stage
    assert checked[2][0] == "proj.weight" and "parallel_0.branch_1.linear_1.weight" in checked[2]
    assert checked[3] == ["head.weight"]
    seen = []
    handle = register_optimizer_step_pre_hook(
        lambda opt, args, kwargs: seen.append([[id(p) for p in g["params"]] for g in opt.param_groups]))
    try:
        result = nnspec.train(path, out_dir=False, progress=False)
    finally:
        handle.remove()
    names = {id(p): name for name, p in result.model.named_parameters()}
    received = [[names[i] for i in group] for group in seen[0]]
    assert received[:4] == checked
    rest = {name for name in names.values()} - {p for group in checked for p in group}
    assert sorted(received[4]) == sorted(rest) and rest        # the default group: everything else
    assert len(names) == len({p for group in received for p in group})             # tied `proj` once


class _Scale(nn.Module):
    def __init__(self, size: int):
        super().__init__()
        self.gain = nn.Parameter(torch.ones(size))
        self.offset_bias = nn.Parameter(torch.zeros(size))

    def forward(self, x):
        return x * self.gain + self.offset_bias


SCALE = Component("scale", "layers", params=(Param("unused", PositiveInt, 1),), summary="x·g + b",
                  impl=lambda args, inputs: _Scale(inputs[0].shape[-1]),
                  shape=lambda args, inputs: inputs[0],
                  count=lambda args, inputs: (2 * inputs[0].shape[-1], 0))     # no `parameters`: no names


def test_a_plugin_layer_without_parameter_names_is_selected_whole_and_name_selectors_say_they_cannot_see_it():
    catalog = Catalog.default().with_components([SCALE], "nnspec-scale")
    model = "model net {\n    input [64]\n    linear(32) -> scale\n    linear(10)\n}\n"
    text = spec_text("optimizer sgd(lr = 0.1) {\n    group bias { lr 0.01 }\n    group scale { lr 0.02 }\n}", model)
    result = check_source(text, catalog=catalog)
    assert result.ok, result.diagnostics
    (w,) = result.diagnostics
    assert w.code == "W501" and "scale_0" in w.message and "declare `parameters`" in w.hint
    assert (w.span.line, w.span.column) == line_col(text, "bias {")
    bias, scale = result.spec.optimizer.groups
    assert bias.params == ("linear_0.bias", "linear_1.bias") and not bias.whole_layers
    assert scale.params == () and scale.whole_layers == ("scale_0",)
    from nnspec.lower.model import build_model
    from nnspec.lower.optim import build_optimizer
    model = build_model(result.spec.model)
    opt = build_optimizer(result.spec.optimizer, model)
    names = {id(p): name for name, p in model.named_parameters()}
    assert [names[id(p)] for p in opt.param_groups[1]["params"]] == ["scale_0.gain", "scale_0.offset_bias"]


def test_a_meta_shapes_layer_gets_its_parameter_names_from_the_meta_build():
    meta = Component("meta_scale", "layers", impl=lambda args, inputs: _Scale(inputs[0].shape[-1]), meta_shapes=True)
    catalog = Catalog.default().with_components([meta], "nnspec-meta-scale")
    model = "model net {\n    input [64]\n    linear(32, bias = false) -> meta_scale\n    linear(10)\n}\n"
    result = check_source(spec_text("optimizer sgd(lr = 0.1) { group bias { lr 0.01 } }", model), catalog=catalog)
    assert result.ok and not result.diagnostics, result.diagnostics
    assert result.spec.optimizer.groups[0].params == ("meta_scale_0.offset_bias", "linear_1.bias")
    (layer,) = [l for l in result.spec.model.root.layers() if l.kind == "meta_scale"]
    assert layer.params == 64 and dict(layer.param_shapes) == {"gain": (32,), "offset_bias": (32,)}


def test_a_group_that_earlier_groups_emptied_warns():
    text = spec_text("optimizer sgd(lr = 0.1) {\n    group linear { lr 0.01 }\n    group bias { lr 0.02 }\n}",
                     "model net {\n    input [64]\n    linear(10)\n}\n")
    result = check_source(text)
    assert result.ok and [d.code for d in result.diagnostics] == ["W502"]
    assert result.spec.optimizer.groups[1].params == ()
    groups = nnspec.build(result.spec).optimizer.param_groups          # torch takes the empty group
    assert [(g["name"], len(g["params"])) for g in groups] == [("linear", 2), ("bias", 0)]


def test_norm_selects_the_layer_norms_a_transformer_encoder_declares():
    model = "model net {\n    input [8, 8]\n    transformer_encoder(2, ff = 16) -> layernorm\n    flatten -> linear(10)\n}\n"
    result = check_source(spec_text("optimizer adamw { group norm { weight_decay 0 } }", model))
    assert result.ok, result.diagnostics
    assert result.spec.optimizer.groups[0].params == (
        "layernorm_0.weight", "layernorm_0.bias", "transformer_encoder_0.norm1.weight",
        "transformer_encoder_0.norm1.bias", "transformer_encoder_0.norm2.weight", "transformer_encoder_0.norm2.bias")


def test_recurrent_and_attention_biases_count_as_bias():
    model = "model net {\n    input [8, 8]\n    lstm(4, output = all) -> self_attention(2)\n    flatten -> linear(10)\n}\n"
    result = check_source(spec_text("optimizer adamw { group bias { weight_decay 0 } }", model))
    assert result.ok, result.diagnostics
    assert result.spec.optimizer.groups[0].params == (
        "lstm_0.rnn.bias_ih_l0", "lstm_0.rnn.bias_hh_l0", "self_attention_0.in_proj_bias",
        "self_attention_0.out_proj.bias", "linear_0.bias")


def test_validate_resolves_groups_without_torch(tmp_path):
    path = tmp_path / "spec.nn"
    path.write_text(spec_text("optimizer adamw { group bias, norm { weight_decay 0 }\n group stage { lr 0.1 } }"))
    code = ("import sys, nnspec; s = nnspec.load(sys.argv[1]); assert s.optimizer.groups[1].params; "
            "assert 'torch' not in sys.modules, 'torch imported'")
    subprocess.run([sys.executable, "-c", code, str(Path(path))], check=True, timeout=120)

"""squeeze_excite: the pure shape and parameter rules against the real torch module, the forward
pass against a hand computation, and located errors in a spec."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from nnspec.binding import bind
from nnspec.check import check_source
from nnspec.registry import Catalog
from nnspec.types import ShapeError, TensorType
from nnspec_squeeze_excite.declare import SQUEEZE_EXCITE
from nnspec_squeeze_excite.layer import SqueezeExcite, squeeze_excite

# installed (pip install plugins/nnspec-squeeze-excite): registered through its entry point;
# from a bare checkout: added to the catalog by hand
CATALOG = Catalog.default()
if "squeeze_excite" not in CATALOG["layers"].names():
    CATALOG = CATALOG.with_components([SQUEEZE_EXCITE], "nnspec-squeeze-excite")


def _args(**keyword):
    args, errors = bind(SQUEEZE_EXCITE.params, (), list(keyword.items()), "squeeze_excite", None)
    assert not errors, errors
    return args


@pytest.mark.parametrize("shape, keyword", [
    ((64, 8, 8), {}), ((32, 5, 7), {"reduction": 4}), ((3, 4, 4), {"reduction": 3}),
    ((48, 20), {"reduction": 8, "activation": "silu"}), ((17, 3, 3), {"reduction": 5, "gate": "hard_sigmoid"}),
])
def test_rules_match_the_torch_module(shape, keyword):
    args, inputs = _args(**keyword), [TensorType(shape)]
    module = squeeze_excite(args, inputs)
    out = module(torch.randn(2, *shape))
    assert SQUEEZE_EXCITE.shape(args, inputs) == TensorType(tuple(out.shape[1:]))
    assert SQUEEZE_EXCITE.parameters(args, inputs) == {name: tuple(p.shape) for name, p in module.named_parameters()}
    assert not list(module.buffers())          # no buffers, so the declaration needs no `count`


def test_forward_matches_hand_computation():
    se = SqueezeExcite(channels=2, hidden=1)
    with torch.no_grad():
        se.reduce.weight.copy_(torch.tensor([[1.0, -1.0]]))
        se.reduce.bias.fill_(0.5)
        se.expand.weight.copy_(torch.tensor([[2.0], [-3.0]]))
        se.expand.bias.copy_(torch.tensor([0.0, 1.0]))
    x = torch.tensor([[[[1.0, 3.0], [5.0, 7.0]], [[0.0, 2.0], [2.0, 0.0]]]])    # channel means 4 and 1
    hidden = max(0.0, 4.0 - 1.0 + 0.5)                                           # relu(3.5)
    s = torch.sigmoid(torch.tensor([2.0 * hidden, -3.0 * hidden + 1.0]))
    assert torch.allclose(se(x), x * s.view(1, 2, 1, 1))


def test_a_spec_using_it_validates_and_counts_parameters():
    text = """
model m {
    input [1, 8, 8]
    conv2d(16, 3, padding = same) -> relu
    squeeze_excite(reduction = 4)
    flatten -> linear(10)
}
"""
    result = check_source(text, catalog=CATALOG)
    assert result.ok, result.diagnostics
    model = result.spec.model
    (se,) = [layer for layer in model.root.layers() if layer.use.component.name == "squeeze_excite"]
    assert se.params == 16 * 4 + 4 + 4 * 16 + 16 and se.output == TensorType((16, 8, 8))
    assert model.params == (16 * 9 + 16) + se.params + (16 * 64 * 10 + 10)



def test_parameter_groups_select_inside_it_by_the_declared_names():
    text = """
model m {
    input [1, 8, 8]
    conv2d(16, 3, padding = same) -> relu
    squeeze_excite(reduction = 4)
    flatten -> linear(10)
}
optimizer adamw { group bias { weight_decay 0 } }
"""
    result = check_source(text, catalog=CATALOG)
    assert result.ok and {d.code for d in result.diagnostics} == {"W522"}, result.diagnostics   # no data, loss: no training
    (group,) = result.spec.optimizer.groups
    assert group.params == ("conv2d_0.bias", "squeeze_excite_0.reduce.bias", "squeeze_excite_0.expand.bias",
                            "linear_0.bias")


@pytest.mark.parametrize("layer, words", [
    ("squeeze_excite(reduction = 32)", ["leaves no hidden units for 16 channels", "reduction ≤ 16"]),
    ("flatten -> squeeze_excite", ["expects [channels, length] or [channels, height, width]", "[1024]"]),
])
def test_unusable_inputs_are_located_errors(layer, words):
    text = f"model m {{\n    input [1, 8, 8]\n    conv2d(16, 3, padding = same)\n    {layer}\n}}\n"
    result = check_source(text, catalog=CATALOG)
    errors = [d for d in result.diagnostics if d.severity == "error"]
    assert [d.code for d in errors] == ["E410"]
    shown = f"{errors[0].message} {errors[0].hint}"
    assert all(w in shown for w in words), shown
    assert errors[0].span.line == 4


def test_rule_rejects_long_inputs():
    with pytest.raises(ShapeError, match="float"):
        SQUEEZE_EXCITE.shape(_args(), [TensorType((16, 4), "long")])


def test_declaration_does_not_import_torch():
    import nnspec_squeeze_excite
    env = dict(os.environ)
    src = str(Path(nnspec_squeeze_excite.__file__).resolve().parents[1])
    env["PYTHONPATH"] = os.pathsep.join(x for x in (src, env.get("PYTHONPATH")) if x)
    code = "import sys, nnspec_squeeze_excite.declare; assert 'torch' not in sys.modules, 'torch imported'"
    subprocess.run([sys.executable, "-c", code], check=True, env=env)

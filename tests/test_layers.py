"""Built-in layers: the pure-Python shape and parameter rules agree with the torch modules.

Every layer of the built-in catalog needs a strategy in tests/layer_strategies.py (a new layer
without one fails `test_every_builtin_layer_has_a_strategy`). For generated cases the rule's verdict is
compared with torch: accepted → same output shape, same parameter/buffer element counts, and the
declared parameters (names and shapes) equal the module's `named_parameters()`;
refused (ArgError from `check`, ShapeError from the shape rule) → torch refuses too (raises,
warns, or returns an empty tensor).
"""
from __future__ import annotations

import subprocess
import sys
import warnings

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from layer_strategies import STRATEGIES, W, Case, F, shapes   # tests/ is on sys.path under pytest

from nnspec.registry.binding import bind
from nnspec.registry.catalog import MULTI_INPUT, Catalog
from nnspec.registry.types import ArgError, ShapeError, TensorType


def _layers() -> dict:
    components, errors = Catalog.default()["layers"].all()
    assert not errors, errors
    return {c.name: c for c in components if c.distribution == "nnspec"}


LAYERS = _layers()


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    """Thousands of tiny forwards: thread hand-offs would cost more than the arithmetic."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


# --- running a case through the rule and through torch --------------------------------------


def bind_case(component, case):
    """Args with each value type-checked, but the cross-argument `check` not yet run (so a
    refusal by `check` can be compared with torch too); None when a value has the wrong type."""
    args, errors = bind(component.params, case.positional, case.keyword, component.name)
    return args


def torch_result(component, args, inputs):
    """(output shape without batch, (parameter elements, buffer elements, {name: shape} of
    named_parameters())); warnings count as errors."""
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        # torch's note that an even kernel with padding = same pads a copy of the input: harmless
        warnings.filterwarnings("ignore", message=".*padding='same' with even kernel", category=UserWarning)
        module = component.load()(args, list(inputs))
        xs = []
        for x in inputs:
            if x.dtype == "long":
                high = args.num_embeddings if component.name == "embedding" else 3
                xs.append(torch.randint(0, high, (2, *x.shape)))
            else:
                xs.append(torch.randn(2, *x.shape))
        out = module(*xs)
    counts = (sum(p.numel() for p in module.parameters()), sum(b.numel() for b in module.buffers()),
              {name: tuple(p.shape) for name, p in module.named_parameters()})
    assert out.shape[0] == 2, "the batch dim must stay first"
    assert out.is_floating_point(), "every layer outputs float (embedding turns ids into vectors)"
    return tuple(out.shape[1:]), counts


def rule_result(component, args, inputs):
    """The declaration's verdict: (TensorType, counts and declared parameters), or the ArgError (from `check`) or
    ShapeError (from the shape rule) it raised. Any other exception fails the test."""
    try:
        if component.check is not None:
            component.check(args)
        out = component.shape(args, list(inputs))
        declared = dict(component.parameters(args, list(inputs))) if component.parameters else {}
        return out, (*component.count(args, list(inputs)), declared)
    except ArgError as err:     # ShapeError is an ArgError
        assert err.message, "errors must say what is wrong"
        return err


def torch_refuses(component, args, inputs) -> bool:
    """Torch raises (RuntimeError, ValueError, a UserWarning, ...) or returns an empty tensor."""
    try:
        shape, _ = torch_result(component, args, inputs)
    except Exception:
        return True
    return 0 in shape


def assert_agrees(component, case) -> bool:
    """Rule and torch agree on `case`; True when the case was accepted (False: refused by both,
    or a value of the wrong type, which binding refuses before any rule runs)."""
    args = bind_case(component, case)
    if args is None:
        return False
    result = rule_result(component, args, case.inputs)
    if isinstance(result, ArgError):
        assert torch_refuses(component, args, case.inputs), \
            f"the rule refused ({result.message}) but torch accepts {case}"
        return False
    out, counts = result
    assert out.dtype == "float"
    assert (out.shape, counts) == torch_result(component, args, case.inputs), case
    return True


@pytest.mark.parametrize("name", sorted(LAYERS))
def test_rules_agree_with_torch(name):
    component = LAYERS[name]
    assert name in STRATEGIES, f"layer `{name}` has no test strategy in tests/layer_strategies.py"
    seen = {"accepted": 0, "total": 0}

    @settings(max_examples=20, deadline=None, suppress_health_check=list(HealthCheck))
    @given(STRATEGIES[name])
    def run(case):
        seen["total"] += 1
        seen["accepted"] += assert_agrees(component, case)

    run()
    assert seen["accepted"] * 4 >= seen["total"], f"{name}: the strategy produced too few valid cases {seen}"


def _grid(**axes):
    """Every combination of the given keyword values."""
    combos = [{}]
    for key, values in axes.items():
        combos = [c | {key: v} for c in combos for v in values]
    return combos


@pytest.mark.parametrize("name, positional, axes, inputs", [
    ("maxpool1d", ("k",), dict(k=range(1, 5), stride=(1, 2, 3, W("none")), padding=range(3), dilation=(1, 2),
                               ceil_mode=(False, True)), lambda n: [F(2, n)]),
    ("avgpool1d", ("k",), dict(k=range(1, 5), stride=(1, 2, 3), padding=range(3), ceil_mode=(False, True),
                               count_include_pad=(False, True)), lambda n: [F(2, n)]),
    ("conv1d", ("out", "k"), dict(out=(2,), k=range(1, 5), stride=(1, 2), padding=(0, 1, 2, W("same"), W("valid")),
                                  dilation=(1, 2), padding_mode=(W("zeros"), W("reflect"), W("replicate"),
                                                                 W("circular"))), lambda n: [F(2, n)]),
    ("conv_transpose2d", ("out", "k"), dict(out=(1,), k=range(1, 4), stride=(1, 2, 3), padding=range(3),
                                            output_padding=range(3), dilation=(1, 2)), lambda n: [F(1, n, 1)]),
])
def test_window_arithmetic_matches_torch_on_every_small_case(name, positional, axes, inputs):
    """Exhaustive over small sizes, where the off-by-one rules (ceil_mode's last window, reflect
    padding, same padding with even kernels, output_padding) live."""
    component, accepted, total = LAYERS[name], 0, 0
    for size in range(1, 7):
        for combo in _grid(**axes):
            pos = tuple(combo.pop(p) for p in positional)
            total += 1
            accepted += assert_agrees(component, Case(pos, tuple(combo.items()), tuple(inputs(size))))
    assert accepted * 4 >= total


def test_every_builtin_layer_has_a_strategy():
    assert len(LAYERS) >= 40
    missing = sorted(set(LAYERS) - set(STRATEGIES))
    assert not missing, f"layers without a test strategy: {missing}"


# --- fuzz: odd inputs and odd arguments never crash a rule ----------------------------------

raw_values = st.one_of(st.integers(-3, 12), st.floats(-1, 4), st.booleans(),
                       st.sampled_from([W("none"), W("same"), W("valid"), W("depthwise"), W("all"), W("last"),
                                        W("bilinear"), W("reflect"), W("circular"), W("gelu"), W("bogus")]),
                       st.lists(st.integers(-2, 6), max_size=4).map(tuple))
odd_input = st.builds(TensorType, shapes(0, 4), st.sampled_from(["float", "float", "float", "long"]))


@st.composite
def fuzz_case(draw, name):
    component = LAYERS[name]
    case = draw(STRATEGIES[name])
    names = [p.name for p in component.params if not p.keyword_only]
    keyword = dict(zip(names, case.positional)) | dict(case.keyword)
    if component.params:
        keyword |= draw(st.dictionaries(st.sampled_from([p.name for p in component.params]), raw_values,
                                        max_size=2))
    inputs = case.inputs
    if draw(st.booleans()):
        low, high = component.inputs
        inputs = tuple(draw(st.lists(odd_input, min_size=max(1, low - 1), max_size=(high or 3) + 1)))
    return Case((), tuple(keyword.items()), inputs)


@pytest.mark.parametrize("name", sorted(LAYERS))
def test_rules_never_crash_and_never_accept_what_torch_refuses(name):
    component = LAYERS[name]
    if name not in STRATEGIES:
        pytest.fail(f"layer `{name}` has no test strategy")

    @settings(max_examples=15, deadline=None, suppress_health_check=list(HealthCheck))
    @given(fuzz_case(name))
    def run(case):
        args = bind_case(component, case)
        if args is None:
            return
        result = rule_result(component, args, case.inputs)   # anything but ArgError/ShapeError fails here
        if not isinstance(result, ArgError):
            out, counts = result
            assert (out.shape, counts) == torch_result(component, args, case.inputs), case

    run()


# --- specific refusals and their messages ---------------------------------------------------


def shape_of(name, inputs, *positional, **keyword):
    component = LAYERS[name]
    args, errors = bind(component.params, positional, tuple(keyword.items()), name, component.check)
    assert not errors, errors
    return component.shape(args, list(inputs))


def bind_errors(name, *positional, **keyword):
    component = LAYERS[name]
    args, errors = bind(component.params, positional, tuple(keyword.items()), name, component.check)
    assert args is None
    return " ".join(f"{e.message} {e.hint or ''}" for e in errors)


@pytest.mark.parametrize("name, inputs, positional, keyword, words", [
    ("conv2d", [F(64)], (8, 3), {}, ["[channels, height, width]", "[64]"]),
    ("conv2d", [F(3, 5, 5)], (8, 7), {}, ["kernel 7", "larger than the padded input", "5"]),
    ("conv1d", [F(3, 5)], (8, 3), {"dilation": 3}, ["dilation 3", "spanning 7"]),
    ("conv2d", [F(6, 8, 8)], (8, 3), {"groups": W("depthwise")}, ["multiple", "6 input channels"]),
    ("conv2d", [F(3, 8, 8)], (6, 3), {"groups": 2}, ["divisible by 2", "3 channels"]),
    ("conv2d", [F(3, 2, 8)], (4, 3), {"padding": 2, "padding_mode": W("reflect")}, ["reflect", "height 2"]),
    ("maxpool2d", [F(3, 1, 8)], (2,), {}, ["window 2", "height 1"]),
    ("self_attention", [F(5, 10)], (4,), {}, ["4 heads", "divisible", "[5, 10]"]),
    ("transformer_encoder", [F(10)], (2,), {}, ["[seq, features]", "[10]"]),
    ("lstm", [F(3, 8, 8)], (16,), {}, ["[seq, features]", "[3, 8, 8]"]),
    ("add", [F(64, 8, 8), F(32, 8, 8)], (), {}, ["input 1 is [64, 8, 8]", "input 2 is [32, 8, 8]"]),
    ("concat", [F(4, 8), F(4, 9)], (), {"dim": 0}, ["input 1 is [4, 8]", "input 2 is [4, 9]"]),
    ("concat", [F(4, 8)] * 2, (), {"dim": 2}, ["dim 2", "out of range"]),
    ("embedding", [F(6)], (100, 8), {}, ["long"]),
    ("relu", [TensorType((6,), "long")], (), {}, ["float", "embedding"]),
    ("linear", [TensorType((6,), "long")], (4,), {}, ["did you forget an embedding"]),
    ("positional_embedding", [F(20, 8)], (16,), {}, ["max_len = 16", "20"]),
    ("reshape", [F(3, 4)], ((5, -1),), {}, ["[3, 4]", "12", "divisible by 5"]),
    ("reshape", [F(3, 4)], ((5, 2),), {}, ["12 elements", "10 elements"]),
    ("permute", [F(3, 4)], ((0, 0),), {}, ["repeat"]),
    ("permute", [F(3, 4)], ((1, 0, 2),), {}, ["3 dims", "has 2"]),
    ("softmax", [F(3, 4)], (), {"dim": 2}, ["out of range", "[3, 4]"]),
    ("flatten", [F()], (), {}, ["at least 1 dimension"]),
    ("global_avgpool", [F(8)], (), {}, ["mean(dim = 0)"]),
    ("upsample", [F(3, 8)], (2,), {"mode": W("bilinear")}, ["[channels, height, width]"]),
    ("groupnorm", [F(6, 4)], (4,), {}, ["divisible by 4", "6 channels"]),
    ("layernorm", [F(6)], (), {"dims": 2}, ["last 2 dims"]),
    ("conv_transpose2d", [F(3, 2, 2)], (4, 1), {"padding": 1}, ["would be 0"]),
])
def test_shape_errors_say_what_was_expected(name, inputs, positional, keyword, words):
    with pytest.raises(ShapeError) as info:
        shape_of(name, inputs, *positional, **keyword)
    for word in words:
        assert word in info.value.message, (word, info.value.message)
    component = LAYERS[name]
    args, _ = bind(component.params, positional, tuple(keyword.items()), name, component.check)
    with pytest.raises(ShapeError):       # count refuses the same input rather than crashing
        component.count(args, inputs)


@pytest.mark.parametrize("name, positional, keyword, words", [
    ("conv2d", (8, 3), {"stride": 2, "padding": W("same")}, ["same", "stride 1"]),
    ("conv2d", (6, 3), {"groups": 4}, ["out_channels = 6", "groups = 4"]),
    ("conv_transpose2d", (4, 3), {"stride": 2, "output_padding": 2}, ["output_padding"]),
    ("maxpool2d", (3,), {"padding": 2}, ["half the kernel_size"]),
    ("concat", (1,), {}, ["positional"]),
    ("reshape", ((-1, -1),), {}, ["more than one -1"]),
    ("reshape", ((0, 4),), {}, ["0 size"]),
    ("embedding", (10, 4), {"padding_idx": 10}, ["padding_idx = 10"]),
    ("dropout", (), {"p": 1.0}, ["out of range"]),
    ("conv2d", (8, 0), {}, ["out of range"]),
    ("upsample", (0,), {}, ["got 0", "x > 0"]),
    ("gelu", (), {"approximate": W("tan")}, ["none, tanh"]),
])
def test_argument_errors(name, positional, keyword, words):
    message = bind_errors(name, *positional, **keyword)
    for word in words:
        assert word in message, (word, message)


def test_legal_but_suspicious_uses_warn():
    def warning(name, *positional, **keyword):
        component = LAYERS[name]
        args, errors = bind(component.params, positional, tuple(keyword.items()), name, component.check)
        assert not errors
        return component.warn(args) if component.warn else None

    assert "layers = 1" in warning("lstm", 8, dropout=0.2)
    assert warning("lstm", 8, layers=2, dropout=0.2) is None
    assert "does nothing" in warning("dropout", 0)
    assert warning("dropout2d", 0.1) is None


def test_examples_from_the_conventions():
    assert shape_of("concat", [F(16, 8, 8), F(8, 8, 8)]) == F(24, 8, 8)
    assert shape_of("flatten", [F(16, 4, 4)]) == F(256)
    assert shape_of("permute", [F(5, 7)], (1, 0)) == F(7, 5)
    assert shape_of("reshape", [F(3, 4)], (4, -1)) == F(4, 3)
    assert shape_of("mean", [F(5, 7)], 0) == F(7)
    assert shape_of("conv2d", [F(3, 32, 32)], 16, 3, padding=W("same")) == F(16, 32, 32)
    assert shape_of("conv2d", [F(4, 9, 9)], 8, 3, groups=W("depthwise"), stride=2) == F(8, 4, 4)
    assert shape_of("maxpool2d", [F(8, 7, 7)], 2) == F(8, 3, 3)
    assert shape_of("maxpool2d", [F(8, 7, 7)], 2, ceil_mode=True) == F(8, 4, 4)
    assert shape_of("global_avgpool", [F(8, 5, 5)]) == F(8)
    assert shape_of("embedding", [TensorType((12,), "long")], 100, 32) == F(12, 32)
    assert shape_of("lstm", [F(6, 4)], 8, bidirectional=True) == F(16)
    assert shape_of("gru", [F(6, 4)], 8, output=W("all")) == F(6, 8)
    assert LAYERS["batchnorm2d"].count(bind(LAYERS["batchnorm2d"].params, (), (), "bn")[0], [F(8, 4, 4)]) == (16, 17)
    assert LAYERS["batchnorm2d"].parameters(bind(LAYERS["batchnorm2d"].params, (), (), "bn")[0], [F(8, 4, 4)]) \
        == {"weight": (8,), "bias": (8,)}


def test_normalization_layers_declare_the_norm_flag():
    from nnspec.registry.catalog import NORM
    assert {name for name, c in LAYERS.items() if NORM in c.flags} == {
        "batchnorm1d", "batchnorm2d", "layernorm", "groupnorm"}
    assert MULTI_INPUT in LAYERS["add"].flags and LAYERS["concat"].inputs == (2, None)


def test_causal_attention_does_not_look_ahead():
    """With causal = true, changing a later position leaves earlier outputs unchanged."""
    for name, extra in (("self_attention", ()), ("transformer_encoder", (("dropout", 0.0),))):
        component = LAYERS[name]
        args, errors = bind(component.params, (2,), (("causal", True),) + extra, name, component.check)
        assert not errors
        module = component.load()(args, [F(5, 4)]).eval()
        x = torch.randn(1, 5, 4)
        y = x.clone()
        y[0, 3:] += 1.0
        with torch.no_grad():
            a, b = module(x), module(y)
        assert torch.allclose(a[0, :3], b[0, :3], atol=1e-6)
        assert not torch.allclose(a[0, 3:], b[0, 3:])


def test_recurrent_last_is_the_final_hidden_state_of_both_directions():
    component = LAYERS["lstm"]
    args, _ = bind(component.params, (3,), (("bidirectional", True), ("layers", 2)), "lstm", component.check)
    module = component.load()(args, [F(4, 2)])
    x = torch.randn(2, 4, 2)
    all_steps, _ = module.rnn(x)
    last = module(x)
    assert torch.allclose(last[:, :3], all_steps[:, -1, :3])    # forward direction ends at the last step
    assert torch.allclose(last[:, 3:], all_steps[:, 0, 3:])     # backward direction ends at the first


def test_custom_modules_print_their_settings():
    text = []
    for name, positional, keyword, inputs in [
        ("lstm", (8,), (("output", W("all")),), [F(5, 4)]),
        ("self_attention", (2,), (("causal", True),), [F(5, 4)]),
        ("reshape", ((4, -1),), (), [F(3, 4)]),
        ("permute", ((1, 0),), (), [F(3, 4)]),
        ("concat", (), (("dim", 0),), [F(3, 4)] * 2),
        ("positional_embedding", (16,), (), [F(5, 4)]),
    ]:
        component = LAYERS[name]
        args, _ = bind(component.params, positional, keyword, name, component.check)
        text.append(repr(component.load()(args, inputs)))
    joined = "\n".join(text)
    for word in ("output=all", "causal=True", "shape=[4, -1]", "dims=[0, 2, 1]", "dim=1", "max_len=16"):
        assert word in joined, (word, joined)


def test_declarations_are_documented():
    for component in LAYERS.values():
        assert component.summary, component.name
        assert component.impl and str(component.impl).startswith("nnspec.builtins.layers.torch_impl:"), component.name
        for param in component.params:
            assert param.doc, f"{component.name}.{param.name} has no doc"


def test_declarations_do_not_import_torch():
    code = "import nnspec.builtins.layers, sys; assert 'torch' not in sys.modules, 'torch imported'"
    subprocess.run([sys.executable, "-c", code], check=True)


def test_declared_norm_parts_are_the_modules_normalization_layers():
    """`info["norm_parts"]` names submodules that `group norm` selects inside a composite layer."""
    examples = {"transformer_encoder": ((2,), [F(5, 4)])}
    declaring = {name for name, c in LAYERS.items() if c.info.get("norm_parts")}
    assert declaring == set(examples)
    for name, (positional, inputs) in examples.items():
        component = LAYERS[name]
        args = bind(component.params, positional, (), name)[0]
        module = component.load()(args, inputs)
        declared = component.parameters(args, inputs)
        for part in component.info["norm_parts"]:
            assert isinstance(module.get_submodule(part), (torch.nn.LayerNorm, torch.nn.modules.batchnorm._NormBase,
                                                          torch.nn.GroupNorm))
            assert any(key.startswith(part + ".") for key in declared)

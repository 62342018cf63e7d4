"""The checker against the spec corpora: every invalid spec states the errors it must produce."""
from __future__ import annotations

import re
from pathlib import Path

import pytest

from nnspec.check.checker import check_file, check_source, load
from nnspec.errors import NnspecError

SPECS = Path(__file__).parent / "specs"
EXPECT = re.compile(r"#\s*expect:\s*(?:(\d+):(\d+)\s+)?(E\d+)\s*(.*)")


def _expectations(path: Path):
    for line in path.read_text().splitlines():
        m = EXPECT.match(line.strip())
        if m:
            yield (int(m[1]) if m[1] else None, int(m[2]) if m[2] else None, m[3], m[4].strip())


VALID = sorted((SPECS / "valid").glob("*.nn"))
INVALID = sorted(p for p in (SPECS / "invalid").rglob("*.nn") if p.parent.name != "cycle" or p.name == "a.nn")


@pytest.mark.parametrize("path", VALID, ids=lambda p: p.name)
def test_valid_specs_have_no_errors(path):
    result = check_file(path)
    assert result.ok, "\n".join(f"{d.span.line}:{d.span.column} {d.code} {d.message}" for d in result.diagnostics)


@pytest.mark.parametrize("path", INVALID, ids=lambda p: p.name)
def test_invalid_specs_report_exactly_the_expected_errors(path):
    expected = list(_expectations(path))
    assert expected, f"{path} states no `# expect:` lines"
    result = check_file(path)
    errors = [d for d in result.diagnostics if d.severity == "error"]
    unmatched = list(errors)
    for line, col, code, fragment in expected:
        hit = next((d for d in unmatched if d.code == code and fragment in d.message
                    and (line is None or (d.span.line, d.span.column) == (line, col))), None)
        assert hit is not None, f"expected {line}:{col} {code} {fragment!r}; got " + \
            "; ".join(f"{d.span.line}:{d.span.column} {d.code} {d.message}" for d in errors)
        unmatched.remove(hit)
    assert not unmatched, "unexpected: " + "; ".join(f"{d.span.line}:{d.span.column} {d.code} {d.message}"
                                                     for d in unmatched)


def test_ten_mistakes_give_ten_located_errors_in_source_order():
    result = check_file(SPECS / "invalid" / "ten_mistakes.nn")
    errors = [d for d in result.diagnostics if d.severity == "error"]
    assert len(errors) == 10
    assert [(d.span.line, d.span.column) for d in errors] == sorted((d.span.line, d.span.column) for d in errors)
    assert all(d.hint for d in errors)


def test_resnet18_parameter_count_matches_torchvision():
    text = """
block basic(channels, stride = 1) {
    residual {
        conv2d(channels, 3, stride = stride, padding = 1, bias = false) -> batchnorm2d -> relu
        conv2d(channels, 3, padding = 1, bias = false) -> batchnorm2d
    } shortcut {
        conv2d(channels, 1, stride = stride, bias = false) -> batchnorm2d
    }
    relu
}
model resnet18 {
    input [3, 224, 224]
    conv2d(64, 7, stride = 2, padding = 3, bias = false) -> batchnorm2d -> relu
        -> maxpool2d(3, stride = 2, padding = 1)
    basic(64) * 2
    basic(128, stride = 2) -> basic(128)
    basic(256, stride = 2) -> basic(256)
    basic(512, stride = 2) -> basic(512)
    adaptive_avgpool2d(1) -> flatten -> linear(1000)
}
"""
    result = check_source(text)
    assert result.ok
    model = result.spec.model
    assert model.params == 11_689_512
    assert model.output.shape == (1000,)


def test_shortcut_is_built_only_where_shapes_change():
    text = """
block b(c, stride = 1) {
    residual { conv2d(c, 3, stride = stride, padding = 1) } shortcut { conv2d(c, 1, stride = stride) }
}
model m {
    input [4, 8, 8]
    b(4) -> b(8, stride = 2)
}
"""
    model = check_source(text).spec.model
    first, second = model.root.children["b_0"], model.root.children["b_1"]
    assert "shortcut" not in first.children["residual_0"].children
    assert "shortcut" in second.children["residual_0"].children
    assert model.output.shape == (8, 4, 4)


def test_overrides_are_checked_and_located():
    path = SPECS / "valid" / "training.nn"
    spec = load(path, ["optimizer.lr=3e-4", "train.epochs=5", "model.width=16"])
    assert spec.optimizer.optimizer.args.lr == pytest.approx(3e-4)
    assert spec.train.epochs == 5
    assert spec.model.root.layers().__next__().output.shape == (16,)
    assert [(o.key, o.value, o.text) for o in spec.overrides][:1] == [("optimizer.lr", "3e-4", "--set optimizer.lr=3e-4")]
    assert list(spec.sources) == [str(path)]            # the files; the --set lines are spec.overrides
    assert "--set train.epochs=5" in spec.source_texts
    result = check_file(path, overrides=["optimizer.lr=-1", "trian.epochs=2"])
    errors = {d.code: d for d in result.diagnostics}
    assert errors["E304"].span.file == "--set optimizer.lr=-1"
    assert errors["E304"].span.column == len("--set optimizer.lr=") + 1
    assert errors["E804"].hint and "train" in errors["E804"].hint


def test_library_with_unknown_layer_is_reported():
    result = check_source("block b { linar(3) }")
    assert [d.code for d in result.diagnostics] == ["E201"]


def test_warnings_do_not_fail():
    result = check_source("block unused { relu }\nmodel m {\n input [4]\n dropout(0)\n}")
    codes = sorted(d.code for d in result.diagnostics)
    assert result.ok and "W101" in codes


def test_load_raises_with_every_error():
    with pytest.raises(NnspecError) as info:
        load(SPECS / "invalid" / "ten_mistakes.nn")
    assert len(info.value.errors) == 10
    assert "ten_mistakes.nn:4:35: error[E201]" in str(info.value)


def test_grouped_chains_repeat_and_zero_repeats_are_nothing():
    text = """
const c = max(8, (30 + 4) // 8 * 8)
block stage(n) { linear(c) -> relu -> (linear(c) -> relu) * (n - 1) }
model m {
    input [4]
    (linear(4) -> tanh) * 3
    stage(1) -> stage(3)
}
"""
    model = check_source(text).spec.model
    kinds = [l.kind for l in model.root.layers()]
    assert kinds == ["linear", "tanh"] * 3 + ["linear", "relu"] + ["linear", "relu"] * 3
    assert model.output.shape == (32,)


def test_expression_functions():
    result = check_source("const a = min(3, 7) + max(1, 2) + abs(-4) + floor(2.5) + ceil(2.5) + round(2.4)\n"
                          "model m {\n    input [a]\n    relu\n}")
    assert result.ok and result.spec.model.input.shape == (3 + 2 + 4 + 2 + 3 + 2,)
    bad = check_source("const a = min(3)")
    assert [d.code for d in bad.diagnostics] == ["E312"]


def test_capability_flags_rule_out_compile_and_fp16_for_second_order_optimizers():
    from nnspec.registry.catalog import CREATE_GRAPH, Catalog, Component
    from nnspec.registry.types import Float, Param
    hess = Component("hess", "optimizers", params=(Param("lr", Float(min=0, min_open=True), 0.1),),
                     flags=frozenset({CREATE_GRAPH}))
    catalog = Catalog.default().with_components([hess])
    text = "model m {\n    input [2]\n    linear(2)\n}\noptimizer hess\ntrain { compile true; precision fp16 }"
    result = check_source(text, catalog=catalog)
    assert [(d.code, d.span.line) for d in result.diagnostics if d.severity == "error"] == [("E531", 5), ("E531", 5)]
    assert check_source(text.replace("compile true; precision fp16", "precision bf16"), catalog=catalog).ok


def _errors(text: str):
    return [(d.span.line, d.span.column, d.code, d.message) for d in check_source(text, "t.nn").diagnostics
            if d.severity == "error"]


def test_a_byte_order_mark_is_ignored_in_specs_and_imports(tmp_path):
    (tmp_path / "lib.nn").write_bytes("\ufeffblock b {\n    linaer(2)\n}\n".encode())
    main = tmp_path / "main.nn"
    main.write_bytes('\ufeffimport "lib.nn"\nmodel m {\n    input [4]\n    b -> relu -> lienar(2)\n}\n'.encode())
    result = check_file(main)
    got = sorted((Path(d.span.file).name, d.span.line, d.span.column, d.code) for d in result.diagnostics
                 if d.severity == "error")
    assert got == [("lib.nn", 2, 5, "E201"), ("main.nn", 4, 18, "E201")]
    assert not result.sources[str(main)].startswith("\ufeff")


def test_an_undefined_name_in_a_const_is_reported_inside_the_const():
    errors = _errors("const width = widht\nmodel m {\n  input [4]\n  linear(width)\n}\n")
    assert errors == [(1, 15, "E202", "`widht` is not defined")]


def test_a_misspelt_block_argument_is_underlined():
    text = "block basic(channels) {\n  linear(channels)\n}\nmodel m {\n  input [4]\n  basic(chanels = 64)\n}\n"
    result = check_source(text, "t.nn")
    unknown = next(d for d in result.diagnostics if d.code == "E301")
    assert (unknown.span.line, unknown.span.column, unknown.span.end_column) == (6, 9, 16)
    assert "did you mean `channels`" in unknown.hint


def test_a_repeated_keyword_argument_is_reported_at_the_repeat():
    errors = _errors("model m {\n  input [4]\n  linear(64, bias = true, bias = false)\n}\n")
    assert errors == [(3, 27, "E303", "argument `bias` of `linear` given twice")]
    text = "block b(w) {\n  linear(w)\n}\nmodel m {\n  input [4]\n  b(w = 2, w = 3)\n}\n"
    assert _errors(text) == [(6, 12, "E303", "argument `w` of `b` given twice")]


def test_a_parameter_declared_twice_is_refused_at_the_second():
    errors = _errors("block unit(width, width) {\n  linear(width)\n}\nmodel m {\n  input [4]\n  unit(3)\n}\n")
    assert errors[0][:3] == (1, 19, "E209") and "`width`" in errors[0][3]


def test_consts_may_refer_forward_and_a_cycle_is_a_located_error():
    assert check_source("const a = b * 2\nconst b = 3\nmodel m {\n  input [4]\n  linear(a)\n}\n").ok
    errors = _errors("const a = b\nconst b = a\nmodel m {\n  input [4]\n  linear(a)\n}\n")
    assert errors == [(1, 11, "E213", "consts refer to each other in a cycle: a → b → a")]
    errors = _errors("const a = a + 1\nmodel m {\n  input [4]\n  linear(a)\n}\n")
    assert errors == [(1, 11, "E213", "consts refer to each other in a cycle: a → a")]


def test_a_const_set_on_the_command_line_is_used_and_model_parameters_are_located():
    text = "const w = 4\nmodel m(width = 2) {\n  input [w]\n  linear(width)\n}\n"
    spec = check_source(text, "t.nn", overrides=["w=7", "model.width=3", "model.width=5"]).spec
    assert spec.model.input.shape == (7,) and spec.model.output.shape == (5,)
    result = check_source(text, "t.nn", overrides=["model.widht=3"])
    (d,) = [d for d in result.diagnostics if d.code == "E301"]
    assert d.span.file == "--set model.widht=3" and (d.span.column, d.span.end_column) == (7, 18)
    assert "did you mean `width`" in d.hint

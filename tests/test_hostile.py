"""Hostile specs: a spec is only data, and every resource it can ask for is bounded."""
from __future__ import annotations

import re
from pathlib import Path

import pytest

from nnspec.check.checker import check_file, check_source

ROOT = Path(__file__).resolve().parent.parent


def codes(text: str, **kw) -> list[str]:
    return [d.code for d in check_source(text, **kw).diagnostics if d.severity == "error"]


def test_the_front_end_has_no_code_execution_paths():
    pattern = re.compile(r"(?<![.\w])eval\(|(?<![.\w])exec\(|pickle\.loads?\(|yaml\.load\(|__import__\(|importlib\.import_module\(")
    allowed = {"registry/catalog.py"}  # imports an entry point's or component's declared "module:attr"
    for path in (ROOT / "nnspec").rglob("*.py"):
        if path.relative_to(ROOT / "nnspec").as_posix() in allowed:
            continue
        assert not pattern.search(path.read_text()), f"{path} may execute code"


@pytest.mark.parametrize("text", [
    'model m { input [2]\n __import__("os").system("echo pwned") }',
    'model m { input [2]\n os::system("echo pwned") }',
    'optimizer torch.optim.SGD(lr = 1)',
    'model m { input [2]\n linear(eval("1")) }',
    'data pt(path = "x.pt") { batch 1 }\nmodel m { input [2]\n relu }',
])
def test_code_looking_specs_are_plain_errors(text, tmp_path):
    result = check_source(text, str(tmp_path / "h.nn"))
    assert not (tmp_path / "pwned").exists()
    # E903: a data file named by the spec does not exist (validate looks, never loads)
    assert result.ok or all(d.code.startswith(("E1", "E2", "E3", "E5", "E903", "W")) for d in result.diagnostics)


def test_a_name_resolves_only_to_an_installed_component():
    assert codes('model m {\n input [2]\n nnspec.builtins.layers.torch_impl.linear(2)\n}') == ["E101"]
    assert codes('model m {\n input [2]\n builtins::eval(2)\n}') == ["E212"]


def test_exponential_blocks_are_refused_quickly():
    """2^59 layers are refused after expanding at most the limit, not 2^59 (no timing: machines are noisy)."""
    from nnspec.limits import LIMITS
    text = "block b0 { relu }\n" + "".join(f"block b{i} {{ b{i - 1} * 2 }}\n" for i in range(1, 60))
    text += "model m {\n input [4]\n b59\n}"
    (d,) = check_source(text).diagnostics
    assert d.code == "E603"
    total = int(d.message.split("expands to ")[1].split(" layers")[0].replace(",", ""))
    assert LIMITS.max_layers < total <= 2 * LIMITS.max_layers


def test_models_that_cannot_fit_in_memory_fail_validation_with_the_estimate():
    result = check_source("model m {\n input [100000]\n linear(100000) -> linear(100000) -> linear(100000)\n}")
    (d,) = result.diagnostics
    assert d.code == "E610" and "GiB" in d.message


def test_imports_stay_inside_the_spec_folder(tmp_path):
    (tmp_path / "inner").mkdir()
    (tmp_path / "secret.nn").write_text("block s { relu }\n")
    spec = tmp_path / "inner" / "spec.nn"
    spec.write_text('import "../secret.nn"\nimport "/etc/passwd"\nmodel m {\n input [2]\n relu\n}\n')
    assert [d.code for d in check_file(spec).diagnostics] == ["E702", "E702"]
    allowed = check_file(spec, allow_outside=True)
    assert [d.code for d in allowed.diagnostics if d.code != "E702"][:1] in (["E002"], ["E100"], ["E101"], [])


def test_huge_numbers_and_lists_are_bounded():
    assert codes("const a = 2 * 99999999999999999\n") == ["E602"]
    assert codes("const a = [" + ", ".join(["1"] * 20_000) + "]\n") == ["E602"]
    assert "E602" in codes("model m {\n input [99999999999999999]\n relu\n}")

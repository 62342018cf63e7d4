"""The real `nnspec` command in subprocesses: exit codes, output formats, help, no torch import."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SPECS = ROOT / "tests" / "specs"


def run(*args: str, cwd: Path = ROOT) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "nnspec", *args], cwd=cwd, capture_output=True, text=True,
                          timeout=120)


def test_validate_exit_codes():
    assert run("validate", str(SPECS / "valid")).returncode == 0
    bad = run("validate", str(SPECS / "invalid" / "names.nn"))
    assert bad.returncode == 1
    assert "names.nn:3:22: error[E201]: unknown layer `batchnrom2d`" in bad.stdout
    assert "^^^^^^^^^^^" in bad.stdout and "did you mean `batchnorm2d`" in bad.stdout
    assert run("validate", "does/not/exist.nn").returncode == 2
    assert run("validate", "--format", "yaml", "x.nn").returncode == 2


def test_validate_json_lists_every_error_with_location():
    out = run("validate", "--format", "json", str(SPECS / "invalid" / "ten_mistakes.nn"))
    assert out.returncode == 1
    items = json.loads(out.stdout)
    assert len([i for i in items if i["severity"] == "error"]) == 10
    assert set(items[0]) == {"file", "line", "column", "end_line", "end_column", "severity", "code", "message",
                             "hint"}
    assert items[0]["line"] == 4 and items[0]["column"] == 35 and items[0]["code"] == "E201"


def test_validate_github_annotations():
    out = run("validate", "--format", "github", str(SPECS / "invalid" / "names.nn"))
    lines = [l for l in out.stdout.splitlines() if l.startswith("::error ")]
    assert len(lines) == 2
    assert lines[0].startswith("::error file=") and ",line=3,col=22," in lines[0]


def test_warnings_fail_only_when_strict(tmp_path):
    spec = tmp_path / "w.nn"
    spec.write_text("block unused { relu }\nmodel m {\n    input [4]\n    relu\n}\n")
    assert run("validate", str(spec)).returncode == 0
    strict = run("validate", "--strict", str(spec))
    assert strict.returncode == 1 and "W101" in strict.stdout


def test_summary_json_matches_the_checker():
    out = run("summary", "--json", str(SPECS / "valid" / "inception.nn"))
    assert out.returncode == 0, out.stderr
    data = json.loads(out.stdout)
    assert data["output_shape"] == [10]
    assert data["params"] == sum(layer["params"] for layer in data["layers"])
    assert {"name", "kind", "output_shape", "params"} <= set(data["layers"][0])
    assert data["trainable_params"] == data["params"]


def test_summary_table_and_errors():
    out = run("summary", str(SPECS / "valid" / "shared.nn"))
    assert out.returncode == 0 and "params" in out.stdout
    bad = run("summary", str(SPECS / "invalid" / "shapes.nn"))
    assert bad.returncode == 1 and "E410" in bad.stderr and "Traceback" not in bad.stderr


@pytest.mark.parametrize("command", ["validate", "summary", "fmt", "train", "eval", "predict", "plugins", "completion"])
def test_every_command_has_help(command):
    out = run(command, "--help")
    assert out.returncode == 0 and "usage: nnspec " + command in out.stdout


def test_console_script_and_module_agree():
    import shutil
    exe = shutil.which("nnspec")
    if exe is None:
        pytest.skip("nnspec console script not on PATH")
    a = subprocess.run([exe, "validate", str(SPECS / "valid")], capture_output=True, text=True)
    assert a.returncode == 0 and a.stdout == run("validate", str(SPECS / "valid")).stdout


def test_validate_never_imports_torch():
    code = ("import sys; from nnspec.cli.commands import main; rc = main(['validate', %r]); "
            "assert 'torch' not in sys.modules, 'torch was imported'; sys.exit(rc)") % str(SPECS / "valid")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr


def test_binary_garbage_is_an_error_not_a_traceback(tmp_path):
    spec = tmp_path / "bin.nn"
    spec.write_bytes(bytes(range(256)) * 4)
    out = run("validate", str(spec))
    assert out.returncode == 1 and "Traceback" not in out.stderr + out.stdout


def test_docs_are_generated_from_the_registry():
    out = subprocess.run([sys.executable, "-m", "nnspec.cli.docs", "--check"], cwd=ROOT, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr

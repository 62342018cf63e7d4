"""Packaging: the wheel ships its grammar and data; a plain install brings no torch (torch is the
`nnspec[torch]` extra), and `validate`, `fmt`, `summary` and the pre-commit hooks work without it."""
from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import tomllib
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SPEC = ROOT / "specs" / "digits_mlp.nn"


@pytest.fixture(scope="module")
def source(tmp_path_factory) -> Path:
    """A copy of the repository: setuptools builds in the source folder (build/, *.egg-info),
    and a stale build/lib in the checkout could slip deleted modules into a later wheel."""
    copy = tmp_path_factory.mktemp("source") / "nnspec"
    shutil.copytree(ROOT, copy, ignore=shutil.ignore_patterns(".git", ".venv", "build", "dist", "runs", "*.egg-info",
                                                              "__pycache__", ".pytest_cache", ".hypothesis"))
    return copy


@pytest.fixture(scope="module")
def wheel(source, tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("wheel")
    out = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--quiet", "-w", str(folder),
                          str(source)], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    (built,) = folder.glob("nnspec-*.whl")
    return built


@pytest.mark.slow
def test_wheel_ships_grammar_tables_and_data(wheel, tmp_path):
    names = set(zipfile.ZipFile(wheel).namelist())
    for needed in ("nnspec/syntax/nnspec.lark", "nnspec/syntax/nnspec.tables.json",
                   "nnspec/data/digits.csv.gz", "nnspec/data/DIGITS_LICENSE.md", "nnspec/cli/commands.py"):
        assert needed in names, needed
    license_file = next(n for n in names if n.endswith(".dist-info/licenses/LICENSE"))
    assert "Apache License\n                           Version 2.0" in zipfile.ZipFile(wheel).read(license_file).decode()
    metadata = zipfile.ZipFile(wheel).read(next(n for n in names if n.endswith(".dist-info/METADATA"))).decode()
    assert "License-Expression: Apache-2.0" in metadata and "License-File: LICENSE" in metadata
    entry_points = next(n for n in names if n.endswith("entry_points.txt"))
    text = zipfile.ZipFile(wheel).read(entry_points).decode()
    assert "[nnspec.layers]" in text and "nnspec.builtins.layers:COMPONENTS" in text
    # the installed package, outside the source tree, parses with the shipped grammar
    target = tmp_path / "site"
    subprocess.run([sys.executable, "-m", "pip", "install", "--no-deps", "--quiet", "--target", str(target),
                    str(wheel)], check=True, timeout=300)
    code = ("import nnspec.syntax.parser as p; assert 'site' in p.__file__; "
            "print(p.parse('model m { input [2]; relu }').items[0].name)")
    run = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env={"PYTHONPATH": str(target)},
                         capture_output=True, text=True, timeout=60)
    assert run.returncode == 0 and run.stdout.strip() == "m", run.stderr


def test_the_wheel_requires_torch_only_through_the_torch_extra(wheel):
    meta = next(n for n in zipfile.ZipFile(wheel).namelist() if n.endswith(".dist-info/METADATA"))
    requires = [line.split(":", 1)[1].strip() for line in zipfile.ZipFile(wheel).read(meta).decode().splitlines()
                if line.startswith("Requires-Dist:")]
    torch = [r for r in requires if re.match(r"torch\b", r)]
    assert torch and all('extra == "torch"' in r for r in torch), requires
    assert any(r.startswith("nnspec[torch]") and 'extra == "dev"' in r for r in requires), requires   # dev trains


def _torch_blocked(tmp_path: Path) -> dict:
    """An environment in which `import torch` fails as it does where torch is not installed."""
    block = tmp_path / "block" / "torch"
    block.mkdir(parents=True)
    (block / "__init__.py").write_text("raise ModuleNotFoundError(\"No module named 'torch'\", name='torch')\n")
    path = os.pathsep.join([str(block.parent), str(ROOT), os.environ.get("PYTHONPATH", "")])
    return {**os.environ, "PYTHONPATH": path}


def test_validate_fmt_and_summary_run_without_torch_and_train_says_what_is_missing(tmp_path):
    env = _torch_blocked(tmp_path)

    def nnspec(*args):
        return subprocess.run([sys.executable, "-m", "nnspec", *args], cwd=tmp_path, env=env,
                              capture_output=True, text=True, timeout=120)
    assert nnspec("validate", "--no-data", str(ROOT / "specs"))   # the zoo names data it does not ship.returncode == 0
    assert nnspec("fmt", "--check", str(ROOT / "specs")).returncode == 0
    summary = nnspec("summary", str(SPEC))
    assert summary.returncode == 0 and "digits_mlp" in summary.stdout, summary.stderr
    train = nnspec("train", str(SPEC), "--out", str(tmp_path / "run"))
    assert train.returncode == 1 and "Traceback" not in train.stderr, train.stderr
    assert "needs PyTorch" in train.stderr and "nnspec[torch]" in train.stderr


@pytest.mark.slow
def test_pip_install_in_a_fresh_venv_brings_no_torch(wheel, tmp_path):
    """`pip install nnspec-*.whl` (built from the repo) into a venv without the system's packages: lark, numpy,
    rich and safetensors come from the index, torch does not, and the checking commands work."""
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=300)
    python = venv / ("Scripts" if os.name == "nt" else "bin") / "python"
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV", "PYTHONHOME")}
    done = subprocess.run([str(python), "-m", "pip", "install", "--quiet", str(wheel)], env=env,
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    probe = subprocess.run([str(python), "-c", "import importlib.util as u; print(u.find_spec('torch') is None)"],
                           env=env, capture_output=True, text=True, timeout=60, cwd=tmp_path)
    assert probe.stdout.strip() == "True", "a plain install brought torch"
    cli = venv / ("Scripts" if os.name == "nt" else "bin") / "nnspec"
    for args in (["validate", "--no-data", str(ROOT / "specs")], ["fmt", "--check", str(ROOT / "specs")], ["summary", str(SPEC)]):
        run = subprocess.run([str(cli), *args], env=env, capture_output=True, text=True, timeout=120, cwd=tmp_path)
        assert run.returncode == 0, (args, run.stderr)


def _hooks() -> list[dict[str, str]]:
    """.pre-commit-hooks.yaml: a list of flat `key: value` mappings (no YAML library needed)."""
    hooks: list[dict[str, str]] = []
    for line in (ROOT / ".pre-commit-hooks.yaml").read_text().splitlines():
        if line.startswith("- "):
            hooks.append({})
            line = "  " + line[2:]
        if line.startswith("  ") and ":" in line and hooks:
            key, value = line.strip().split(":", 1)
            hooks[-1][key] = value.strip()
    return hooks


def test_pre_commit_hooks_install_nnspec_without_torch_and_do_what_they_say(tmp_path):
    hooks = {h["id"]: h for h in _hooks()}
    assert set(hooks) == {"nnspec-validate", "nnspec-fmt", "nnspec-fmt-check"}
    assert all(h["language"] == "python" and h["files"] == r"\.nn$" for h in hooks.values())
    messy = "model m {\n  input [4]\n    linear(2)   ->   relu\n}\n"
    env = _torch_blocked(tmp_path)

    def run_hook(hook_id: str, path: Path) -> int:     # pre-commit runs `entry` followed by the file names
        entry = hooks[hook_id]["entry"].split()
        assert entry[0] == "nnspec"
        return subprocess.run([sys.executable, "-m", "nnspec", *entry[1:], str(path)], env=env,
                              capture_output=True, text=True, timeout=120).returncode
    spec = tmp_path / "m.nn"
    spec.write_text(messy)
    assert run_hook("nnspec-validate", spec) == 0
    assert run_hook("nnspec-fmt-check", spec) == 1 and spec.read_text() == messy     # fails, changes nothing
    assert run_hook("nnspec-fmt", spec) == 0 and spec.read_text() != messy            # fixes the file
    assert run_hook("nnspec-fmt-check", spec) == 0


def test_pre_commit_snippets_name_the_release_tag_of_the_version_in_pyproject():
    version = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"]
    for doc in ("README.md", "docs/ci.md", ".pre-commit-hooks.yaml"):
        revs = re.findall(r"rev: (\S+)", (ROOT / doc).read_text())
        assert revs and set(revs) == {f"v{version}"}, (doc, revs)
    assert f"v<version>" in (ROOT / "docs" / "releasing.md").read_text()

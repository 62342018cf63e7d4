"""The real `nnspec` command at its edges: closed pipes, unwritable paths, files that are not
UTF-8, broken plugin implementations, a missing torch, shell completion, GitHub annotations."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SPECS = ROOT / "tests" / "specs"
DIGITS = ROOT / "specs" / "digits_mlp.nn"


def env_with(*paths: Path, **extra: str) -> dict:
    env = {k: v for k, v in os.environ.items() if k != "COLUMNS"}
    env["PYTHONPATH"] = os.pathsep.join([*map(str, paths), str(ROOT)])
    env.update(extra)
    return env


def run(*args: str, env: dict | None = None, cwd: Path = ROOT, timeout: float = 300) -> subprocess.CompletedProcess:
    out = subprocess.run([sys.executable, "-m", "nnspec", *args], cwd=cwd, capture_output=True, text=True,
                         timeout=timeout, env=env or env_with())
    out.output = out.stdout + out.stderr          # type: ignore[attr-defined]
    return out


def read_one_line_then_close(*args: str) -> tuple[int, str, str]:
    """Run nnspec with stdout on a pipe whose reader takes one line and goes away (`| head -1`)."""
    proc = subprocess.Popen([sys.executable, "-m", "nnspec", *args], cwd=ROOT, env=env_with(),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    first = proc.stdout.readline().decode()
    proc.stdout.close()
    err = proc.stderr.read().decode()
    return proc.wait(timeout=300), first, err


# --- closed pipes ----------------------------------------------------------------------------------

def test_validate_into_a_closed_pipe_still_fails(tmp_path):
    # far more output than a pipe buffers, so writes happen after the reader is gone
    for i in range(80):
        shutil.copy(SPECS / "invalid" / "ten_mistakes.nn", tmp_path / f"bad{i:02d}.nn")
    code, first, err = read_one_line_then_close("validate", str(tmp_path))
    assert "error[" in first
    assert code == 1, err
    assert "Traceback" not in err and "Exception ignored" not in err and "BrokenPipe" not in err


def test_training_into_a_closed_pipe_finishes_the_run(tmp_path):
    out = tmp_path / "run"
    code, first, err = read_one_line_then_close("train", str(DIGITS), "--set", "train.epochs=3", "--out", str(out))
    assert first.startswith("training digits_mlp.nn")
    assert code == 0, err
    assert (out / "weights.safetensors").is_file() and (out / "summary.json").is_file()
    assert len((out / "metrics.jsonl").read_text().splitlines()) == 3
    assert "Traceback" not in err and "Exception ignored" not in err


# --- paths that cannot be written -------------------------------------------------------------------

@pytest.mark.parametrize("where, says", [("/proc/nnspec-run", "under /proc"), ("a_file", "is a file, not a folder"),
                                         ("a_file/run", "a_file is a file, not a folder")])
def test_unwritable_run_folder_is_a_named_error(tmp_path, where, says):
    (tmp_path / "a_file").write_text("not a folder")
    out = run("train", str(DIGITS), "--quiet", "--out", where, cwd=tmp_path)
    assert out.returncode == 2 and says in out.stderr and "--out" in out.stderr, out.output
    assert "Traceback" not in out.output


# --- text that is not UTF-8 -----------------------------------------------------------------------

def test_a_spec_that_is_not_utf8_names_the_byte_and_line(tmp_path):
    spec = tmp_path / "latin1.nn"
    data = "model m {\n    input [4]\n    relu  # café\n}\n".encode("latin-1")
    spec.write_bytes(data)
    at = data.index(b"\xe9")
    column = at - data.rindex(b"\n", 0, at)
    for command in ("validate", "fmt", "train", "summary"):
        out = run(command, str(spec))
        assert out.returncode == 1, (command, out.output)
        assert (f"{spec}:3:{column}: error[E002]: {spec} is not UTF-8 text: byte {at} (line 3, column {column}) "
                f"is 0xe9") in out.output, (command, out.output)
        assert "Traceback" not in out.output


def test_a_csv_that_is_not_utf8_names_the_byte_and_line(tmp_path):
    rows = "a,b,label\n" + "".join(f"{i},{i % 3},{i % 2}\n" for i in range(20))
    (tmp_path / "data.csv").write_bytes((rows + "7,caf\xe9,1\n").encode("latin-1"))
    spec = tmp_path / "csv.nn"
    spec.write_text(textwrap.dedent("""\
        model m {
            input [2]
            linear(2)
        }
        data csv(path = "data.csv", target = "label") { split(train = 0.6, val = 0.2, test = 0.2); batch 4 }
        loss cross_entropy
        optimizer sgd(lr = 0.1)
        train { epochs 1; device cpu }
        """))
    out = run("train", str(spec), "--quiet", "--out", str(tmp_path / "run"))
    assert out.returncode == 1, out.output
    assert f"data.csv is not UTF-8 text: byte {len(rows) + 5} (line 22) is not UTF-8" in out.stderr, out.stderr
    assert "Traceback" not in out.output


# --- broken plugin implementations, a missing torch -----------------------------------------------

def broken_plugin(site: Path) -> None:
    """A distribution (dist-info on the path, no pip needed) whose optimizers' implementations
    do not import or fail when built."""
    dist = site / "nnspec_brokenimpl-0.1.0.dist-info"
    dist.mkdir(parents=True)
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: nnspec-brokenimpl\nVersion: 0.1.0\n")
    (dist / "entry_points.txt").write_text("[nnspec.optimizers]\nnoimport = nnspec_brokenimpl:NOIMPORT\n"
                                           "explodes = nnspec_brokenimpl:EXPLODES\n"
                                           "[nnspec.datasets]\ncrashes = nnspec_brokenimpl:CRASHES\n")
    (site / "nnspec_brokenimpl").mkdir()
    (site / "nnspec_brokenimpl" / "__init__.py").write_text(textwrap.dedent("""\
        from nnspec.registry import Component
        from nnspec.types import Float, Param
        LR = (Param("lr", Float(min=0, min_open=True), 0.1),)
        NOIMPORT = Component("noimport", "optimizers", params=LR, impl="nnspec_brokenimpl.missing:make",
                             info={"state_slots": 0})
        EXPLODES = Component("explodes", "optimizers", params=LR, impl="nnspec_brokenimpl.impl:make",
                             info={"state_slots": 0})
        CRASHES = Component("crashes", "datasets", impl="nnspec_brokenimpl.impl:read")
        """))
    (site / "nnspec_brokenimpl" / "impl.py").write_text(
        "def make(groups, args):\n    raise RuntimeError('the fused kernel was not compiled')\n\n\n"
        "def read(args, ctx):\n    return {}['images']\n")


@pytest.mark.parametrize("kind, name, says", [
    ("optimizer", "noimport", "[nnspec_brokenimpl.missing:make] failed to import: ModuleNotFoundError"),
    ("optimizer", "explodes", "[nnspec_brokenimpl.impl:make] failed while being built: RuntimeError: the fused"),
    ("dataset", "crashes", "[nnspec_brokenimpl.impl:read] failed while being built: KeyError: 'images'")])
def test_a_broken_plugin_implementation_is_named(tmp_path, kind, name, says):
    broken_plugin(tmp_path / "site")
    spec = tmp_path / "s.nn"
    text = DIGITS.read_text()
    if kind == "optimizer":
        text = text.replace("optimizer adam(lr = 1e-3)", f"optimizer {name}(lr = 0.1)")
    else:
        text = text.replace("data digits {", f"data {name} {{")
    spec.write_text(text)
    env = env_with(tmp_path / "site")
    assert run("validate", str(spec), env=env).returncode == 0
    out = run("train", str(spec), "--quiet", "--out", str(tmp_path / "run"), env=env)
    assert out.returncode == 1, out.output
    assert f"{kind} `{name}` from nnspec-brokenimpl 0.1.0 {says}" in out.stderr, out.stderr
    assert "Traceback" not in out.output


def test_train_without_torch_says_how_to_install_it(tmp_path):
    fake = tmp_path / "no_torch" / "torch"
    fake.mkdir(parents=True)
    (fake / "__init__.py").write_text("raise ImportError('No module named torch (simulated)')\n")
    env = env_with(tmp_path / "no_torch")
    assert run("validate", str(DIGITS), env=env).returncode == 0          # checking never needs torch
    out = run("train", str(DIGITS), "--quiet", "--out", str(tmp_path / "run"), env=env)
    assert out.returncode == 1, out.output
    assert "needs PyTorch to train" in out.stderr and "pip install 'nnspec[torch]'" in out.stderr
    assert "Traceback" not in out.output and not (tmp_path / "run").exists()


# --- conventions ---------------------------------------------------------------------------------

def test_version_names_nnspec_and_torch_without_importing_torch():
    out = run("--version")
    assert out.returncode == 0 and out.stdout.startswith("nnspec 0.1.0, torch "), out.output
    code = ("import sys; from nnspec.cli.commands import main\n"
            "try:\n    main(['--version'])\nexcept SystemExit:\n    pass\n"
            "assert 'torch' not in sys.modules, 'torch was imported'")
    done = subprocess.run([sys.executable, "-c", code], env=env_with(), capture_output=True, text=True)
    assert done.returncode == 0, done.stderr


def _complete(script: str, *words: str) -> list[str]:
    line = " ".join(words)
    probe = (f'source "$1"; complete -p nnspec; COMP_WORDS=({line}); COMP_CWORD={len(words) - 1}; _nnspec; '
             'printf "%s\\n" "${COMPREPLY[@]}"')
    out = subprocess.run(["bash", "-c", probe, "bash", script], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert lines[0] == "complete -o default -F _nnspec nnspec"
    return lines[1:]


@pytest.mark.skipif(shutil.which("bash") is None, reason="needs bash")
def test_bash_completion_knows_every_subcommand_and_flag(tmp_path):
    script = tmp_path / "nnspec.bash"
    out = run("completion", "bash")
    assert out.returncode == 0
    script.write_text(out.stdout)
    assert set(_complete(str(script), "nnspec", "''")) >= {"validate", "summary", "fmt", "train", "eval",
                                                             "predict", "plugins", "completion", "--version"}
    assert _complete(str(script), "nnspec", "fmt", "--d") == ["--diff"]
    assert _complete(str(script), "nnspec", "predict", "--f") == ["--force"]
    assert _complete(str(script), "nnspec", "validate", "--format", "''") == ["text", "json", "github"]
    assert _complete(str(script), "nnspec", "completion", "''") == ["bash", "zsh", "fish"]


def test_zsh_and_fish_completion_scripts():
    zsh = run("completion", "zsh")
    assert zsh.returncode == 0 and "bashcompinit" in zsh.stdout and "--allow-changed-spec" in zsh.stdout
    fish = run("completion", "fish")
    assert fish.returncode == 0
    assert "complete -c nnspec -n '__fish_seen_subcommand_from predict' -l force" in fish.stdout
    assert "complete -c nnspec -n '__fish_seen_subcommand_from validate' -l format -xa 'text json github'" \
        in fish.stdout


def test_tables_do_not_wrap_in_a_pipe():
    listed = json.loads(run("plugins", "--json").stdout)["components"]
    longest = max((c["summary"] for c in listed), key=len)
    assert len(longest) > 80
    table = run("plugins")             # stdout is a pipe, and COLUMNS is unset
    assert table.returncode == 0
    assert any(longest in line for line in table.stdout.splitlines()), "a long row was wrapped"


def test_github_annotations_escape_properties_and_message(tmp_path):
    folder = tmp_path / "odd, 100%: dir"
    folder.mkdir()
    spec = folder / "x.nn"
    spec.write_text("model m {\n    input [4]\n    relu\n    nosuchlayer\n}\n")
    out = run("validate", "--format", "github", str(spec))
    assert out.returncode == 1
    (line,) = [l for l in out.stdout.splitlines() if l.startswith("::error ")]
    escaped = str(spec).replace("%", "%25").replace(":", "%3A").replace(",", "%2C")
    assert line.startswith(f"::error file={escaped},line=4,col=5,"), line

    from nnspec.cli.output import github_annotation
    from nnspec.errors import Diagnostic, Span
    d = Diagnostic("error", "E1,2:3", "50% of\r\nit: a, b", Span("a:b,c%.nn", 1, 2, 1, 3), "x\ny")
    assert github_annotation(d) == ("::error file=a%3Ab%2Cc%25.nn,line=1,col=2,endLine=1,endColumn=3,"
                                    "title=E1%2C2%3A3::50%25 of%0D%0Ait: a, b (x%0Ay)")


def test_fmt_check_diff_shows_the_change_and_fmt_rewrites_in_place(tmp_path):
    spec = tmp_path / "layout.nn"
    shutil.copy(SPECS / "fmt" / "layout.nn", spec)
    before = spec.read_text()
    expected = (SPECS / "fmt" / "layout.expected.nn").read_text()
    out = run("fmt", "--check", "--diff", str(spec))
    assert out.returncode == 1 and spec.read_text() == before
    assert f"--- {spec} (now)" in out.stdout and f"+++ {spec} (formatted)" in out.stdout and "\n@@ " in out.stdout
    assert "would reformat" in out.stderr
    done = run("fmt", str(spec))
    assert done.returncode == 0 and spec.read_text() == expected
    again = run("fmt", "--check", "--diff", str(spec))
    assert again.returncode == 0 and again.stdout == ""

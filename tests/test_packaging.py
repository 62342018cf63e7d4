"""A non-editable install must find its grammar: the wheel ships the grammar as nnspec/syntax package data,
and the Apache-2.0 LICENSE the project declares."""
from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.slow
def test_wheel_ships_grammar_tables_and_data(tmp_path):
    out = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--quiet", "-w", str(tmp_path),
                          str(ROOT)], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    (wheel,) = tmp_path.glob("nnspec-*.whl")
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

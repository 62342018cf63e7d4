"""The imports plugin authors were told to write keep working after the layout moved to stages:
every `from nnspec... import ...` in docs/plugins.md and in the reference plugins under plugins/,
plus the names the plugin API promises (nnspec.registry, nnspec.types, nnspec.binding aliases)."""
from __future__ import annotations

import importlib
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
IMPORT = re.compile(r"^\s*from (nnspec(?:\.\w+)*) import ([\w, ]+)$", re.M)


def _documented_imports() -> list[tuple[str, str]]:
    texts = [(ROOT / "docs" / "plugins.md").read_text(encoding="utf-8")]
    texts += [p.read_text(encoding="utf-8") for p in sorted((ROOT / "plugins").rglob("*.py"))]
    found = {(module, name.strip()) for text in texts for module, names in IMPORT.findall(text)
             for name in names.split(",") if name.strip()}
    return sorted(found)


IMPORTS = _documented_imports()


def test_the_docs_and_plugins_do_import_from_nnspec():
    modules = {module for module, _ in IMPORTS}
    assert {"nnspec.registry", "nnspec.types", "nnspec.binding", "nnspec.check"} <= modules, modules


@pytest.mark.parametrize("module, name", IMPORTS, ids=[f"{m}:{n}" for m, n in IMPORTS])
def test_a_documented_import_resolves(module, name):
    assert hasattr(importlib.import_module(module), name), f"from {module} import {name}"


def test_the_old_module_names_are_the_new_modules():
    import nnspec.binding
    import nnspec.registry.binding
    import nnspec.registry.types
    import nnspec.types
    assert nnspec.types is nnspec.registry.types and nnspec.binding is nnspec.registry.binding
    from nnspec.registry import Float, Param
    from nnspec.types import Float as OldFloat, Param as OldParam
    assert (Float, Param) == (OldFloat, OldParam)


def test_entry_points_of_existing_installs_still_resolve():
    """Installs made before the move name `nnspec.builtins.<kind>:COMPONENTS` and `nnspec.cli:main`."""
    for kind in ("layers", "optimizers", "schedules", "losses", "metrics", "datasets", "augmentations"):
        components = importlib.import_module(f"nnspec.builtins.{kind}").COMPONENTS
        assert components and all(c.kind == kind for c in components)
    assert callable(importlib.import_module("nnspec.cli").main)


def test_the_plugin_api_imports_no_torch():
    code = ("import sys, nnspec.registry, nnspec.types, nnspec.binding, nnspec.check; "
            "sys.exit('torch' in sys.modules)")
    assert subprocess.run([sys.executable, "-c", code]).returncode == 0

"""Inputs the atheris fuzzer (fuzz/fuzz_spec.py) found to crash the front end, kept as regressions."""
from __future__ import annotations

from pathlib import Path

import pytest

from nnspec.check.checker import check_source
from nnspec.errors import NnspecError

FINDINGS = sorted((Path(__file__).parent / "fuzz_findings").iterdir())


@pytest.mark.parametrize("path", FINDINGS, ids=lambda p: p.name)
def test_fuzz_finding_gives_only_nnspec_errors(path):
    text = path.read_bytes().decode("utf-8", errors="replace")
    try:
        result = check_source(text, "finding.nn")
    except NnspecError:
        return
    assert all(d.span.line >= 1 for d in result.diagnostics)

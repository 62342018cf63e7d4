"""Coverage-guided fuzzing of the front end (parse + check) with atheris.

Only nnspec's own error type may escape; any other exception, a hang or a crash is a finding.
Findings become regression tests in tests/test_fuzz_regressions.py.

    pip install atheris
    python fuzz/fuzz_spec.py -max_total_time=600 -max_len=2048 fuzz/corpus
"""
from __future__ import annotations

import sys

import atheris

with atheris.instrument_imports(include=["nnspec"]):
    from nnspec.check.checker import check_source
    from nnspec.errors import NnspecError


def test_one_input(data: bytes) -> None:
    text = data.decode("utf-8", errors="replace")
    try:
        check_source(text, "fuzz.nn")
    except NnspecError:
        pass


def main() -> None:
    atheris.Setup(sys.argv, test_one_input)
    atheris.Fuzz()


if __name__ == "__main__":
    main()

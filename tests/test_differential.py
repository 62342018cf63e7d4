"""The promise, tested: every spec that `validate` accepts trains for one step.

Mutants of fuzz/seeds/*.nn (values, swapped components, deleted and duplicated lines, parameter
groups, schedule chains, keyword arguments) go through the check; each one it accepts is trained
for one step on its tiny synthetic data (fuzz/differential.py). A spec refused by training, or a
traceback from either stage, is a finding. The seeds are fixed, so CI sees the same cases every
run; `python fuzz/differential.py --cases 5000 --seed N` explores further, and what it finds is
kept in tests/differential_findings/.
"""
from __future__ import annotations

import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "fuzz"))
import differential  # noqa: E402

FINDINGS = sorted((Path(__file__).parent / "differential_findings").glob("*.nn"))


@pytest.mark.parametrize("seed", [2026, 7])
def test_every_mutant_the_check_accepts_trains_one_step(seed):
    runner = differential.Runner(timeout=120)
    outcomes, findings = {}, []
    try:
        for name, text in differential.mutants(seed, 250):
            outcome = runner.run(text)
            outcomes[outcome.kind] = outcomes.get(outcome.kind, 0) + 1
            if outcome.is_finding:
                findings.append(f"{name}: {outcome.kind}: {outcome.detail}\n{text}")
    finally:
        runner.close()
    assert outcomes.get("trained", 0) >= 25, outcomes       # the generator still reaches training
    assert not findings, "\n\n".join(findings[:5])


def test_every_seed_trains():
    runner = differential.Runner(timeout=120)
    try:
        for seed in sorted(differential.SEEDS.glob("*.nn")):
            outcome = runner.run(seed.read_text(encoding="utf-8"))
            assert outcome.kind == "trained", (seed.name, outcome)
    finally:
        runner.close()


@pytest.mark.parametrize("path", FINDINGS, ids=[p.stem for p in FINDINGS])
def test_earlier_findings_are_refused_by_the_check_or_train(path, tmp_path):
    outcome = differential.run_case(path.read_text(encoding="utf-8"), tmp_path)
    assert outcome.kind in ("rejected", "trained"), outcome

"""The differential test of nnspec's promise: a spec that `validate` accepts must train.

Mutants of the seed specs in fuzz/seeds/ (argument values, swapped components, deleted and
duplicated lines, parameter groups, schedule chains, keyword arguments) are checked; each one the
check accepts is trained for one optimizer step on its (tiny, synthetic) data. A finding is:

- `crash-check`: the check raised something other than NnspecError;
- `refused-by-train`: the check accepted it, training refused it with a located error;
- `crash-train`: the check accepted it, training raised a traceback.

Runtime conditions the check cannot know (a loss that becomes non-finite, a device this machine
lacks) and cases over the time or size budget are not findings. Each case runs in a worker
process, so a hang or a crash costs one case, not the run.

    python fuzz/differential.py --cases 2000 --seed 0 --save fuzz/findings

tests/test_differential.py runs a bounded slice of the same generator on every CI run, and keeps
each minimised finding as a regression case (tests/differential_findings/).
"""
from __future__ import annotations

import argparse
import json
import os
import random
import re
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

SEEDS = Path(__file__).resolve().parent / "seeds"
ONE_STEP = ["train.steps=1"]
# Train-time codes that depend on the run, not on the spec: a diverging loss, a missing device.
RUNTIME_CODES = {"E901", "E902"}
# Warnings by which `validate` says a spec cannot train (a model without its training sections).
CANNOT_TRAIN = {"W522"}
INTERESTING = ["0", "1", "2", "3", "5", "7", "16", "64", "0.5", "0.1", "1e-9", "-1", "1e30", "1e308", "100000",
               "true", "false", "none", "[2, 2]", "[1]"]


@dataclass(frozen=True)
class Outcome:
    kind: str        # "rejected" | "trained" | "skipped" | a finding kind
    detail: str = ""

    @property
    def is_finding(self) -> bool:
        return self.kind in ("crash-check", "refused-by-train", "crash-train")


# --- mutants ---------------------------------------------------------------------------------

def _names(kind: str) -> list[str]:
    from nnspec.registry import Catalog
    return Catalog.default()[kind].names()


class Mutator:
    """Text mutations of a spec; `mutate(text)` applies one to three of them."""

    NUMBER = re.compile(r"(?<![\w.])-?\d+(?:\.\d+)?(?:e-?\d+)?(?![\w.])")
    CALL = re.compile(r"\b([a-z_][a-z0-9_]*)\b(?=\s*\(|\s*$|\s*->|\s*\*|\s*,|\s*\n)", re.M)

    def __init__(self, rng: random.Random):
        self.rng = rng
        self.kinds = {k: _names(k) for k in ("layers", "optimizers", "schedules", "losses", "metrics",
                                             "augmentations")}
        self.kind_of = {name: k for k, names in self.kinds.items() for name in names}
        from nnspec.registry import Catalog
        self.catalog = Catalog.default()

    def mutate(self, text: str) -> str:
        for _ in range(self.rng.choice((1, 1, 2, 3))):
            op = self.rng.choice([self.number, self.number, self.swap, self.swap, self.delete_line,
                                  self.duplicate_line, self.group, self.schedule_chain, self.keyword])
            text = op(text) or text
        return text

    def number(self, text: str) -> str | None:
        hits = list(self.NUMBER.finditer(text))
        if not hits:
            return None
        m = self.rng.choice(hits)
        old = m.group(0)
        choices = INTERESTING + [str(int(float(old)) * 2), str(max(0, int(float(old)) // 2)), f"{float(old) * 10:g}"]
        return text[:m.start()] + self.rng.choice(choices) + text[m.end():]

    def swap(self, text: str) -> str | None:
        hits = [m for m in self.CALL.finditer(text) if m.group(1) in self.kind_of]
        if not hits:
            return None
        m = self.rng.choice(hits)
        new = self.rng.choice(self.kinds[self.kind_of[m.group(1)]])
        return text[:m.start(1)] + new + text[m.end(1):]

    def _lines(self, text: str) -> list[str]:
        return text.split("\n")

    def delete_line(self, text: str) -> str | None:
        lines = self._lines(text)
        body = [i for i, l in enumerate(lines) if l.strip() and not l.strip().startswith("#")]
        if not body:
            return None
        del lines[self.rng.choice(body)]
        return "\n".join(lines)

    def duplicate_line(self, text: str) -> str | None:
        lines = self._lines(text)
        body = [i for i, l in enumerate(lines) if l.startswith("    ") and not l.rstrip().endswith(("{", "}"))]
        if not body:
            return None
        i = self.rng.choice(body)
        lines.insert(i, lines[i])
        return "\n".join(lines)

    def group(self, text: str) -> str | None:
        selector = self.rng.choice(["bias", "norm", "weights", "head", "embedding", "linear", "conv2d",
                                    '"head.*"', '"nothing.*"', '"*.weight"', "basic", "encoder"])
        key, value = self.rng.choice([("weight_decay", "0"), ("lr", "0.01"), ("momentum", "0"),
                                      ("nesterov", "true"), ("betas", "[0.9, 0.99]"), ("eps", "1e-8")])
        line = f"    group {selector} {{ {key} {value} }}"
        lines = self._lines(text)
        for i, l in enumerate(lines):
            if l.startswith("optimizer"):
                if l.rstrip().endswith("{"):
                    lines.insert(i + 1, line)
                else:
                    lines[i] = l.rstrip() + " {\n" + line + "\n}"
                return "\n".join(lines)
        return None

    def schedule_chain(self, text: str) -> str:
        links = [self.rng.choice(self.kinds["schedules"]) for _ in range(self.rng.choice((1, 2, 2, 3)))]
        chain = " then ".join(self._with_required(name, "schedules") for name in links)
        lines = [l for l in self._lines(text) if not l.startswith("schedule")]
        return "\n".join(lines) + f"\nschedule {chain}\n"

    def _with_required(self, name: str, kind: str) -> str:
        component = self.catalog.get(kind, name)
        required = [p for p in component.params if p.required]
        if not required:
            return name
        args = ", ".join(f"{p.name} = {self.rng.choice(['1', '2', '10', '0.1', '[2, 4]'])}" for p in required)
        return f"{name}({args})"

    def keyword(self, text: str) -> str | None:
        hits = [m for m in self.CALL.finditer(text) if m.group(1) in self.kind_of
                and text[m.end(1):].lstrip().startswith("(")]
        if not hits:
            return None
        m = self.rng.choice(hits)
        component = self.catalog.get(self.kind_of[m.group(1)], m.group(1))
        optional = [p for p in component.params if not p.required]
        if not optional:
            return None
        p = self.rng.choice(optional)
        close = text.index("(", m.end(1)) + 1
        inner_empty = text[close:].lstrip().startswith(")")
        insert = f"{p.name} = {self.rng.choice(INTERESTING)}" + ("" if inner_empty else ", ")
        return text[:close] + insert + text[close:]


def mutants(seed: int, count: int) -> list[tuple[str, str]]:
    """`count` (name, text) mutants, the same for the same seed."""
    rng = random.Random(seed)
    seeds = sorted(SEEDS.glob("*.nn"))
    mutator = Mutator(rng)
    out = []
    for i in range(count):
        source = seeds[i % len(seeds)]
        out.append((f"{source.stem}-{seed}-{i}", mutator.mutate(source.read_text(encoding="utf-8"))))
    return out


# --- one case --------------------------------------------------------------------------------

def run_case(text: str, folder: Path) -> Outcome:
    """Check one spec text, then train it for one step if the check accepts it."""
    from nnspec.check import check_file
    from nnspec.errors import NnspecError
    path = folder / "case.nn"
    path.write_text(text, encoding="utf-8")
    try:
        result = check_file(path, overrides=ONE_STEP)
    except NnspecError as err:
        return Outcome("rejected", err.diagnostics[0].code if err.diagnostics else "")
    except Exception as err:  # noqa: BLE001 - the finding itself
        return Outcome("crash-check", f"{type(err).__name__}: {err}")
    errors = [d for d in result.diagnostics if d.severity == "error" or d.code in CANNOT_TRAIN]
    if errors or result.spec is None:
        return Outcome("rejected", errors[0].code if errors else "")
    if result.spec.model is not None and result.spec.model.params > 5_000_000:
        return Outcome("skipped", "over the size budget")
    import nnspec
    try:
        nnspec.train(result.spec, out_dir=False, progress=False)
    except NnspecError as err:
        codes = {d.code for d in err.diagnostics}
        if any("can't allocate memory" in d.message for d in err.diagnostics):
            return Outcome("skipped", "over the worker's memory limit")     # RLIMIT_AS below, not the machine
        if codes <= RUNTIME_CODES:
            return Outcome("trained", "runtime condition: " + ", ".join(sorted(codes)))
        return Outcome("refused-by-train", "; ".join(f"{d.code} {d.message}" for d in err.diagnostics)[:500])
    except MemoryError:
        return Outcome("skipped", "out of memory")
    except Exception as err:  # noqa: BLE001 - the finding itself
        return Outcome("crash-train", f"{type(err).__name__}: {str(err)[:400]}")
    return Outcome("trained")


def _worker() -> None:
    """Read JSON cases from stdin, write one JSON outcome per line (the parent enforces time)."""
    import resource
    resource.setrlimit(resource.RLIMIT_AS, (8 << 30, 8 << 30))
    import torch
    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory() as tmp:
        for line in sys.stdin:
            case = json.loads(line)
            outcome = run_case(case["text"], Path(tmp))
            print(json.dumps({"kind": outcome.kind, "detail": outcome.detail}), flush=True)


class Runner:
    """A worker process fed one case at a time; restarted after a case over `timeout` seconds."""

    def __init__(self, timeout: float = 30.0):
        self.timeout, self.proc = timeout, None

    def _start(self) -> None:
        env = dict(os.environ, PYTHONUNBUFFERED="1")
        self.proc = subprocess.Popen([sys.executable, __file__, "--worker"], stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, env=env)

    def run(self, text: str) -> Outcome:
        import selectors
        if self.proc is None or self.proc.poll() is not None:
            self._start()
        self.proc.stdin.write(json.dumps({"text": text}) + "\n")
        self.proc.stdin.flush()
        sel = selectors.DefaultSelector()
        sel.register(self.proc.stdout, selectors.EVENT_READ)
        if not sel.select(self.timeout):
            self.close()
            return Outcome("skipped", f"over {self.timeout:g} s")
        line = self.proc.stdout.readline()
        if not line:
            code = self.proc.wait()
            self.proc = None
            return Outcome("crash-train", f"worker died with exit code {code}")
        data = json.loads(line)
        return Outcome(data["kind"], data["detail"])

    def close(self) -> None:
        if self.proc is not None:
            self.proc.kill()
            self.proc.wait()
            self.proc = None


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--cases", type=int, default=200)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--timeout", type=float, default=30.0, help="seconds per case")
    ap.add_argument("--save", type=Path, help="write each finding's spec into this folder")
    args = ap.parse_args(argv)
    if args.worker:
        _worker()
        return 0
    runner, counts, findings = Runner(args.timeout), {}, 0
    try:
        for name, text in mutants(args.seed, args.cases):
            outcome = runner.run(text)
            counts[outcome.kind] = counts.get(outcome.kind, 0) + 1
            if outcome.is_finding:
                findings += 1
                print(f"{name}: {outcome.kind}: {outcome.detail}", flush=True)
                if args.save:
                    args.save.mkdir(parents=True, exist_ok=True)
                    (args.save / f"{name}.nn").write_text(f"# {outcome.kind}: {outcome.detail[:200]}\n{text}")
    finally:
        runner.close()
    print(" ".join(f"{k}={v}" for k, v in sorted(counts.items())))
    return 1 if findings else 0


if __name__ == "__main__":
    sys.exit(main())

"""How fast is `nnspec validate`? Prints ratios measured side by side in one session.

1. Cold `nnspec validate specs/` vs cold `python -c "import torch"` (target: ≤ 0.25×).
2. Growth: a generated 10,000-layer spec vs a 1,000-layer one (target: < 10×).

    python benchmarks/validate_speed.py [--rounds 5]
"""
from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def timed(cmd: list[str]) -> float:
    start = time.perf_counter()
    subprocess.run(cmd, cwd=ROOT, check=False, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return time.perf_counter() - start


def layered_spec(n: int) -> str:
    """n layers written out line by line (parsing and checking both grow with n)."""
    lines = ["model big {", "    input [32]"]
    lines += ["    linear(32) -> relu" for _ in range(n // 2)]
    lines.append("}")
    return "\n".join(lines) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rounds", type=int, default=5)
    args = ap.parse_args()
    validate = [sys.executable, "-m", "nnspec", "validate", "specs"]
    torch = [sys.executable, "-c", "import torch"]
    timed(validate), timed(torch)                       # warm the file cache for both
    v, t = [], []
    for _ in range(args.rounds):                        # interleaved, so load drifts hit both
        v.append(timed(validate))
        t.append(timed(torch))
    mv, mt = statistics.median(v), statistics.median(t)
    n_specs = len(list((ROOT / "specs").rglob("*.nn")))
    print(f"nnspec validate specs/ ({n_specs} files): median {mv:.3f} s")
    print(f"python -c 'import torch':            median {mt:.3f} s")
    print(f"ratio validate / import torch: {mv / mt:.2f}  (target ≤ 0.25)")

    with tempfile.TemporaryDirectory() as tmp:
        small, large = Path(tmp, "l1000.nn"), Path(tmp, "l10000.nn")
        small.write_text(layered_spec(1_000))
        large.write_text(layered_spec(10_000))
        cmd = [sys.executable, "-c", "import sys, time; from nnspec.check.checker import check_file; "
               "t = time.perf_counter(); r = check_file(sys.argv[1]); assert r.ok; "
               "print(time.perf_counter() - t)"]
        s, l = [], []
        for _ in range(args.rounds):
            s.append(float(subprocess.run(cmd + [str(small)], capture_output=True, text=True, check=True).stdout))
            l.append(float(subprocess.run(cmd + [str(large)], capture_output=True, text=True, check=True).stdout))
        ms, ml = statistics.median(s), statistics.median(l)
        print(f"check 1,000 layers: {ms:.3f} s; 10,000 layers: {ml:.3f} s; growth {ml / ms:.1f}× (target < 10×)")


if __name__ == "__main__":
    main()

"""`nnspec train SPEC --nproc N`: start N local worker processes through torch's elastic
launcher (what `torchrun --standalone --nproc-per-node N` does), each running
`python -m nnspec train SPEC ...` with RANK, WORLD_SIZE and LOCAL_RANK set.

The workers share this terminal, so each prints its own error; when one fails the launcher
stops the others and this process returns the failed rank's exit code with one line naming it.
For several machines use torchrun itself (see README, "Distributed").
"""
from __future__ import annotations

import logging
import os
import sys
import uuid
from typing import Sequence


def strip_nproc(argv: Sequence[str]) -> list[str]:
    """The command line without `--nproc N` / `--nproc=N` (what each worker runs)."""
    out, skip = [], False
    for a in argv:
        if skip:
            skip = False
            continue
        if a == "--nproc":
            skip = True
            continue
        if a.startswith("--nproc="):
            continue
        out.append(a)
    return out


def launch(nproc: int, argv: Sequence[str]) -> int:
    """Run `python -m nnspec *argv` in `nproc` local processes; the exit code of the run."""
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
    from torch.distributed.launcher.api import LaunchConfig, elastic_launch
    if "OMP_NUM_THREADS" not in os.environ:        # share the cores instead of oversubscribing them
        os.environ["OMP_NUM_THREADS"] = str(max(1, (os.cpu_count() or 1) // nproc))
    logging.getLogger("torch.distributed.elastic").setLevel(logging.ERROR)
    config = LaunchConfig(min_nodes=1, max_nodes=1, nproc_per_node=nproc, run_id=f"nnspec-{uuid.uuid4().hex[:8]}",
                          rdzv_backend="c10d", rdzv_endpoint="localhost:0", max_restarts=0, monitor_interval=0.1)
    try:
        elastic_launch(config, sys.executable)("-m", "nnspec", *argv)
    except ChildFailedError as err:
        rank, failure = err.get_first_failure()
        code = failure.exitcode
        how = f"signal {failure.signal_name()}" if code < 0 else f"exit code {code}"
        print(f"nnspec: worker rank {rank} of {nproc} failed ({how}); its error is printed above; "
              "the other workers were stopped", file=sys.stderr)
        return code if 0 < code < 128 else 1
    return 0

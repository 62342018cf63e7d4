"""`nnspec train SPEC --nproc N`: start N local worker processes through torch's elastic
launcher (what `torchrun --standalone --nproc-per-node N` does), each running
`python -m nnspec train SPEC ...` with RANK, WORLD_SIZE and LOCAL_RANK set.

The workers share this terminal, so each prints its own error; when one fails the launcher
stops the others and this process returns the failed rank's exit code with one line naming it.
On SIGINT/SIGTERM the launcher passes the signal to the workers, which stop after the same step
(rank 0 checkpoints and prints how to resume), and exits 3 like a single process.
For several machines use torchrun itself (see README, "Distributed").
"""
from __future__ import annotations

import logging
import os
import signal
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
    from torch.distributed.elastic.multiprocessing.api import SignalException

    from nnspec.cli.commands import EXIT_STOPPED
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
    from torch.distributed.launcher.api import LaunchConfig, elastic_launch
    os.environ["NNSPEC_NPROC"] = str(nproc)          # the workers' resume hint repeats --nproc
    from nnspec.runtime.threads import share_of_cores
    if "OMP_NUM_THREADS" not in os.environ:        # share the cores instead of oversubscribing them
        os.environ["OMP_NUM_THREADS"] = str(share_of_cores(nproc))
    for name in [n for n in logging.root.manager.loggerDict if n.startswith("torch.distributed.elastic")]:
        logging.getLogger(name).setLevel(logging.ERROR)      # each sets its own level: quiet them all
    config = LaunchConfig(min_nodes=1, max_nodes=1, nproc_per_node=nproc, run_id=f"nnspec-{uuid.uuid4().hex[:8]}",
                          rdzv_backend="c10d", rdzv_endpoint="localhost:0", max_restarts=0, monitor_interval=0.1)
    try:
        elastic_launch(config, sys.executable)("-m", "nnspec", *argv)
    except SignalException as sig:
        # The launcher passed the signal on to the workers and waited for them: they agreed on a
        # step, rank 0 wrote a checkpoint and printed the command that resumes.
        print(f"nnspec: the workers were stopped by {signal.Signals(sig.sigval).name}", file=sys.stderr)
        return EXIT_STOPPED
    except ChildFailedError as err:
        if all(f.exitcode == EXIT_STOPPED for f in err.failures.values()):
            return EXIT_STOPPED                       # a signal to some worker: all stopped together
        rank, failure = err.get_first_failure()
        code = failure.exitcode
        how = f"signal {failure.signal_name()}" if code < 0 else f"exit code {code}"
        print(f"nnspec: worker rank {rank} of {nproc} failed ({how}); its error is printed above; "
              "the other workers were stopped", file=sys.stderr)
        return code if 0 < code < 128 else 1
    return 0

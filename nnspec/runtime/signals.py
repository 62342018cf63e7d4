"""Stopping a run cleanly on SIGINT / SIGTERM.

The handler only sets a flag: writing a checkpoint inside a signal handler could interrupt a
half-done step or a checkpoint being written. The loop checks the flag after each optimizer
step, writes a checkpoint, and raises `TrainingInterrupted`; the CLI prints the command that
resumes and exits with EXIT_STOPPED (3). A second SIGINT stops at once (KeyboardInterrupt,
exit 130), without a checkpoint.
"""
from __future__ import annotations

import signal
import threading
from pathlib import Path


class TrainingInterrupted(Exception):
    """Training stopped on request after a step; `checkpoint` resumes it (None: no run folder)."""

    def __init__(self, signal_name: str, step: int, checkpoint: Path | None, run_dir: Path | None):
        self.signal_name, self.step, self.checkpoint, self.run_dir = signal_name, step, checkpoint, run_dir
        where = f"; checkpoint {checkpoint}" if checkpoint else " (no run folder: nothing saved)"
        super().__init__(f"stopped by {signal_name} after step {step}{where}")


class StopFlag:
    """Installs SIGINT/SIGTERM handlers for the duration of a `with` block (main thread only;
    elsewhere it is inert). `requested` names the first signal received, or is None."""

    def __init__(self, enabled: bool = True):
        self.enabled = enabled and threading.current_thread() is threading.main_thread()
        self.requested: str | None = None
        self._previous: dict[int, object] = {}

    def _handle(self, signum, frame) -> None:
        if self.requested is not None and signum == signal.SIGINT:
            raise KeyboardInterrupt           # second Ctrl-C: stop now
        if self.requested is None:
            self.requested = signal.Signals(signum).name

    def __enter__(self) -> "StopFlag":
        if self.enabled:
            for sig in (signal.SIGINT, signal.SIGTERM):
                self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def __exit__(self, *exc) -> None:
        for sig, previous in self._previous.items():
            signal.signal(sig, previous)
        self._previous.clear()

"""The Python API: `nnspec.load`, `nnspec.build`, `nnspec.train`.

    import nnspec
    result = nnspec.train("specs/digits_mlp.nn", overrides={"train.epochs": 5}, progress=False)
    built = nnspec.build("specs/digits_mlp.nn")     # model, optimizer, scheduler, loss, metrics
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Sequence

from nnspec.check.checker import load as _load
from nnspec.spec.settings import Spec


def load(path: str | os.PathLike, overrides: Sequence[str] | dict | None = None, *,
         open_data: bool = True) -> Spec:
    """Parse and check a spec; raises NnspecError listing every problem. The data files are
    opened (headers only) and checked too, unless `open_data=False`."""
    return _load(path, overrides, open_data=open_data)


def _spec(spec_or_path: Spec | str | os.PathLike, overrides) -> Spec:
    if isinstance(spec_or_path, Spec):
        if overrides:
            raise ValueError("overrides apply to a spec file: pass its path, or load it with "
                             "nnspec.load(path, overrides)")
        return spec_or_path
    return _load(spec_or_path, overrides)


def build(spec: Spec | str | os.PathLike, *, overrides: Sequence[str] | dict | None = None):
    """The torch objects of a spec (`Built`: .model, .optimizer, .scheduler, .loss, .metrics,
    .data, .device), seeded exactly as training would start. Missing sections give None."""
    from nnspec.runtime.assemble import assemble, spec_errors
    checked = _spec(spec, overrides)
    with spec_errors(checked):
        return assemble(checked)


def train(spec_or_path: Spec | str | os.PathLike, *, overrides: Sequence[str] | dict | None = None,
          out_dir: str | os.PathLike | bool | None = None, progress=None,
          resume: str | os.PathLike | bool | None = None, allow_changed_spec: bool = False,
          force: bool = False, _handle_signals: bool = False):
    """Train a spec and return a `Result` (.history, .model, .test_metrics, .out_dir, .best).

    out_dir: the run folder (default runs/<spec-stem>-<YYYYmmdd-HHMMSS>; False writes nothing).
    progress: None picks rich on a terminal and plain lines otherwise; False prints nothing.
    resume: continue exactly from a checkpoint file or run folder (True: out_dir, or the newest
    runs/<stem>-* folder; none yet: start fresh); a changed spec is refused unless allow_changed_spec.
    force: start afresh in an out_dir that holds an earlier run, deleting its files (without
    force or resume such a folder is refused, E914).
    _handle_signals (the CLI): SIGINT/SIGTERM checkpoint and raise TrainingInterrupted."""
    from nnspec.runtime.trainer import train as _train
    return _train(_spec(spec_or_path, overrides), out_dir=Path(out_dir) if isinstance(out_dir, (str, os.PathLike))
                  else out_dir, progress=progress, resume=resume, allow_changed_spec=allow_changed_spec,
                  handle_signals=_handle_signals, force=force)

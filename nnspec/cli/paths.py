"""Checks of the paths a command will write, before any work: a run folder (`train --out`) and an
output file (`predict --output`). Each problem is one sentence naming the path, so the CLI can
refuse with exit 2 instead of failing with a traceback after training or predicting."""
from __future__ import annotations

import os
from pathlib import Path

_SYSTEM = (Path("/proc"), Path("/sys"))     # kernel views: mkdir there fails or means something else


def _first_existing(path: Path) -> Path:
    for candidate in (path, *path.parents):
        if os.path.lexists(candidate):
            return candidate
    return Path(".")


def _system_folder(path: Path) -> Path | None:
    resolved = path.resolve()
    return next((s for s in _SYSTEM if resolved == s or s in resolved.parents), None)


def folder_problem(path: str | os.PathLike, what: str) -> str | None:
    """Why `what` (e.g. "the run folder --out runs/x") cannot be created at `path`, or None."""
    path = Path(path)
    system = _system_folder(path)
    if system is not None:
        return f"{what} is under {system}, a system folder that cannot hold files"
    existing = _first_existing(path)
    if existing == path:
        if not path.is_dir():
            return f"{what} is a file, not a folder"
        if not os.access(path, os.W_OK | os.X_OK):
            return f"{what} is not writable"
        return None
    if not existing.is_dir():
        return f"{what} cannot be created: {existing} is a file, not a folder"
    if not os.access(existing, os.W_OK | os.X_OK):
        return f"{what} cannot be created: {existing} is not writable"
    return None


def output_file_problem(output: str | os.PathLike, inputs: str | os.PathLike, force: bool) -> str | None:
    """Why writing `output` would be wrong (it is the input, it exists, it cannot be written)."""
    out, src = Path(output), Path(inputs)
    if os.path.lexists(out):
        try:
            same = os.path.samefile(out, src)
        except OSError:
            same = False
        if same or out.resolve() == src.resolve():
            return f"--output {output} is the --input file: writing it would destroy the inputs"
        if out.is_dir():
            return f"--output {output} is a folder, not a file"
        if not force:
            return f"--output {output} exists; pass --force to overwrite it"
        return None
    if out.resolve() == src.resolve():
        return f"--output {output} is the --input file: writing it would destroy the inputs"
    return folder_problem(out.parent if str(out.parent) else ".", f"the folder of --output {output}")

"""The run folder: everything needed to understand, reproduce or resume a run.

    spec.nn               the spec text, with the overrides and imports listed in a header comment
    versions.json         python, nnspec, torch, numpy and every distribution with nnspec entry points
    metrics.jsonl / .csv  one row per epoch, written (and flushed) as the epoch ends
    checkpoints/          periodic checkpoints (the newest `keep_last` kept), last.pt, best.pt
    weights.safetensors   the final weights
    summary.json          final train/val/test metrics, best monitored value, timings

What is written when, so that a crash at any moment leaves files that agree: a run starts by
removing summary.json, then weights.safetensors (the marks of a finished state it is moving
past); a fresh run then removes the earlier run's checkpoints, empties the metric files and
writes spec.nn and versions.json; a resumed run rewrites the metric files with the rows of its
checkpoint. Checkpoints come as training goes; at the end the last checkpoint, then the
weights, then summary.json: summary.json is the completion marker, written last, removed
first. A folder with it is a finished run whose weights, metrics and checkpoints agree; one
without it is an unfinished run, resumable from its newest valid checkpoint.

Every file but the per-row appends is written atomically (temp file in the same folder, flush,
fsync, rename). Checkpoints hold only tensors and plain containers and are read back with
`torch.load(weights_only=True)`.
"""
from __future__ import annotations

import csv
import datetime as _dt
import io
import json
import math
import os
import platform
import re
import uuid
from importlib import metadata
from pathlib import Path
from typing import Any, Mapping

import torch

SPEC_FILE = "spec.nn"
WEIGHTS_FILE = "weights.safetensors"
SUMMARY_FILE = "summary.json"
VERSIONS_FILE = "versions.json"
METRICS_JSONL, METRICS_CSV = "metrics.jsonl", "metrics.csv"
# test hook (tests/test_resume.py): seconds to sleep between the fsync of a temp file and its
# rename, so a test can kill a run in the middle of a checkpoint write
_SLEEP_BEFORE_REPLACE = os.environ.get("NNSPEC_TEST_SLEEP_IN_SAVE")


def default_run_dir(spec_path: str, root: str | os.PathLike = "runs") -> Path:
    """`runs/<spec-stem>-<YYYYmmdd-HHMMSS>`, with -2, -3, … when that folder exists."""
    stem = Path(spec_path).stem if spec_path and spec_path != "<string>" else "spec"
    base = Path(root) / f"{stem}-{_dt.datetime.now().strftime('%Y%m%d-%H%M%S')}"
    path, n = base, 1
    while path.exists():
        n += 1
        path = base.with_name(f"{base.name}-{n}")
    return path


def resolved_spec_text(spec) -> str:
    """The main spec file with a header comment listing overrides, imports and the digest."""
    main = spec.sources.get(spec.path, "")
    header = [f"# resolved by nnspec from {spec.path}", f"# digest: sha256 {spec.digest}"]
    if spec.overrides:
        header.append("# overrides (applied on top of the text below):")
        header += [f"#   {o.text}" for o in spec.overrides]
    imports = [p for p in spec.sources if p != spec.path]
    if imports:
        header.append("# imported files (their text is in every checkpoint):")
        header += [f"#   {p}" for p in imports]
    return "\n".join(header) + "\n\n" + main + ("" if main.endswith("\n") else "\n")


def versions() -> dict[str, Any]:
    """Versions that matter for reproducing a run."""
    out: dict[str, Any] = {"python": platform.python_version(), "platform": platform.platform()}
    for dist in ("nnspec", "torch", "numpy", "safetensors"):
        try:
            out[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            out[dist] = None
    out["cuda"] = torch.version.cuda
    plugins: dict[str, str] = {}
    for dist in metadata.distributions():
        if any(ep.group.startswith("nnspec.") for ep in dist.entry_points):
            plugins[dist.metadata["Name"]] = dist.version
    out["plugins"] = dict(sorted(plugins.items()))
    return out


def _plain(value: Any) -> Any:
    """JSON-able: NaN/inf become None (JSON has no such numbers)."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


def write_json(path: Path, data: Any) -> None:
    atomic_write_bytes(path, (json.dumps(_plain(data), indent=2) + "\n").encode())


def atomic_write_bytes(path: Path, data: bytes) -> None:
    _atomic(path, lambda f: f.write(data))


def _atomic(path: Path, write) -> None:
    path = Path(path)
    tmp = path.parent / f".{path.name}.{os.getpid()}-{uuid.uuid4().hex[:8]}.tmp"
    try:
        with open(tmp, "xb") as f:      # normal permissions (umask), unlike mkstemp's 0600
            write(f)
            f.flush()
            os.fsync(f.fileno())
        if _SLEEP_BEFORE_REPLACE:
            import time
            time.sleep(float(_SLEEP_BEFORE_REPLACE))
        os.replace(tmp, path)
        _fsync_dir(path.parent)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise


def _fsync_dir(folder: Path) -> None:
    """Make a rename durable: fsync the folder holding it (not possible on every platform)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def save_checkpoint(path: Path, state: Mapping[str, Any]) -> None:
    """torch.save of tensors and plain containers, atomically."""
    _atomic(path, lambda f: torch.save(dict(state), f))


def load_checkpoint(path: str | os.PathLike, map_location: Any = "cpu") -> dict:
    """Read a checkpoint safely: tensors and plain containers only, never code."""
    return torch.load(path, map_location=map_location, weights_only=True)


_NUMBERED = re.compile(r"^epoch(\d+)-step(\d+)\.pt$")


def numbered_name(epoch: int, step: int) -> str:
    """A periodic checkpoint's file name: `epoch0003-step00000028.pt`."""
    return f"epoch{epoch:04d}-step{step:08d}.pt"


def numbered_position(path: Path) -> tuple[int, int] | None:
    """(step, epoch) from a periodic checkpoint's name; None for other files (last.pt, best.pt)."""
    m = _NUMBERED.match(Path(path).name)
    return (int(m.group(2)), int(m.group(1))) if m else None


class RunDir:
    """One run's folder. Metric files are kept open and flushed per row (no fsync: a lost last
    line after a crash is acceptable; checkpoints are the durable state)."""

    def __init__(self, path: str | os.PathLike, spec, history: list[dict] | None = None,
                 resumed_step: int | None = None):
        """`history`: a resumed run's rows up to its checkpoint; the metric files are rewritten
        with exactly these (dropping rows logged after that checkpoint) and continue from there.
        `resumed_step`: that checkpoint's step; numbered checkpoints past it (unusable ones, or a
        later state resumed back from) go, else a later --resume would pick them.
        None: a fresh run, which deletes an earlier run's files here (resume.plan refuses a
        folder holding files unless --force, or --resume found no checkpoint to continue)."""
        self.path = Path(path)
        self.path.mkdir(parents=True, exist_ok=True)
        self.checkpoints = self.path / "checkpoints"
        self.checkpoints.mkdir(exist_ok=True)
        self._clear_past(fresh=history is None, resumed_step=resumed_step)
        rows = [dict(r) for r in history or ()]
        self._fields: list[str] | None = list(rows[0]) if rows else None
        atomic_write_bytes(self.path / METRICS_JSONL, "".join(self._jsonl_line(r) for r in rows).encode())
        atomic_write_bytes(self.path / METRICS_CSV, self._csv_text(rows).encode())
        atomic_write_bytes(self.path / SPEC_FILE, resolved_spec_text(spec).encode("utf-8"))
        write_json(self.path / VERSIONS_FILE, versions())
        self._jsonl = open(self.path / METRICS_JSONL, "a", encoding="utf-8")
        self._csv_file = open(self.path / METRICS_CSV, "a", encoding="utf-8", newline="")
        self._periodic: list[Path] = sorted((p for p in self.checkpoints.glob("*.pt") if numbered_position(p)),
                                            key=numbered_position)

    def _clear_past(self, fresh: bool, resumed_step: int | None) -> None:
        """Remove what this run moves past: the completion marker first, then the weights, a
        killed run's unfinished atomic writes, and checkpoints (all of them for a fresh run;
        numbered ones past `resumed_step` for a resumed one)."""
        for name in (SUMMARY_FILE, WEIGHTS_FILE):
            (self.path / name).unlink(missing_ok=True)
        for partial in [*self.path.glob(".*.tmp"), *self.checkpoints.glob(".*.tmp")]:
            partial.unlink(missing_ok=True)
        for old in self.checkpoints.glob("*.pt"):
            at = numbered_position(old)
            if fresh or (resumed_step is not None and at is not None and at[0] > resumed_step):
                old.unlink(missing_ok=True)

    @staticmethod
    def _jsonl_line(row: Mapping[str, Any]) -> str:
        return json.dumps(_plain(dict(row))) + "\n"

    def _csv_text(self, rows: list[dict], header: bool = True) -> str:
        """CSV lines of `rows` (with the header line first when asked); columns of the first row."""
        if not rows:
            return ""
        buf = io.StringIO()
        writer = csv.DictWriter(buf, fieldnames=self._fields, extrasaction="ignore", restval="")
        if header:
            writer.writeheader()
        for row in rows:
            writer.writerow({k: json.dumps(v) if isinstance(v, (list, dict)) else v for k, v in row.items()})
        return buf.getvalue()

    def log_row(self, row: Mapping[str, Any]) -> None:
        self._jsonl.write(self._jsonl_line(row))
        self._jsonl.flush()
        header = self._fields is None
        if header:
            self._fields = list(row)
        self._csv_file.write(self._csv_text([dict(row)], header=header))
        self._csv_file.flush()

    def save_periodic(self, state: Mapping[str, Any], epoch: int, step: int, keep_last: int) -> Path:
        """A numbered checkpoint plus `last.pt`; only the newest `keep_last` numbered ones stay."""
        path = self.checkpoints / numbered_name(epoch, step)
        save_checkpoint(path, state)
        self._link_last(path)
        self._periodic = [p for p in self._periodic if p != path] + [path]
        while len(self._periodic) > keep_last:
            old = self._periodic.pop(0)
            try:
                old.unlink()
            except FileNotFoundError:
                pass
        return path

    def save_last(self, state: Mapping[str, Any]) -> Path:
        path = self.checkpoints / "last.pt"
        save_checkpoint(path, state)
        return path

    def save_best(self, state: Mapping[str, Any]) -> Path:
        path = self.checkpoints / "best.pt"
        save_checkpoint(path, state)
        return path

    def _link_last(self, source: Path) -> None:
        """`last.pt` as a hard link to the newest numbered checkpoint (a copy where links fail)."""
        last = self.checkpoints / "last.pt"
        tmp = self.checkpoints / ".last.pt.tmp"
        try:
            if tmp.exists():
                tmp.unlink()
            os.link(source, tmp)
            os.replace(tmp, last)
            _fsync_dir(self.checkpoints)
        except OSError:
            atomic_write_bytes(last, source.read_bytes())

    def save_weights(self, model: torch.nn.Module, metadata: Mapping[str, str] | None = None) -> Path:
        """Final weights as safetensors; tensors shared between modules are stored once."""
        from safetensors.torch import save_model
        path = self.path / WEIGHTS_FILE
        tmp = self.path / f".{WEIGHTS_FILE}.{os.getpid()}.tmp"
        try:
            save_model(model, str(tmp), metadata={k: str(v) for k, v in (metadata or {}).items()})
            with open(tmp, "rb") as f:
                os.fsync(f.fileno())
            os.replace(tmp, path)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
        _fsync_dir(self.path)
        return path

    def write_summary(self, summary: Mapping[str, Any]) -> None:
        """The completion marker: written last, after the weights (see the module docstring)."""
        write_json(self.path / SUMMARY_FILE, summary)

    def close(self) -> None:
        for f in (self._jsonl, self._csv_file):
            try:
                f.close()
            except OSError:
                pass


def load_weights(model: torch.nn.Module, path: str | os.PathLike, device: Any = "cpu") -> torch.nn.Module:
    """Load `weights.safetensors` into a model built from the same spec (strict)."""
    from safetensors.torch import load_model
    load_model(model, str(path), strict=True, device=str(device))
    return model

"""Resuming a run from its checkpoints, exactly.

A checkpoint (see trainer._checkpoint_state) holds the model, optimizer, schedule, scaler, every
RNG, the epoch and the number of samples of its order already read (by all processes), the
partial-epoch loss sums, history and best/early-stop state. The sample order is a pure function
of (seed, epoch), so a resumed run reads the rest of the epoch from there and, on CPU, ends
bitwise equal to an uninterrupted run. With another number of processes (or batch size) the
rest of the epoch is batched afresh: every sample is still read exactly once.

Which checkpoint: `--resume FILE` loads that file; `--resume RUN_FOLDER` (or `--out DIR
--resume`) takes the loadable checkpoint with the highest recorded step (last.pt or a numbered
one: a kill can land between writing a numbered checkpoint and linking last.pt to it), and
says so when it skips a truncated or corrupted one; bare `--resume` picks the newest
runs/<stem>-<time> folder of the spec. best.pt is never resumed from: it is not the newest
state. The run folder then removes numbered checkpoints past the one resumed from (outputs.py).
When there is no checkpoint yet, bare `--resume` starts fresh and says so (see `plan`), so a
preemptible job uses one command line for its first and every later start.

The spec must be unchanged (the checkpoint keeps every source text); a changed spec is refused
with a unified diff unless `allow_changed` (e.g. more epochs or steps).
"""
from __future__ import annotations

import difflib
import random
import re
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

from nnspec.errors import Span, error
from nnspec.runtime.distributed import world
from nnspec.runtime.outputs import SUMMARY_FILE, load_checkpoint, numbered_position

_REQUIRED = ("model", "optimizer", "epoch", "batch", "step", "rng", "history", "spec")


@dataclass
class Resumed:
    """A loaded checkpoint and where it came from."""
    state: dict
    path: Path          # the checkpoint file
    run_dir: Path       # the run folder training continues in
    skipped: list[str]  # "file: reason" for each unusable checkpoint passed over


def _span(spec) -> Span:
    return Span.unknown(spec.path)


def read(path: Path) -> dict:
    """Load one checkpoint; a ValueError naming the file says why it cannot be used."""
    try:
        state = load_checkpoint(path)
    except Exception as err:        # truncated zip, random bytes, a pickle weights_only refuses
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise ValueError(f"{path}: unreadable checkpoint ({type(err).__name__}: {first[:200]})") from err
    if not isinstance(state, dict) or state.get("format") != 1:
        raise ValueError(f"{path}: not an nnspec checkpoint (format 1)")
    missing = [k for k in _REQUIRED if k not in state]
    if missing:
        raise ValueError(f"{path}: incomplete checkpoint (missing {', '.join(missing)})")
    return state


def _numbered(run_dir: Path) -> list[tuple[int, Path]]:
    """The numbered checkpoints with the step their name records, newest first."""
    folder = run_dir / "checkpoints"
    found = [(at, p) for p in (folder.glob("*.pt") if folder.is_dir() else ()) if (at := numbered_position(p))]
    return [(at[0], p) for at, p in sorted(found, reverse=True)]


def candidates(run_dir: Path) -> list[Path]:
    """Every checkpoint a run folder could resume from: last.pt and the numbered ones (best.pt excluded)."""
    last = run_dir / "checkpoints" / "last.pt"
    return ([last] if last.exists() else []) + [p for _, p in _numbered(run_dir)]


def newest_valid(run_dir: Path) -> tuple[Path | None, dict | None, list[str]]:
    """The loadable checkpoint with the highest recorded step, and "file: reason" for each
    unusable one passed over. last.pt only links the newest numbered checkpoint after that is
    written, so a kill in between leaves it one behind: a numbered checkpoint of a higher step
    wins over it; at an equal step last.pt wins (the end-of-run state after the epoch's row)."""
    skipped: list[str] = []
    last, last_state = run_dir / "checkpoints" / "last.pt", None
    if last.exists():
        try:
            last_state = read(last)
        except ValueError as err:
            skipped.append(str(err))
    for step, path in _numbered(run_dir):
        if last_state is not None and step <= int(last_state["step"]):
            break
        try:
            return path, read(path), skipped
        except ValueError as err:
            skipped.append(str(err))
    return (last, last_state, skipped) if last_state is not None else (None, None, skipped)


def newest_run(spec_path: str, root: str | Path = "runs") -> Path | None:
    """The newest runs/<stem>-<YYYYmmdd-HHMMSS>[-n] folder with a checkpoint."""
    stem = Path(spec_path).stem if spec_path and spec_path != "<string>" else "spec"
    pattern = re.compile(re.escape(stem) + r"-(\d{8}-\d{6})(?:-(\d+))?$")
    found = []
    for p in Path(root).glob(f"{stem}-*") if Path(root).is_dir() else ():
        m = pattern.match(p.name)
        if m and p.is_dir() and candidates(p):
            found.append((m.group(1), int(m.group(2) or 1), p))
    return max(found)[2] if found else None


def plan(spec, target: str | Path | bool | None, out_dir: str | Path | bool | None,
         force: bool = False) -> Resumed | None:
    """Where a run starts: a loaded checkpoint to resume from, or None for a fresh run.

    Without `target`, an `out_dir` that already holds files is refused (E914) unless `force`
    (the fresh run's RunDir then deletes the earlier run's files). Bare `--resume` (True) with
    no checkpoint yet starts fresh and says so, so one command line serves a preemptible job's
    first and later starts; a folder whose checkpoints are all unusable is an error (E911), and
    so is a finished run with no checkpoint (E914): starting afresh there would lose it."""
    folder = Path(out_dir) if isinstance(out_dir, (str, Path)) else None
    if target in (None, False):
        if folder is not None and not force and folder.is_dir() and any(folder.iterdir()):
            raise error("E914", f"the run folder {folder} already holds files (an earlier run); "
                                "nnspec does not train over them", _span(spec),
                        "pass --resume to continue that run, or --force to start afresh there (deleting "
                        "the earlier run's files); or choose another --out")
        return None
    if target is True or target == "":
        run_dir = folder if folder is not None else newest_run(spec.path)
        if run_dir is None:
            say(f"--resume: no run of `{Path(spec.path).stem}` with a checkpoint under runs/ yet: starting fresh")
            return None
        if not candidates(run_dir):
            if (run_dir / SUMMARY_FILE).exists() and not force:
                raise error("E914", f"--resume: {run_dir} holds a finished run without checkpoints: there is "
                                    "nothing to resume", _span(spec),
                            "pass --force (instead of --resume) to train afresh there, or choose another --out")
            say(f"--resume: no checkpoint in {run_dir} yet: starting fresh")
            return None
    return locate(spec, target, out_dir)


def locate(spec, target: str | Path | bool | None, out_dir: str | Path | None) -> Resumed:
    """Resolve `--resume [PATH]` (True: bare) into a loaded checkpoint, falling back past bad ones."""
    if target in (None, True, ""):
        if out_dir not in (None, False, True):
            run_dir = Path(out_dir)
        else:
            run_dir = newest_run(spec.path)
            if run_dir is None:
                raise error("E910", f"--resume: no run folder of `{Path(spec.path).stem}` with a checkpoint "
                                    "under runs/", _span(spec), "pass the run folder or checkpoint: --resume PATH")
    else:
        run_dir = Path(target)
    if run_dir.is_file():
        try:
            return Resumed(read(run_dir), run_dir, run_dir.parent.parent, [])
        except ValueError as err:
            raise error("E911", f"--resume: {err}", _span(spec),
                        "resume from the run folder to fall back to an older checkpoint") from None
    if not run_dir.is_dir():
        raise error("E910", f"--resume: no such checkpoint or run folder: {run_dir}", _span(spec))
    _drop_temp_files(run_dir)
    path, state, skipped = newest_valid(run_dir)
    if path is None:
        why = "".join(f"\n  {s}" for s in skipped) or " (no checkpoints)"
        raise error("E911", f"--resume: no usable checkpoint in {run_dir / 'checkpoints'}{why}", _span(spec),
                    "checkpoints are written when `train { checkpoint(...) }` says so")
    return Resumed(state, path, run_dir, skipped)


def _drop_temp_files(run_dir: Path) -> None:
    """Partial writes of a killed run (only the main process deletes: the others only read)."""
    if world().is_main:
        for tmp in (run_dir / "checkpoints").glob(".*.tmp"):
            tmp.unlink(missing_ok=True)


def spec_record(spec) -> dict:
    """What a checkpoint keeps of its spec: every file's text and the --set overrides."""
    return {"path": spec.path, "digest": spec.digest, "sources": dict(spec.sources),
            "overrides": [{"key": o.key, "value": o.value, "text": o.text} for o in spec.overrides]}


def _normalized(texts: dict, main: str) -> dict[str, str]:
    """Texts keyed so the main file compares under one name however it was reached."""
    return {("<spec>" if k == main else k): v for k, v in texts.items()}


def _saved_texts(saved: dict) -> dict[str, str]:
    """A checkpoint's files and --set lines. (Checkpoints from before `Spec.overrides` kept each
    --set line among the sources and the overrides as plain strings.)"""
    texts = dict(saved.get("sources", {}))
    for o in saved.get("overrides", ()):
        if isinstance(o, dict):
            texts[o["text"]] = o["text"]
    return texts


def spec_diff(saved: dict, spec) -> str:
    """A unified diff of the checkpoint's files and --set lines against the spec's; empty when equal."""
    old = _normalized(_saved_texts(saved), saved.get("path", ""))
    new = _normalized(spec.source_texts, spec.path)
    lines: list[str] = []
    for key in sorted(set(old) | set(new)):
        a, b = old.get(key), new.get(key)
        if a == b:
            continue
        name = spec.path if key == "<spec>" else key
        lines += difflib.unified_diff((a or "").splitlines(keepends=True), (b or "").splitlines(keepends=True),
                                      f"{name} (checkpoint)", f"{name} (now)")
    return "".join(line if line.endswith("\n") else line + "\n" for line in lines)


def check_spec(resumed: Resumed, spec, allow_changed: bool, warn: Callable[[str], None]) -> None:
    """Refuse a resume whose spec text (files and --set overrides) differs, unless allowed."""
    diff = spec_diff(resumed.state["spec"], spec)
    if not diff:
        return
    if allow_changed:
        warn(f"resuming with a changed spec (--allow-changed-spec):\n{diff}")
        return
    raise error("E912", f"--resume: the spec differs from the one {resumed.path} was trained with:\n{diff}",
                _span(spec), "resume with the same spec and --set values, or pass --allow-changed-spec "
                             "for a safe change such as more epochs or steps")


def rng_state(generator: torch.Generator | None) -> dict:
    """Every random state, as tensors and plain values (loadable with weights_only=True)."""
    version, internal, gauss = random.getstate()
    name, key, pos, has_gauss, cached = np.random.get_state()
    state = {"python": {"version": version, "state": list(internal), "gauss": gauss},
             "numpy": {"name": name, "key": torch.from_numpy(key.astype(np.int64)), "pos": int(pos),
                       "has_gauss": int(has_gauss), "cached_gaussian": float(cached)},
             "torch": torch.get_rng_state()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    if generator is not None:
        state["augment"] = generator.get_state()
    return state


def set_rng_state(rng: dict, generator: torch.Generator | None) -> None:
    """Put back every random stream saved by rng_state."""
    py = rng["python"]
    random.setstate((py["version"], tuple(py["state"]), py["gauss"]))
    npy = rng["numpy"]
    np.random.set_state((npy["name"], npy["key"].numpy().astype(np.uint32), npy["pos"], npy["has_gauss"],
                         npy["cached_gaussian"]))
    torch.set_rng_state(rng["torch"])
    if "cuda" in rng and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(rng["cuda"])
    if generator is not None and "augment" in rng:
        generator.set_state(rng["augment"])


def restore(state: dict, *, model, optimizer, scheduler, scaler, generator, best, stopper, spec=None) -> None:
    """Load a checkpoint's training state into freshly assembled objects (RNG last: nothing
    may draw random numbers between this and the first resumed step). A checkpoint that does
    not fit (a spec changed under --allow-changed-spec) is a located error, E913."""
    def refuse(what: str, detail: str, span: Span | None):
        return error("E913", f"--resume: the checkpoint's {what} does not fit this spec: {detail}",
                     span or _span(spec), "--allow-changed-spec takes changes that keep every parameter and the "
                     "optimizer (more epochs or steps, another lr or schedule); for another model, train afresh")
    if misfits := _model_misfits(state["model"], model.state_dict()):
        more = f" (and {len(misfits) - 3} more)" if len(misfits) > 3 else ""
        raise refuse("model", "; ".join(misfits[:3]) + more, getattr(spec.model, "span", None) if spec else None)
    saved, now = state["optimizer"].get("param_groups", []), optimizer.state_dict()["param_groups"]
    settings = [(set(g) - {"params"}, len(g["params"])) for g in saved], [(set(g) - {"params"}, len(g["params"])) for g in now]
    if settings[0] != settings[1]:
        only_saved = sorted(set().union(*(k for k, _ in settings[0])) - set().union(*(k for k, _ in settings[1])))
        only_now = sorted(set().union(*(k for k, _ in settings[1])) - set().union(*(k for k, _ in settings[0])))
        detail = (f"it was written by an optimizer with {', '.join(only_saved)}; this spec's has {', '.join(only_now)}"
                  if only_saved or only_now else f"{len(saved)} parameter group(s) then, {len(now)} now")
        raise refuse("optimizer", detail, spec.optimizer.span if spec and spec.optimizer else None)
    try:
        optimizer.load_state_dict(state["optimizer"])
        if scheduler is not None and state.get("schedule") is not None:
            scheduler.load_state_dict(state["schedule"])
        if scaler is not None and state.get("scaler") is not None:
            scaler.load_state_dict(state["scaler"])
    except (RuntimeError, ValueError, KeyError, TypeError) as err:
        raise refuse("optimizer, schedule or scaler state", str(err).splitlines()[0], None) from None
    model.load_state_dict(state["model"])
    for tracker, saved in ((best, state.get("best")), (stopper, state.get("early_stop"))):
        if tracker is not None and saved and saved.get("name") == tracker.name:
            tracker.value, tracker.epoch, tracker.wait = saved["value"], saved["epoch"], saved["wait"]
    set_rng_state(state["rng"], generator)


def _model_misfits(saved: dict, current: dict) -> list[str]:
    """How a checkpoint's weights differ from the model's, one phrase per parameter."""
    out = [f"{k} is {list(saved[k].shape)} in the checkpoint, {list(v.shape)} here"
           for k, v in current.items() if k in saved and tuple(saved[k].shape) != tuple(v.shape)]
    out += [f"{k} is new" for k in current if k not in saved]
    out += [f"{k} is gone" for k in saved if k not in current]
    return out


def say(message: str) -> None:
    print(f"nnspec: {message}", file=sys.stderr, flush=True)


def resume_sample(state: dict, batch_size: int) -> int:
    """Samples of the checkpoint's epoch already read (older checkpoints count batches)."""
    if "sample" in state:
        return int(state["sample"])
    return int(state["batch"]) * batch_size * int(state.get("world_size", 1))


def partial(state: dict) -> dict[str, Any]:
    """The partial-epoch sums of a mid-epoch checkpoint (zeros at an epoch boundary)."""
    p = state.get("partial_epoch") or {}
    return {"loss_total": float(p.get("loss_total", 0.0)), "loss_count": int(p.get("loss_count", 0)),
            "samples": int(p.get("samples", 0)), "last_finite": p.get("last_finite")}

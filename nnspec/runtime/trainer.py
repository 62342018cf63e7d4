"""The training loop. It reads top to bottom: `_train` sets up (`_set_up`), then for each epoch
runs its optimizer steps (`_train_epoch`, with `_after_step`: log points, step checkpoints,
signals) and ends it (`_end_epoch`: validation, the row, best and early stopping, epoch
checkpoints), then finishes (`_finish`: test, summary, last checkpoint, weights). The state
lives in small named objects: Position, LossLog, NanGuard, BestTracker/EarlyStopping and
Checkpointer (runtime/loop_state.py), and the Stepper that turns batches into optimizer steps
(runtime/optimizer_step.py); `_Loop` holds them for one run.

The step never waits for the device. Each micro-batch's loss is kept as a detached device
tensor in the LossLog's window, read (one sync) only at log points: every `log_every`
optimizer steps (auto: a tenth of an epoch, at least 10 steps) and at the end of each epoch.
Metrics accumulate on the device. Training metrics are only computed when something monitors
one (`train_accuracy`): updating them costs a few kernels per step.

Non-finite losses (`on_nan`):
  stop  checked at log points only. When it fires, the steps between the first bad loss and the
        log point have already run (their updates are garbage, but the run stops anyway); the
        error still names the first bad step exactly, since the window keeps every step's loss.
  skip  must know before each optimizer step, so it reads one flag per micro-batch: free on
        CPU, where kernels run synchronously; one device sync per step on accelerators. A
        skipped step still counts as a step (schedules and `train.steps` count iterations).
        Only the loss is checked; with fp16 the GradScaler also skips steps with inf gradients.
        With a closure optimizer (lbfgs) the loss is only known inside the step: skip acts as stop.

Monitoring: `train.monitor` picks best.pt, `early_stop` its own metric; names are train_loss,
val_loss, val_<key>, train_<key> for each key a metric declares (`Component.reported`, the names
the check matched exactly). Without a validation split a val_* name falls
back to its train_* twin. The test split is evaluated once, with the final weights.
"""
from __future__ import annotations

import functools
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import torch
from torch import nn

from nnspec.registry.catalog import CREATE_GRAPH, FULL_BATCH, NEEDS_CLOSURE, NEEDS_METRIC
from nnspec.runtime import distributed
from nnspec.runtime.assemble import Built, assemble, require_trainable, spec_errors
from nnspec.runtime.batching import mix_seed
from nnspec.runtime.evaluation import evaluate_split, metric_values, preflight
from nnspec.runtime.loop_state import BestTracker, Checkpointer, EarlyStopping, LossLog, NanGuard, Position
from nnspec.runtime.optimizer_step import Stepper
from nnspec.runtime.outputs import RunDir, default_run_dir
from nnspec.runtime.progress import Progress, make_progress
from nnspec.runtime.signals import TrainingInterrupted
from nnspec.runtime.threads import Threads, choose as choose_threads, kept as threads_kept
from nnspec.runtime.resume import rng_state, spec_record
from nnspec.spec.settings import Spec

_AUGMENT_TAG = 0xA06


@dataclass
class Result:
    history: list[dict]                 # one row per epoch (what metrics.jsonl holds)
    model: nn.Module                    # the final model (on the run's device)
    test_metrics: dict                  # {"loss": ..., "accuracy": ...}; empty without a test split
    out_dir: Path | None
    best: float | None                  # best value of the monitored metric
    summary: dict = field(default_factory=dict)
    built: Built | None = None


def train(spec: Spec, *, out_dir: str | Path | bool | None = None, progress: "bool | None | Progress" = None,
          resume: str | Path | bool | None = None, allow_changed_spec: bool = False,
          handle_signals: bool = False, force: bool = False) -> Result:
    """Train a checked spec. `out_dir`: the run folder (None: runs/<stem>-<time>; False: none);
    one that holds files is refused unless resuming or `force` (start afresh, deleting them).
    `resume`: a checkpoint file or run folder (True: `out_dir`, else the newest runs/<stem>-*;
    no checkpoint yet: start fresh), see runtime/resume.py. `handle_signals`: SIGINT/SIGTERM
    checkpoint after the current step and raise TrainingInterrupted (runtime/signals.py).
    Raises NnspecError (located in the spec) for missing sections, bad data, a diverging loss."""
    from nnspec.runtime import resume as _resume
    from nnspec.runtime.signals import StopFlag
    with spec_errors(spec), StopFlag(handle_signals) as stop_flag, threads_kept():
        resumed = _resume.plan(spec, resume, out_dir, force)      # None: a fresh run
        if resumed is not None:
            for why in resumed.skipped:
                _resume.say(f"skipping {why}")
            _resume.check_spec(resumed, spec, allow_changed_spec, _resume.say)
            then, now = resumed.state.get("world_size", 1), distributed.world().size
            if then != now and distributed.world().is_main:
                _resume.say(f"the checkpoint was written by {then} process(es), this run has {now}: the rest "
                            "of the epoch is batched for this run (each sample still read once); the global "
                            "batch, and so the meaning of a step, changes with the number of processes")
            _resume.say(f"resuming from {resumed.path} (epoch {resumed.state['epoch'] + 1}, "
                        f"batch {resumed.state['batch']}, step {resumed.state['step']})")
            out_dir = resumed.run_dir
        return _train(spec, out_dir, progress, resumed, stop_flag)



@dataclass
class _Loop:
    """What the phases of one run share: the built run (set up once) and its state objects."""
    spec: Spec
    b: Built
    forwards: distributed.Forwards
    scaler: Any
    generator: torch.Generator | None
    run: RunDir | None
    display: Progress
    stop_vote: distributed.StopVote
    stop_flag: Any
    split: Any                              # this rank's part of each global batch
    train_metrics: list
    val_metrics: list
    lr: Callable[[], float]                 # the lr shown: the default parameter group's
    per_epoch_lr: bool
    log_every: int                          # optimizer steps between log points
    guard: NanGuard
    best: BestTracker
    stopper: EarlyStopping | None
    stepper: Stepper
    saver: Checkpointer | None = None       # set once the loop exists (it saves the loop's state)
    pos: Position = field(default_factory=Position)
    start_epoch: int = 0
    log: LossLog | None = None              # the current epoch's losses
    history: list[dict] = field(default_factory=list)
    resume_sample: int = 0                  # samples of the first epoch's order already read
    carried: dict | None = None             # a mid-epoch checkpoint's partial-epoch sums
    samples: int = 0                        # training samples read, all epochs
    train_seconds: float = 0.0
    threads: Threads | None = None          # the run's CPU thread count (runtime/threads.py)


def _train(spec: Spec, out_dir, progress, resumed=None, stop_flag=None) -> Result:
    # ---- set up ---------------------------------------------------------------------------------
    t_start = time.perf_counter()
    require_trainable(spec)
    b = assemble(spec)
    preflight(b)
    distributed.check_supported(b.flags, NEEDS_CLOSURE, CREATE_GRAPH, spec.train.span)
    forwards = distributed.prepare(b.model, b.device, compile=spec.train.compile, seed=spec.train.seed)
    loop = _set_up(spec, b, forwards, out_dir, progress, resumed, stop_flag)
    t_setup = time.perf_counter() - t_start
    t_loop = time.perf_counter()
    stop_reason = "epochs"
    try:
        # ---- epochs: steps, log points, epoch end -------------------------------------------------
        for epoch in range(loop.pos.epoch, b.epochs):
            steps_reached = _train_epoch(loop, epoch)
            early = _end_epoch(loop, epoch)
            if steps_reached:
                stop_reason = "steps"
                break
            if early:
                stop_reason = "early_stop"
                loop.display.message(loop.stopper.message())
                break
        t_loop = time.perf_counter() - t_loop
        # ---- finish: test, outputs ----------------------------------------------------------------
        test, summary = _finish(loop, stop_reason, {"setup": t_setup, "loop": t_loop}, t_start)
    except TrainingInterrupted:
        # Every rank stopped after the same step (the vote), so they leave the group together, as
        # at a normal end. A process that exits still in the group can abort in gloo's thread
        # teardown ("terminate called without an active exception", seen under load in CI).
        forwards = None
        _leave_group(loop)
        raise
    finally:
        loop.display.close()
        if loop.run is not None:
            loop.run.close()
    result = Result(loop.history, b.model, test, loop.run.path if loop.run else None, loop.best.value, summary, b)
    forwards = None
    _leave_group(loop)                # every rank waits until rank 0 has written its outputs
    return result


def _leave_group(loop: _Loop) -> None:
    """DDP's reducer must go before its process group: when it holds the group's last reference it
    destroys the group with the GIL held, while a gloo thread needs the GIL to free a finished
    collective's tensors, and the process hangs at exit (seen under load in CI)."""
    loop.forwards = loop.stepper = None
    distributed.finish()


def _set_up(spec: Spec, b: Built, forwards, out_dir, progress, resumed, stop_flag) -> _Loop:
    """Everything the loop needs, in the order the run draws on it; a resumed run's state last."""
    cfg = spec.train
    is_main = distributed.world().is_main         # only rank 0 prints and writes the run folder
    generator = None
    if b.augment is not None:
        generator = torch.Generator(device=b.device if b.device.type == "cuda" else "cpu")
        generator.manual_seed(mix_seed(cfg.seed, _AUGMENT_TAG, *distributed.rank_key()))
    notes = [b.runtime.note] if b.runtime.note else []
    best, stopper = _monitors(spec, b, notes)
    wanted = {best.name} | ({stopper.name} if stopper else set())
    train_metrics = list(b.metrics.values()) if any(w.startswith("train_") and w != "train_loss"
                                                     for w in wanted) else []
    shown = next((i for i, g in enumerate(b.optimizer.param_groups) if g.get("name") == "default"), 0)

    def lr() -> float:        # param_groups is read each time: loading a checkpoint replaces it
        return b.optimizer.param_groups[shown]["lr"]

    split = distributed.shard(b.data.train)
    threads = choose_threads(cfg.threads, b, split, spec.model, seed=cfg.seed, world_size=distributed.world().size,
                             resumed_state=resumed.state if resumed else None)
    guard = NanGuard(cfg.on_nan == "skip" and NEEDS_CLOSURE not in b.flags, cfg.accumulate, spec.loss.span, lr)
    scaler = b.runtime.scaler()
    per_epoch_lr = spec.schedule is not None and spec.schedule.interval == "epoch"
    loop = _Loop(spec, b, forwards, scaler, generator, None, make_progress(progress if is_main else False),
                 distributed.StopVote(stop_flag), stop_flag, split, train_metrics, list(b.metrics.values()), lr,
                 per_epoch_lr, cfg.log_every or max(10, math.ceil(b.steps_per_epoch / 10)), guard, best, stopper,
                 Stepper(b, forwards, scaler, train_metrics, guard, split, per_epoch_lr))
    loop.saver = Checkpointer(None, cfg.checkpoint, functools.partial(_checkpoint_state, loop))
    if resumed is not None:
        _resume(loop, resumed.state)
    run = None              # after the restore: a checkpoint that does not fit leaves the folder as it was
    if out_dir is not False and is_main:
        run = RunDir(out_dir if out_dir not in (None, True) else default_run_dir(spec.path), spec,
                     history=resumed.state["history"] if resumed else None,
                     resumed_step=resumed.state["step"] if resumed else None)
    loop.run = loop.saver.run = run
    loop.threads = threads
    info = (f"training {Path(spec.path).name} on {b.runtime.describe()}{threads.describe()}{distributed.describe()}: "
            f"{len(split):,} training samples, {b.steps_per_epoch} steps per epoch"
            + (f", run folder {run.path}" if run else ""))
    loop.display.start(epochs=b.epochs, steps_per_epoch=b.steps_per_epoch, info=info)
    for note in dict.fromkeys(notes):
        loop.display.message(note)
    return loop


def _observes(spec: Spec) -> bool:
    """A schedule link driven by the monitored metric (reduce_on_plateau) is fed it each epoch."""
    return spec.schedule is not None and any(NEEDS_METRIC in link.component.flags for link in spec.schedule.links)


def _monitors(spec: Spec, b: Built, notes: list[str]) -> tuple[BestTracker, EarlyStopping | None]:
    """The metric that picks best.pt and the one early stopping watches. Without a validation
    split a val_* name falls back to its train_* twin."""
    cfg = spec.train

    def monitored(name: str) -> str:
        if b.data.val is None and name.startswith("val_"):
            if name != "val_loss" or cfg.early_stop is not None:      # not just the default
                notes.append(f"no validation split: monitoring train_{name[4:]} instead of {name}")
            return "train_" + name[4:]
        return name

    best = BestTracker(monitored(cfg.monitor), cfg.monitor_mode)
    stopper = None
    if (es := cfg.early_stop) is not None:
        stopper = EarlyStopping(monitored(es.monitor), es.mode, es.min_delta, es.patience)
    return best, stopper


def _resume(loop: _Loop, state: dict) -> None:
    """Put a checkpoint's state into the freshly built run (RNG last: nothing may draw random
    numbers between this and the first resumed step)."""
    from nnspec.runtime.resume import partial, restore, resume_sample
    b = loop.b
    restore(state, model=b.model, optimizer=b.optimizer, scheduler=b.scheduler, scaler=loop.scaler,
            generator=loop.generator, best=loop.best, stopper=loop.stopper, spec=loop.spec)
    loop.history = list(state["history"])
    loop.pos = Position(epoch=state["epoch"], step=state["step"])
    loop.start_epoch = state["epoch"]
    loop.guard.skips = state.get("nan_skips", 0)
    loop.saver.last_saved = state["step"]
    loop.resume_sample = resume_sample(state, b.batch_size)
    loop.carried = partial(state) if loop.resume_sample else None
    distributed.reseed_after_resume(loop.spec.train.seed, loop.pos.step, loop.generator)
    loop.guard.last_finite = loop.carried["last_finite"] if loop.carried else None


def _checkpoint_state(loop: _Loop, epoch: int, batch: int, step: int) -> dict:
    """A checkpoint's contents (runtime/resume.py reads them back). `batch` > 0: mid-epoch."""
    b, spec = loop.b, loop.spec
    return {"format": 1, "world_size": distributed.world().size, "threads": loop.threads.count,
            "model": b.model.state_dict(),
            "optimizer": b.optimizer.state_dict(),
            "schedule": b.scheduler.state_dict() if b.scheduler is not None else None,
            "scaler": loop.scaler.state_dict() if loop.scaler is not None else None,
            "epoch": epoch, "batch": batch, "sample": loop.pos.sample if batch else 0, "step": step,
            "rng": rng_state(loop.generator), "history": list(loop.history), "best": loop.best.state(),
            "early_stop": loop.stopper.state() if loop.stopper else None, "nan_skips": loop.guard.skips,
            "partial_epoch": loop.log.partial(loop.guard) if batch else None,
            "norm": b.data.norm, "spec": spec_record(spec)}


def _train_epoch(loop: _Loop, epoch: int) -> bool:
    """One epoch of optimizer steps; True when `train.steps` is reached."""
    b, pos, stepper, spec = loop.b, loop.pos, loop.stepper, loop.spec
    loop.display.epoch_start(epoch + 1)
    pos.epoch, pos.batch = epoch, 0
    pos.sample = loop.resume_sample if epoch == loop.start_epoch else 0   # samples of the order read
    for m in loop.train_metrics:
        m.reset()
    loop.log = log = LossLog(epoch, pos.step)
    if pos.sample and loop.carried:       # mid-epoch resume: the lr came back with the optimizer
        c = loop.carried
        log.total, log.count, log.samples = c["loss_total"], c["loss_count"], c["samples"]
        pos.batch = pos.sample // (b.batch_size * distributed.world().size)
    elif b.scheduler is not None and loop.per_epoch_lr:
        b.set_lr(pos.step)
    full_batch = FULL_BATCH in b.flags
    drop_last, shuffle = spec.data.drop_last and not full_batch, spec.data.shuffle and not full_batch
    batches = loop.split.batches(b.batch_size, shuffle=shuffle, epoch=epoch, seed=spec.train.seed,
                                 device=b.device, drop_last=drop_last, start_sample=pos.sample)
    still = loop.split.batch_count(b.batch_size, drop_last, pos.sample)   # batches still to come
    global_batch = b.batch_size * distributed.world().size
    reached = False
    for x, y in batches:
        pos.batch += 1
        still -= 1
        log.samples += x.shape[0]
        pos.sample = min(len(b.data.train), pos.sample + global_batch)
        if b.augment is not None:
            x = b.augment(x, loop.generator)
        if stepper.feed(x, y, log, bool(still), pos.step) and (reached := _after_step(loop)):
            break
    if stepper.micro and not reached:     # leftover micro-batches of an accumulation
        stepper.finish()
        reached = _after_step(loop)
    log.flush(pos.step, loop.guard)
    return reached


def _after_step(loop: _Loop) -> bool:
    """Log points, step checkpoints and signals after each optimizer step; True when
    `train.steps` is reached."""
    pos, log, cfg = loop.pos, loop.log, loop.spec.train
    pos.step += 1
    if pos.step % loop.log_every == 0:
        log.flush(pos.step, loop.guard)
        loop.display.update(batch=pos.step - log.first_step, loss=log.running_mean(), lr=loop.lr(),
                            samples_per_s=log.samples_per_s())
    if loop.saver.step_due(pos.step):
        log.flush(pos.step, loop.guard)
        loop.saver.save_step(pos)
    if loop.stop_vote():                  # SIGINT/SIGTERM (agreed by all ranks): save, then stop
        log.flush(pos.step, loop.guard)
        saved = loop.saver.save_interrupted(pos)
        raise TrainingInterrupted(loop.stop_flag.requested or "a signal to another process", pos.step, saved,
                                  loop.run.path if loop.run else None)
    return cfg.steps is not None and pos.step >= cfg.steps


def _end_epoch(loop: _Loop, epoch: int) -> bool:
    """Validation, the epoch's row, best and early stopping, checkpoints; True to stop early."""
    b, log, pos = loop.b, loop.log, loop.pos
    t_train = time.perf_counter() - log.started
    loop.samples += log.samples
    loop.train_seconds += t_train
    row: dict[str, Any] = {"epoch": epoch + 1, "step": pos.step, "lr": loop.lr(), "train_loss": log.mean()}
    distributed.merge_metrics(loop.train_metrics)
    if loop.train_metrics:
        row.update({f"train_{k}": v for k, v in metric_values(b.metric_uses, loop.train_metrics).items()})
    if b.data.val is not None:
        val = evaluate_split(loop.forwards.eval, b.model, b.data.val, b.loss, loop.val_metrics, b, _eval_batch(loop))
        row.update({f"val_{k}": v for k, v in val.items()})
    if loop.guard.skip:
        row["nan_skips"] = loop.guard.skips
    row["train_seconds"] = t_train
    row["samples_per_s"] = log.samples / t_train if t_train > 0 else math.nan
    row = distributed.sync_row(row, log.total, log.count, log.samples, t_train, b.device)
    value = loop.best.value_in(row)
    if _observes(loop.spec):
        b.scheduler.observe(value)          # the check matched the monitor against declared keys
    improved = loop.best.update(value, epoch + 1)
    if loop.stopper is not None:
        loop.stopper.update(loop.stopper.value_in(row), epoch + 1)
    row["seconds"] = time.perf_counter() - log.started
    loop.history.append(row)
    if loop.run is not None:
        loop.run.log_row(row)
    loop.display.epoch_end(row)
    loop.saver.save_epoch(epoch + 1, pos.step, improved, b.model)
    return loop.stopper is not None and loop.stopper.due


def _eval_batch(loop: _Loop) -> int:
    return loop.spec.data.eval_batch_size or loop.spec.data.batch_size


def _finish(loop: _Loop, stop_reason: str, seconds: dict, t_start: float) -> tuple[dict, dict]:
    """The test split (once, with the final weights), the summary, the last checkpoint, weights."""
    b, spec = loop.b, loop.spec
    t_test = time.perf_counter()
    test = (evaluate_split(loop.forwards.eval, b.model, b.data.test, b.loss, loop.val_metrics, b, _eval_batch(loop))
            if b.data.test is not None else {})
    t_test = time.perf_counter() - t_test
    last = loop.history[-1] if loop.history else {}
    summary = {
        "train": {"loss": last.get("train_loss"),
                  **{k[6:]: v for k, v in last.items() if k.startswith("train_") and k not in
                     ("train_loss", "train_seconds")}},
        "val": {k[4:]: v for k, v in last.items() if k.startswith("val_")},
        "test": test,
        "best": loop.best.state(),
        "epochs": len(loop.history), "steps": loop.pos.step, "stopped": stop_reason, "nan_skips": loop.guard.skips,
        "device": str(b.device), "precision": b.runtime.precision, "threads": loop.threads.record(), "spec": spec.path, "digest": spec.digest,
        "seconds": {**seconds, "test": t_test, "total": time.perf_counter() - t_start},
        "samples_per_s": loop.samples / loop.train_seconds if loop.train_seconds > 0 else None,
    }
    if loop.run is not None:
        loop.saver.save_final(len(loop.history), loop.pos.step)
        loop.run.save_weights(b.model, {"nnspec_spec": Path(spec.path).name, "nnspec_digest": spec.digest})
        loop.run.write_summary(summary)
    loop.display.finish(summary)
    loop.stop_vote.close()
    return test, summary

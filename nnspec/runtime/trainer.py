"""The training loop. It reads top to bottom: set up → epochs (steps, log points, epoch end) →
test → outputs.

The step never waits for the device. Each micro-batch's loss is kept as a detached device
tensor in `window`, and the window is read (one sync) only at log points: every `log_every`
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
val_loss, val_<metric key>, train_<metric key>. Without a validation split a val_* name falls
back to its train_* twin. The test split is evaluated once, with the final weights.
"""
from __future__ import annotations

import math
import time
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from nnspec.spec.settings import Spec
from nnspec.errors import error
from nnspec.registry.catalog import CREATE_GRAPH, FULL_BATCH, NEEDS_CLOSURE
from nnspec.runtime import distributed
from nnspec.runtime.assemble import Built, assemble, require_trainable, spec_errors
from nnspec.runtime.batching import mix_seed
from nnspec.runtime.evaluation import evaluate_split, preflight
from nnspec.runtime.resume import rng_state
from nnspec.runtime.outputs import RunDir, default_run_dir, overrides_of
from nnspec.runtime.progress import Progress, make_progress
from nnspec.runtime.threads import choose as choose_threads, kept as threads_kept

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


class _Best:
    """The best value so far of one monitored metric, and epochs since it last improved."""

    def __init__(self, name: str, mode: str, min_delta: float = 0.0):
        self.name, self.mode, self.min_delta = name, mode, min_delta
        self.value: float | None = None
        self.epoch: int | None = None
        self.wait = 0

    def update(self, value: Any, epoch: int) -> bool:
        ok = isinstance(value, (int, float)) and math.isfinite(value)
        if ok and (self.value is None or (value < self.value - self.min_delta if self.mode == "min"
                                          else value > self.value + self.min_delta)):
            self.value, self.epoch, self.wait = float(value), epoch, 0
            return True
        self.wait += 1
        return False

    def state(self) -> dict:
        return {"name": self.name, "mode": self.mode, "value": self.value, "epoch": self.epoch, "wait": self.wait}


def train(spec: Spec, *, out_dir: str | Path | bool | None = None, progress: "bool | None | Progress" = None,
          resume: str | Path | bool | None = None, allow_changed_spec: bool = False,
          handle_signals: bool = False) -> Result:
    """Train a checked spec. `out_dir`: the run folder (None: runs/<stem>-<time>; False: none).
    `resume`: a checkpoint file or run folder (True: `out_dir`, else the newest runs/<stem>-*),
    see runtime/resume.py. `handle_signals`: SIGINT/SIGTERM checkpoint after the current step
    and raise TrainingInterrupted (runtime/signals.py).
    Raises NnspecError (located in the spec) for missing sections, bad data, a diverging loss."""
    from nnspec.runtime.signals import StopFlag
    with spec_errors(spec), StopFlag(handle_signals) as stop_flag, threads_kept():
        resumed = None
        if resume not in (None, False):
            from nnspec.runtime import resume as _resume
            resumed = _resume.locate(spec, resume, out_dir if out_dir is not False else None)
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


def _train(spec: Spec, out_dir, progress, resumed=None, stop_flag=None) -> Result:
    # ---- set up ---------------------------------------------------------------------------------
    t_start = time.perf_counter()
    require_trainable(spec)
    cfg = spec.train
    b = assemble(spec)
    preflight(b)
    model, opt, sched, loss_fn, runtime = b.model, b.optimizer, b.scheduler, b.loss, b.runtime
    data, device = b.data, b.device
    distributed.check_supported(b.flags, NEEDS_CLOSURE, CREATE_GRAPH, cfg.span)
    forwards = distributed.prepare(model, device, compile=cfg.compile, seed=cfg.seed)  # DDP/compile
    fwd, eval_fwd = forwards.train, forwards.eval
    is_main = distributed.world().is_main         # only rank 0 prints and writes the run folder
    params = [p for g in opt.param_groups for p in g["params"]]
    groups = opt.param_groups
    closure_opt = NEEDS_CLOSURE in b.flags
    create_graph = CREATE_GRAPH in b.flags
    full_batch = FULL_BATCH in b.flags
    acc = cfg.accumulate
    scaler = runtime.scaler()
    autocast = runtime.autocast_dtype is not None
    skip_nan = cfg.on_nan == "skip" and not closure_opt
    per_epoch_lr = spec.schedule is not None and spec.schedule.interval == "epoch"
    shown_group = next((i for i, g in enumerate(groups) if g.get("name") == "default"), 0)
    augment = b.augment
    generator = None
    if augment is not None:
        generator = torch.Generator(device=device if device.type == "cuda" else "cpu")
        generator.manual_seed(mix_seed(cfg.seed, _AUGMENT_TAG, *distributed.rank_key()))

    # what is monitored; a val_* name falls back to train_* when there is no validation split
    notes = [runtime.note] if runtime.note else []

    def monitored(name: str) -> str:
        if data.val is None and name.startswith("val_"):
            if name != "val_loss" or cfg.early_stop is not None:      # not just the default
                notes.append(f"no validation split: monitoring train_{name[4:]} instead of {name}")
            return "train_" + name[4:]
        return name

    best = _Best(monitored(cfg.monitor), cfg.monitor_mode)
    stopper = None
    if cfg.early_stop is not None:
        es = cfg.early_stop
        stopper = _Best(monitored(es.monitor), es.mode, es.min_delta)
    wanted = {best.name} | ({stopper.name} if stopper else set())
    train_metrics = list(b.metrics.values()) if any(w.startswith("train_") and w != "train_loss"
                                                     for w in wanted) else []
    val_metrics = list(b.metrics.values())
    aliases: dict[str, str] = {}     # `val_top_k` → `val_top5_accuracy`: names the checker accepts
    for use, m in zip(b.metric_uses, val_metrics):
        try:
            first = next(iter(m.compute()), use.name)    # an empty metric still names its keys
        except Exception:                                # a plugin metric that cannot compute empty
            first = use.name
        for prefix in ("train_", "val_"):
            aliases[prefix + use.name] = prefix + first

    ck = cfg.checkpoint
    run = None
    if out_dir is not False and is_main:
        run = RunDir(out_dir if out_dir not in (None, True) else default_run_dir(spec.path), spec,
                     history=resumed.state["history"] if resumed else None)
    checkpointing = run is not None and (ck.every_epochs is not None or ck.every_steps is not None)
    display = make_progress(progress if is_main else False)

    steps_per_epoch, epochs = b.steps_per_epoch, b.epochs
    max_steps = cfg.steps
    log_every = cfg.log_every or max(10, math.ceil(steps_per_epoch / 10))
    eval_batch = spec.data.eval_batch_size or spec.data.batch_size
    split = distributed.shard(data.train)         # this rank's part of each global batch
    drop_last = spec.data.drop_last and not full_batch
    shuffle = spec.data.shuffle and not full_batch
    threads = choose_threads(cfg.threads, b, split, seed=cfg.seed, world_size=distributed.world().size,
                             resumed_state=resumed.state if resumed else None)     # runtime/threads.py

    def checkpoint_state(epoch: int, batch: int, step: int, history: list) -> dict:
        return {"format": 1, "world_size": distributed.world().size, "threads": threads.count,
                "model": model.state_dict(), "optimizer": opt.state_dict(),
                "schedule": sched.state_dict() if sched is not None else None,
                "scaler": scaler.state_dict() if scaler is not None else None,
                "epoch": epoch, "batch": batch, "sample": consumed if batch else 0, "step": step, "rng": rng_state(generator),
                "history": list(history), "best": best.state(),
                "early_stop": stopper.state() if stopper else None, "nan_skips": nan_skips,
                "partial_epoch": {"loss_total": loss_total, "loss_count": loss_count, "samples": samples,
                                  "last_finite": last_finite}
                if batch else None,
                "norm": data.norm, "spec": {"path": spec.path, "digest": spec.digest, "sources": dict(spec.sources),
                                            "overrides": overrides_of(spec)}}

    def set_lr(at: int) -> None:
        for g in groups:
            g["lr"] = sched.lr(at, g["initial_lr"])

    clipping = cfg.clip_grad_norm is not None or cfg.clip_grad_value is not None

    def optimizer_step() -> None:
        if scaler is not None:
            if clipping:
                scaler.unscale_(opt)
                clip_grads()
            scaler.step(opt)
            scaler.update()
        else:
            if clipping:
                clip_grads()
            opt.step()
        for p in params:            # what zero_grad(set_to_none=True) does, without its profiler hooks
            p.grad = None
        if cfg.clip_weights is not None:
            clip_weights()

    def finish_accumulation() -> None:
        """The optimizer step at the end of an accumulation, or with `on_nan skip` and a
        non-finite loss or gradient (a finite loss can still have one), a skipped step."""
        nonlocal bad_step, nan_skips
        if bad_step or (skip_nan and scaler is None and not grads_finite()):
            opt.zero_grad(set_to_none=True)
            nan_skips += 1
            bad_step = False
        else:
            optimizer_step()

    def grads_finite() -> bool:
        """One sync: the fp16 scaler does this itself; `on_nan skip` syncs every step anyway."""
        grads = [p.grad for p in params if p.grad is not None]
        return not grads or bool(torch.stack([torch.isfinite(g).all() for g in grads]).all())

    def clip_grads() -> None:
        if cfg.clip_grad_norm is not None:
            nn.utils.clip_grad_norm_(params, cfg.clip_grad_norm)
        if cfg.clip_grad_value is not None:
            nn.utils.clip_grad_value_(params, cfg.clip_grad_value)

    def clip_weights() -> None:
        with torch.no_grad():
            for p in params:
                p.clamp_(-cfg.clip_weights, cfg.clip_weights)

    def closure_for(x, y):
        first = [True]

        def closure():
            opt.zero_grad(set_to_none=True)
            with runtime.autocast():
                out = fwd(x)
                loss = loss_fn(out, y)
            if first[0] and train_metrics:
                for m in train_metrics:
                    m.update(out, y)
            first[0] = False
            loss.backward(create_graph=create_graph)
            if clipping:
                clip_grads()
            return loss
        return closure

    # ---- the loop -------------------------------------------------------------------------------
    history: list[dict] = []
    step, nan_skips, stop_reason = 0, 0, "epochs"
    total_samples, total_train_seconds, last_saved = 0, 0.0, -1
    last_finite: float | None = None
    info = (f"training {Path(spec.path).name} on {runtime.describe()}{threads.describe()}{distributed.describe()}: {len(split):,} training samples, "
            f"{steps_per_epoch} steps per epoch" + (f", run folder {run.path}" if run else ""))
    display.start(epochs=epochs, steps_per_epoch=steps_per_epoch, info=info)
    stop_vote = distributed.StopVote(stop_flag)
    for note in dict.fromkeys(notes):
        display.message(note)
    start_epoch, start_sample, carried = 0, 0, None     # where a resumed run picks up
    global_batch = b.batch_size * distributed.world().size
    if resumed is not None:
        from nnspec.runtime.resume import partial, restore, resume_sample
        state = resumed.state
        restore(state, model=model, optimizer=opt, scheduler=sched, scaler=scaler, generator=generator,
                best=best, stopper=stopper, spec=spec)
        groups = opt.param_groups                  # load_state_dict replaces the list
        history = list(state["history"])
        step, nan_skips, last_saved = state["step"], state.get("nan_skips", 0), state["step"]
        start_epoch, start_sample = state["epoch"], resume_sample(state, b.batch_size)
        carried = partial(state) if start_sample else None
        distributed.reseed_after_resume(cfg.seed, step, generator)
        last_finite = carried["last_finite"] if carried else None
    t_setup = time.perf_counter() - t_start
    t_loop = time.perf_counter()
    try:
        for epoch in range(start_epoch, epochs):
            # ---- one epoch of optimizer steps ----
            display.epoch_start(epoch + 1)
            t_epoch = time.perf_counter()
            for m in train_metrics:
                m.reset()
            window: list[torch.Tensor] = []         # micro-batch losses since the last log point
            window_step = epoch_first_step = step    # optimizer step of window[0]
            loss_total, loss_count, samples, micro, batch_no, bad_step = 0.0, 0, 0, 0, 0, False
            consumed = start_sample if epoch == start_epoch else 0   # samples of this epoch's order read
            if consumed and carried:          # mid-epoch resume: the lr came back with the optimizer
                loss_total, loss_count, samples, batch_no = (carried["loss_total"], carried["loss_count"],
                                                             carried["samples"], consumed // global_batch)
            elif sched is not None and per_epoch_lr:
                set_lr(step)

            def flush() -> None:
                """Read the window (one sync); stop on a non-finite loss unless skipping."""
                nonlocal window, window_step, loss_total, loss_count, last_finite
                if not window:
                    return
                values = torch.stack(window).tolist()
                for i, v in enumerate(values):
                    if math.isfinite(v):
                        loss_total += v
                        loss_count += 1
                        last_finite = v
                    elif not skip_nan:
                        bad = window_step + i // acc
                        before = "no finite loss before it" if last_finite is None else \
                            f"the last finite loss was {last_finite:.6g}"
                        raise error("E901", f"the loss became {v} at step {bad} (epoch {epoch + 1}); {before}; "
                                            f"lr {groups[shown_group]['lr']:.3g}", spec.loss.span,
                                    "lower the lr, add `clip_grad_norm 1.0`, check the data, or set "
                                    "`on_nan skip` in train { }")
                window, window_step = [], step

            def after_step() -> bool:
                """Bookkeeping after each optimizer step; True when `train.steps` is reached."""
                nonlocal step
                step += 1
                if step % log_every == 0:
                    flush()
                    display.update(batch=step - epoch_first_step, loss=loss_total / max(loss_count, 1),
                                   lr=groups[shown_group]["lr"],
                                   samples_per_s=samples / max(time.perf_counter() - t_epoch, 1e-9))
                if checkpointing and ck.every_steps and step % ck.every_steps == 0:
                    flush()
                    run.save_periodic(checkpoint_state(epoch, batch_no, step, history), epoch + 1, step,
                                      ck.keep_last)
                if stop_vote():                  # SIGINT/SIGTERM (agreed by all ranks): save, then stop
                    from nnspec.runtime.signals import TrainingInterrupted
                    flush()
                    saved = run.save_last(checkpoint_state(epoch, batch_no, step, history)) if run else None
                    raise TrainingInterrupted(stop_flag.requested or "a signal to another process", step, saved,
                                              run.path if run else None)
                return max_steps is not None and step >= max_steps

            batches = split.batches(b.batch_size, shuffle=shuffle, epoch=epoch, seed=cfg.seed, device=device,
                                    drop_last=drop_last, start_sample=consumed)
            stop = False
            still = split.batch_count(b.batch_size, drop_last, consumed)   # batches still to come
            for x, y in batches:
                batch_no += 1
                still -= 1
                samples += x.shape[0]
                consumed = min(len(data.train), consumed + global_batch)
                if augment is not None:
                    x = augment(x, generator)
                if closure_opt:
                    if sched is not None and not per_epoch_lr:
                        set_lr(step)
                    loss = opt.step(closure_for(x, y))
                    if cfg.clip_weights is not None:
                        clip_weights()
                    window.append(loss.detach())
                    if stop := after_step():
                        break
                    continue
                if micro == 0 and sched is not None and not per_epoch_lr:
                    set_lr(step)
                # micro-batches before the last of an accumulation keep their gradients local (DDP)
                with forwards.no_sync() if micro < acc - 1 and still else nullcontext():
                    if autocast:
                        with runtime.autocast():
                            out = fwd(x)
                            loss = loss_fn(out, y)
                    else:
                        out = fwd(x)
                        loss = loss_fn(out, y)
                    if train_metrics:
                        for m in train_metrics:
                            m.update(out, y)
                    if split is not data.train and (weight := distributed.batch_weight(split)) != 1.0:
                        loss = loss * weight              # a short last global batch (distributed.py)
                    window.append(loss.detach())
                    if skip_nan and not distributed.all_finite(loss):
                        bad_step = True
                    else:
                        scaled = loss / acc if acc > 1 else loss
                        if scaler is not None:
                            scaled = scaler.scale(scaled)
                        scaled.backward(create_graph=create_graph)
                micro += 1
                if micro < acc:
                    continue
                micro = 0
                finish_accumulation()
                if stop := after_step():
                    break
            if micro and not stop:            # leftover micro-batches of an accumulation
                finish_accumulation()
                stop = after_step()
            flush()
            t_train = time.perf_counter() - t_epoch
            total_samples += samples
            total_train_seconds += t_train

            # ---- epoch end: validation, row, display, checkpoints, early stopping ----
            row: dict[str, Any] = {"epoch": epoch + 1, "step": step, "lr": groups[shown_group]["lr"],
                                   "train_loss": loss_total / loss_count if loss_count else math.nan}
            distributed.merge_metrics(train_metrics)
            for m in train_metrics:
                row.update({f"train_{k}": v for k, v in m.compute().items()})
            if data.val is not None:
                val = evaluate_split(eval_fwd, model, data.val, loss_fn, val_metrics, b, eval_batch)
                row.update({f"val_{k}": v for k, v in val.items()})
            if skip_nan:
                row["nan_skips"] = nan_skips
            row["train_seconds"] = t_train
            row["samples_per_s"] = samples / t_train if t_train > 0 else math.nan
            row = distributed.sync_row(row, loss_total, loss_count, samples, t_train, device)
            value = row.get(best.name, row.get(aliases.get(best.name, "")))
            if sched is not None and hasattr(sched, "observe"):
                sched.observe(value if value is not None else row["train_loss"])
            improved = best.update(value, epoch + 1)
            early = False
            if stopper is not None:
                stopper.update(row.get(stopper.name, row.get(aliases.get(stopper.name, ""))), epoch + 1)
                early = stopper.wait >= cfg.early_stop.patience
            row["seconds"] = time.perf_counter() - t_epoch
            history.append(row)
            if run is not None:
                run.log_row(row)
            display.epoch_end(row)
            if checkpointing:
                if ck.every_epochs and (epoch + 1) % ck.every_epochs == 0:
                    run.save_periodic(checkpoint_state(epoch + 1, 0, step, history), epoch + 1, step, ck.keep_last)
                    last_saved = step
                if improved and all(bool(torch.isfinite(t).all()) for t in model.state_dict().values()
                                    if t.is_floating_point()):    # never a diverged best.pt
                    run.save_best(checkpoint_state(epoch + 1, 0, step, history))
            if stop:
                stop_reason = "steps"
                break
            if early:
                stop_reason = "early_stop"
                display.message(f"early stop: {stopper.name} did not improve for {stopper.wait} epochs "
                                f"(best {stopper.value:.6g} at epoch {stopper.epoch})")
                break
        t_loop = time.perf_counter() - t_loop

        # ---- test and outputs ----------------------------------------------------------------------
        t_test = time.perf_counter()
        test = evaluate_split(eval_fwd, model, data.test, loss_fn, val_metrics, b, eval_batch) if data.test is not None else {}
        t_test = time.perf_counter() - t_test
        last = history[-1] if history else {}
        summary = {
            "train": {"loss": last.get("train_loss"),
                      **{k[6:]: v for k, v in last.items() if k.startswith("train_") and k not in
                         ("train_loss", "train_seconds")}},
            "val": {k[4:]: v for k, v in last.items() if k.startswith("val_")},
            "test": test,
            "best": best.state(),
            "epochs": len(history), "steps": step, "stopped": stop_reason, "nan_skips": nan_skips,
            "device": str(device), "precision": runtime.precision, "threads": threads.record(),
            "spec": spec.path, "digest": spec.digest,
            "seconds": {"setup": t_setup, "loop": t_loop, "test": t_test,
                        "total": time.perf_counter() - t_start},
            "samples_per_s": total_samples / total_train_seconds if total_train_seconds > 0 else None,
        }
        if run is not None:
            if checkpointing and last_saved != step:
                run.save_last(checkpoint_state(len(history), 0, step, history))
            run.save_weights(model, {"nnspec_spec": Path(spec.path).name, "nnspec_digest": spec.digest})
            run.write_summary(summary)
        display.finish(summary)
        stop_vote.close()
    finally:
        display.close()
        if run is not None:
            run.close()
    # DDP's reducer must go before its process group: when it holds the group's last reference it
    # destroys the group with the GIL held, while a gloo thread needs the GIL to free a finished
    # collective's tensors, and the process hangs at exit (seen under load in CI).
    forwards = fwd = eval_fwd = None
    distributed.finish()              # every rank waits until rank 0 has written its outputs
    return Result(history, model, test, run.path if run else None, best.value, summary, b)

"""Learning-rate schedules as pure functions of the optimizer step (nanoGPT style).

A factory `f(args, *, total_steps, steps_per_epoch) -> Schedule` builds a schedule; the trainer
asks `schedule.lr(step, base_lr)` before every optimizer step, for every parameter group, and
writes the answer into the group. Nothing is stepped, so resuming from a checkpoint only needs
the step count — plus `state_dict()` for the one stateful schedule (reduce_on_plateau, which
the trainer also feeds `observe(metric)` once per epoch).

`total_steps` is how many steps the schedule spans: all of training when it stands alone; as a
link of a chain, its own length, or for an open-ended last link what remains after the links
before it (`build` does this bookkeeping). A schedule with `steps`/`epochs` arguments uses
those as its length instead. Epoch-based schedules count `epoch = step // steps_per_epoch`,
with `step` relative to the schedule's own start.
"""
from __future__ import annotations

import math
from bisect import bisect_right
from typing import Any, Mapping, Sequence

from nnspec.builtins.argtypes import link_length


class Schedule:
    """The interface every schedule has. `lr` must be pure in (step, base_lr)."""

    def lr(self, step: int, base_lr: float) -> float:
        raise NotImplementedError

    def state_dict(self) -> dict:
        return {}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        pass


def _span(args: Mapping[str, Any], total_steps: int, steps_per_epoch: int) -> int:
    """The horizon a decaying schedule stretches over: its own length, else the whole run."""
    length = link_length(args, steps_per_epoch)
    return max(1, length if length is not None else total_steps)


def _count(step: int, every: str, steps_per_epoch: int) -> int:
    return step // max(1, steps_per_epoch) if every == "epoch" else step


class _Fn(Schedule):
    """A schedule given as a function of (step, base_lr)."""

    def __init__(self, fn):
        self._fn = fn

    def lr(self, step: int, base_lr: float) -> float:
        return float(self._fn(step, base_lr))


# --- stateless schedules --------------------------------------------------------------------

def constant(args, *, total_steps: int, steps_per_epoch: int) -> Schedule:
    return _Fn(lambda t, base: base)


def step(args, *, total_steps: int, steps_per_epoch: int) -> Schedule:
    return _Fn(lambda t, base: base * args.gamma ** (_count(t, args.every, steps_per_epoch) // args.step_size))


def multistep(args, *, total_steps: int, steps_per_epoch: int) -> Schedule:
    milestones = sorted(args.milestones)
    return _Fn(lambda t, base: base * args.gamma ** bisect_right(milestones, _count(t, args.every, steps_per_epoch)))


def exponential(args, *, total_steps: int, steps_per_epoch: int) -> Schedule:
    return _Fn(lambda t, base: base * args.gamma ** _count(t, args.every, steps_per_epoch))


def inverse_time(args, *, total_steps: int, steps_per_epoch: int) -> Schedule:
    return _Fn(lambda t, base: base / (1.0 + args.decay * _count(t, args.every, steps_per_epoch)))


def linear(args, *, total_steps: int, steps_per_epoch: int) -> Schedule:
    span = _span(args, total_steps, steps_per_epoch)
    start, end = args.start_factor, args.end_factor
    return _Fn(lambda t, base: base * (start + (end - start) * min(t, span) / span))


def warmup(args, *, total_steps: int, steps_per_epoch: int) -> Schedule:
    """base·start_factor at step 0, rising linearly to base at the end of the warmup (LinearLR)."""
    span = _span(args, total_steps, steps_per_epoch)
    start = args.start_factor
    return _Fn(lambda t, base: base * (start + (1.0 - start) * min(t, span) / span))


def polynomial(args, *, total_steps: int, steps_per_epoch: int) -> Schedule:
    span = _span(args, total_steps, steps_per_epoch)

    def lr(t: int, base: float) -> float:
        low = min(args.min_lr, base)
        return low + (base - low) * (1.0 - min(t, span) / span) ** args.power
    return _Fn(lr)


def _cosine(low: float, high: float, frac: float) -> float:
    """From high (frac 0) down to low (frac 1) along half a cosine."""
    return low + (high - low) * (1.0 + math.cos(math.pi * frac)) / 2.0


class Cosine(Schedule):
    """Cosine annealing in cycles. Without restarts one cycle spans the schedule, then the lr
    stays at min_lr. `restarts = r` splits the span into r + 1 cycles whose lengths grow by
    t_mult and add up to the span; `period = P` gives the first cycle's length instead and
    restarts forever (SGDR; with an integer t_mult this is CosineAnnealingWarmRestarts)."""

    def __init__(self, min_lr: float, span: int, restarts: int = 0, period: float | None = None,
                 t_mult: float = 1.0):
        self.min_lr, self.span, self.t_mult = min_lr, span, t_mult
        self.bounded = period is None          # cycles fitted to the span, then hold min_lr
        if period is None:
            cycles = restarts + 1
            period = span / cycles if t_mult == 1 else span * (t_mult - 1) / (t_mult ** cycles - 1)
        self.period = float(period)

    def _cycle(self, t: float) -> tuple[float, float]:
        """(position in the current cycle, the cycle's length)."""
        p, m = self.period, self.t_mult
        if m == 1:
            n = math.floor(t / p)
            return t - n * p, p
        n = max(0, math.floor(math.log(t * (m - 1) / p + 1) / math.log(m)))
        start = p * (m ** n - 1) / (m - 1)
        while n > 0 and start > t:                     # float rounding near a boundary
            n -= 1
            start = p * (m ** n - 1) / (m - 1)
        while start + p * m ** n <= t:
            start += p * m ** n
            n += 1
        return t - start, p * m ** n

    def lr(self, step: int, base_lr: float) -> float:
        low = min(self.min_lr, base_lr)
        if self.bounded and step >= self.span:
            return low
        offset, length = self._cycle(step)
        return _cosine(low, base_lr, offset / length)


def cosine(args, *, total_steps: int, steps_per_epoch: int) -> Schedule:
    return Cosine(args.min_lr, _span(args, total_steps, steps_per_epoch), args.restarts, args.period, args.t_mult)


class OneCycle(Schedule):
    """Torch's OneCycleLR (two phases, cosine annealing): from peak/div_factor up to the peak
    over the first pct_start of the span, then down to peak/div_factor/final_div_factor at its
    last step. The peak is max_lr, or each group's base lr when max_lr is none."""

    def __init__(self, span: int, max_lr: float | None, pct_start: float, div_factor: float,
                 final_div_factor: float):
        self.span, self.max_lr = span, max_lr
        self.pct_start, self.div_factor, self.final_div_factor = pct_start, div_factor, final_div_factor

    def lr(self, step: int, base_lr: float) -> float:
        peak = base_lr if self.max_lr is None else self.max_lr
        initial = peak / self.div_factor
        final = initial / self.final_div_factor
        up_end = self.pct_start * self.span - 1       # torch counts phase ends as the last step index
        down_end = self.span - 1
        if step <= up_end:
            return _cosine(peak, initial, step / up_end) if up_end > 0 else initial
        return _cosine(final, peak, min(1.0, (step - up_end) / (down_end - up_end)))


def one_cycle(args, *, total_steps: int, steps_per_epoch: int) -> Schedule:
    return OneCycle(_span(args, total_steps, steps_per_epoch), args.max_lr, args.pct_start, args.div_factor,
                    args.final_div_factor)


# --- metric-driven ----------------------------------------------------------------------------

class ReduceOnPlateau(Schedule):
    """Torch's ReduceLROnPlateau as a schedule: `observe` (once per epoch) counts epochs without
    improvement and records reductions; `lr` is base·factor^reductions, floored at min_lr.
    Unlike torch there is no eps below which reductions stop: min_lr is the only floor."""

    def __init__(self, factor: float, patience: int, mode: str, threshold: float, threshold_mode: str,
                 min_lr: float, cooldown: int):
        self.factor, self.patience, self.mode = factor, patience, mode
        self.threshold, self.threshold_mode = threshold, threshold_mode
        self.min_lr, self.cooldown = min_lr, cooldown
        self.best: float | None = None
        self.bad_epochs = 0
        self.cooldown_left = 0
        self.reductions = 0

    def _improves(self, value: float) -> bool:
        if self.best is None:
            return not math.isnan(value)
        if self.threshold_mode == "rel":
            bar = self.best * (1 - self.threshold if self.mode == "min" else 1 + self.threshold)
        else:
            bar = self.best - self.threshold if self.mode == "min" else self.best + self.threshold
        return value < bar if self.mode == "min" else value > bar

    def observe(self, value: float) -> None:
        value = float(value)
        if self._improves(value):
            self.best, self.bad_epochs = value, 0
        else:
            self.bad_epochs += 1
        if self.cooldown_left > 0:
            self.cooldown_left -= 1
            self.bad_epochs = 0
        if self.bad_epochs > self.patience:
            self.reductions += 1
            self.cooldown_left, self.bad_epochs = self.cooldown, 0

    def lr(self, step: int, base_lr: float) -> float:
        if self.reductions == 0:
            return base_lr
        return min(base_lr, max(base_lr * self.factor ** self.reductions, self.min_lr))

    def state_dict(self) -> dict:
        return {"best": self.best, "bad_epochs": self.bad_epochs, "cooldown_left": self.cooldown_left,
                "reductions": self.reductions}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self.best = None if state.get("best") is None else float(state["best"])
        self.bad_epochs = int(state.get("bad_epochs", 0))
        self.cooldown_left = int(state.get("cooldown_left", 0))
        self.reductions = int(state.get("reductions", 0))


def reduce_on_plateau(args, *, total_steps: int, steps_per_epoch: int) -> Schedule:
    return ReduceOnPlateau(args.factor, args.patience, args.mode, args.threshold, args.threshold_mode,
                           args.min_lr, args.cooldown)


# --- chains -------------------------------------------------------------------------------------

class ScheduleChain(Schedule):
    """Links run one after another; each sees the step relative to its own start. The last link
    runs on past its length. `observe` goes to the link that answered the latest `lr` call."""

    def __init__(self, links: Sequence[tuple[Schedule, int | None]]):
        if not links:
            raise ValueError("a schedule chain needs at least one link")
        self.links = [schedule for schedule, _ in links]
        self.starts = [0]
        for i, (_, length) in enumerate(links[:-1]):
            if length is None or length < 1:
                raise ValueError(f"link {i + 1} of a schedule chain needs a length (steps or epochs) "
                                 f"because another link follows it")
            self.starts.append(self.starts[-1] + int(length))
        self.active = 0

    def lr(self, step: int, base_lr: float) -> float:
        i = max(0, bisect_right(self.starts, step) - 1)
        self.active = i
        return self.links[i].lr(step - self.starts[i], base_lr)

    def observe(self, value: float) -> None:
        observe = getattr(self.links[self.active], "observe", None)
        if observe is not None:
            observe(value)

    def state_dict(self) -> dict:
        return {"active": self.active, "links": [link.state_dict() for link in self.links]}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self.active = int(state.get("active", 0))
        for link, sub in zip(self.links, state.get("links", ())):
            link.load_state_dict(sub)


def chain(links: list[tuple[Schedule, int | None]]) -> Schedule:
    """One schedule from links of (schedule, length in steps or None for an open-ended last one)."""
    return ScheduleChain(links)


def build(uses: Sequence[Any], *, total_steps: int, steps_per_epoch: int) -> Schedule:
    """Build a `then` chain from its uses (objects with `.component` and `.args`, e.g.
    nnspec.spec.settings.Use): each link's factory gets its own length as total_steps, an open-ended
    last link what remains of training."""
    links: list[tuple[Schedule, int | None]] = []
    start = 0
    for i, use in enumerate(uses):
        length = link_length(use.args, steps_per_epoch)
        if length is None and i < len(uses) - 1:      # the check refuses this (E544); direct callers too
            raise ValueError(f"schedule `{use.component.name}` needs steps or epochs because another link follows it")
        span = length if length is not None else max(1, total_steps - start)
        links.append((use.component.build(use.args, total_steps=span, steps_per_epoch=steps_per_epoch), length))
        start += length or 0
    return links[0][0] if len(links) == 1 else chain(links)

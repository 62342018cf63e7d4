"""Built-in learning-rate schedule declarations. No torch here: `nnspec validate` reads this.

Implementations (nnspec/runtime/schedules.py) have the signature
`factory(args, *, total_steps, steps_per_epoch) -> Schedule`, where `Schedule.lr(step, base_lr)`
is a pure function of the 0-based optimizer step and a parameter group's base lr. Schedules
that run for a fixed time take `steps` or `epochs` (their length as a link of a chain,
`warmup(steps = 100) then cosine()`); without one they span all of training.
"""
from __future__ import annotations

from nnspec.builtins.argtypes import Factor, NonNegativeFloat, Optional, at_most_one_duration, duration_params
from nnspec.registry.catalog import NEEDS_METRIC, PER_EPOCH, Component
from nnspec.registry.types import ArgError, Choice, Float, Int, Param, PositiveFloat, PositiveInt, Probability, Tuple

IMPL = "nnspec.builtins.schedules.functions:"

_EVERY = Param("every", Choice("epoch", "step"), "epoch",
               doc="whether step counts (step_size, milestones, powers) are epochs or optimizer steps")
_MIN_LR = Param("min_lr", NonNegativeFloat, 0.0, doc="the lowest lr (a group starting below it is left alone)")
_DECAY_GAMMA = Param("gamma", PositiveFloat, 0.1, doc="multiplies the lr at each decay")


constant = Component(
    "constant", "schedules", params=duration_params("holds the lr"),
    summary="Keep the base lr (with steps/epochs: for a while, as a link of a chain).",
    impl=IMPL + "constant", check=at_most_one_duration)

step = Component(
    "step", "schedules",
    params=(Param("step_size", PositiveInt, doc="decay every this many epochs (or steps)"), _DECAY_GAMMA, _EVERY),
    summary="Multiply the lr by gamma every step_size epochs (StepLR).", impl=IMPL + "step")


def _multistep_check(args) -> None:
    m = args.milestones
    if any(b <= a for a, b in zip(m, m[1:])):
        raise ArgError("milestones must be strictly increasing", "e.g. milestones = [30, 60, 90]")


multistep = Component(
    "multistep", "schedules",
    params=(Param("milestones", Tuple(Int(min=1)), doc="epochs (or steps) at which the lr decays, increasing"),
            _DECAY_GAMMA, _EVERY),
    summary="Multiply the lr by gamma at each milestone (MultiStepLR).", impl=IMPL + "multistep",
    check=_multistep_check)

exponential = Component(
    "exponential", "schedules",
    params=(Param("gamma", PositiveFloat, doc="multiplies the lr every epoch (or step)"), _EVERY),
    summary="Multiply the lr by gamma every epoch (ExponentialLR).", impl=IMPL + "exponential")

linear = Component(
    "linear", "schedules",
    params=(Param("end_factor", NonNegativeFloat, 0.0, doc="the final lr as a fraction of the base lr"),
            Param("start_factor", NonNegativeFloat, 1.0, doc="the first lr as a fraction of the base lr"),
            *duration_params("decays")),
    summary="Change the lr linearly from base·start_factor to base·end_factor, then hold it (LinearLR).",
    impl=IMPL + "linear", check=at_most_one_duration)

inverse_time = Component(
    "inverse_time", "schedules",
    params=(Param("decay", NonNegativeFloat, doc="lr = base / (1 + decay·t)"),
            Param("every", Choice("step", "epoch"), "step", doc="whether t counts optimizer steps or epochs")),
    summary="Inverse-time decay: base / (1 + decay·t).", impl=IMPL + "inverse_time")

polynomial = Component(
    "polynomial", "schedules",
    params=(Param("power", PositiveFloat, 1.0, doc="exponent of the decay curve (1: linear)"), _MIN_LR,
            *duration_params("decays")),
    summary="Polynomial decay to min_lr: min + (base - min)·(1 - t/T)^power (PolynomialLR).",
    impl=IMPL + "polynomial", check=at_most_one_duration)


def _cosine_check(args) -> None:
    at_most_one_duration(args)
    if args.period is not None and args.restarts:
        raise ArgError("give restarts (cycles fitted to the schedule) or period (cycle length), not both")
    if args.t_mult != 1 and args.period is None and not args.restarts:
        raise ArgError("t_mult needs restarts or period", "e.g. cosine(restarts = 3, t_mult = 2)")


cosine = Component(
    "cosine", "schedules",
    params=(_MIN_LR,
            Param("restarts", Int(min=0), 0, doc="warm restarts: the schedule is split into restarts + 1 cycles"),
            Param("period", Optional(PositiveInt), None,
                  doc="length of the first cycle in steps, restarting until the end (SGDR), instead of restarts"),
            Param("t_mult", Float(min=1), 1.0, doc="each cycle is t_mult times longer than the previous one"),
            *duration_params("anneals")),
    summary="Cosine annealing from base to min_lr, optionally with warm restarts (SGDR).",
    impl=IMPL + "cosine", check=_cosine_check)

one_cycle = Component(
    "one_cycle", "schedules",
    params=(Param("max_lr", Optional(PositiveFloat), None, doc="the peak lr (none: the optimizer's lr)"),
            Param("pct_start", Float(0, 1, min_open=True, max_open=True), 0.3,
                  doc="fraction of the cycle spent increasing the lr"),
            Param("div_factor", PositiveFloat, 25.0, doc="initial lr = max_lr / div_factor"),
            Param("final_div_factor", PositiveFloat, 1e4, doc="final lr = initial lr / final_div_factor"),
            *duration_params("cycles")),
    summary="One-cycle policy: cosine up to max_lr, then down far below the start (OneCycleLR).",
    impl=IMPL + "one_cycle", check=at_most_one_duration)

reduce_on_plateau = Component(
    "reduce_on_plateau", "schedules",
    params=(Param("factor", Factor, 0.1, doc="multiplies the lr at each reduction, 0 < factor < 1"),
            Param("patience", Int(min=0), 10, doc="epochs without improvement before a reduction"),
            Param("mode", Choice("min", "max"), "min", doc="whether the monitored metric should fall or rise"),
            Param("threshold", NonNegativeFloat, 1e-4, doc="the least change that counts as an improvement"),
            Param("threshold_mode", Choice("rel", "abs"), "rel",
                  doc="threshold relative to the best value (rel) or absolute (abs)"),
            _MIN_LR, Param("cooldown", Int(min=0), 0, doc="epochs to wait after a reduction before counting again")),
    summary="Reduce the lr when the monitored metric stops improving (ReduceLROnPlateau).",
    impl=IMPL + "reduce_on_plateau", flags=frozenset({NEEDS_METRIC, PER_EPOCH}))


def _warmup_check(args) -> None:
    at_most_one_duration(args)
    if args.steps is None and args.epochs is None:
        raise ArgError("warmup needs a length", "e.g. warmup(steps = 500) or warmup(epochs = 1)")


warmup = Component(
    "warmup", "schedules",
    params=(Param("steps", Optional(PositiveInt), None, doc="warmup length in optimizer steps"),
            Param("epochs", Optional(PositiveInt), None, keyword_only=True,
                  doc="warmup length in epochs, instead of steps"),
            Param("start_factor", Probability, 0.0, doc="the first lr as a fraction of the base lr, in [0, 1)")),
    summary="Linear warmup from base·start_factor to the base lr; chain it: warmup(steps = 100) then cosine().",
    impl=IMPL + "warmup", check=_warmup_check)

COMPONENTS = [constant, step, multistep, exponential, linear, inverse_time, polynomial, cosine, one_cycle,
              reduce_on_plateau, warmup]

"""Built-in optimizer declarations. No torch here: `nnspec validate` reads this module.

Implementations (nnspec/runtime/optimizers.py) have the signature
`factory(param_groups: list[dict], args: Args) -> torch.optim.Optimizer`; the arguments
below are the defaults that per-group overrides (`group bias { weight_decay 0 }`) replace.
`info["state_slots"]` is how many parameter-sized state tensors the optimizer keeps per
parameter with its default arguments (for memory estimates); `info["group_overrides"] = False`
says the optimizer keeps one parameter group, so a `group` with settings is refused by the check.
"""
from __future__ import annotations

from nnspec.builtins.argtypes import Beta, NonNegativeFloat
from nnspec.registry.catalog import FULL_BATCH, NEEDS_CLOSURE, Component
from nnspec.registry.types import ArgError, Bool, Choice, Float, Param, PositiveFloat, PositiveInt, Tuple

IMPL = "nnspec.builtins.optimizers.torch_impl:"

_LR = "learning rate"
_WD = "L2 penalty added to the gradient (coupled weight decay)"
_EPS = "added to the denominator for numerical stability"


def _lr(default=None) -> Param:
    if default is None:
        return Param("lr", PositiveFloat, doc=_LR)
    return Param("lr", PositiveFloat, default, doc=_LR)


def _wd(default: float = 0.0, doc: str = _WD) -> Param:
    return Param("weight_decay", NonNegativeFloat, default, doc=doc)


def _sgd_check(args) -> None:
    if args.nesterov and (args.momentum <= 0 or args.dampening != 0):
        raise ArgError("nesterov needs momentum > 0 and dampening = 0",
                       "set momentum (e.g. 0.9) and leave dampening at 0, or drop nesterov")


gd = Component(
    "gd", "optimizers", params=(_lr(),),
    summary="Plain gradient descent on the whole training split as one batch.",
    impl=IMPL + "gd", flags=frozenset({FULL_BATCH}), info={"state_slots": 0})

sgd = Component(
    "sgd", "optimizers",
    params=(_lr(),
            Param("momentum", NonNegativeFloat, 0.0, doc="momentum factor (0: none)"),
            Param("dampening", Float(0, 1), 0.0, doc="dampening for momentum"),
            Param("nesterov", Bool(), False, doc="Nesterov momentum (needs momentum > 0, dampening 0)"),
            _wd()),
    summary="Stochastic gradient descent, optionally with (Nesterov) momentum.",
    impl=IMPL + "sgd", check=_sgd_check, info={"state_slots": 1})

_BETAS = Param("betas", Tuple(Beta, 2, broadcast=False), (0.9, 0.999),
               doc="decay rates of the first and second moment averages, each in [0, 1)")


def _adam_params(weight_decay: float, wd_doc: str) -> tuple[Param, ...]:
    return (_lr(1e-3), _BETAS, Param("eps", PositiveFloat, 1e-8, doc=_EPS), _wd(weight_decay, wd_doc),
            Param("amsgrad", Bool(), False, doc="use the maximum of past second moments (AMSGrad)"))


adam = Component(
    "adam", "optimizers", params=_adam_params(0.0, _WD),
    summary="Adam: adaptive moment estimation.", impl=IMPL + "adam", info={"state_slots": 2})

adamw = Component(
    "adamw", "optimizers",
    params=_adam_params(1e-2, "decoupled weight decay: parameters shrink by lr·weight_decay each step"),
    summary="Adam with decoupled weight decay (AdamW).", impl=IMPL + "adamw", info={"state_slots": 2})

adagrad = Component(
    "adagrad", "optimizers",
    params=(_lr(1e-2), Param("lr_decay", NonNegativeFloat, 0.0, doc="lr / (1 + (step - 1)·lr_decay)"),
            _wd(), Param("eps", PositiveFloat, 1e-10, doc=_EPS)),
    summary="Adagrad: per-parameter lr scaled by accumulated squared gradients.",
    impl=IMPL + "adagrad", info={"state_slots": 1})

rmsprop = Component(
    "rmsprop", "optimizers",
    params=(_lr(1e-2), Param("alpha", Beta, 0.99, doc="smoothing constant of the squared-gradient average"),
            Param("eps", PositiveFloat, 1e-8, doc=_EPS),
            Param("momentum", NonNegativeFloat, 0.0, doc="momentum factor (0: none)"),
            Param("centered", Bool(), False, doc="normalize by the estimated gradient variance"),
            _wd()),
    summary="RMSprop: lr scaled by a moving average of squared gradients.",
    impl=IMPL + "rmsprop", info={"state_slots": 1})

adadelta = Component(
    "adadelta", "optimizers",
    params=(_lr(1.0), Param("rho", Beta, 0.9, doc="decay rate of the squared-gradient average"),
            Param("eps", PositiveFloat, 1e-6, doc=_EPS), _wd()),
    summary="Adadelta: adaptive steps from running averages of gradients and updates.",
    impl=IMPL + "adadelta", info={"state_slots": 2})

lbfgs = Component(
    "lbfgs", "optimizers",
    params=(_lr(1.0), Param("max_iter", PositiveInt, 20, doc="iterations per optimizer step"),
            Param("history_size", PositiveInt, 100, doc="how many past updates approximate the Hessian"),
            Param("line_search", Choice("strong_wolfe", "none"), "strong_wolfe",
                  doc="line search (strong_wolfe) or a fixed step of size lr (none)"),
            Param("tolerance_grad", PositiveFloat, 1e-7, keyword_only=True,
                  doc="stop a step when every gradient entry is below this"),
            Param("tolerance_change", PositiveFloat, 1e-9, keyword_only=True,
                  doc="stop a step when the loss or parameters change less than this")),
    summary="L-BFGS quasi-Newton method (re-evaluates the loss through a closure; one parameter group).",
    impl=IMPL + "lbfgs", flags=frozenset({NEEDS_CLOSURE}), info={"state_slots": 200, "group_overrides": False})

COMPONENTS = [gd, sgd, adam, adamw, adagrad, rmsprop, adadelta, lbfgs]

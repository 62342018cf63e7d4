"""Lion: the update rule against a hand computation, the declared ranges, and the light declaration."""
from __future__ import annotations

import math
import subprocess
import sys

import pytest
import torch

from nnspec.binding import bind
from nnspec_lion.declare import LION
from nnspec_lion.optim import Lion, lion


def _args(**keyword):
    args, errors = bind(LION.params, (), list(keyword.items()), "lion", LION.check)
    assert not errors, errors
    return args


def _sign(x: float) -> float:
    return (x > 0) - (x < 0)


def _reference(theta, grad_fn, steps, lr, beta1, beta2, wd):
    """Lion by hand, one float at a time."""
    theta, m = list(theta), [0.0] * len(theta)
    for _ in range(steps):
        g = grad_fn(theta)
        c = [beta1 * mi + (1 - beta1) * gi for mi, gi in zip(m, g)]
        theta = [t - lr * (_sign(ci) + wd * t) for t, ci in zip(theta, c)]
        m = [beta2 * mi + (1 - beta2) * gi for mi, gi in zip(m, g)]
    return theta, m


A = [2.0, -0.5, 1.5, 0.25]                 # f(θ) = Σ ½·a·θ² + b·θ, gradient a·θ + b
B = [0.3, -1.0, 0.0, 0.7]


def _grad(theta):
    return [a * t + b for a, t, b in zip(A, theta, B)]


@pytest.mark.parametrize("lr, betas, wd", [(0.1, (0.9, 0.99), 0.0), (0.05, (0.5, 0.8), 0.3), (0.2, (0.0, 0.0), 0.1)])
def test_update_rule_matches_hand_computation(lr, betas, wd):
    start = [1.0, -2.0, 0.05, 0.4]
    p = torch.tensor(start, dtype=torch.float64, requires_grad=True)
    opt = lion([{"params": [p]}], _args(lr=lr, betas=betas, weight_decay=wd))
    a, b = torch.tensor(A, dtype=torch.float64), torch.tensor(B, dtype=torch.float64)
    for _ in range(7):
        opt.zero_grad()
        (0.5 * a * p * p + b * p).sum().backward()
        opt.step()
    want_theta, want_m = _reference(start, _grad, 7, lr, *betas, wd)
    assert p.detach().tolist() == pytest.approx(want_theta, abs=1e-12)
    assert opt.state[p]["exp_avg"].tolist() == pytest.approx(want_m, abs=1e-12)


def test_every_coordinate_moves_by_exactly_lr():
    """The sign makes the step size independent of the gradient's magnitude."""
    p = torch.zeros(5, requires_grad=True)
    opt = Lion([p], lr=0.01)
    p.grad = torch.tensor([1e-6, -3.0, 1e3, -1e-9, 0.5])
    opt.step()
    assert p.detach().tolist() == pytest.approx([-0.01, 0.01, -0.01, 0.01, -0.01])


def test_groups_override_defaults():
    """`group bias { weight_decay 0 }` in a spec becomes a torch group key."""
    w = torch.ones(3, requires_grad=True)
    bias = torch.ones(3, requires_grad=True)
    opt = lion([{"params": [w]}, {"params": [bias], "weight_decay": 0.0, "lr": 0.5}],
               _args(lr=0.1, weight_decay=1.0))
    w.grad, bias.grad = torch.zeros(3), torch.zeros(3)      # sign(0) = 0: only decay moves w
    opt.step()
    assert w.detach().tolist() == pytest.approx([0.9] * 3)
    assert bias.detach().tolist() == pytest.approx([1.0] * 3)


def test_state_dict_round_trip_continues_identically():
    torch.manual_seed(0)
    model = torch.nn.Linear(4, 2)
    x, y = torch.randn(16, 4), torch.randn(16, 2)

    def run(opt, steps):
        for _ in range(steps):
            opt.zero_grad()
            torch.nn.functional.mse_loss(model(x), y).backward()
            opt.step()

    opt = Lion(model.parameters(), lr=1e-2)
    run(opt, 3)
    saved_model, saved_opt = {k: v.clone() for k, v in model.state_dict().items()}, opt.state_dict()
    run(opt, 3)
    after = [p.detach().clone() for p in model.parameters()]
    model.load_state_dict(saved_model)
    opt2 = Lion(model.parameters(), lr=1e-2)
    opt2.load_state_dict(saved_opt)
    run(opt2, 3)
    for a, b in zip(after, model.parameters()):
        assert torch.equal(a, b.detach())


def test_closure_is_evaluated():
    p = torch.tensor([1.0], requires_grad=True)
    opt = Lion([p], lr=0.1)

    def closure():
        opt.zero_grad()
        loss = (p ** 2).sum()
        loss.backward()
        return loss

    assert opt.step(closure).item() == 1.0 and p.item() == pytest.approx(0.9)


def test_defaults_and_flags():
    args = _args()
    assert (args.lr, args.betas, args.weight_decay) == (1e-4, (0.9, 0.99), 0.0)
    assert LION.flags == frozenset() and LION.info["state_slots"] == 1
    assert LION.summary and all(p.doc for p in LION.params)


@pytest.mark.parametrize("keyword", [{"lr": 0.0}, {"lr": -1.0}, {"betas": (0.9, 1.0)}, {"betas": (-0.1, 0.9)},
                                     {"betas": (0.9,)}, {"betas": 0.9}, {"weight_decay": -1e-4}])
def test_out_of_range_arguments_are_rejected(keyword):
    args, errors = bind(LION.params, (), list(keyword.items()), "lion", LION.check)
    assert args is None and errors[0].code == "E304"


def test_misspelt_argument_suggests_the_right_one():
    _, errors = bind(LION.params, (), [("betaz", (0.9, 0.99))], "lion", LION.check)
    assert errors[0].code == "E301" and "betas" in errors[0].hint


def test_large_lr_warns():
    assert LION.warn(_args(lr=1e-2)) and "smaller" in LION.warn(_args(lr=1e-2))
    assert LION.warn(_args(lr=3e-4)) is None


def test_trains_a_small_regression():
    torch.manual_seed(0)
    x = torch.randn(64, 3)
    y = x @ torch.tensor([[1.0], [-2.0], [0.5]])
    model = torch.nn.Linear(3, 1)
    opt = Lion(model.parameters(), lr=3e-2)
    first = None
    for _ in range(150):
        opt.zero_grad()
        loss = torch.nn.functional.mse_loss(model(x), y)
        first = first if first is not None else loss.item()
        loss.backward()
        opt.step()
    assert loss.item() < 0.01 * first and math.isfinite(loss.item())


def test_declaration_does_not_import_torch():
    code = "import sys, nnspec_lion.declare; assert 'torch' not in sys.modules, 'torch imported'"
    subprocess.run([sys.executable, "-c", code], check=True, env=_env_with_src())


def _env_with_src():
    """The child sees the same nnspec_lion as this process (installed, or the source tree)."""
    import os
    import nnspec_lion
    from pathlib import Path
    env = dict(os.environ)
    src = str(Path(nnspec_lion.__file__).resolve().parents[1])
    env["PYTHONPATH"] = os.pathsep.join(x for x in (src, env.get("PYTHONPATH")) if x)
    return env

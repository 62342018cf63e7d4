"""Built-in optimizers: declarations (ranges, cross-argument checks, flags) and torch factories."""
from __future__ import annotations

import subprocess
import sys

import pytest
import torch

from nnspec.registry.binding import bind
from nnspec.builtins.optimizers.declare import COMPONENTS
from nnspec.registry.catalog import CLASSIFICATION, FULL_BATCH, NEEDS_CLOSURE, Catalog

BY_NAME = {c.name: c for c in COMPONENTS}


def bind_args(name: str, *positional, **keyword):
    c = BY_NAME[name]
    args, errors = bind(c.params, positional, list(keyword.items()), name, c.check)
    return args, errors


def args_of(name: str, *positional, **keyword):
    args, errors = bind_args(name, *positional, **keyword)
    assert not errors, errors
    return args


def build(name: str, groups, *positional, **keyword) -> torch.optim.Optimizer:
    return BY_NAME[name].load()(groups, args_of(name, *positional, **keyword))


def test_declarations_do_not_import_torch():
    code = ("import sys, nnspec.builtins.optimizers.declare, nnspec.builtins.schedules.declare, nnspec.builtins.losses.declare, "
            "nnspec.builtins.metrics.declare; assert 'torch' not in sys.modules, 'torch imported'")
    subprocess.run([sys.executable, "-c", code], check=True)


def test_registered_through_entry_points():
    catalog = Catalog.from_entry_points(["optimizers"])
    assert set(catalog["optimizers"].names()) >= {"gd", "sgd", "adam", "adamw", "adagrad", "rmsprop",
                                                   "adadelta", "lbfgs"}
    assert FULL_BATCH in catalog.get("optimizers", "gd").flags
    assert NEEDS_CLOSURE in catalog.get("optimizers", "lbfgs").flags
    assert CLASSIFICATION not in catalog.get("optimizers", "sgd").flags


def test_every_component_documents_itself():
    for c in COMPONENTS:
        assert c.summary and all(p.doc for p in c.params), c.name


@pytest.mark.parametrize("name, positional, keyword", [
    ("sgd", (0.0,), {}),                                  # lr > 0
    ("sgd", (-1e-3,), {}),
    ("sgd", (0.1,), {"momentum": -0.5}),
    ("sgd", (0.1,), {"weight_decay": -1e-4}),
    ("adam", (), {"betas": (0.9, 1.0)}),                  # betas in [0, 1)
    ("adam", (), {"betas": (-0.1, 0.9)}),
    ("adam", (), {"betas": (0.9,)}),
    ("adam", (), {"eps": 0.0}),
    ("adamw", (), {"lr": 0.0}),
    ("rmsprop", (), {"alpha": 1.0}),
    ("adadelta", (), {"rho": 1.5}),
    ("adagrad", (), {"lr_decay": -1.0}),
    ("lbfgs", (), {"line_search": "armijo"}),
    ("lbfgs", (), {"max_iter": 0}),
    ("gd", (), {}),                                       # lr is required
])
def test_out_of_range_arguments_are_rejected(name, positional, keyword):
    args, errors = bind_args(name, *positional, **keyword)
    assert args is None and errors


def test_nesterov_needs_momentum_and_no_dampening():
    for keyword in ({"nesterov": True}, {"nesterov": True, "momentum": 0.9, "dampening": 0.1}):
        args, errors = bind_args("sgd", 0.1, **keyword)
        assert args is None and errors[0].code == "E306" and "nesterov" in errors[0].message
    assert bind_args("sgd", 0.1, nesterov=True, momentum=0.9)[0] is not None


def test_defaults_match_the_documented_ones():
    a = args_of("adamw")
    assert (a.lr, a.betas, a.eps, a.weight_decay, a.amsgrad) == (1e-3, (0.9, 0.999), 1e-8, 1e-2, False)
    assert args_of("lbfgs").line_search == "strong_wolfe"
    assert args_of("adadelta").lr == 1.0 and args_of("rmsprop").alpha == 0.99


def _least_squares(seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(64, 5, generator=g)
    y = x @ torch.randn(5, generator=g) + 0.01 * torch.randn(64, generator=g)
    model = torch.nn.Linear(5, 1)
    torch.nn.init.zeros_(model.weight)
    return x, y, model


def _loss(model, x, y):
    return torch.nn.functional.mse_loss(model(x).squeeze(-1), y)


@pytest.mark.parametrize("name, positional, keyword", [
    ("gd", (0.1,), {}),
    ("sgd", (0.05,), {"momentum": 0.9, "nesterov": True}),
    ("adam", (), {"lr": 0.05}),
    ("adamw", (), {"lr": 0.05}),
    ("adagrad", (), {"lr": 0.3}),
    ("rmsprop", (), {"lr": 0.01}),
    ("rmsprop", (), {"lr": 0.01, "momentum": 0.5, "centered": True}),
    ("adadelta", (), {"lr": 1.0, "eps": 1e-3}),      # the default eps starts very slowly
    ("lbfgs", (), {}),
    ("lbfgs", (), {"line_search": "none", "lr": 0.1}),
])
def test_every_optimizer_reduces_a_least_squares_loss(name, positional, keyword):
    x, y, model = _least_squares()
    opt = build(name, [{"params": list(model.parameters())}], *positional, **keyword)
    start = _loss(model, x, y).item()

    def closure():
        opt.zero_grad()
        loss = _loss(model, x, y)
        loss.backward()
        return loss

    for _ in range(5 if name == "lbfgs" else 40):
        if NEEDS_CLOSURE in BY_NAME[name].flags:
            opt.step(closure)
        else:
            closure()
            opt.step()
    assert _loss(model, x, y).item() < 0.5 * start


def _two_groups(model):
    return [{"params": [model.weight]}, {"params": [model.bias], "weight_decay": 0.0, "lr": 0.2}]


@pytest.mark.parametrize("name, keyword, reference", [
    ("sgd", {"lr": 0.1, "momentum": 0.9, "weight_decay": 0.01},
     lambda g: torch.optim.SGD(g, lr=0.1, momentum=0.9, weight_decay=0.01)),
    ("sgd", {"lr": 0.1, "momentum": 0.8, "nesterov": True},
     lambda g: torch.optim.SGD(g, lr=0.1, momentum=0.8, nesterov=True)),
    ("adam", {"lr": 0.01, "betas": (0.8, 0.99), "weight_decay": 0.1, "amsgrad": True},
     lambda g: torch.optim.Adam(g, lr=0.01, betas=(0.8, 0.99), weight_decay=0.1, amsgrad=True)),
    ("adamw", {"lr": 0.01, "eps": 1e-6},
     lambda g: torch.optim.AdamW(g, lr=0.01, eps=1e-6, weight_decay=1e-2)),
])
def test_steps_match_torch_with_group_overrides(name, keyword, reference):
    x, y, ours = _least_squares(1)
    torch.nn.init.normal_(ours.weight, generator=torch.Generator().manual_seed(3))
    theirs = torch.nn.Linear(5, 1)
    theirs.load_state_dict(ours.state_dict())
    opt_ours = build(name, _two_groups(ours), **keyword)
    opt_theirs = reference(_two_groups(theirs))
    assert opt_ours.param_groups[1]["weight_decay"] == 0.0 and opt_ours.param_groups[1]["lr"] == 0.2
    assert opt_ours.param_groups[0]["lr"] == keyword["lr"]
    for _ in range(3):
        for model, opt in ((ours, opt_ours), (theirs, opt_theirs)):
            opt.zero_grad()
            _loss(model, x, y).backward()
            opt.step()
    for a, b in zip(ours.parameters(), theirs.parameters()):
        torch.testing.assert_close(a, b, rtol=0, atol=0)
    # and the step really moved the parameters
    assert not torch.equal(ours.bias, torch.nn.Linear(5, 1).bias)


def test_lbfgs_solves_a_convex_quadratic():
    g = torch.Generator().manual_seed(0)
    m = torch.randn(6, 6, generator=g, dtype=torch.float64)
    a = m @ m.T + 6 * torch.eye(6, dtype=torch.float64)
    b = torch.randn(6, generator=g, dtype=torch.float64)
    x = torch.zeros(6, dtype=torch.float64, requires_grad=True)
    opt = build("lbfgs", [{"params": [x]}])

    def closure():
        opt.zero_grad()
        loss = 0.5 * x @ a @ x - b @ x
        loss.backward()
        return loss

    for _ in range(3):
        opt.step(closure)
    torch.testing.assert_close(x.detach(), torch.linalg.solve(a, b), rtol=1e-6, atol=1e-6)


def test_lbfgs_merges_plain_groups_and_rejects_overrides():
    model = torch.nn.Linear(3, 1)
    opt = build("lbfgs", [{"params": [model.weight]}, {"params": model.bias}])
    assert len(opt.param_groups) == 1 and len(opt.param_groups[0]["params"]) == 2
    with pytest.raises(ValueError, match="weight_decay"):
        build("lbfgs", [{"params": [model.weight]}, {"params": [model.bias], "weight_decay": 0.0}])

"""AdaHessian: Hutchinson's estimate, the first update against the hand formula, conv spatial
averaging, the declaration, and a short nnspec training run (create_graph through the trainer)."""
from __future__ import annotations

import subprocess
import sys

import pytest
import torch

from nnspec.binding import bind
from nnspec.registry import CREATE_GRAPH
from nnspec_adahessian.declare import ADAHESSIAN
from nnspec_adahessian.optim import AdaHessian, adahessian, hutchinson_diagonal, rademacher

# backward(create_graph=True) makes each .grad reference its own graph; torch warns about the
# cycle, which setting the grads to None (as the trainer does after every step) breaks.
pytestmark = pytest.mark.filterwarnings("ignore:Using backward\\(\\) with create_graph=True:UserWarning")


def _args(**keyword):
    args, errors = bind(ADAHESSIAN.params, (), list(keyword.items()), "adahessian", ADAHESSIAN.check)
    assert not errors, errors
    return args


A = torch.tensor([2.0, -0.5, 3.0, 0.25, 1.0], dtype=torch.float64)     # f(x) = ½ xᵀ diag(a) x


def _quadratic_grad(x):
    loss = 0.5 * (A * x * x).sum()
    (g,) = torch.autograd.grad(loss, x, create_graph=True)
    return g


def test_rademacher_entries_are_plus_minus_one():
    z = rademacher(torch.empty(10_000))
    assert set(z.unique().tolist()) == {-1.0, 1.0}
    assert abs(z.mean().item()) < 0.05


def test_hutchinson_is_exact_on_a_diagonal_hessian():
    """H = diag(a): z ⊙ (H z) = a ⊙ z² = a, whatever z is (z² = 1), negative entries included."""
    x = torch.randn(5, dtype=torch.float64, requires_grad=True)
    for _ in range(3):
        (d,) = hutchinson_diagonal([x], [_quadratic_grad(x)])
        assert torch.equal(d, A)


def test_hutchinson_is_unbiased_on_a_full_hessian():
    """With off-diagonal terms one probe is noisy, but the mean over probes tends to diag(H)."""
    torch.manual_seed(0)
    m = torch.randn(4, 4, dtype=torch.float64)
    h = m + m.T
    x = torch.randn(4, dtype=torch.float64, requires_grad=True)

    def grad():
        return torch.autograd.grad(0.5 * x @ h @ x, x, create_graph=True)[0]

    (one,) = hutchinson_diagonal([x], [grad()], samples=1)
    (many,) = hutchinson_diagonal([x], [grad()], samples=4000)
    assert not torch.allclose(one, torch.diag(h))
    assert torch.allclose(many, torch.diag(h), atol=0.15)


def test_gradients_without_a_graph_are_refused():
    x = torch.ones(3, requires_grad=True)
    (0.5 * (x * x).sum()).backward()                 # no create_graph
    with pytest.raises(RuntimeError, match="create_graph=True"):
        AdaHessian([x]).step()


@pytest.mark.parametrize("lr, k, wd, eps", [(1.0, 1.0, 0.0, 1e-12), (0.1, 0.5, 0.01, 1e-4),
                                            (0.3, 0.0, 0.2, 1e-3)])
def test_first_update_matches_hand_formula(lr, k, wd, eps):
    """Step 1: m̂ = g and √v̂ = |a| (the bias corrections cancel), so
    x₁ = x₀ − lr·(g / (|a|^k + eps) + λ·x₀)."""
    x0 = torch.tensor([1.0, -2.0, 0.5, 4.0, -1.0], dtype=torch.float64)
    x = x0.clone().requires_grad_(True)
    opt = adahessian([{"params": [x]}], _args(lr=lr, hessian_power=k, weight_decay=wd, eps=eps))
    x.grad = _quadratic_grad(x)
    opt.step()
    g = A * x0
    want = x0 - lr * (g / (A.abs() ** k + eps) + wd * x0)
    assert torch.allclose(x.detach(), want, rtol=0, atol=1e-12)
    assert torch.allclose(opt.state[x]["exp_hessian_diag_sq"], (1 - 0.999) * A * A, atol=1e-15)


def test_newton_step_solves_a_convex_diagonal_quadratic_at_once():
    """With k = 1 and lr = 1 the first step is x − g / |a| = x − x when every a > 0."""
    a = A.abs()
    x = torch.tensor([3.0, -1.0, 2.0, 0.5, 7.0], dtype=torch.float64, requires_grad=True)
    opt = AdaHessian([x], lr=1.0, eps=1e-12)
    x.grad = torch.autograd.grad(0.5 * (a * x * x).sum(), x, create_graph=True)[0]
    opt.step()
    assert x.detach().abs().max().item() < 1e-9


def test_second_step_uses_moving_averages():
    x0 = torch.tensor([1.0, -2.0, 0.5, 4.0, -1.0], dtype=torch.float64)
    x = x0.clone().requires_grad_(True)
    b1, b2, lr, eps = 0.9, 0.999, 0.1, 1e-8
    opt = AdaHessian([x], lr=lr, betas=(b1, b2), eps=eps)
    for _ in range(2):
        x.grad = _quadratic_grad(x)
        opt.step()
    g0 = A * x0
    x1 = x0 - lr * g0 / (A.abs() + eps)
    g1 = A * x1
    m = b1 * (1 - b1) * g0 + (1 - b1) * g1
    v = b2 * (1 - b2) * A * A + (1 - b2) * A * A
    want = x1 - lr * (m / (1 - b1 ** 2)) / ((v / (1 - b2 ** 2)).sqrt() + eps)
    assert torch.allclose(x.detach(), want, atol=1e-12)


@pytest.mark.parametrize("spatial", [True, False])
def test_conv_kernels_average_the_diagonal_over_positions(spatial):
    torch.manual_seed(0)
    conv = torch.nn.Conv2d(2, 3, 3)
    opt = AdaHessian(conv.parameters(), spatial_average=spatial)
    loss = conv(torch.randn(4, 2, 6, 6)).tanh().pow(2).sum()
    loss.backward(create_graph=True)
    opt.step()
    v = opt.state[conv.weight]["exp_hessian_diag_sq"]
    per_kernel_constant = torch.allclose(v, v[:, :, :1, :1].expand_as(v))
    assert per_kernel_constant == spatial
    assert v.abs().sum() > 0


def test_declaration_flags_and_ranges():
    assert CREATE_GRAPH in ADAHESSIAN.flags and ADAHESSIAN.info["state_slots"] == 2
    assert ADAHESSIAN.summary and all(p.doc for p in ADAHESSIAN.params)
    for bad in ({"lr": 0.0}, {"betas": (0.9, 1.0)}, {"eps": 0.0}, {"weight_decay": -1.0},
                {"hessian_power": 1.5}, {"hessian_power": -0.1}, {"spatial_average": 1}):
        args, errors = bind(ADAHESSIAN.params, (), list(bad.items()), "adahessian", None)
        assert args is None and errors[0].code == "E304", bad


def test_trains_through_the_nnspec_trainer():
    """A real spec: the trainer must call backward(create_graph=True) for this optimizer."""
    from nnspec.api import train
    from nnspec.check import check_source
    from nnspec.registry import Catalog
    catalog = Catalog.default()
    if "adahessian" not in catalog["optimizers"].names():           # not installed: add it by hand
        catalog = catalog.with_components([ADAHESSIAN], "nnspec-adahessian")
    text = """
model m {
    input [2]
    linear(16) -> tanh
    linear(3)
}
data blobs(samples = 300, features = 2, classes = 3) { batch 50 }
loss cross_entropy
optimizer adahessian(lr = 0.1)
train { epochs 4; seed 0; device cpu }
"""
    result = check_source(text, catalog=catalog)
    assert result.ok, result.diagnostics
    out = train(result.spec, out_dir=False, progress=False)
    losses = [row["train_loss"] for row in out.history]
    assert losses[-1] < 0.5 * losses[0], losses


def test_declaration_does_not_import_torch():
    import os
    from pathlib import Path
    import nnspec_adahessian
    env = dict(os.environ)
    src = str(Path(nnspec_adahessian.__file__).resolve().parents[1])
    env["PYTHONPATH"] = os.pathsep.join(x for x in (src, env.get("PYTHONPATH")) if x)
    code = "import sys, nnspec_adahessian.declare; assert 'torch' not in sys.modules, 'torch imported'"
    subprocess.run([sys.executable, "-c", code], check=True, env=env)

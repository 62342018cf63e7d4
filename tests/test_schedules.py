"""Learning-rate schedules: pure lr(step, base_lr) functions compared with torch's schedulers."""
from __future__ import annotations

import json
import math
import random
from types import SimpleNamespace

import pytest
import torch
from hypothesis import given, settings, strategies as st
from torch.optim import lr_scheduler as S

from nnspec.registry.binding import bind
from nnspec.builtins.schedules.declare import COMPONENTS
from nnspec.registry.catalog import NEEDS_METRIC
from nnspec.builtins.schedules.functions import build, chain, link_length

BY_NAME = {c.name: c for c in COMPONENTS}
BASE = 0.1


def args_of(name: str, *positional, **keyword):
    c = BY_NAME[name]
    args, errors = bind(c.params, positional, list(keyword.items()), name, c.check)
    assert not errors, errors
    return args


def errors_of(name: str, *positional, **keyword):
    c = BY_NAME[name]
    return bind(c.params, positional, list(keyword.items()), name, c.check)[1]


def make(name: str, *positional, total: int = 100, spe: int = 1, **keyword):
    return BY_NAME[name].load()(args_of(name, *positional, **keyword), total_steps=total, steps_per_epoch=spe)


def ours(schedule, steps: int, base: float = BASE) -> list[float]:
    return [schedule.lr(t, base) for t in range(steps)]


def torch_lrs(make_scheduler, steps: int, base: float = BASE, every: int = 1) -> list[float]:
    """The lr torch uses at each optimizer step, its scheduler stepped every `every` steps."""
    opt = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=base)
    scheduler = make_scheduler(opt)
    out = []
    for t in range(steps):
        out.append(opt.param_groups[0]["lr"])
        opt.step()
        if (t + 1) % every == 0:
            scheduler.step()
    return out


def test_every_component_documents_itself():
    for c in COMPONENTS:
        assert c.summary and all(p.doc for p in c.params), c.name


def test_step_per_epoch_and_per_step():
    assert ours(make("step", 3, gamma=0.5, spe=4), 80) == pytest.approx(
        torch_lrs(lambda o: S.StepLR(o, 3, gamma=0.5), 80, every=4))
    assert ours(make("step", 7, gamma=0.3, every="step", spe=4), 50) == pytest.approx(
        torch_lrs(lambda o: S.StepLR(o, 7, gamma=0.3), 50))


def test_multistep():
    assert ours(make("multistep", (2, 5, 9), gamma=0.3, spe=3), 45) == pytest.approx(
        torch_lrs(lambda o: S.MultiStepLR(o, [2, 5, 9], gamma=0.3), 45, every=3))
    assert ours(make("multistep", (4, 11), every="step"), 20) == pytest.approx(
        torch_lrs(lambda o: S.MultiStepLR(o, [4, 11], gamma=0.1), 20))


def test_exponential():
    assert ours(make("exponential", 0.9, spe=5), 60) == pytest.approx(
        torch_lrs(lambda o: S.ExponentialLR(o, 0.9), 60, every=5))
    assert ours(make("exponential", 0.97, every="step"), 60) == pytest.approx(
        torch_lrs(lambda o: S.ExponentialLR(o, 0.97), 60))


def test_linear_over_its_length_and_over_training():
    assert ours(make("linear", 0.1, start_factor=0.5, steps=20, total=1000), 40) == pytest.approx(
        torch_lrs(lambda o: S.LinearLR(o, start_factor=0.5, end_factor=0.1, total_iters=20), 40))
    decay = make("linear", total=50)            # defaults: from base to 0 over all of training
    assert ours(decay, 51) == pytest.approx(
        torch_lrs(lambda o: S.LinearLR(o, start_factor=1.0, end_factor=0.0, total_iters=50), 51), abs=1e-12)
    assert decay.lr(50, BASE) == 0.0 and decay.lr(0, BASE) == BASE


def test_warmup_matches_linear_lr_and_epochs_count_steps():
    assert ours(make("warmup", 10, start_factor=0.1), 25) == pytest.approx(
        torch_lrs(lambda o: S.LinearLR(o, start_factor=0.1, end_factor=1.0, total_iters=10), 25))
    by_epochs = make("warmup", epochs=2, spe=5)
    assert ours(by_epochs, 15) == pytest.approx(ours(make("warmup", 10), 15))
    assert by_epochs.lr(0, BASE) == 0.0


def test_inverse_time():
    s = make("inverse_time", 0.5)
    assert ours(s, 10) == pytest.approx([BASE / (1 + 0.5 * t) for t in range(10)])
    s = make("inverse_time", 0.5, every="epoch", spe=4)
    assert s.lr(7, BASE) == pytest.approx(BASE / 1.5) and s.lr(8, BASE) == pytest.approx(BASE / 2)


def test_polynomial():
    assert ours(make("polynomial", 2.0, total=30), 31) == pytest.approx(
        torch_lrs(lambda o: S.PolynomialLR(o, total_iters=30, power=2.0), 31), abs=1e-12)
    s = make("polynomial", 0.5, min_lr=0.01, total=20)
    assert ours(s, 25) == pytest.approx([0.01 + 0.09 * (1 - min(t, 20) / 20) ** 0.5 for t in range(25)])


def test_cosine_without_restarts_then_holds_min_lr():
    s = make("cosine", min_lr=0.001, total=40)
    assert ours(s, 41) == pytest.approx(
        torch_lrs(lambda o: S.CosineAnnealingLR(o, T_max=40, eta_min=0.001), 41))
    assert s.lr(40, BASE) == s.lr(1000, BASE) == 0.001


@pytest.mark.parametrize("t_0, t_mult", [(5, 1), (5, 2), (3, 3)])
def test_cosine_period_matches_warm_restarts(t_0, t_mult):
    s = make("cosine", min_lr=0.002, period=t_0, t_mult=float(t_mult))
    assert ours(s, 150) == pytest.approx(
        torch_lrs(lambda o: S.CosineAnnealingWarmRestarts(o, T_0=t_0, T_mult=t_mult, eta_min=0.002), 150))


@pytest.mark.parametrize("restarts, t_mult, total, t_0", [(2, 1.0, 30, 10), (2, 2.0, 70, 10), (3, 1.0, 40, 10)])
def test_cosine_restarts_fit_the_schedule(restarts, t_mult, total, t_0):
    s = make("cosine", restarts=restarts, t_mult=t_mult, total=total)
    assert ours(s, total) == pytest.approx(
        torch_lrs(lambda o: S.CosineAnnealingWarmRestarts(o, T_0=t_0, T_mult=int(t_mult)), total), abs=1e-12)
    assert s.lr(total, BASE) == 0.0


@pytest.mark.parametrize("total, pct, div, final", [(50, 0.3, 25.0, 1e4), (97, 0.25, 10.0, 100.0), (8, 0.5, 5.0, 3.0)])
def test_one_cycle(total, pct, div, final):
    expected = torch_lrs(lambda o: S.OneCycleLR(o, max_lr=0.5, total_steps=total, pct_start=pct, div_factor=div,
                                                final_div_factor=final, cycle_momentum=False), total)
    assert ours(make("one_cycle", 0.5, pct_start=pct, div_factor=div, final_div_factor=final, total=total),
                total) == pytest.approx(expected)
    # without max_lr the group's own lr is the peak
    assert ours(make("one_cycle", pct_start=pct, div_factor=div, final_div_factor=final, total=total),
                total, base=0.5) == pytest.approx(expected)


def _metric_walk(seed: int, n: int = 80) -> list[float]:
    rng = random.Random(seed)
    value, out = 1.0, []
    for _ in range(n):
        if rng.random() < 0.15:
            value *= rng.uniform(0.9, 0.99999)
        out.append(value + rng.choice([0.0, 0.0, 1e-6, -1e-6]))
    return out


@pytest.mark.parametrize("keyword", [
    {},
    {"patience": 2},
    {"patience": 1, "factor": 0.5, "cooldown": 2},
    {"patience": 0, "mode": "max", "threshold": 0.01, "min_lr": 0.004},
    {"patience": 3, "threshold_mode": "abs", "threshold": 1e-3, "factor": 0.7},
])
def test_reduce_on_plateau_matches_torch(keyword):
    # torch skips reductions smaller than its eps (1e-8); a floor above that keeps both alike
    keyword = {"min_lr": 1e-6, **keyword}
    ours_s = make("reduce_on_plateau", **keyword)
    opt = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=BASE)
    theirs = S.ReduceLROnPlateau(opt, **keyword)
    values = _metric_walk(len(keyword))
    if keyword.get("mode") == "max":
        values = [2.0 - v for v in values]
    reductions = 0
    for epoch, value in enumerate(values):
        theirs.step(value)
        ours_s.observe(value)
        for step in (3 * epoch, 3 * epoch + 2):          # the step does not matter, only observations
            assert ours_s.lr(step, BASE) == pytest.approx(opt.param_groups[0]["lr"])
        reductions = ours_s.reductions
    assert reductions > 0                                  # the walk really triggered reductions


def test_reduce_on_plateau_state_round_trips_through_json():
    a = make("reduce_on_plateau", patience=1)
    values = _metric_walk(3, 30)
    for v in values[:15]:
        a.observe(v)
    b = make("reduce_on_plateau", patience=1)
    b.load_state_dict(json.loads(json.dumps(a.state_dict())))
    for v in values[15:]:
        a.observe(v)
        b.observe(v)
        assert a.lr(0, BASE) == b.lr(0, BASE)
    assert NEEDS_METRIC in BY_NAME["reduce_on_plateau"].flags
    fresh = make("reduce_on_plateau")
    fresh.load_state_dict(json.loads(json.dumps(fresh.state_dict())))   # best = none survives JSON too
    assert fresh.state_dict()["best"] is None


def test_pure_schedules_have_empty_state():
    for name, positional in (("constant", ()), ("cosine", ()), ("step", (3,)), ("warmup", (5,))):
        s = make(name, *positional)
        assert s.state_dict() == {}
        s.load_state_dict({})


def _use(name: str, *positional, **keyword):
    return SimpleNamespace(component=BY_NAME[name], args=args_of(name, *positional, **keyword))


def test_warmup_then_cosine_boundaries():
    total, warm = 110, 10
    s = build([_use("warmup", warm), _use("cosine", min_lr=0.001)], total_steps=total, steps_per_epoch=7)
    lrs = ours(s, total + 5)
    assert lrs[:warm] == pytest.approx([BASE * t / warm for t in range(warm)])
    assert lrs[warm] == pytest.approx(BASE)                       # the cosine starts at the base lr
    rest = total - warm                                            # and spans what remains
    assert lrs[warm:total] == pytest.approx(
        torch_lrs(lambda o: S.CosineAnnealingLR(o, T_max=rest, eta_min=0.001), rest))
    assert lrs[total - 1] > 0.001 and lrs[total:] == pytest.approx([0.001] * 5)
    # a pure function of the step: asking out of order changes nothing
    order = list(range(total))
    random.Random(0).shuffle(order)
    assert [s.lr(t, BASE) for t in order] == [lrs[t] for t in order]


def test_chain_links_see_their_own_steps_and_epochs():
    spe = 4
    links = [(make("constant", epochs=2, spe=spe), link_length(args_of("constant", epochs=2), spe)),
             (make("step", 1, gamma=0.5, spe=spe), None)]
    assert links[0][1] == 8 and link_length(args_of("cosine"), spe) is None
    s = chain(links)
    assert ours(s, 20) == pytest.approx([BASE] * 8 + [BASE * 0.5 ** ((t - 8) // spe) for t in range(8, 20)])
    with pytest.raises(ValueError, match="length"):
        chain([(make("cosine"), None), (make("constant"), None)])
    with pytest.raises(ValueError, match="steps or epochs"):
        build([_use("cosine"), _use("constant")], total_steps=10, steps_per_epoch=1)


def test_chain_forwards_observations_to_the_active_link_only():
    s = build([_use("warmup", 5), _use("reduce_on_plateau", patience=0)], total_steps=50, steps_per_epoch=5)
    s.lr(2, BASE)
    for v in (1.0, 2.0, 3.0):                                       # ignored: warmup is active
        s.observe(v)
    assert s.lr(5, BASE) == BASE
    s.observe(1.0)
    s.observe(2.0)                                                  # no improvement, patience 0
    assert s.lr(6, BASE) == pytest.approx(BASE * 0.1)
    state = json.loads(json.dumps(s.state_dict()))
    again = build([_use("warmup", 5), _use("reduce_on_plateau", patience=0)], total_steps=50, steps_per_epoch=5)
    again.load_state_dict(state)
    assert again.lr(6, BASE) == pytest.approx(BASE * 0.1) and again.lr(0, BASE) == 0.0


@pytest.mark.parametrize("name, positional, keyword", [
    ("warmup", (), {}),                                   # needs a length
    ("warmup", (10,), {"epochs": 1}),                     # not both
    ("warmup", (10,), {"start_factor": 1.0}),
    ("linear", (), {"steps": 0}),
    ("multistep", ((5, 3),), {}),
    ("multistep", ((5, 5),), {}),
    ("cosine", (), {"restarts": 2, "period": 10}),
    ("cosine", (), {"t_mult": 2.0}),
    ("cosine", (), {"t_mult": 0.5, "period": 3}),
    ("one_cycle", (), {"pct_start": 1.0}),
    ("reduce_on_plateau", (), {"factor": 1.0}),
    ("reduce_on_plateau", (), {"mode": "up"}),
    ("step", (0,), {}),
    ("exponential", (0.0,), {}),
])
def test_bad_arguments_are_rejected(name, positional, keyword):
    assert errors_of(name, *positional, **keyword)


@settings(max_examples=60, deadline=None)
@given(restarts=st.integers(0, 4), t_mult=st.sampled_from([1.0, 1.5, 2.0]), total=st.integers(1, 300),
       min_lr=st.sampled_from([0.0, 0.01]), step=st.integers(0, 400))
def test_cosine_stays_between_min_and_base(restarts, t_mult, total, min_lr, step):
    keyword = {"restarts": restarts, "t_mult": t_mult} if restarts else {}
    s = make("cosine", min_lr=min_lr, total=total, **keyword)
    lr = s.lr(step, BASE)
    assert min_lr - 1e-12 <= lr <= BASE + 1e-12
    assert s.lr(0, BASE) == pytest.approx(BASE)
    assert not math.isnan(lr)

"""Built-in losses (against torch's own) and metrics (against plain numpy)."""
from __future__ import annotations

import inspect
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from nnspec.registry.binding import bind
from nnspec.builtins.losses.declare import COMPONENTS as LOSSES
from nnspec.builtins.metrics.declare import COMPONENTS as METRICS
from nnspec.registry.catalog import CLASSIFICATION
from nnspec.builtins.metrics import torch_impl as runtime_metrics
from nnspec.registry.types import Symbol

LOSS = {c.name: c for c in LOSSES}
METRIC = {c.name: c for c in METRICS}


def _args(component, *positional, **keyword):
    args, errors = bind(component.params, positional, list(keyword.items()), component.name, component.check)
    assert not errors, errors
    return args


def loss(name, *positional, **keyword):
    return LOSS[name].load()(_args(LOSS[name], *positional, **keyword))


def metric(name, num_classes=None, **keyword):
    return METRIC[name].load()(_args(METRIC[name], **keyword), num_classes=num_classes)


def gen(seed=0):
    return torch.Generator().manual_seed(seed)


# --- declarations -----------------------------------------------------------------------------

def test_declarations_document_and_flag_classification():
    for c in LOSSES + METRICS:
        assert c.summary and all(p.doc for p in c.params), c.name
    classified = {c.name for c in LOSSES + METRICS if CLASSIFICATION in c.flags}
    assert classified == {"cross_entropy", "nll", "accuracy", "top_k", "precision", "recall", "f1",
                          "confusion_matrix"}


@pytest.mark.parametrize("component, keyword", [
    (LOSS["cross_entropy"], {"label_smoothing": 1.0}),
    (LOSS["cross_entropy"], {"weight": (1.0, -1.0)}),
    (LOSS["huber"], {"delta": 0.0}),
    (LOSS["smooth_l1"], {"beta": -1.0}),
    (LOSS["bce_with_logits"], {"pos_weight": 0.0}),
    (METRIC["top_k"], {"k": 0}),
    (METRIC["f1"], {"average": "micro"}),
])
def test_bad_arguments_are_rejected(component, keyword):
    args, errors = bind(component.params, (), list(keyword.items()), component.name, component.check)
    assert args is None and errors


def test_none_is_accepted_for_optional_weights():
    assert _args(LOSS["cross_entropy"], weight=Symbol("none")).weight is None
    assert _args(LOSS["bce_with_logits"], pos_weight=2.0).pos_weight == 2.0
    assert _args(LOSS["bce_with_logits"], pos_weight=(1.0, 3.0)).pos_weight == (1.0, 3.0)


# --- losses -----------------------------------------------------------------------------------

def test_cross_entropy_matches_torch_with_weights_and_smoothing():
    logits = torch.randn(32, 5, generator=gen())
    labels = torch.randint(0, 5, (32,), generator=gen(1))
    weight = (1.0, 2.0, 0.5, 1.0, 3.0)
    ours = loss("cross_entropy", 0.1, weight)
    reference = torch.nn.CrossEntropyLoss(weight=torch.tensor(weight), label_smoothing=0.1)
    torch.testing.assert_close(ours(logits, labels), reference(logits, labels))
    assert ours(logits, labels).dim() == 0
    assert "weight" in dict(ours.named_buffers())          # moves with .to(device)
    # labels as [N, 1] and as floats still mean class indices
    torch.testing.assert_close(ours(logits, labels[:, None].float()), reference(logits, labels))


def test_cross_entropy_over_a_sequence_and_with_probabilities():
    logits = torch.randn(4, 7, 3, generator=gen())              # [N, T, classes]
    labels = torch.randint(0, 3, (4, 7), generator=gen(1))
    torch.testing.assert_close(loss("cross_entropy")(logits, labels), F.cross_entropy(logits.transpose(1, 2), labels))
    probs = torch.softmax(torch.randn(6, 3, generator=gen(2)), -1)
    torch.testing.assert_close(loss("cross_entropy")(logits[0, :6], probs), F.cross_entropy(logits[0, :6], probs))
    with pytest.raises(ValueError, match="class indices"):
        loss("cross_entropy")(logits, labels[:, :5])
    with pytest.raises(ValueError, match="weight"):
        loss("cross_entropy", weight=(1.0, 2.0))(logits, labels)


def test_nll_matches_torch():
    logp = torch.log_softmax(torch.randn(20, 4, generator=gen()), -1)
    labels = torch.randint(0, 4, (20,), generator=gen(1))
    torch.testing.assert_close(loss("nll", (1.0, 2.0, 3.0, 4.0))(logp, labels),
                               F.nll_loss(logp, labels, weight=torch.tensor([1.0, 2.0, 3.0, 4.0])))


def test_bce_with_logits_matches_torch():
    logits = torch.randn(16, 3, generator=gen())
    targets = torch.randint(0, 2, (16, 3), generator=gen(1))
    torch.testing.assert_close(loss("bce_with_logits", (1.0, 2.0, 4.0))(logits, targets),
                               F.binary_cross_entropy_with_logits(logits, targets.float(),
                                                                  pos_weight=torch.tensor([1.0, 2.0, 4.0])))
    one = logits[:, :1]
    torch.testing.assert_close(loss("bce_with_logits", 3.0)(one, targets[:, 0]),       # [N, 1] vs [N]
                               F.binary_cross_entropy_with_logits(one, targets[:, :1].float(),
                                                                  pos_weight=torch.tensor([3.0])))


@pytest.mark.parametrize("name, keyword, reference", [
    ("mse", {}, lambda o, t: F.mse_loss(o, t)),
    ("l1", {}, lambda o, t: F.l1_loss(o, t)),
    ("huber", {"delta": 0.5}, lambda o, t: F.huber_loss(o, t, delta=0.5)),
    ("smooth_l1", {"beta": 0.3}, lambda o, t: F.smooth_l1_loss(o, t, beta=0.3)),
])
def test_regression_losses_match_torch_and_reshape_single_outputs(name, keyword, reference):
    output = torch.randn(24, 1, generator=gen())
    target = torch.randn(24, generator=gen(1))
    ours = loss(name, **keyword)
    expected = reference(output, target[:, None])
    torch.testing.assert_close(ours(output, target), expected)                 # [N, 1] vs [N]
    torch.testing.assert_close(ours(output, target[:, None]), expected)
    wide = torch.randn(24, 3, generator=gen(2))
    torch.testing.assert_close(ours(wide, wide.flip(0)), reference(wide, wide.flip(0)))
    with pytest.raises(ValueError, match="shape"):                              # no silent broadcasting
        ours(wide, target)


# --- metrics: classification ------------------------------------------------------------------

def _batches(n=97, classes=5, seed=0, chunks=(30, 40, 27)):
    logits = torch.randn(n, classes, generator=gen(seed))
    labels = torch.randint(0, classes, (n,), generator=gen(seed + 1))
    labels[:20] = logits[:20].argmax(-1)                           # some right answers
    return logits, labels, [(logits[a:a + k], labels[a:a + k]) for a, k in zip(np.cumsum((0,) + chunks[:-1]), chunks)]


def _feed(m, batches):
    for output, target in batches:
        m.update(output, target)
    return m.compute()


def _scores(y, p, classes):
    """precision, recall, f1 per class, written out the textbook way."""
    out = {"precision": [], "recall": [], "f1": []}
    present = []
    for c in range(classes):
        tp = np.sum((p == c) & (y == c))
        fp = np.sum((p == c) & (y != c))
        fn = np.sum((p != c) & (y == c))
        prec = tp / (tp + fp) if tp + fp else 0.0
        rec = tp / (tp + fn) if tp + fn else 0.0
        out["precision"].append(prec)
        out["recall"].append(rec)
        out["f1"].append(2 * prec * rec / (prec + rec) if prec + rec else 0.0)
        present.append(bool(np.any(y == c) or np.any(p == c)))
    return out, present


def test_accuracy_and_top_k_accumulate_over_batches():
    logits, labels, batches = _batches()
    assert _feed(metric("accuracy"), batches) == {"accuracy": pytest.approx(
        np.mean(logits.argmax(-1).numpy() == labels.numpy()))}
    top3 = np.argsort(-logits.numpy(), axis=1)[:, :3]
    result = _feed(metric("top_k", k=3), batches)
    assert result == {"top3_accuracy": pytest.approx(np.mean([l in row for l, row in zip(labels.numpy(), top3)]))}
    with pytest.raises(ValueError, match="k = 7"):
        metric("top_k", num_classes=5, k=7)


@pytest.mark.parametrize("classes, num_classes", [(5, 5), (4, 9), (2, None)])
def test_precision_recall_f1_and_confusion_match_numpy(classes, num_classes):
    logits, labels, batches = _batches(classes=classes, seed=classes)
    y, p = labels.numpy(), logits.argmax(-1).numpy()
    expected, present = _scores(y, p, classes)
    width = max(classes, num_classes or 0)
    for name in ("precision", "recall", "f1"):
        per_class = _feed(metric(name, num_classes, average="per_class"), batches)[name]
        assert per_class == pytest.approx(expected[name] + [0.0] * (width - classes))
        macro = _feed(metric(name, num_classes), batches)[name]
        assert macro == pytest.approx(np.mean([s for s, keep in zip(expected[name], present) if keep]))
    confusion = _feed(metric("confusion_matrix", num_classes), batches)["confusion_matrix"]
    want = np.zeros((width, width), dtype=int)
    np.add.at(want, (y, p), 1)
    assert confusion == want.tolist()


def test_binary_single_logit_metrics():
    logit = torch.randn(50, 1, generator=gen())
    labels = torch.randint(0, 2, (50,), generator=gen(1)).float()       # bce-style float labels
    predicted = (logit[:, 0] > 0).numpy().astype(int)
    assert _feed(metric("accuracy"), [(logit, labels)])["accuracy"] == pytest.approx(
        np.mean(predicted == labels.numpy()))
    expected, _ = _scores(labels.numpy().astype(int), predicted, 2)
    assert _feed(metric("recall", 2, average="per_class"), [(logit, labels[:, None])])["recall"] == \
        pytest.approx(expected["recall"])


def test_reset_and_empty_metrics():
    logits, labels, batches = _batches()
    m = metric("accuracy")
    _feed(m, batches)
    m.reset()
    assert math.isnan(m.compute()["accuracy"])
    m.update(logits[:10], labels[:10])
    assert m.compute()["accuracy"] == pytest.approx(np.mean(logits[:10].argmax(-1).numpy() == labels[:10].numpy()))
    assert math.isnan(metric("r2").compute()["r2"]) and metric("confusion_matrix").compute()["confusion_matrix"] == []


# --- metrics: regression ----------------------------------------------------------------------

def test_regression_metrics_match_numpy_across_batches():
    target = torch.randn(90, 3, generator=gen()) * torch.tensor([1.0, 10.0, 0.1]) + 1000.0   # large offset
    output = target + 0.3 * torch.randn(90, 3, generator=gen(1))
    batches = [(output[:25], target[:25]), (output[25:26], target[25:26]), (output[26:], target[26:])]
    o, t = output.double().numpy(), target.double().numpy()
    mse = np.mean((o - t) ** 2)
    assert _feed(metric("mse"), batches) == {"mse": pytest.approx(mse), "rmse": pytest.approx(math.sqrt(mse))}
    assert _feed(metric("mae"), batches)["mae"] == pytest.approx(np.mean(np.abs(o - t)))
    per_output = 1 - ((o - t) ** 2).sum(0) / ((t - t.mean(0)) ** 2).sum(0)
    assert _feed(metric("r2"), batches)["r2"] == pytest.approx(per_output.mean(), rel=1e-9)


def test_r2_single_output_and_constant_target():
    target = torch.randn(40, generator=gen())
    output = (target + 0.5 * torch.randn(40, generator=gen(1)))[:, None]            # [N, 1] vs [N]
    o, t = output[:, 0].double().numpy(), target.double().numpy()
    assert _feed(metric("r2"), [(output[:13], target[:13]), (output[13:], target[13:])])["r2"] == \
        pytest.approx(1 - ((o - t) ** 2).sum() / ((t - t.mean()) ** 2).sum())
    flat = torch.full((8,), 2.0)
    assert _feed(metric("r2"), [(flat, flat)])["r2"] == 1.0
    assert _feed(metric("r2"), [(flat + 1, flat)])["r2"] == 0.0
    with pytest.raises(ValueError, match="shape"):
        metric("mse").update(torch.zeros(4, 2), torch.zeros(4))


# --- metrics never sync in update -------------------------------------------------------------

@pytest.mark.parametrize("name, keyword", [("accuracy", {}), ("top_k", {"k": 2}), ("precision", {}),
                                           ("f1", {"average": "per_class"}), ("confusion_matrix", {}),
                                           ("mse", {}), ("mae", {}), ("r2", {})])
def test_update_never_reads_tensor_values(name, keyword):
    """Meta tensors have no data: any .item(), host copy or branch on a value would raise."""
    m = metric(name, 4, **keyword)
    regression = CLASSIFICATION not in METRIC[name].flags
    output = torch.empty(8, 4, device="meta")
    target = torch.empty(8, 4, device="meta") if regression else torch.empty(8, dtype=torch.long, device="meta")
    m.update(output, target)
    m.update(output, target)
    with pytest.raises((RuntimeError, NotImplementedError)):
        m.compute()                                       # compute is where the one sync happens


def test_update_sources_contain_no_host_sync():
    classes = [runtime_metrics.Accuracy, runtime_metrics.TopK, runtime_metrics.Confusion,
               runtime_metrics.ErrorMean, runtime_metrics.R2]
    sources = [inspect.getsource(getattr(cls, attr)) for cls in classes for attr in ("update", "_hits")
               if attr in vars(cls)]
    sources += [inspect.getsource(f) for f in (runtime_metrics._labels, runtime_metrics._predicted,
                                               runtime_metrics._columns)]
    for source in sources:
        for call in (".item(", ".tolist(", ".cpu(", ".numpy(", "float(", "bool("):
            assert call not in source, (call, source.splitlines()[0])


# --- partial states merge (sharded evaluation in data-parallel runs) ----------------------------

@pytest.mark.parametrize("name", sorted(METRIC))
def test_every_builtin_metric_merges_partial_states_into_the_whole_result(name):
    """Shares of one split (one of them empty, like a rank with no samples), each measured by its
    own metric, then merged in order by a fresh one: the result of measuring the whole split."""
    keyword = {"k": 2} if name == "top_k" else {}
    regression = CLASSIFICATION not in METRIC[name].flags
    g = gen(3)
    output = torch.randn(50, 4, generator=g)
    target = torch.randn(50, 4, generator=g) if regression else torch.randint(0, 4, (50,), generator=g)
    whole = metric(name, 4, **keyword)
    for lo in range(0, 50, 7):
        whole.update(output[lo:lo + 7], target[lo:lo + 7])
    assert whole.mergeable
    states = []
    for lo, hi in ((0, 0), (0, 13), (13, 31), (31, 50)):
        part = metric(name, 4, **keyword)
        for a in range(lo, hi, 5):
            part.update(output[a:min(a + 5, hi)], target[a:min(a + 5, hi)])
        states.append(part.state())
    merged = metric(name, 4, **keyword)
    for state in states:
        merged.merge_state(state)
    expected, got = whole.compute(), merged.compute()
    assert expected.keys() == got.keys()
    for key in expected:
        np.testing.assert_allclose(np.asarray(got[key], dtype=float), np.asarray(expected[key], dtype=float), rtol=1e-9)


@pytest.mark.parametrize("name, keyword", [(c.name, {}) for c in METRICS] + [
    ("top_k", {"k": 2}), ("precision", {"average": "per_class"}), ("f1", {"average": "per_class"})])
def test_every_metric_computes_exactly_the_keys_it_declares(name, keyword):
    classify = CLASSIFICATION in METRIC[name].flags
    out = torch.randn(8, 6, generator=gen())
    target = torch.randint(0, 6, (8,), generator=gen()) if classify else torch.randn(8, 6, generator=gen())
    m = metric(name, num_classes=6, **keyword)
    m.update(out, target)
    declared = METRIC[name].reported(_args(METRIC[name], **keyword))
    assert set(m.compute()) == {k.name for k in declared}
    for k in declared:
        assert isinstance(m.compute()[k.name], list) == (k.better is None)


def test_a_metric_missing_a_declared_key_is_a_located_error():
    from types import SimpleNamespace

    from nnspec.errors import NnspecError, Span
    from nnspec.runtime.evaluation import metric_values
    from nnspec.spec.settings import Use
    use = Use(METRIC["accuracy"], _args(METRIC["accuracy"]), Span("x.nn", 3, 9, 3, 17))
    with pytest.raises(NnspecError) as err:
        metric_values([use], [SimpleNamespace(compute=lambda: {"acc": 0.5})])
    d = err.value.diagnostics[0]
    assert d.code == "E908" and d.span.line == 3 and "accuracy" in d.message

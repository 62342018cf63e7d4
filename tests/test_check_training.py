"""Training rules the check decides (nnspec/check/training_rules.py): what `train` used to refuse,
or silently mishandle, is a located error at validate time."""
from __future__ import annotations

import pytest

from nnspec.check.checker import check_source

MLP = """model m {
  input [64]
  linear(10)
}
data digits
"""


def _errors(text: str):
    return [d for d in check_source(text).diagnostics if d.severity == "error"]


def _one(text: str, code: str):
    errors = _errors(text)
    assert [d.code for d in errors] == [code], [(d.code, d.message) for d in errors]
    return errors[0]


def _at(d, line: int, col: int) -> None:
    assert (d.span.line, d.span.column) == (line, col), (d.span.line, d.span.column, d.message)


# --- 1. metrics declare their keys; monitors match them exactly ----------------------------------

def test_early_stop_monitor_with_a_typo_is_refused_exactly_with_did_you_mean():
    d = _one(MLP + "loss cross_entropy\nmetrics accuracy\ntrain { early_stop(monitor = val_accuracyy) }\n",
             "E512")
    _at(d, 8, 30)
    assert "val_accuracy" in d.hint


def test_monitor_names_the_declared_key_not_the_metric_name():
    ok = MLP + "loss cross_entropy\nmetrics top_k(k = 3)\ntrain { monitor val_top3_accuracy }\n"
    assert not _errors(ok)
    d = _one(MLP + "loss cross_entropy\nmetrics top_k(k = 3)\ntrain { monitor val_top_k }\n", "E512")
    assert "val_top3_accuracy" in d.hint


def test_a_non_scalar_metric_cannot_be_monitored():
    d = _one(MLP + "loss cross_entropy\nmetrics confusion_matrix\ntrain { monitor(metric = val_confusion_matrix) }\n",
             "E512")
    _at(d, 8, 26)


def test_monitor_mode_defaults_to_the_declared_direction():
    spec = check_source(MLP + "loss cross_entropy\nmetrics accuracy\ntrain { early_stop(monitor = val_accuracy) }\n").spec
    assert spec.train.early_stop.mode == "max" and spec.train.monitor_mode == "max"
    spec = check_source(MLP + "loss cross_entropy\nmetrics accuracy\n"
                        "train { early_stop(monitor = val_accuracy, mode = min) }\n").spec
    assert spec.train.early_stop.mode == "min"
    spec = check_source(MLP + "loss cross_entropy\nmetrics accuracy\ntrain { monitor train_loss }\n").spec
    assert spec.train.monitor_mode == "min"


def test_two_metrics_reporting_one_key_are_refused():
    d = _one(MLP + "loss cross_entropy\nmetrics accuracy, accuracy\n", "E540")
    _at(d, 7, 19)


# --- 2. metrics need a loss of their kind -----------------------------------------------------------

def test_classification_metric_with_a_regression_loss_is_refused_at_the_metric():
    text = "model m {\n  input [8]\n  linear(1)\n}\ndata regression\nloss mse\nmetrics mae, accuracy\n"
    d = _one(text, "E541")
    _at(d, 7, 14)
    assert d.hint


def test_binary_loss_with_one_logit_may_use_classification_metrics():
    text = "model m {\n  input [8]\n  linear(1)\n}\nloss bce_with_logits\nmetrics accuracy\n"
    assert not _errors(text)
    d = _one("model m {\n  input [8]\n  linear(3)\n}\nloss bce_with_logits\nmetrics accuracy\n", "E541")
    _at(d, 6, 9)


# --- 3. class counts come from the model output -------------------------------------------------------

def test_top_k_larger_than_the_classes_is_refused_at_k():
    d = _one(MLP + "loss cross_entropy\nmetrics top_k(k = 20)\n", "E542")
    _at(d, 7, 19)


def test_class_weights_must_have_one_entry_per_class():
    d = _one(MLP + "loss cross_entropy(weight = [1, 2, 3])\n", "E542")
    _at(d, 6, 29)


def test_per_position_output_against_one_label_per_sample_is_refused_at_the_loss():
    text = """model m {
  input [1, 8, 8]
  conv2d(6, 3)
  linear(10)
}
data digits(shape = [1, 8, 8])
loss cross_entropy
"""
    d = _one(text, "E543")
    _at(d, 7, 6)
    assert "flatten" in d.hint


def test_fewer_outputs_than_the_dataset_has_classes_is_refused():
    text = "model m {\n  input [2]\n  linear(2)\n}\ndata blobs(features = 2, classes = 4)\nloss cross_entropy\n"
    d = _one(text, "E903")            # the data pass's rule, the one training applies to the labels
    _at(d, 5, 6)
    assert "the model has 2 outputs" in d.message and "at least 4 classes" in d.hint


# --- 4. schedule chains ----------------------------------------------------------------------------

@pytest.mark.parametrize("schedule, col", [("cosine() then warmup(steps = 10)", 10),
                                           ("reduce_on_plateau then cosine", 10)])
def test_a_link_without_a_length_must_be_last(schedule, col):
    d = _one(MLP + f"loss cross_entropy\noptimizer sgd(lr = 0.1)\nschedule {schedule}\n", "E544")
    _at(d, 8, col)


def test_interval_follows_the_per_epoch_flag():
    base = MLP + "loss cross_entropy\noptimizer sgd(lr = 0.1)\n"
    assert check_source(base + "schedule reduce_on_plateau\n").spec.schedule.interval == "epoch"
    assert check_source(base + "schedule warmup(steps = 5) then reduce_on_plateau\n").spec.schedule.interval == "step"


def test_plateau_mode_must_agree_with_the_monitor():
    d = _one(MLP + "loss cross_entropy\nmetrics accuracy\noptimizer sgd(lr = 0.1)\n"
             "schedule reduce_on_plateau(mode = min)\ntrain { monitor val_accuracy }\n", "E545")
    _at(d, 9, 35)


# --- 5. numbers torch can hold ------------------------------------------------------------------------

@pytest.mark.parametrize("text, line, col", [
    (MLP + "loss cross_entropy\noptimizer sgd(lr = 1e308)\n", 7, 20),
    (MLP + "loss cross_entropy\ntrain { clip_grad_value 1e308 }\n", 7, 25),
    ("model m {\n  input [1, 8, 8]\n  conv2d(4, 3, padding = 1e30)\n}\n", 3, 26),
    ("model m {\n  input [1, 8, 8]\n  adaptive_avgpool2d(1e308)\n}\n", 3, 22),
])
def test_numbers_beyond_float32_or_int64_are_refused_where_written(text, line, col):
    d = _one(text, "E304")
    _at(d, line, col)


def test_a_huge_layer_is_a_memory_error_not_a_crash():
    d = _one("model m {\n  input [1, 8, 8]\n  adaptive_avgpool2d(4e15)\n  flatten\n  linear(4000000)\n}\n", "E610")
    assert d.hint


def test_memory_estimate_has_one_formula():
    from nnspec.check.memory import estimate, human
    spec = check_source(MLP + "optimizer adam(lr = 1e-3)\n").spec
    mem = estimate(spec)
    assert mem["optimizer_state"] == 2 * mem["gradients"] == 2 * 4 * 650
    assert human(10 ** 400).endswith("TiB")


def test_positive_weights_must_be_one_or_one_per_output():
    d = _one("model m {\n  input [8]\n  linear(3)\n}\nloss bce_with_logits(pos_weight = [1, 2])\n", "E542")
    _at(d, 5, 35)


def test_a_regression_output_must_match_the_targets():
    d = _one("model m {\n  input [8]\n  linear(3)\n}\ndata regression(features = 8, targets = 2)\nloss mse\n", "E903")
    _at(d, 5, 6)                      # the data pass's rule, the one training applies to the targets
    assert not _errors("model m {\n  input [8]\n  linear(2)\n}\ndata regression(features = 8, targets = 2)\nloss mse\n")


def test_plateau_mode_follows_the_monitor_when_not_given():
    spec = check_source(MLP + "loss cross_entropy\nmetrics accuracy\noptimizer sgd(lr = 0.1)\n"
                        "schedule reduce_on_plateau\ntrain { monitor val_accuracy }\n").spec
    assert spec.schedule.links[0].args.mode == "max"


def test_regression_metric_with_a_classification_loss_is_refused_at_the_metric():
    d = _one(MLP + "loss cross_entropy\nmetrics accuracy, mse\n", "E541")
    _at(d, 7, 19)

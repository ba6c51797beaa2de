"""The metric registry (airloop.core.metrics): values against hand-computed numbers and scikit-learn, directions,
binary and multiclass, string labels, and metrics undefined on the data (NaN with a reason, never an exception)."""

from __future__ import annotations

import json
import math
import subprocess
import sys

import numpy as np
import pytest
from sklearn import metrics as skm

from airloop.core import metrics as M

# Binary, string labels: the positive class is "yes" (classes[1]).
YB = ["no", "yes", "yes", "no", "yes"]
PB = [0.2, 0.7, 0.4, 0.6, 0.9]  # P(yes); at 0.5: no yes no yes yes
CB = ["no", "yes"]
# Multiclass, string labels, one probability column per class of CM.
YM = ["cat", "dog", "eel", "cat", "dog", "eel"]
CM = ["cat", "dog", "eel"]
PM = [[0.7, 0.2, 0.1], [0.2, 0.5, 0.3], [0.1, 0.3, 0.6], [0.3, 0.4, 0.3], [0.5, 0.4, 0.1], [0.2, 0.2, 0.6]]
PM_CLASSES = ["cat", "dog", "eel", "dog", "cat", "eel"]  # argmax of each row


def test_every_metric_is_described_and_fits_known_tasks():
    names = [m.name for t in M.TASKS for m in M.metrics_for(t)]
    assert len(set(names)) == len({m.name for m in M._ALL}) == len(M._ALL)
    for metric in M._ALL:
        assert metric.tasks and metric.tasks <= set(M.TASKS), metric.name
        assert metric.needs in ("values", "classes", "proba"), metric.name
        assert metric.description and "\n" not in metric.description and len(metric.description) < 100


@pytest.mark.parametrize(
    ("task", "expected"),
    [
        ("regression", {"rmse", "mae", "r2", "smape", "poisson_deviance"}),
        (
            "binary",
            {"roc_auc", "average_precision", "log_loss", "brier", "accuracy", "balanced_accuracy", "precision"}
            | {"recall", "f1", "f1_macro", "f1_weighted"},
        ),
        (
            "multiclass",
            {"roc_auc_ovr_macro", "roc_auc_ovr_weighted", "log_loss", "accuracy", "balanced_accuracy", "f1_macro"}
            | {"f1_weighted", "precision_macro", "recall_macro"},
        ),
    ],
)
def test_metrics_for_each_task(task, expected):
    assert {m.name for m in M.metrics_for(task)} == expected


LOWER = {"rmse", "mae", "smape", "poisson_deviance", "log_loss", "brier"}


@pytest.mark.parametrize("metric", M._ALL, ids=lambda m: m.name)
def test_direction_of_each_metric(metric):
    assert metric.lower_is_better is (metric.name in LOWER)
    worse, good = (2.0, 1.0) if metric.lower_is_better else (0.5, 0.9)
    assert M.better(metric.name, good, worse) and not M.better(metric.name, worse, good)


@pytest.mark.parametrize(
    ("name", "a", "b", "expected"),
    [
        ("rmse", 1.0, 2.0, True),
        ("rmse", 2.0, 1.0, False),
        ("rmse", 1.0, 1.0, False),  # strictly better only
        ("roc_auc", 0.9, 0.8, True),
        ("roc_auc", 0.8, 0.9, False),
        ("roc_auc", math.nan, 0.1, False),  # NaN is never better
        ("roc_auc", 0.1, math.nan, True),  # any number beats NaN
        ("rmse", math.nan, math.nan, False),
    ],
)
def test_better(name, a, b, expected):
    assert M.better(name, a, b) is expected


def test_unknown_metric_names_every_metric_by_task():
    with pytest.raises(M.MetricError) as err:
        M.get("auc")
    text = str(err.value)
    assert "unknown metric 'auc'" in text
    assert all(f"{task}:" in text for task in M.TASKS) and "roc_auc" in text and "rmse" in text


def test_unknown_metric_for_a_task_names_the_metrics_that_fit_it():
    with pytest.raises(M.MetricError, match=r"unknown metric 'auc' for a binary task; metrics that fit binary: roc_"):
        M.get("auc", "binary")
    with pytest.raises(M.MetricError) as err:
        M.get("rmse", "binary")
    assert "fits regression tasks, not binary" in str(err.value) and "rmse," not in str(err.value)
    with pytest.raises(M.MetricError, match="unknown metric 'auc' for a binary task"):
        M.compute("binary", YB, proba=PB, names=["auc"])
    assert M.get("log_loss", "multiclass").name == "log_loss"


def test_unknown_task():
    with pytest.raises(M.MetricError, match="unknown task 'ranking'; expected one of regression, binary, multiclass"):
        M.metrics_for("ranking")


# ---- regression -------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        # y = [0, 1, 2, 0], pred = [0, 1.5, 2, 1]: errors 0, .5, 0, 1
        ("rmse", math.sqrt((0.25 + 1) / 4)),
        ("mae", 1.5 / 4),
        ("r2", 1 - 1.25 / 2.75),  # SS_res 1.25; mean .75, SS_tot .5625 + .0625 + 1.5625 + .5625
        ("smape", (0 + 2 * 0.5 / 2.5 + 0 + 2 * 1 / 1) / 4),  # the 0/0 row counts 0
    ],
)
def test_regression_by_hand(name, expected):
    scores = M.compute("regression", [0, 1, 2, 0], y_pred=[0, 1.5, 2, 1])
    assert scores[name] == pytest.approx(expected)


def test_poisson_deviance_against_sklearn_and_undefined_for_non_positive_predictions():
    y, pred = [0, 3, 1, 7], [0.5, 2.0, 1.0, 6.0]
    scores = M.compute("regression", y, y_pred=pred)
    assert scores["poisson_deviance"] == pytest.approx(skm.mean_poisson_deviance(y, pred))
    scores = M.compute("regression", y, y_pred=[0.5, -1.0, 1.0, 0.0])
    assert math.isnan(scores["poisson_deviance"])
    assert "2 of 4 predictions are <= 0 (first at row 1: -1.0)" in scores.notes["poisson_deviance"]
    assert scores["mae"] == pytest.approx(skm.mean_absolute_error(y, [0.5, -1.0, 1.0, 0.0]))


def test_smape_is_finite_on_zero_targets_where_mape_is_not():
    scores = M.compute("regression", [0, 0, 4], y_pred=[0, 2, 4])
    assert scores["smape"] == pytest.approx(2 / 3)  # row 2: 2·2 / (0 + 2) = 2, the maximum
    assert skm.mean_absolute_percentage_error([0, 0, 4], [0, 2, 4]) > 1e14  # why MAPE is not offered


# ---- classification against scikit-learn -----------------------------------------------------------------------

YB_PRED = np.where(np.asarray(PB) >= 0.5, "yes", "no")


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("roc_auc", skm.roc_auc_score([y == "yes" for y in YB], PB)),
        ("average_precision", skm.average_precision_score([y == "yes" for y in YB], PB)),
        ("log_loss", skm.log_loss(YB, np.column_stack([1 - np.asarray(PB), PB]), labels=CB)),
        ("brier", skm.brier_score_loss([y == "yes" for y in YB], PB)),
        ("accuracy", skm.accuracy_score(YB, YB_PRED)),
        ("balanced_accuracy", skm.balanced_accuracy_score(YB, YB_PRED)),
        ("precision", skm.precision_score(YB, YB_PRED, pos_label="yes")),
        ("recall", skm.recall_score(YB, YB_PRED, pos_label="yes")),
        ("f1", skm.f1_score(YB, YB_PRED, pos_label="yes")),
        ("f1_macro", skm.f1_score(YB, YB_PRED, average="macro")),
        ("f1_weighted", skm.f1_score(YB, YB_PRED, average="weighted")),
    ],
)
def test_binary_string_labels_match_sklearn(name, expected):
    scores = M.compute("binary", YB, proba=PB, classes=CB)
    assert scores[name] == pytest.approx(expected)
    assert not scores.notes


def test_binary_by_hand_and_the_threshold():
    # at 0.5: predicted no yes no yes yes -> TP 2 (rows 1, 4), FP 1 (row 3), FN 1 (row 2)
    at_half = M.compute("binary", YB, proba=PB, classes=CB)
    assert (at_half["precision"], at_half["recall"], at_half["accuracy"]) == pytest.approx((2 / 3, 2 / 3, 3 / 5))
    assert at_half["roc_auc"] == pytest.approx(5 / 6)  # 5 of the 6 (positive, negative) pairs ordered right
    # at 0.3: predicted no yes yes yes yes -> TP 3, FP 1
    at_low = M.compute("binary", YB, proba=PB, classes=CB, threshold=0.3)
    assert (at_low["precision"], at_low["recall"]) == pytest.approx((3 / 4, 1.0))
    assert at_low["roc_auc"] == at_half["roc_auc"]  # threshold-free


def test_positive_probability_as_one_column_or_two():
    one = M.compute("binary", YB, proba=PB, classes=CB)
    two = M.compute("binary", YB, proba=np.column_stack([1 - np.asarray(PB), PB]), classes=CB)
    assert dict(one) == pytest.approx(dict(two))


def test_classes_default_to_the_sorted_labels_seen():
    inferred = M.compute("binary", [0, 1, 1, 0, 1], proba=PB)
    given = M.compute("binary", YB, proba=PB, classes=CB)
    assert dict(inferred) == pytest.approx(dict(given))
    assert not inferred.notes


def test_labels_held_as_python_objects_score_like_typed_ones():
    as_objects = M.compute("binary", np.array([0, 1, 1, 0, 1], dtype=object), y_pred=np.array(YB_PRED == "yes", int))
    typed = M.compute("binary", [0, 1, 1, 0, 1], y_pred=(YB_PRED == "yes").astype(int))
    assert dict(as_objects) == pytest.approx(dict(typed)) and len(as_objects) == 7
    assert set(as_objects.notes) == {"roc_auc", "average_precision", "log_loss", "brier"}  # no probabilities given


def test_predicted_classes_win_over_the_probabilities():
    y_pred = ["yes"] * 5
    scores = M.compute("binary", YB, y_pred=y_pred, proba=PB, classes=CB)
    assert scores["precision"] == pytest.approx(3 / 5) and scores["recall"] == 1.0
    assert scores["roc_auc"] == pytest.approx(5 / 6)  # probabilities still used where needed


def test_without_probabilities_only_class_metrics_are_computed_and_the_rest_noted():
    scores = M.compute("binary", YB, y_pred=YB_PRED)
    assert set(scores) == {"accuracy", "balanced_accuracy", "precision", "recall", "f1", "f1_macro", "f1_weighted"}
    assert scores.notes["roc_auc"] == "needs class probabilities (pass proba=)"
    assert "roc_auc: not computed: needs class probabilities (pass proba=)" in scores.explain()


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("log_loss", skm.log_loss(YM, PM, labels=CM)),
        ("roc_auc_ovr_macro", skm.roc_auc_score(YM, PM, multi_class="ovr", average="macro", labels=CM)),
        ("roc_auc_ovr_weighted", skm.roc_auc_score(YM, PM, multi_class="ovr", average="weighted", labels=CM)),
        ("accuracy", skm.accuracy_score(YM, PM_CLASSES)),
        ("balanced_accuracy", skm.balanced_accuracy_score(YM, PM_CLASSES)),
        ("f1_macro", skm.f1_score(YM, PM_CLASSES, average="macro")),
        ("f1_weighted", skm.f1_score(YM, PM_CLASSES, average="weighted")),
        ("precision_macro", skm.precision_score(YM, PM_CLASSES, average="macro")),
        ("recall_macro", skm.recall_score(YM, PM_CLASSES, average="macro")),
    ],
)
def test_multiclass_string_labels_match_sklearn(name, expected):
    scores = M.compute("multiclass", YM, proba=PM, classes=CM)
    assert scores[name] == pytest.approx(expected)
    assert not scores.notes


def test_multiclass_accuracy_by_hand():
    scores = M.compute("multiclass", YM, proba=PM, classes=CM)
    assert scores["accuracy"] == pytest.approx(4 / 6)  # rows 3 and 4 are wrong


def test_numpy_classes_give_plain_labels_in_notes():
    scores = M.compute("binary", ["no", "no"], proba=[0.2, 0.7], classes=np.array(CB))
    assert scores.notes["roc_auc"] == "only one class ('no') is present in y_true; it needs both ['no', 'yes']"


# ---- undefined on the data: NaN and a reason --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("task", "y", "kwargs", "name", "reason"),
    [
        ("binary", ["no", "no"], {"proba": [0.2, 0.7], "classes": CB}, "roc_auc", "only one class ('no') is present"),
        ("binary", ["no", "no"], {"proba": [0.2, 0.7], "classes": CB}, "average_precision", "no row of y_true is"),
        ("binary", ["no", "no"], {"proba": [0.2, 0.7], "classes": CB}, "recall", "no row of y_true is the positive"),
        ("binary", YB, {"proba": [0.1] * 5, "classes": CB}, "precision", "no row is predicted as the positive class"),
        ("binary", ["no", "no"], {"proba": [0.2, 0.1], "classes": CB}, "f1", "neither present nor predicted"),
        ("binary", ["no", "no"], {"proba": [0.2, 0.7]}, "roc_auc", "a binary task needs exactly two classes"),
        ("binary", ["no", "no"], {"proba": [0.2, 0.7]}, "accuracy", "pass classes= when a batch may hold only one"),
        ("binary", YM, {"proba": PM}, "log_loss", "a binary task needs exactly two classes"),
        ("multiclass", ["cat", "dog"], {"proba": PM[:2], "classes": CM}, "roc_auc_ovr_macro", "classes ['eel'] are"),
        ("multiclass", ["cat", "cat"], {"y_pred": ["cat", "cat"]}, "accuracy", "at least two classes"),
        ("regression", [3, 3, 3], {"y_pred": [1, 2, 3]}, "r2", "the target is constant (3 on all 3 rows)"),
        ("regression", [1.0, math.nan], {"y_pred": [1.0, 2.0]}, "rmse", "ValueError: Input contains NaN"),
        ("regression", [], {"y_pred": []}, "mae", "no rows to score"),
        ("binary", [], {"proba": [], "classes": CB}, "roc_auc", "no rows to score"),
        ("multiclass", [], {"proba": np.empty((0, 3)), "classes": CM}, "accuracy", "no rows to score"),
    ],
)
def test_undefined_metrics_are_nan_with_a_reason(task, y, kwargs, name, reason):
    scores = M.compute(task, y, **kwargs)
    assert math.isnan(scores[name])
    assert reason in scores.notes[name]
    assert any(line.startswith(f"{name}: NaN: ") for line in scores.explain())


def test_one_class_keeps_the_metrics_that_are_defined():
    scores = M.compute("binary", ["no", "no", "no"], proba=[0.1, 0.2, 0.9], classes=CB)
    assert scores["accuracy"] == pytest.approx(2 / 3)
    assert scores["brier"] == pytest.approx((0.01 + 0.04 + 0.81) / 3)
    expected = skm.log_loss(["no"] * 3, [[0.9, 0.1], [0.8, 0.2], [0.1, 0.9]], labels=CB)
    assert scores["log_loss"] == pytest.approx(expected)
    assert {"accuracy", "brier", "log_loss"}.isdisjoint(scores.notes)


# ---- probabilities ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("proba", "classes", "problem"),
    [
        ([[0.5, 0.5], [0.1, 0.9]], CB, None),
        ([0.3, 0.8], CB, None),  # 1-D: the positive class's probability
        ([[0.5, 0.5], [0.9999999, 0.0]], CB, None),  # within the tolerance
        ([[0.5, 0.4], [0.1, 0.9]], CB, "1 of 2 probability rows do not sum to 1 (row 0 sums to 0.9"),
        ([[0.6, 0.3, 0.3]] * 2, CM, "2 of 2 probability rows do not sum to 1 (row 0 sums to 1.2, row 1 sums"),
        ([[0.5, 0.5], [1.2, -0.2]], CB, "1 of 2 probability rows hold values outside [0, 1] (row 1: [1.2, -0.2]"),
        ([1.2, 0.5], CB, "1 of 2 probability rows hold values outside [0, 1]"),
        ([[math.nan, 1.0]], CB, "hold NaN or infinite values"),
        ([[0.5, 0.5]], CM, "shape (1, 2); expected (rows, 3): one column per class of ['cat', 'dog', 'eel']"),
        ([0.5, 0.5], CM, "a 1-D array of probabilities fits two classes only, not 3"),
        ([["a", "b"]], CB, "probabilities are not numbers"),
        ([[0.5, 0.5]], ["no", "no"], "repeat a label"),
        ([[1.0]], ["no"], "need at least two classes"),
    ],
)
def test_check_probabilities(proba, classes, problem):
    found = M.check_probabilities(proba, classes)
    if problem is None:
        assert found is None
    else:
        assert found is not None and problem in found


def test_probabilities_that_do_not_sum_to_one_make_their_metrics_nan():
    bad = [[0.5, 0.4, 0.1], [0.2, 0.5, 0.3], [0.1, 0.3, 0.3], [0.3, 0.4, 0.3], [0.5, 0.4, 0.1], [0.2, 0.2, 0.6]]
    scores = M.compute("multiclass", YM, proba=bad, classes=CM)
    assert math.isnan(scores["log_loss"]) and math.isnan(scores["accuracy"])  # classes come from the probabilities
    assert "1 of 6 probability rows do not sum to 1 (row 2 sums to 0.7" in scores.notes["log_loss"]
    with_pred = M.compute("multiclass", YM, y_pred=PM_CLASSES, proba=bad, classes=CM)
    assert with_pred["accuracy"] == pytest.approx(4 / 6) and "accuracy" not in with_pred.notes


def test_labels_outside_the_classes_make_probability_metrics_nan():
    scores = M.compute("binary", ["no", "maybe"], proba=[0.2, 0.7], classes=CB)
    assert math.isnan(scores["log_loss"])
    assert "y_true holds labels that are not among classes ['no', 'yes']: 'maybe'" in scores.notes["log_loss"]


# ---- misuse of the call raises ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda: M.compute("binary", YB, y_pred=YB_PRED, names=["roc_auc"]), "'roc_auc' needs class probabilities"),
        (lambda: M.compute("regression", [1, 2], names=["rmse"]), "'rmse' needs predicted values"),
        (lambda: M.compute("regression", [1, 2], y_pred=[1, 2, 3]), "y_pred has 3 rows but y_true has 2"),
        (lambda: M.compute("binary", YB, proba=PB[:3]), "proba has 3 rows but y_true has 5"),
        (lambda: M.compute("binary", YB, proba=PB, threshold=1.5), "threshold 1.5 is not a probability"),
        (lambda: M.compute("binary", [[1, 2], [3, 4]], y_pred=[1, 2]), "y_true must be one value per row"),
        (lambda: M.compute("ranking", [1], y_pred=[1]), "unknown task 'ranking'"),
    ],
)
def test_misuse_raises_a_named_error(call, message):
    with pytest.raises(M.MetricError, match=message):
        call()


def test_named_metrics_only():
    scores = M.compute("binary", YB, proba=PB, classes=CB, names=["f1", "roc_auc"])
    assert list(scores) == ["f1", "roc_auc"]


def test_importing_the_registry_loads_neither_numpy_nor_sklearn():
    probe = (
        "import json, sys\n"
        "import airloop.core.metrics as m\n"
        "m.metrics_for('binary'); m.get('rmse'); m.better('rmse', 1.0, 2.0)\n"
        "print(json.dumps(sorted({n.split('.')[0] for n in sys.modules} & {'numpy', 'sklearn', 'pandas', 'scipy'})))\n"
    )
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    assert json.loads(out.stdout.strip().splitlines()[-1]) == []

"""The monitor follows the model's task: a classifier's scores and class mix drift, performance by task, degradation
judged in the metric's direction, NaN and unseen labels reported, never judged; on the real bird-strike data."""

from __future__ import annotations

import math
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import sqlalchemy as sa

from airloop.core.spec import ModelSpec
from airloop.stages.monitor import runner as monitoring
from airloop.stages.monitor.outputs import (
    ClassOutputs,
    OutputProblem,
    as_classes,
    class_outputs,
    label_key,
    predicted_classes,
    proba_columns,
    with_predictions,
)
from airloop.stages.monitor.performance import performance
from airloop.stages.monitor.policy import RetrainDecision
from airloop.stages.monitor.runner import PREDICTION, Frames

ROOT = Path(__file__).resolve().parents[2]
NUMERIC = ["ac_mass", "num_engs", "height", "speed"]
WINDOW = (datetime(1996, 1, 1, tzinfo=UTC), datetime(1996, 2, 1, tzinfo=UTC))


def _spec(target: dict, name: str = "strikes", **monitoring_fields) -> ModelSpec:
    return ModelSpec.model_validate(
        {
            "name": name,
            "description": "bird strikes",
            "owner": "tests",
            "source": {"table": "strikes", "time_column": "ts", "keys": ["record_id"]},
            "schedule": {"start": "1990-01-01"},
            "features": [{"name": n, "kind": "numeric"} for n in NUMERIC],
            "target": target,
            "monitoring": {"min_rows": 50, **monitoring_fields},
        }
    )


BINARY = {"name": "outcome", "task": "classification", "positive_class": "effect", "decision_threshold": 0.15}


@pytest.fixture(scope="module")
def strikes() -> pd.DataFrame:
    """The vendored FAA bird strikes: ``outcome`` is ``effect`` when the strike had one, else ``none``."""
    frame = pd.read_csv(ROOT / "include/data/faa_birdstrikes/birds.csv")
    frame["ts"] = pd.to_datetime(frame["date"], format="%m/%d/%Y %H:%M:%S")
    frame["outcome"] = np.where(frame["effect"].notna(), "effect", "none")
    return frame


def _years(frame: pd.DataFrame, first: int, last: int) -> pd.DataFrame:
    return frame[frame["ts"].dt.year.between(first, last)].copy()


@pytest.fixture(scope="module")
def binary_model(strikes):
    """A small real classifier of 1990-1993, numeric columns only (its classes: effect, none)."""
    from sklearn.ensemble import HistGradientBoostingClassifier

    train = _years(strikes, 1990, 1993)
    return HistGradientBoostingClassifier(max_iter=50, random_state=0).fit(train[NUMERIC], train["outcome"])


def _frames(spec: ModelSpec, model, reference: pd.DataFrame, current: pd.DataFrame) -> Frames:
    outputs = class_outputs(spec, model.classes_)
    reference, current = reference.copy(), current.copy()
    for frame in (reference, current):
        with_predictions(frame, model, NUMERIC, outputs)
    return Frames(reference=reference, current=current, outputs=outputs)


# --- the spec reserves the monitor's columns ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("change", "named"),
    [
        (lambda r: r["features"].append({"name": "_proba_effect", "kind": "numeric"}), "feature `_proba_effect`"),
        (lambda r: r["target"].update(name="_prediction"), "target `_prediction`"),
        (lambda r: r["source"].update(keys=["_proba_id"]), "key `_proba_id`"),
    ],
    ids=["feature", "target", "key"],
)
def test_the_spec_refuses_columns_named_like_the_monitors_outputs(change, named):
    raw = _spec(BINARY).model_dump(mode="json", by_alias=True)
    change(raw)
    with pytest.raises(ValueError, match="reserved for the monitor") as err:
        ModelSpec.model_validate(raw)
    assert named in str(err.value) and "`_proba_`" in str(err.value)


# --- classes, probability columns, predicted classes ------------------------------------------------------


@pytest.mark.parametrize(
    ("classes", "columns"),
    [
        (("effect", "none"), ("_proba_effect", "_proba_none")),
        ((0, 1), ("_proba_0", "_proba_1")),
        (("No Cloud", "Some Cloud", "Overcast"), ("_proba_No_Cloud", "_proba_Some_Cloud", "_proba_Overcast")),
        (("a b", "a_b", "a/b"), ("_proba_a_b", "_proba_a_b_2", "_proba_a_b_3")),
        (("", "x"), ("_proba__", "_proba_x")),
        ((True, False), ("_proba_True", "_proba_False")),
    ],
)
def test_probability_columns_are_named_safely_and_uniquely(classes, columns):
    assert proba_columns(classes) == columns


@pytest.mark.parametrize(
    ("value", "key"),
    [(1, "1"), (1.0, "1"), ("1", "1"), (np.int64(1), "1"), (np.float64(2.0), "2"), (1.5, "1.5"), (True, "True")],
)
def test_labels_match_classes_by_text(value, key):
    assert label_key(value) == key


def test_the_positive_class_is_the_specs_else_the_second_and_must_exist():
    spec = _spec(BINARY)
    given = class_outputs(spec, np.array(["effect", "none"]))
    assert (given.positive, given.task, given.watched) == ("effect", "binary", ("_proba_effect",))
    assert given.metric_classes == ["none", "effect"]
    default = class_outputs(_spec({"name": "outcome", "task": "classification"}), np.array([0, 1]))
    assert default.positive == 1 and type(default.positive) is int and default.watched == ("_proba_1",)
    as_text = class_outputs(_spec({**BINARY, "positive_class": "0"}), np.array([0, 1]))
    assert as_text.positive == 0  # "0" in YAML is class 0
    with pytest.raises(OutputProblem, match=r"positive_class 'yes' of strikes is not a class .*\['effect', 'none'\]"):
        class_outputs(_spec({**BINARY, "positive_class": "yes"}), np.array(["effect", "none"]))
    with pytest.raises(OutputProblem, match=r"knows 1 class\(es\)"):
        class_outputs(spec, np.array(["none"]))
    many = class_outputs(_spec({**BINARY, "positive_class": None}), np.array(["a", "b", "c"]))
    assert many.task == "multiclass" and many.positive is None and many.watched == many.columns


@pytest.mark.parametrize(
    ("classes", "positive", "threshold", "proba", "expected"),
    [
        (("no", "yes"), "yes", 0.5, [[0.6, 0.4], [0.5, 0.5], [0.1, 0.9]], ["no", "yes", "yes"]),
        (("no", "yes"), "yes", 0.3, [[0.6, 0.4], [0.8, 0.2]], ["yes", "no"]),
        (("effect", "none"), "effect", 0.15, [[0.2, 0.8], [0.1, 0.9]], ["effect", "none"]),  # positive first
        (("a", "b", "c"), None, 0.5, [[0.2, 0.5, 0.3], [0.6, 0.1, 0.3]], ["b", "a"]),
    ],
    ids=["binary", "threshold", "positive-first", "multiclass-argmax"],
)
def test_predicted_classes_use_the_threshold_or_the_most_probable(classes, positive, threshold, proba, expected):
    outputs = ClassOutputs(classes, proba_columns(classes), positive, threshold)
    assert predicted_classes(np.array(proba), outputs).tolist() == expected


def test_labels_are_read_as_the_trained_classes_and_unseen_ones_counted():
    outputs = ClassOutputs((0, 1), ("_proba_0", "_proba_1"), 1, 0.5)
    mapped, unseen = as_classes(pd.Series([1.0, 0.0, 2.0, 1.0, 2.0, 7.5]), outputs)
    assert mapped.tolist() == [1, 0, None, 1, None, None]
    assert unseen == {"2": 2, "7.5": 1}


# --- drift of a classifier's outputs, on the real data --------------------------------------------------------


def test_a_classifier_window_from_the_same_distribution_does_not_drift(strikes, binary_model):
    spec = _spec(BINARY)
    year = _years(strikes, 1994, 1994)
    for seed in (1, 2, 3):
        half = year.sample(frac=0.5, random_state=seed)
        result, _ = monitoring.drift(spec, _frames(spec, binary_model, year.drop(half.index), half))
        assert [c.column for c in result.predictions] == ["_proba_effect", PREDICTION]
        assert not result.drifted and not any(c.drifted for c in result.predictions), result
        by = {c.column: c for c in result.predictions}
        assert by["_proba_effect"].method == "wasserstein" and by[PREDICTION].method == "jensenshannon"


def test_a_classifier_window_whose_probabilities_shifted_is_flagged(strikes, binary_model):
    spec = _spec(BINARY, drift_share=1.0)  # only the outputs can flag the window
    late = _years(strikes, 1996, 1999)
    low = late[late["height"] <= 50]  # strikes at take-off and landing: more of them have an effect
    result, _ = monitoring.drift(spec, _frames(spec, binary_model, _years(strikes, 1994, 1994), low))
    by = {c.column: c for c in result.predictions}
    assert by["_proba_effect"].drifted and by["_proba_effect"].score > 0.2
    assert result.drifted and result.prediction.column == "_proba_effect"


def test_a_multiclass_champion_has_one_probability_column_per_class_and_a_class_mix(strikes):
    from sklearn.ensemble import HistGradientBoostingClassifier

    spec = _spec({"name": "sky", "task": "classification"})
    data = strikes[strikes["sky"].notna()]
    train = _years(data, 1990, 1993)
    model = HistGradientBoostingClassifier(max_iter=20, random_state=0).fit(train[NUMERIC], train["sky"])
    frames = _frames(spec, model, _years(data, 1994, 1994), _years(data, 1996, 1996))
    result, _ = monitoring.drift(spec, frames)
    expected = ["_proba_No_Cloud", "_proba_Overcast", "_proba_Some_Cloud", PREDICTION]
    assert [c.column for c in result.predictions] == expected
    assert all(math.isfinite(c.score) for c in result.predictions)
    lines = monitoring.output_lines(result, frames.outputs)
    assert lines[0].startswith("  scores P('No Cloud') `_proba_No_Cloud`: wasserstein ")
    assert lines[-1].startswith("  predicted-class mix: jensenshannon ")
    perf = performance(
        frames.current, "sky", {"holdout_log_loss": 1.0}, 0.25, metric="log_loss", outputs=frames.outputs
    )
    assert perf is not None and perf.task == "multiclass" and perf.rows == len(frames.current)
    assert {"log_loss", "accuracy", "f1_macro"} <= set(perf.scores) and "roc_auc" not in perf.scores


# --- performance by task, degradation in the metric's direction ----------------------------------------------

PROBA = [0.9, 0.8, 0.3, 0.2, 0.6, 0.4]
LABELS = ["yes", "yes", "no", "no", "no", "yes"]


def _binary_frame(labels=LABELS, proba=PROBA) -> tuple[pd.DataFrame, ClassOutputs]:
    outputs = ClassOutputs(("no", "yes"), ("_proba_no", "_proba_yes"), "yes", 0.5)
    frame = pd.DataFrame({"y": labels, "_proba_yes": proba})
    frame[PREDICTION] = predicted_classes(np.column_stack([1 - np.array(proba), proba]), outputs)
    return frame, outputs


AUC = 8 / 9  # of the six rows below: the positives outrank the negatives in 8 of 9 pairs


@pytest.mark.parametrize(
    ("metric", "reference", "degradation", "degraded"),
    [
        ("roc_auc", 0.95, (0.95 - AUC) / 0.95, False),  # higher is better: 0.889 vs 0.95 is 6.4 % worse
        ("roc_auc", 0.5, (0.5 - AUC) / 0.5, False),  # better than at training: negative
        ("accuracy", 0.9, (0.9 - 4 / 6) / 0.9, True),  # 25.9 % worse than 0.9, beyond 25 %
        ("brier", 0.1, None, None),  # lower is better: computed below
    ],
    ids=["auc-worse", "auc-better", "accuracy-degraded", "brier-lower-is-better"],
)
def test_binary_degradation_is_judged_in_the_metrics_direction(metric, reference, degradation, degraded):
    frame, outputs = _binary_frame()
    perf = performance(frame, "y", {f"holdout_{metric}": reference}, 0.25, metric=metric, outputs=outputs)
    assert perf is not None and perf.task == "binary" and perf.rows == 6
    assert {"roc_auc", "log_loss", "accuracy", "brier", "f1"} <= set(perf.scores)
    assert perf.scores["roc_auc"] == pytest.approx(AUC) and perf.scores["accuracy"] == pytest.approx(4 / 6)
    if metric == "brier":
        brier = np.mean((np.array(PROBA) - (np.array(LABELS) == "yes")) ** 2)
        degradation, degraded = brier / 0.1 - 1, bool(brier / 0.1 - 1 > 0.25)
    assert perf.degradation == pytest.approx(degradation) and perf.degraded is degraded


@pytest.mark.parametrize(
    ("metric", "reference", "text", "degraded"),
    [
        ("mae", 1.25, "mae 1.5 vs training's 1.25 (lower is better): worse by 20 %", False),
        ("mae", 1.0, "mae 1.5 vs training's 1 (lower is better): worse by 50 %", True),
        ("mae", 2.5, "mae 1.5 vs training's 2.5 (lower is better): better by 40 %", False),
        ("r2", 0.99, "r2 0.96 vs training's 0.99 (higher is better): worse by 3 %", False),
        ("r2", 0.6, "r2 0.96 vs training's 0.6 (higher is better): better by 60 %", False),
    ],
)
def test_regression_degradation_both_directions(metric, reference, text, degraded):
    frame = pd.DataFrame({"y": [10.0, 20.0, 40.0, 30.0, np.nan], PREDICTION: [12.0, 16.0, 40.0, 30.0, 5.0]})
    perf = performance(frame, "y", {f"holdout_{metric}": reference, "holdout_rmse": 3.0}, 0.25, metric=metric)
    assert perf is not None and perf.task == "regression" and perf.rows == 4
    assert perf.mae == pytest.approx(1.5) and perf.scores["r2"] == pytest.approx(0.96)
    assert perf.reference_rmse == 3.0 and perf.reference_mae == (reference if metric == "mae" else None)
    assert perf.change() == text and perf.degraded is degraded


def test_a_missing_holdout_figure_is_said_and_never_judged():
    frame, outputs = _binary_frame()
    perf = performance(frame, "y", {"holdout_rmse": 3.0}, 0.25, metric="log_loss", outputs=outputs)
    assert perf is not None and perf.degradation is None and not perf.degraded
    assert perf.unjudged == "the champion's training run has no holdout_log_loss: degradation not judged"
    assert "no holdout_log_loss" in perf.change()


def test_a_nan_metric_is_reported_with_its_note_never_judged():
    frame, outputs = _binary_frame(labels=["no"] * 6)  # one class in the window: no ROC curve
    perf = performance(frame, "y", {"holdout_roc_auc": 0.8}, 0.25, metric="roc_auc", outputs=outputs)
    assert perf is not None and math.isnan(perf.value) and perf.degradation is None and not perf.degraded
    assert "only one class ('no')" in perf.notes["roc_auc"] and perf.unjudged.startswith("roc_auc is NaN")
    assert perf.to_dict()["scores"]["roc_auc"] is None and perf.to_dict()["degradation"] is None
    lines = monitoring.performance_lines(perf, 0)
    assert "roc_auc NaN" in lines[0] and any(line.startswith("  note: roc_auc: NaN: only one class") for line in lines)
    assert perf.scores["accuracy"] == pytest.approx(3 / 6)  # what can be computed still is


def test_unseen_labels_are_counted_named_and_not_scored():
    frame, outputs = _binary_frame(labels=["yes", "yes", "maybe", "no", "no", "maybe"])
    frame.loc[4, "y"] = None  # not labelled yet
    perf = performance(frame, "y", {"holdout_accuracy": 0.9}, 0.25, metric="accuracy", outputs=outputs)
    assert perf is not None and perf.rows == 3 and perf.unseen == {"maybe": 2}
    assert perf.scores["accuracy"] == pytest.approx(1.0)
    lines = monitoring.performance_lines(perf, 0)
    assert "2 labelled row(s) hold labels the champion never saw in training, not scored: 'maybe' (2)" in lines[-1]
    assert performance(frame.assign(y=None), "y", {}, 0.25, metric="accuracy", outputs=outputs) is None


def test_the_verdict_shows_the_metrics_and_the_direction():
    frame, outputs = _binary_frame()
    perf = performance(frame, "y", {"holdout_log_loss": 0.3}, 0.25, metric="log_loss", outputs=outputs)
    assert perf is not None
    lines = monitoring.performance_lines(perf, 0)
    assert lines[0].startswith(
        "  realized performance on 6 labelled outcomes (binary): roc_auc 0.889, average_precision "
    )
    value = perf.scores["log_loss"]
    assert lines[1] == (
        f"  judged on log_loss {value:.3g} vs training's 0.3 (lower is better): worse by "
        f"{(value / 0.3 - 1) * 100:.1f} %: DEGRADED beyond the spec's limit (25 %)"
    )


# --- what is recorded: the row, the summary, the warehouse --------------------------------------------------


def test_a_classifiers_window_row_and_summary_hold_its_task_figures(strikes, binary_model, tmp_path):
    from airloop.adapters import warehouse
    from airloop.core.contracts import RunInfo

    spec = _spec(BINARY, name="strikesrow")
    late = _years(strikes, 1996, 1996)
    frames = _frames(spec, binary_model, _years(strikes, 1994, 1994), late[late["height"] <= 50])
    result, _ = monitoring.drift(spec, frames)
    perf = performance(frames.current, "outcome", {}, 0.25, metric=spec.performance_metric, outputs=frames.outputs)
    row = monitoring.drift_row(spec, "2", WINDOW, "whole", frames, result, perf, tmp_path, RunInfo())
    assert row["performance_metric"] == "log_loss" and row["performance"]["task"] == "binary"
    assert row["mae"] is None and row["degradation"] is None and row["degraded"] is False
    assert row["prediction_drifted"] and set(row["column_scores"]) == set(NUMERIC)
    assert set(row["output_scores"]) == {"_proba_effect", PREDICTION}
    summary = monitoring.summary_of(spec, "2", WINDOW, frames, result, perf, RetrainDecision(False, "-"), tmp_path)
    assert summary.performance is not None and summary.performance["unjudged"].endswith("degradation not judged")

    engine = sa.create_engine(f"sqlite:///{tmp_path / 'w.db'}")
    warehouse.ensure_schema(engine)
    history = warehouse.record_drift(engine, row)
    assert history[-1]["performance"]["scores"]["log_loss"] == pytest.approx(perf.scores["log_loss"])
    assert history[-1]["performance_metric"] == "log_loss" and history[-1]["output_scores"][PREDICTION]["method"]
    engine.dispose()


def test_older_drift_rows_are_marked_as_judged_on_mae_by_the_migration(tmp_path):
    from airloop.adapters import migrations
    from tests import legacy_warehouse as legacy

    engine = sa.create_engine(f"sqlite:///{tmp_path / 'old.db'}")
    legacy.write(engine, tables=["drift_metrics"])
    with engine.begin() as conn:
        conn.execute(
            sa.text(
                "UPDATE drift_metrics SET mae = 12.5 WHERE window_end = (SELECT max(window_end) FROM drift_metrics)"
            )
        )
    assert migrations.upgrade(engine).after == migrations.head()
    with engine.connect() as conn:
        found = conn.execute(
            sa.text("SELECT mae, performance_metric, performance, output_scores FROM drift_metrics ORDER BY mae")
        ).all()
    assert [tuple(r) for r in found] == [(None, None, None, None), (12.5, "mae", None, None)]
    engine.dispose()

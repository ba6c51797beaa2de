"""Classifiers end to end: train (binary with text labels, multiclass with numbers) through the train runner on a
real lake and real MLflow, then gate them; a window with one class and a metric that does not fit are refused.

The data is made here: messy on purpose (missing numbers and categories, many rows per timestamp, row keys).
"""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from airloop.adapters.lake import Lake
from airloop.core.contracts import RunInfo, TrainRequest
from airloop.core.spec import ModelSpec
from airloop.stages.train.steps import TrainingProblem

FIRST = datetime(2021, 1, 1, tzinfo=UTC)
STEP = timedelta(days=10)
PARTITIONS = 12


def _frame(seed: int, labeller: Any) -> pd.DataFrame:
    """120 days, two rows per hour (same timestamp, different ``rid``); 10 % of x2 and 5 % of c missing."""
    rng = np.random.default_rng(seed)
    ts = pd.date_range(FIRST.replace(tzinfo=None), periods=PARTITIONS * 10 * 24, freq="h").repeat(2)
    n = len(ts)
    frame = pd.DataFrame(
        {
            "ts": ts,
            "rid": np.arange(n),
            "x1": rng.normal(size=n),
            "x2": np.where(rng.random(n) < 0.1, np.nan, rng.uniform(size=n)),
            "c": pd.Series(rng.choice(["a", "b", "c"], size=n), dtype=object).where(rng.random(n) > 0.05, None),
        }
    )
    frame["label"] = labeller(frame, rng)
    return frame


def _binary(frame: pd.DataFrame, rng: Any) -> Any:
    score = frame.x1 + (frame.c == "a") * 1.0 + rng.normal(scale=0.5, size=len(frame))
    return np.where(score > 0.8, "yes", "no")  # about a quarter "yes": imbalanced


def _multiclass(frame: pd.DataFrame, rng: Any) -> Any:
    score = frame.x1 + rng.normal(scale=0.3, size=len(frame))
    return np.digitize(score, [-0.5, 0.5])  # 0, 1, 2


def _lake(tmp_path: Any, monkeypatch: Any, name: str, frame: pd.DataFrame) -> Lake:
    """The model's rows as validated 10-day partitions of a lake in ``tmp_path`` (the default lake)."""
    monkeypatch.setenv("AIRLOOP_LAKE_URL", str(tmp_path / "lake"))
    lake = Lake(tmp_path / "lake")
    for i in range(PARTITIONS):
        start, end = FIRST + i * STEP, FIRST + (i + 1) * STEP
        rows = frame[(frame.ts >= start.replace(tzinfo=None)) & (frame.ts < end.replace(tzinfo=None))]
        meta = {"interval_start": start.isoformat(), "interval_end": end.isoformat()}
        lake.write(name, "validated", start.strftime("%Y-%m-%dT%H%M%SZ"), rows.reset_index(drop=True), meta=meta)
    return lake


def _spec(name: str, target: dict[str, Any], gate: dict[str, Any], search: bool = False) -> ModelSpec:
    training: dict[str, Any] = {
        "window_days": 100,
        "holdout_days": 20,
        "min_rows": 500,
        "estimator": {"params": {"max_iter": 30}},
        "slices": [{"name": "cat", "column": "c"}],
    }
    if search:
        training["search"] = {"space": {"learning_rate": [0.05, 0.2]}, "max_trials": 2, "folds": 2}
    return ModelSpec.model_validate(
        {
            "name": name,
            "description": "a classifier made up by a test",
            "owner": "tests",
            "source": {"table": "events", "time_column": "ts", "keys": ["ts", "rid"]},
            "schedule": {"every": "10d", "start": FIRST.date().isoformat()},
            "features": [
                {"name": "x1", "kind": "numeric"},
                {"name": "x2", "kind": "numeric"},
                {"name": "c", "kind": "categorical"},
            ],
            "target": {"name": "label", "task": "classification", **target},
            "training": training,
            "gate": gate,
        }
    )


def _train(spec: ModelSpec) -> Any:
    from airloop.stages.train import runner

    return runner.train(spec, TrainRequest(reason="classifier test"), RunInfo())


def test_binary_classifier_with_text_labels_trains_records_its_classes_and_passes_the_gate(tmp_path, monkeypatch):
    from airloop.adapters import registry
    from airloop.stages.promote import runner as promote

    name = "clf_binary"
    _lake(tmp_path, monkeypatch, name, _frame(1, _binary))
    spec = _spec(
        name,
        {"positive_class": "yes", "class_weight": "balanced", "decision_threshold": 0.4},
        {"metric": "roc_auc", "thresholds": {"roc_auc": 0.7, "log_loss": 0.9}},
    )
    trained = _train(spec)
    assert (trained.task, trained.classes) == ("binary", ["no", "yes"])
    assert trained.metrics["roc_auc"] > 0.8 and 0 < trained.metrics["log_loss"] < 0.9
    run = registry.client().get_run(trained.mlflow_run_id)
    assert json.loads(run.data.params["classes"]) == ["no", "yes"] and run.data.params["task"] == "binary"
    assert json.loads(run.data.tags["airloop.classes"]) == ["no", "yes"]
    assert {"holdout_roc_auc", "holdout_log_loss", "holdout_f1", "holdout_brier"} <= set(run.data.metrics)
    assert "holdout_rmse" not in run.data.metrics
    assert any(k.startswith("slice_cat_a_") for k in run.data.metrics)
    plots = {a.path for a in registry.client().list_artifacts(trained.mlflow_run_id, "plots")}
    assert plots == {
        f"plots/{f}"
        for f in ("roc_curve.png", "pr_curve.png", "calibration.png", "confusion_matrix.png", "feature_importance.png")
    }

    # the holdout's scores and outcomes, kept for estimating performance before labels arrive (CBPE)
    kept = registry.run_dict(trained.mlflow_run_id, "calibration/holdout.json")
    assert kept is not None and kept["task"] == "binary" and kept["positive"] == "yes"
    assert kept["rows"] == len(kept["scores"]) == len(kept["events"]) > 100 and set(kept["events"]) == {0, 1}

    result = promote.gate_trained(spec, trained, RunInfo())
    checks = {c["name"]: c for c in result.verdict["checks"]}
    assert result.promote, result.verdict["reasons"]
    assert result.verdict["metric"] == "roc_auc"
    assert checks["sanity:probabilities"]["passed"] and checks["sanity:one_class"]["passed"]
    assert result.verdict["challenger"]["classes"] == ["no", "yes"]
    assert "| roc_auc |" in result.markdown and "| log_loss |" in result.markdown


def test_multiclass_classifier_searches_by_the_gate_metric(tmp_path, monkeypatch):
    from airloop.adapters import registry

    name = "clf_multi"
    _lake(tmp_path, monkeypatch, name, _frame(2, _multiclass))
    spec = _spec(name, {}, {"thresholds": {"accuracy": 0.6}}, search=True)
    trained = _train(spec)
    assert (trained.task, trained.classes) == ("multiclass", [0, 1, 2])
    assert trained.metrics["accuracy"] > 0.6 and "roc_auc_ovr_macro" in trained.metrics
    kept = registry.run_dict(trained.mlflow_run_id, "calibration/holdout.json")
    assert kept["task"] == "multiclass" and kept["classes"] == ["0", "1", "2"] and kept["positive"] is None
    assert all(1 / 3 <= s <= 1 for s in kept["scores"])  # the predicted class's probability
    path = registry.client().download_artifacts(trained.mlflow_run_id, "search/trials.json", str(tmp_path))
    trials = json.loads(Path(path).read_text())
    assert len(trials) == 2 and all(t["log_loss"] > 0 for t in trials)  # the default gate metric, not rmse


def test_a_window_with_one_class_is_refused_naming_model_window_and_class(tmp_path, monkeypatch):
    name = "clf_one"
    frame = _frame(3, _binary)
    frame.loc[frame.ts < datetime(2021, 4, 11), "label"] = "no"  # training rows: one class; holdout: two
    _lake(tmp_path, monkeypatch, name, frame)
    with pytest.raises(TrainingProblem) as caught:
        _train(_spec(name, {}, {}))
    text = str(caught.value)
    assert "clf_one" in text and "one class, 'no'" in text and "2021-" in text
    assert "window_start" in text and "target.task: regression" in text


def test_a_metric_that_does_not_fit_the_classes_seen_is_refused_naming_those_that_fit(tmp_path, monkeypatch):
    name = "clf_misfit"
    _lake(tmp_path, monkeypatch, name, _frame(4, _multiclass))
    with pytest.raises(TrainingProblem) as caught:
        _train(_spec(name, {}, {"metric": "roc_auc"}))
    text = str(caught.value)
    assert "3 classes" in text and "multiclass" in text and "gate.metric `roc_auc`" in text
    assert "roc_auc_ovr_macro" in text and "log_loss" in text

"""Realized performance per version and window, read from stored outcomes (never predicted again)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import numpy as np
import pytest
import sqlalchemy as sa

from airloop.adapters import warehouse
from airloop.adapters.outcome_curve import outcome_counts, realized_curve
from airloop.core.metrics import MetricError

T0 = datetime(2012, 1, 1, tzinfo=UTC)


def _outcome(partition: str, hour: int, version: str, label: str, prediction=None, cls=None) -> dict:
    ts = T0 + timedelta(hours=hour)
    return {
        "model": "m",
        "partition": partition,
        "row_key": ts.isoformat(),
        "ts": ts,
        "model_version": version,
        "prediction": prediction,
        "predicted_class": cls,
        "label": label,
        "label_revision": 1,
        "label_arrived_at": T0,
        "joined_at": T0,
    }


@pytest.fixture
def engine(tmp_path):
    engine = sa.create_engine(f"sqlite:///{tmp_path / 'w.db'}")
    warehouse.ensure_schema(engine)
    return engine


def test_each_version_is_judged_on_the_rows_it_served_in_each_interval(engine):
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 500, 30).astype(float)
    served = labels + rng.normal(0, 20, 30)
    rows = [
        _outcome("2012-01-01", h, "1" if h < 20 else "2", repr(float(labels[h])), prediction=float(served[h]))
        for h in range(10)
    ]
    rows += [
        _outcome("2012-01-29", h, "1" if h < 20 else "2", repr(float(labels[h])), prediction=float(served[h]))
        for h in range(10, 30)
    ]
    rows.append(_outcome("2012-01-29", 99, "other", "1.0", prediction=None))  # nothing served: left out
    with engine.begin() as conn:
        conn.execute(warehouse.outcomes.insert(), rows)

    curve = realized_curve(engine, "m", task="regression", metric="mae")
    assert [(c["window"], c["version"], c["rows"]) for c in curve] == [
        ("2012-01-01", "1", 10),
        ("2012-01-29", "1", 10),
        ("2012-01-29", "2", 10),
    ]
    for item, part in zip(curve, (slice(0, 10), slice(10, 20), slice(20, 30)), strict=True):
        assert item["value"] == pytest.approx(np.mean(np.abs(labels[part] - served[part])))
    assert outcome_counts(engine, "m") == {"other": 1, "1": 20, "2": 10}

    # the monitor's windows instead of the data intervals: rows are bucketed by their time
    windows = [(T0, T0 + timedelta(hours=15)), (T0 + timedelta(hours=15), T0 + timedelta(days=2))]
    by_window = realized_curve(engine, "m", task="regression", metric="rmse", windows=windows)
    assert [(c["start"], c["version"], c["rows"]) for c in by_window] == [
        (windows[0][0], "1", 15),
        (windows[1][0], "1", 5),
        (windows[1][0], "2", 10),
    ]
    first = slice(0, 15)
    assert by_window[0]["value"] == pytest.approx(np.sqrt(np.mean((labels[first] - served[first]) ** 2)))


def test_classifiers_compare_the_served_class_and_say_when_a_metric_needs_probabilities(engine):
    rows = [_outcome("2012-01-01", h, "3", "yes" if h % 2 else "no", cls="yes" if h % 3 else "no") for h in range(12)]
    with engine.begin() as conn:
        conn.execute(warehouse.outcomes.insert(), rows)
    (accuracy,) = realized_curve(engine, "m", task="binary", metric="accuracy")
    expected = np.mean([(h % 2 == 1) == (h % 3 != 0) for h in range(12)])
    assert accuracy["value"] == pytest.approx(expected) and accuracy["rows"] == 12
    (auc,) = realized_curve(engine, "m", task="binary", metric="roc_auc")
    assert auc["value"] is None and "prob" in auc["note"]


def test_a_metric_that_does_not_fit_the_task_is_refused_by_name(engine):
    with pytest.raises(MetricError, match="roc_auc"):
        realized_curve(engine, "m", task="regression", metric="roc_auc")

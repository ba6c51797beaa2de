"""Scoring classifiers for real: sklearn pipelines trained here, registered in the MLflow file store through
``adapters.registry``, scored with ``score_partition`` into the session's SQLite warehouse and the lake.

Many rows share each timestamp, so the rows are keyed by a record id (``source.keys``); the partitions are scored
in small chunks and short INSERT statements, so every test crosses chunk and statement boundaries.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime

import numpy as np
import pandas as pd
import pytest
import sqlalchemy as sa

CHUNK_ROWS = 64
START, END = datetime(2012, 1, 1, tzinfo=UTC), datetime(2012, 1, 29, tzinfo=UTC)
PARTITION = "2012-01-01T000000Z"


def _spec(name: str, positive_class=None):
    from airloop.core.spec import ModelSpec

    target = {"name": "label", "task": "classification"}
    if positive_class is not None:
        target["positive_class"] = positive_class
    return ModelSpec.model_validate(
        {
            "name": name,
            "description": "test classifier",
            "owner": "tests",
            "source": {"table": "events", "time_column": "ts", "keys": ["record_id"]},
            "schedule": {"every": "28d", "start": "2012-01-01"},
            "features": [{"name": "x1", "kind": "numeric"}, {"name": "x2", "kind": "numeric"}],
            "target": target,
        }
    )


def _frame(labels: list, rows: int = 400, seed: int = 0) -> pd.DataFrame:
    """``rows`` events, five per hour, a label that depends on the features (class i around x1 = i)."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, len(labels), rows)
    return pd.DataFrame(
        {
            "ts": pd.Timestamp(START) + pd.to_timedelta(np.arange(rows) // 5, unit="h"),
            "record_id": np.arange(1000, 1000 + rows),
            "x1": y + rng.normal(0, 0.7, rows),
            "x2": rng.normal(0, 1, rows),
            "label": np.asarray(labels)[y],
        }
    )


def _register(spec, frame: pd.DataFrame, broken: bool = False):
    """Fit a small pipeline on ``frame``, register it as a version of ``spec.name`` and make it @champion."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import StandardScaler

    from airloop.adapters import registry

    pipeline = Pipeline([("scale", StandardScaler()), ("model", LogisticRegression())])
    pipeline.fit(frame[spec.feature_names], frame["label"])
    if broken:  # a real model gone wrong: its probabilities are NaN
        pipeline.named_steps["model"].coef_[:] = np.nan
    logged = registry.log_training_run(
        model=spec.name,
        description=spec.description,
        owner=spec.owner,
        run_name="tests",
        params={},
        metrics={},
        tags={},
        pipeline=pipeline,
        train_frame=frame,
        feature_names=spec.feature_names,
        target="label",
        dataset_digest="d" * 64,
        dataset_source="tests",
        lineage={"partitions": [{"partition": PARTITION}]},
        figures={},
        extra_json={},
    )
    registry.set_alias(spec.name, registry.CHAMPION, logged.version)
    return registry.pin_champion(spec.name), pipeline


def _validated(spec, frame: pd.DataFrame) -> None:
    from airloop.adapters.lake import default_lake

    meta = {"interval_start": START.isoformat(), "interval_end": END.isoformat()}
    default_lake().write(spec.name, "validated", PARTITION, frame.drop(columns="label"), meta=meta)


def _score(spec, pinned, run_id: str = "run"):
    from airloop.core.contracts import RunInfo
    from airloop.stages.score.runner import score_partition

    return score_partition(spec, PARTITION, pinned, RunInfo(dag_id=f"{spec.name}_score", run_id=run_id), CHUNK_ROWS)


def _rows(model: str) -> list[dict]:
    from airloop.adapters.db import engine_for
    from airloop.adapters.warehouse import predictions
    from airloop.core.settings import WAREHOUSE_CONN_ID

    t = predictions.c
    columns = [c for c in t if c.name not in ("batch_id", "scored_at")]  # they differ between two scorings
    query = sa.select(*columns).where(t.model == model).order_by(t.ts, t.row_key)
    with engine_for(WAREHOUSE_CONN_ID).connect() as conn:
        return [dict(r._mapping) for r in conn.execute(query)]


@pytest.fixture(autouse=True)
def short_statements(monkeypatch):
    from airloop.adapters import prediction_sink

    monkeypatch.setattr(prediction_sink, "SQLITE_ROWS_PER_STATEMENT", 20)


def test_a_binary_classifier_with_string_labels_writes_classes_and_positive_probabilities():
    from airloop.adapters.lake import default_lake

    spec = _spec("clsbinary", positive_class="yes")
    frame = _frame(["no", "yes"])
    pinned, pipeline = _register(spec, frame)
    _validated(spec, frame)

    result = _score(spec, pinned)

    proba = pipeline.predict_proba(frame[spec.feature_names])[:, list(pipeline.classes_).index("yes")]
    expected = np.where(proba >= 0.5, "yes", "no").tolist()
    rows = _rows(spec.name)
    assert result.rows == len(rows) == len(frame) > 3 * CHUNK_ROWS
    by_key = {r["row_key"]: r for r in rows}
    keys = [str(i) for i in frame["record_id"]]
    assert [by_key[k]["probability"] for k in keys] == proba.tolist()  # bit for bit
    assert [by_key[k]["predicted_class"] for k in keys] == expected
    assert {(r["prediction"], r["probabilities"]) for r in rows} == {(None, None)}
    assert set(expected) == {"yes", "no"}

    lake = default_lake().read(spec.name, "predictions", PARTITION)
    assert lake["row_key"].tolist() == keys and lake["probability"].tolist() == proba.tolist()
    assert lake["predicted_class"].tolist() == expected and lake["prediction"].isna().all()


def test_a_lower_decision_threshold_predicts_the_positive_class_more_often():
    spec = _spec("clsthreshold")
    frame = _frame([0, 1])
    pinned, pipeline = _register(spec, frame)
    _validated(spec, frame)
    _score(spec, pinned)
    at_half = sum(r["predicted_class"] == "1" for r in _rows(spec.name))
    target = spec.target.model_copy(update={"decision_threshold": 0.2})
    _score(spec.model_copy(update={"target": target}), pinned)
    rows = _rows(spec.name)
    positive = pipeline.predict_proba(frame[spec.feature_names])[:, 1]
    proba = {str(k): p for k, p in zip(frame["record_id"], positive, strict=True)}
    assert [r["predicted_class"] for r in rows] == ["1" if proba[r["row_key"]] >= 0.2 else "0" for r in rows]
    assert sum(r["predicted_class"] == "1" for r in rows) > at_half


def test_a_multiclass_classifier_writes_the_argmax_its_probability_and_every_probability():
    spec = _spec("clsmulti")
    frame = _frame([0, 1, 2])
    pinned, pipeline = _register(spec, frame)
    _validated(spec, frame)

    _score(spec, pinned)

    proba = pipeline.predict_proba(frame[spec.feature_names])
    rows = {r["row_key"]: r for r in _rows(spec.name)}
    for i, key in enumerate(str(k) for k in frame["record_id"]):
        row = rows[key]
        assert row["predicted_class"] == str(pipeline.classes_[proba[i].argmax()])
        assert row["probability"] == proba[i].max()
        assert json.loads(row["probabilities"]) == {"0": proba[i, 0], "1": proba[i, 1], "2": proba[i, 2]}
        assert row["prediction"] is None
    assert {r["predicted_class"] for r in rows.values()} == {"0", "1", "2"}


def test_rescoring_replaces_the_rows_by_key_and_gives_identical_rows():
    from airloop.adapters.lake import default_lake

    spec = _spec("clsrescore")
    frame = _frame(["a", "b", "c"])
    pinned, _ = _register(spec, frame)
    _validated(spec, frame)
    _score(spec, pinned)
    first, lake_first = _rows(spec.name), default_lake().manifest(spec.name, "predictions", PARTITION)
    _score(spec, pinned)
    assert _rows(spec.name) == first  # same rows, no duplicates
    assert len({r["row_key"] for r in first}) == len(first) == len(frame)
    assert default_lake().manifest(spec.name, "predictions", PARTITION).content_digest == lake_first.content_digest


def test_unusable_probabilities_fail_the_partition_naming_the_rows_and_write_nothing():
    from airloop.adapters.lake import default_lake
    from airloop.stages.score.runner import ScoringProblem

    spec = _spec("clsbroken")
    frame = _frame([0, 1])
    good, _ = _register(spec, frame)
    _validated(spec, frame)
    _score(spec, good)
    before, lake_before = _rows(spec.name), default_lake().manifest(spec.name, "predictions", PARTITION)
    broken, _ = _register(spec, frame, broken=True)

    with pytest.raises(ScoringProblem) as caught:
        _score(spec, broken)

    message = str(caught.value)
    assert f"clsbroken v{broken.version} gave unusable class probabilities in partition {PARTITION}" in message
    assert "hold NaN or infinite values" in message and "keys ['1000', '1001', '1002', '1003', '1004'] ..." in message
    assert "nothing of this partition was written" in message and "clsbroken_promote" in message
    assert _rows(spec.name) == before  # the good version's rows stay
    assert default_lake().manifest(spec.name, "predictions", PARTITION) == lake_before


def test_a_positive_class_the_model_does_not_know_is_refused():
    from airloop.stages.score.runner import ScoringProblem

    spec = _spec("clsnopositive", positive_class="maybe")
    frame = _frame(["no", "yes"])
    pinned, _ = _register(spec, frame)
    _validated(spec, frame)
    with pytest.raises(ScoringProblem, match=r"knows no class 'maybe' \(its classes: \['no', 'yes'\]\)"):
        _score(spec, pinned)
    assert _rows(spec.name) == []

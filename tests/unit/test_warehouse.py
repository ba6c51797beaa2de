"""The warehouse adapter on a real SQLite file: rows keyed so that a re-run replaces instead of adding."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
import sqlalchemy as sa

from airloop.adapters import warehouse

T0 = datetime(2012, 1, 1, tzinfo=UTC)
STEP = timedelta(days=28)


@pytest.fixture
def engine(tmp_path):
    engine = sa.create_engine(f"sqlite:///{tmp_path / 'warehouse.db'}")
    warehouse.ensure_schema(engine)
    warehouse.ensure_schema(engine)  # idempotent
    yield engine
    engine.dispose()


def _validation(i: int, *, success: bool = True, model: str = "m", **changes) -> dict:
    start = T0 + i * STEP
    return {
        "model": model,
        "partition": f"p{i}",
        "interval_start": start,
        "interval_end": start + STEP,
        "success": success,
        "rows": 100 + i,
        "evaluated_expectations": 10,
        "failed_expectations": 0 if success else 2,
        "content_digest": f"d{i}",
        "suite_digests": {"schema": "s1"},
        "failures": [] if success else [{"column": "x", "expectation": "not_null"}],
        "report_path": f"/reports/{i}.json",
        "docs_path": None,
        "dag_run_id": "run",
        **changes,
    }


def _count(engine, table) -> int:
    with engine.connect() as conn:
        return conn.execute(sa.select(sa.func.count()).select_from(table)).scalar_one()


def test_a_validation_result_is_replaced_by_the_intervals_next_run(engine):
    warehouse.upsert_validation_result(engine, _validation(0, success=False, dag_run_id="first"))
    warehouse.upsert_validation_result(engine, _validation(0, success=True, dag_run_id="second", rows=7))
    warehouse.upsert_validation_result(engine, _validation(0, model="other"))  # another model's row stays apart
    assert _count(engine, warehouse.validation_results) == 2
    (row,) = warehouse.recent_validations(engine, "m")
    assert (row["success"], row["rows"], row["dag_run_id"]) == (True, 7, "second")
    assert row["suite_digests"] == {"schema": "s1"} and row["failures"] == []
    assert row["validated_at"] is not None


def test_recent_validations_newest_first_failed_only_and_limited(engine):
    for i in range(5):
        warehouse.upsert_validation_result(engine, _validation(i, success=i % 2 == 0))
    assert [r["partition"] for r in warehouse.recent_validations(engine, "m")] == ["p4", "p3", "p2", "p1", "p0"]
    assert [r["partition"] for r in warehouse.recent_validations(engine, "m", limit=2)] == ["p4", "p3"]
    failed = warehouse.recent_validations(engine, "m", failed_only=True)
    assert [r["partition"] for r in failed] == ["p3", "p1"]
    assert failed[0]["failures"] == [{"column": "x", "expectation": "not_null"}]
    assert warehouse.recent_validations(engine, "nobody") == []


def _drift(end: datetime, version: str = "3", **changes) -> dict:
    return {
        "model": "m",
        "window_end": end,
        "champion_version": version,
        "window_start": end - STEP,
        "reference": "whole",
        "reference_rows": 1000,
        "current_rows": 600,
        "drift_share": 0.5,
        "drifted": True,
        "drifted_columns": ["a"],
        "column_scores": {"a": {"score": 0.3}},
        "prediction_score": 0.05,
        "prediction_drifted": False,
        "labelled_rows": 0,
        "mae": None,
        "rmse": None,
        "reference_mae": None,
        "degradation": None,
        "degraded": None,
        "notes": [],
        "report_path": "/reports/r.html",
        "dag_id": "m_monitor",
        "dag_run_id": "run",
        **changes,
    }


def test_a_windows_drift_record_is_replaced_on_re_run_and_the_history_is_this_champions(engine):
    first, second, third = T0, T0 + STEP, T0 + 2 * STEP
    warehouse.record_drift(engine, _drift(first))
    warehouse.record_drift(engine, _drift(first, version="2"))  # the previous champion: another history
    warehouse.record_drift(engine, _drift(third))
    history = warehouse.record_drift(engine, _drift(second))
    assert [h["window_end"] for h in history] == [first, second]  # up to this window, oldest first, UTC-aware
    rerun = warehouse.record_drift(engine, _drift(second, drifted=False, drifted_columns=[], dag_run_id="again"))
    assert [(h["window_end"], h["drifted"], h["dag_run_id"]) for h in rerun] == [
        (first, True, "run"),
        (second, False, "again"),
    ]
    assert _count(engine, warehouse.drift_metrics) == 4  # replaced, not added
    newest_first = warehouse.drift_history(engine, "m")
    assert [(h["window_end"], h["champion_version"]) for h in newest_first][:2] == [(third, "3"), (second, "3")]
    assert all(h["window_end"].tzinfo is UTC for h in newest_first)


def _request(end: datetime, run: str, **changes) -> dict:
    return {
        "model": "m",
        "window_start": end - STEP,
        "window_end": end,
        "champion_version": "3",
        "reason": "drift in 2 of the last 2 windows",
        "drifted_columns": ["a"],
        "figures": {"drift_share": 0.5},
        "report_path": "/reports/r.html",
        "mlflow_run_id": None,
        "dag_id": "m_monitor",
        "dag_run_id": run,
        "requested_at": datetime.now(UTC),
        **changes,
    }


def test_retrain_requests_one_per_window_the_first_one_wins(engine):
    first, second = T0 + STEP, T0 + 3 * STEP
    stored = warehouse.add_retrain_request(engine, _request(first, "run-1"))
    assert stored["dag_run_id"] == "run-1" and stored["id"] is not None
    again = warehouse.add_retrain_request(engine, _request(first, "run-2", reason="another reason"))
    assert (again["id"], again["dag_run_id"], again["reason"]) == (stored["id"], "run-1", stored["reason"])
    later = warehouse.add_retrain_request(engine, _request(second, "run-3"))
    assert [r["window_end"] for r in warehouse.retrain_requests_of(engine, "m")] == [first, second]
    assert warehouse.retrain_request_for(engine, "m", second)["id"] == later["id"]
    assert warehouse.retrain_request_for(engine, "m", T0) is None
    assert warehouse.last_retrain_request(engine, "m", until=second - timedelta(days=1))["id"] == stored["id"]
    assert warehouse.last_retrain_request(engine, "m", until=second)["id"] == later["id"]
    assert warehouse.last_retrain_request(engine, "m", until=T0) is None
    assert warehouse.last_retrain_request(engine, "other", until=second) is None

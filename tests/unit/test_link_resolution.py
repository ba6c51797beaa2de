"""Where an extra link leads (airloop.ui.links.resolve): real SQLite warehouse, real local MLflow store.

The training-run link reads Airflow's metadata DB (asset events and the runs they created); it is exercised
end to end in ``tests/integration/test_view_app.py``.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from airloop.core.urls import DRIFT, MLFLOW_RUN, VALIDATION
from airloop.ui.links import Target, resolve

MODEL = "linkunit"  # its own name: the session's warehouse and MLflow store are shared with other tests
END = datetime(2012, 6, 16, tzinfo=UTC)


@pytest.fixture(scope="module")
def spec(bikes_spec):
    return bikes_spec.model_copy(update={"name": MODEL})


@pytest.fixture
def reports(tmp_path):
    root = tmp_path / "reports"
    (root / MODEL).mkdir(parents=True)
    return root


def _engine():
    from airloop.adapters import warehouse
    from airloop.adapters.db import engine_for
    from airloop.core.settings import WAREHOUSE_CONN_ID

    engine = engine_for(WAREHOUSE_CONN_ID)
    warehouse.ensure_schema(engine)
    return engine


def _validated(run_id: str, partition: str, report: str, docs: str | None) -> None:
    from airloop.adapters import warehouse

    warehouse.upsert_validation_result(
        _engine(),
        {
            "model": MODEL,
            "partition": partition,
            "interval_start": END - timedelta(days=28),
            "interval_end": END,
            "success": docs is None,
            "rows": 10,
            "evaluated_expectations": 5,
            "failed_expectations": 0 if docs is None else 1,
            "content_digest": "d",
            "suite_digests": {},
            "failures": [],
            "report_path": report,
            "docs_path": docs,
            "dag_run_id": run_id,
        },
    )


def _judged(run_id: str, end: datetime, report: str) -> None:
    from airloop.adapters import warehouse

    row = {
        "model": MODEL,
        "window_end": end,
        "champion_version": "1",
        "window_start": end - timedelta(days=28),
        "reference": "whole",
        "reference_rows": 1,
        "current_rows": 1,
        "drift_share": 0.0,
        "drifted": False,
        "drifted_columns": [],
        "column_scores": {},
        "prediction_score": 0.0,
        "prediction_drifted": False,
        "labelled_rows": 0,
        "notes": [],
        "report_path": report,
        "dag_id": f"{MODEL}_monitor",
        "dag_run_id": run_id,
    }
    warehouse.record_drift(_engine(), row)


def _resolve(kind: str, spec, run_id: str, reports, mlflow_ui: str | None = None) -> Target:
    return resolve(kind, spec, f"{MODEL}_x", run_id, reports_root=reports, mlflow_ui=mlflow_ui)


def test_validation_links_lead_to_the_data_docs_or_else_the_result(spec, reports):
    _validated("run-failed", "p1", str(reports / MODEL / "p1.json"), str(reports / MODEL / "docs" / "index.html"))
    _validated("run-passed", "p2", str(reports / MODEL / "p2.json"), None)
    assert _resolve(VALIDATION, spec, "run-failed", reports) == Target(f"/airloop/reports/{MODEL}/docs/index.html")
    assert _resolve(VALIDATION, spec, "run-passed", reports) == Target(f"/airloop/reports/{MODEL}/p2.json")


def test_a_drift_link_leads_to_the_windows_report(spec, reports):
    _judged("run-judged", END, str(reports / MODEL / "drift" / "report.html"))
    assert _resolve(DRIFT, spec, "run-judged", reports) == Target(f"/airloop/reports/{MODEL}/drift/report.html")


@pytest.mark.parametrize(("kind", "what"), [(VALIDATION, "validation result"), (DRIFT, "drift report")])
def test_a_run_that_recorded_nothing_says_so(spec, reports, kind, what):
    target = _resolve(kind, spec, "run-that-failed-early", reports)
    assert target.url is None and target.title == f"No {what} for this run"
    assert f"DAG run run-that-failed-early of {MODEL}_x recorded no {what}" in target.message


def test_a_report_written_outside_the_reports_folder_is_gone(spec, reports, tmp_path):
    moved = str(tmp_path / "elsewhere" / "report.html")
    _judged("run-moved", END + timedelta(days=28), moved)
    _validated("run-moved", "p3", moved, None)
    for kind, what in [(DRIFT, "drift report"), (VALIDATION, "validation result")]:
        target = _resolve(kind, spec, "run-moved", reports)
        assert target == Target(None, f"The {what} is not here", f"The {what} was written to {moved}, which is gone.")


@pytest.mark.parametrize(
    "run_id",
    ["scheduled__2012-06-16T00:00:00+00:00", "manual__2012-06-16 it's quoted"],
    ids=["plain", "single-quote"],  # MLflow's filter has no escape: a quote once hid the run
)
def test_mlflow_run_links_find_the_run_tagged_with_the_dag_run(spec, reports, run_id):
    from airloop.adapters import registry

    missing = _resolve(MLFLOW_RUN, spec, run_id, reports, "http://mlflow.example")
    assert missing.url is None and missing.title == "No MLflow run for this DAG run"
    assert f"tagged airflow.run_id={run_id}" in missing.message

    client = registry.client()
    experiment = client.get_experiment_by_name(MODEL)
    experiment_id = experiment.experiment_id if experiment else client.create_experiment(MODEL)
    client.create_run(experiment_id, tags={"airflow.run_id": "another run"})
    run = client.create_run(experiment_id, tags={"airflow.run_id": run_id})
    found = _resolve(MLFLOW_RUN, spec, run_id, reports, "http://mlflow.example/")
    assert found == Target(f"http://mlflow.example/#/experiments/{experiment_id}/runs/{run.info.run_id}")
    local = _resolve(MLFLOW_RUN, spec, run_id, reports, None)
    assert local.url is None and local.title == "MLflow has no web UI here"
    assert run.info.run_id in local.message

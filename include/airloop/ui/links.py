"""Where an extra link leads, found when it is clicked (the view's ``/go/<kind>`` route).

The training run a retraining request starts exists only after the scheduler has seen the event, and a re-run
interval's report may have moved, so a link stores only its kind, DAG and run; this module finds its target.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from airloop.core.urls import MLFLOW_RUN, TRAINING_RUN, VALIDATION, report_url

if TYPE_CHECKING:
    from airloop.core.spec import ModelSpec


@dataclass(frozen=True)
class Target:
    """Where a link leads: a URL, or why there is none yet (``title`` and ``message`` for the page)."""

    url: str | None
    title: str = ""
    message: str = ""


def resolve(
    kind: str, spec: ModelSpec, dag_id: str, run_id: str, *, reports_root: Path, mlflow_ui: str | None
) -> Target:
    """Find what a link of ``kind`` on a task of ``dag_id``'s run ``run_id`` leads to, now."""
    if kind == MLFLOW_RUN:
        return _mlflow_run(spec, run_id, mlflow_ui)
    if kind == TRAINING_RUN:
        return _training_run(spec, dag_id, run_id)
    import sqlalchemy as sa

    from airloop.adapters import warehouse
    from airloop.adapters.db import engine_for
    from airloop.core.settings import WAREHOUSE_CONN_ID

    table = warehouse.validation_results if kind == VALIDATION else warehouse.drift_metrics
    engine = engine_for(WAREHOUSE_CONN_ID)
    warehouse.ensure_schema(engine)
    with engine.connect() as conn:
        row = conn.execute(
            sa.select(table).where(table.c.model == spec.name, table.c.dag_run_id == run_id).limit(1)
        ).first()
    what = "validation result" if kind == VALIDATION else "drift report"
    if row is None:
        return Target(
            None,
            f"No {what} for this run",
            f"DAG run {run_id} of {dag_id} recorded no {what}. If the task failed before judging the data, its "
            "log says why; a re-run of the interval or window records a new one.",
        )
    m = row._mapping
    path = (m["docs_path"] or m["report_path"]) if kind == VALIDATION else m["report_path"]
    url = report_url(path, reports_root)
    if url is None:
        return Target(None, f"The {what} is not here", f"The {what} was written to {path}, which is gone.")
    return Target(url)


def _mlflow_run(spec: ModelSpec, run_id: str, mlflow_ui: str | None) -> Target:
    from airloop.adapters import registry

    c = registry.client()
    experiment = c.get_experiment_by_name(spec.name)
    # MLflow's filter has no escape inside a string: a run id with a single quote goes in double quotes.
    quoted = f'"{run_id}"' if "'" in run_id else f"'{run_id}'"
    runs = (
        c.search_runs([experiment.experiment_id], filter_string=f"tags.`airflow.run_id` = {quoted}", max_results=1)
        if experiment
        else []
    )
    if not runs:
        return Target(
            None,
            "No MLflow run for this DAG run",
            f"No run of MLflow experiment {spec.name!r} is tagged airflow.run_id={run_id}: the task failed before "
            "training, or MLflow was unreachable (its log says which).",
        )
    run = runs[0]
    if not mlflow_ui:
        return Target(
            None,
            "MLflow has no web UI here",
            f"MLflow run {run.info.run_id} is in a local store; set AIRLOOP_MLFLOW_UI_URL to the MLflow server.",
        )
    return Target(f"{mlflow_ui.rstrip('/')}/#/experiments/{run.info.experiment_id}/runs/{run.info.run_id}")


def _training_run(spec: ModelSpec, dag_id: str, run_id: str) -> Target:
    """The DAG run started by the asset event this monitor run's ``request`` task emitted (Airflow's DB)."""
    import sqlalchemy as sa
    from airflow.models.asset import AssetEvent
    from airflow.utils.session import create_session

    with create_session() as session:
        events = (
            session.execute(
                sa.select(AssetEvent).where(AssetEvent.source_dag_id == dag_id, AssetEvent.source_run_id == run_id)
            )
            .scalars()
            .all()
        )
        runs = [(r.dag_id, r.run_id) for e in events for r in e.created_dagruns]
    if runs:
        train_dag, train_run = runs[-1]
        return Target(f"/dags/{train_dag}/runs/{train_run}")
    if events:
        return Target(
            None,
            "Training has not started yet",
            f"The retraining request was announced at {events[-1].timestamp:%Y-%m-%d %H:%M:%S} UTC, but no "
            f"{spec.dag_id('train')} run has consumed it yet. Is {spec.dag_id('train')} paused? Is the "
            "scheduler up (`airloop status`)?",
        )
    return Target(
        None,
        "No retraining was requested",
        f"DAG run {run_id} of {dag_id} announced no retraining request: the judge task's log ends with the decision "
        "and why (no drift, cooling down, or already requested).",
    )

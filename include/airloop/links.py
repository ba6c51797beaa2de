"""Extra links on airloop's tasks: buttons in the Airflow UI's task view that lead to what the task made.

=================  ==========================  ====================================================
task               button                      leads to
=================  ==========================  ====================================================
``train``          MLflow run                  the run that trained this DAG run's challenger
``validate``       Validation report           the interval's Data Docs page (failed) or result JSON
``judge``          Drift report                the window's Evidently report
``request``        Triggered training run      the ``<model>_train`` run the retraining request started
=================  ==========================  ====================================================

Airflow computes a link on the worker when the task ends, even when it failed, and stores it in XCom. Each
link here is an address in the airloop view (``/airloop/go/<kind>?dag_id=&run_id=``) that is resolved when
clicked (:func:`resolve`): the training run a request starts exists only after the scheduler has seen the
event, and a re-run interval's report may have moved. The view needs a logged-in user, like the UI.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlencode

from airflow.sdk import BaseOperatorLink

from airloop.view import MOUNT, report_url

if TYPE_CHECKING:
    from airloop.spec import ModelSpec

MLFLOW_RUN = "mlflow-run"
VALIDATION = "validation"
DRIFT = "drift-report"
TRAINING_RUN = "training-run"
KINDS = (MLFLOW_RUN, VALIDATION, DRIFT, TRAINING_RUN)
#: The stages whose DAGs carry links.
STAGES = ("ingest", "train", "monitor")


def link_url(kind: str, dag_id: str, run_id: str) -> str:
    """The view address of one link (relative to the api-server, like the UI's own links)."""
    return f"{MOUNT}/go/{kind}?{urlencode({'dag_id': dag_id, 'run_id': run_id})}"


class _ViewLink(BaseOperatorLink):
    kind = ""

    def get_link(self, operator: Any, *, ti_key: Any) -> str:
        return link_url(self.kind, ti_key.dag_id, ti_key.run_id)


class MLflowRunLink(_ViewLink):
    name = "MLflow run"
    kind = MLFLOW_RUN


class ValidationReportLink(_ViewLink):
    name = "Validation report"
    kind = VALIDATION


class DriftReportLink(_ViewLink):
    name = "Drift report"
    kind = DRIFT


class TriggeredTrainingLink(_ViewLink):
    name = "Triggered training run"
    kind = TRAINING_RUN


_BY_KIND: dict[str, type[_ViewLink]] = {
    c.kind: c for c in (MLflowRunLink, ValidationReportLink, DriftReportLink, TriggeredTrainingLink)
}


def attach(xcom_arg: Any, kind: str) -> Any:
    """Give a ``@task``'s operator the link of ``kind`` (``@task(operator_extra_links=...)`` is refused)."""
    operator = xcom_arg.operator
    operator.operator_extra_links = [*operator.operator_extra_links, _BY_KIND[kind]()]
    return xcom_arg


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

    from airloop import warehouse
    from airloop.config import WAREHOUSE_CONN_ID
    from airloop.db import engine_for

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
    from airloop import tracking

    c = tracking.client()
    experiment = c.get_experiment_by_name(spec.name)
    quoted = run_id.replace("'", "\\'")
    runs = (
        c.search_runs([experiment.experiment_id], filter_string=f"tags.`airflow.run_id` = '{quoted}'", max_results=1)
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

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

from typing import Any

from airflow.sdk import BaseOperatorLink

from airloop.core.urls import DRIFT, MLFLOW_RUN, TRAINING_RUN, VALIDATION, link_url


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

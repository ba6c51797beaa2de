"""Task bodies: the thin layer between Airflow's task context and airloop's library functions.

DAG files call these with the model's name; each reads the data interval from the running task's context,
calls the library, and turns expected failures into a task failure that does not retry and whose message
is the on-call summary.
"""

from __future__ import annotations

from typing import Any

from airflow.sdk import get_current_context
from airflow.sdk.exceptions import AirflowFailException

from airloop.intervals import Interval
from airloop.spec import get_spec


def _interval(context: Any) -> Interval:
    return Interval.of(context["data_interval_start"], context["data_interval_end"])


def ingest_extract(model: str) -> dict[str, Any]:
    from airloop.ingest import Ingestion, extract
    from airloop.source import SourceProblem

    context = get_current_context()
    ing = Ingestion.for_spec(get_spec(model))
    try:
        return extract(ing, _interval(context))
    except SourceProblem as exc:
        if not exc.retryable:
            raise AirflowFailException(str(exc)) from None
        raise


def ingest_validate(model: str) -> dict[str, Any]:
    from airloop.ingest import Ingestion, QuarantinedBatch, validate_interval
    from airloop.validation import SuiteError

    context = get_current_context()
    ing = Ingestion.for_spec(get_spec(model))
    try:
        return validate_interval(ing, _interval(context), dag_run_id=context["run_id"])
    except QuarantinedBatch as exc:
        raise AirflowFailException(str(exc)) from None
    except SuiteError as exc:
        raise AirflowFailException(
            f"The suites of {model} cannot be used, so interval {_interval(context)} was not validated:\n{exc}\n"
            f"Fix the suite file named above (check it with `airloop suites check {model}`), then clear this task."
        ) from None


def ingest_publish(model: str, validated: dict[str, Any]) -> dict[str, Any]:
    from airloop.dagkit import validated_asset
    from airloop.ingest import Ingestion, publish

    context = get_current_context()
    spec = get_spec(model)
    extra = publish(Ingestion.for_spec(spec), _interval(context), validated)
    context["outlet_events"][validated_asset(spec)].extra = extra
    return extra

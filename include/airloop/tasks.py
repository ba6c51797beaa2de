"""Task bodies: the thin layer between Airflow's task context and airloop's library functions.

DAG files call these with the model's name; each reads the data interval from the running task's context,
calls the library, and turns expected failures into a task failure that does not retry and whose message
is the on-call summary.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
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


# --- model lifecycle: train, gate, approve, promote, record -------------------------------------------------


def _run_info(context: Any) -> Any:
    from airloop.lifecycle import RunInfo

    dag_run = context["dag_run"]
    run_type = getattr(dag_run, "run_type", None)
    return RunInfo(
        dag_id=dag_run.dag_id,
        run_id=dag_run.run_id,
        try_number=getattr(context["ti"], "try_number", None),
        run_type=getattr(run_type, "value", run_type),
        triggered_by=getattr(dag_run, "triggering_user_name", None),
    )


def _asset_extras(context: Any) -> list[dict[str, Any]]:
    """The ``extra`` of every Asset event that triggered this run (queued events merge into one run)."""
    return [
        dict(getattr(event, "extra", None) or {})
        for events in (context.get("triggering_asset_events") or {}).values()
        for event in events
    ]


@contextmanager
def _fail_on(*expected: type[Exception]) -> Iterator[None]:
    """Turn airloop's expected errors into a task failure without retries, whose message is the summary."""
    try:
        yield
    except expected as exc:
        raise AirflowFailException(str(exc)) from None


def train_check(model: str) -> dict[str, Any]:
    from airloop import lifecycle

    context = get_current_context()
    with _fail_on(lifecycle.RequestProblem):
        return lifecycle.train_request(
            get_spec(model),
            dict(context["dag_run"].conf or {}),
            dict(context["params"]),
            _run_info(context),
            _asset_extras(context),
        )


def train_fit(model: str, request: dict[str, Any]) -> dict[str, Any]:
    from airloop import lifecycle
    from airloop.tracking import RegistryProblem
    from airloop.training import TrainingProblem

    context = get_current_context()
    with _fail_on(TrainingProblem, RegistryProblem):
        return lifecycle.train(get_spec(model), request, _run_info(context))


def gate_trained(model: str, trained: dict[str, Any]) -> bool:
    """Gate the freshly trained challenger on its own holdout; push the verdict; True when it may go on."""
    from airloop import lifecycle
    from airloop.tracking import RegistryProblem
    from airloop.training import TrainingProblem

    context = get_current_context()
    with _fail_on(TrainingProblem, RegistryProblem):
        result = lifecycle.gate(
            get_spec(model),
            action="promote",
            candidate=trained["version"],
            window=trained["window"],
            reason=trained["reason"],
            run=_run_info(context),
            mlflow_run_id=trained["mlflow_run_id"],
        )
    context["ti"].xcom_push(key="gate", value=result)
    return bool(result["promote"])


def promote_check(model: str) -> dict[str, Any]:
    from airloop import lifecycle

    context = get_current_context()
    with _fail_on(lifecycle.RequestProblem):
        return lifecycle.promote_request(get_spec(model), dict(context["dag_run"].conf or {}), dict(context["params"]))


def gate_requested(model: str, request: dict[str, Any]) -> bool:
    """Gate a named version (or the rollback target) on the newest holdout; push the verdict."""
    from airloop import lifecycle
    from airloop.tracking import RegistryProblem
    from airloop.training import TrainingProblem

    context = get_current_context()
    with _fail_on(TrainingProblem, RegistryProblem):
        result = lifecycle.gate(
            get_spec(model),
            action=request["action"],
            candidate=request["candidate"],
            window=None,
            reason=request["reason"],
            run=_run_info(context),
            override=request["override"],
        )
    context["ti"].xcom_push(key="gate", value=result)
    return bool(result["promote"])


def _approval(context: Any, model: str) -> dict[str, Any] | None:
    if not get_spec(model).gate.approval.required:
        return None
    from airloop.approval import ANSWER_KEY

    return context["ti"].xcom_pull(task_ids="approve", key=ANSWER_KEY)


def decision_promote(model: str) -> dict[str, Any]:
    from airloop import lifecycle
    from airloop.promotion import PromotionConflict

    context = get_current_context()
    gate_result = context["ti"].xcom_pull(task_ids="gate", key="gate")
    with _fail_on(PromotionConflict):
        return lifecycle.promote(gate_result, _approval(context, model), _run_info(context))


def decision_record(model: str) -> dict[str, Any] | None:
    from airloop import lifecycle

    context = get_current_context()
    ti = context["ti"]
    return lifecycle.record_outcome(
        ti.xcom_pull(task_ids="gate", key="gate"),
        _approval(context, model),
        ti.xcom_pull(task_ids="promote"),
        get_spec(model).gate.approval.required,
        _run_info(context),
    )


def decision_outcome() -> None:
    """Fail the run because an earlier task failed (this task runs only then)."""
    context = get_current_context()
    raise AirflowFailException(
        f"An earlier task of run {context['run_id']} failed, so the run fails: open the failed task's log "
        "(its last lines say what broke and what to do). The promotion ledger holds any decision that was made."
    )


# --- batch scoring ----------------------------------------------------------------------------------------------


def score_pin(model: str) -> dict[str, str]:
    """Resolve ``@champion`` once for the run; no champion skips the run's scoring (not a failure)."""
    from airflow.sdk.exceptions import AirflowSkipException

    from airloop.scoring import NoChampion, pin_champion

    try:
        return pin_champion(model)
    except NoChampion as exc:
        raise AirflowSkipException(str(exc)) from None


def score_select(model: str) -> list[str]:
    from airloop.params import ParamProblem
    from airloop.scoring import select_partitions

    context = get_current_context()
    with _fail_on(ParamProblem):
        return select_partitions(
            get_spec(model), _asset_extras(context), dict(context["params"]), dict(context["dag_run"].conf or {})
        )


def score_partitions(model: str, partitions: list[str], pinned: dict[str, str]) -> list[dict[str, Any]]:
    """Score the run's partitions one after another in this one process (the model is loaded once)."""
    from airloop.scoring import ScoringProblem, score_partition

    context = get_current_context()
    spec, run = get_spec(model), _run_info(context)
    with _fail_on(ScoringProblem):
        return [score_partition(spec, p, pinned, run) for p in partitions]


# --- monitoring ---------------------------------------------------------------------------------------------


def monitor_check(model: str) -> dict[str, Any]:
    from airloop import monitoring

    context = get_current_context()
    with _fail_on(monitoring.MonitorProblem):
        return monitoring.monitor_request(
            get_spec(model),
            dict(context["params"]),
            dict(context["dag_run"].conf or {}),
            context.get("data_interval_end"),
        )


def monitor_judge(model: str, request: dict[str, Any]) -> dict[str, Any]:
    """Judge the window; no champion yet skips (nothing to monitor), a window that cannot be judged fails."""
    from airflow.sdk.exceptions import AirflowSkipException

    from airloop import monitoring
    from airloop.scoring import NoChampion

    context = get_current_context()
    try:
        with _fail_on(monitoring.MonitorProblem):
            return monitoring.monitor(get_spec(model), request, _run_info(context))
    except NoChampion:
        raise AirflowSkipException(
            f"{model} has no @champion yet, so there is nothing to monitor. Train and promote one ({model}_train)."
        ) from None


def monitor_request_retraining(model: str, summary: dict[str, Any]) -> dict[str, Any]:
    """Record the request and announce it on the retrain Asset; skipped (no event) when none is due."""
    from airflow.sdk.exceptions import AirflowSkipException

    from airloop.dagkit import retrain_asset
    from airloop.monitoring import request_retraining

    context = get_current_context()
    spec = get_spec(model)
    extra = request_retraining(spec, summary, _run_info(context))
    if extra is None:
        raise AirflowSkipException(f"No retraining: {summary['decision']['reason']}.")
    context["outlet_events"][retrain_asset(spec)].extra = extra
    return extra

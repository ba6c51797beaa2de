"""Task bodies: the thin layer between Airflow's task context and airloop's library functions.

DAG files call these with the model's name; each reads the data interval from the running task's context,
calls the library, and ends one of three ways, all through :func:`_guard`:

- done: the library has logged a short summary at INFO (interval, rows, versions, figures, decision);
- an expected failure (bad data, bad params, a refused request): ``AirflowFailException`` with the on-call
  summary as its message; no retries, since a retry would fail the same way;
- MLflow or a database unreachable: ``outages.ServiceUnavailable``, a plain exception, so Airflow retries the
  task with backoff; its message names the service (URI or connection id, credentials masked), what the task
  was doing (model, interval or run) and what to do.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from functools import partial
from typing import Any

from airflow.sdk import get_current_context
from airflow.sdk.exceptions import AirflowFailException

from airloop.core.errors import ExpectedFailure, ServiceUnavailable
from airloop.core.intervals import Interval
from airloop.core.spec import ModelSpec, get_spec
from airloop.orchestration import lineage


def _interval(context: Any) -> Interval:
    return Interval.of(context["data_interval_start"], context["data_interval_end"])


def _grid_interval(context: Any, spec: ModelSpec) -> Interval:
    """The run's data interval, refused (no retries) unless it is exactly one interval of the spec's timetable.

    Checked by every ingest task before it reads or writes anything: an off-grid manual run would otherwise publish
    a partition overlapping grid partitions, and everything downstream would count those rows twice.
    """
    from airloop.core.intervals import check_on_grid

    interval = _interval(context)
    with guard(context, f"checking the data interval of {spec.name}"):
        check_on_grid(spec, interval, dag_id=spec.dag_id("ingest"))
    return interval


def _doing(context: Any, what: str) -> str:
    """``what`` the task was doing, with its run and (when it has one) its data interval, for outage messages."""
    where = [f"run {context['run_id']}"] if context.get("run_id") else []
    start, end = context.get("data_interval_start"), context.get("data_interval_end")
    if start is not None and end is not None and start < end:
        where.append(f"data interval {Interval.of(start, end)}")
    return f"{what} ({'; '.join(where)})" if where else what


@contextmanager
def guard(context: Any, what: str) -> Iterator[None]:
    """The one exit of every task body, by the two error bases of :mod:`airloop.core.errors`.

    - An outage (:class:`ServiceUnavailable`, or a library error that :func:`outages.find` recognises as MLflow
      or a database not answering) retries, with a message naming the service, what the task was doing and
      whether a retry is left. It is checked first, so an expected error that wraps one still retries.
    - An :class:`ExpectedFailure` (bad data, bad params, a refusal) fails at once, without retries: its
      message is the on-call summary.
    - Anything else is a bug: it propagates with its traceback (and Airflow retries it once).
    """
    from airloop.adapters.outages import explain, find

    try:
        yield
    except Exception as exc:
        outage = find(exc)
        if outage is not None:
            ti = context.get("ti")
            try_number, max_tries = getattr(ti, "try_number", None), getattr(ti, "max_tries", None)
            retries_left = None if try_number is None or max_tries is None else try_number <= max_tries
            message = explain(outage, _doing(context, what), try_number=try_number, retries_left=retries_left)
            raise ServiceUnavailable(message) from None
        if isinstance(exc, ServiceUnavailable):
            raise
        if isinstance(exc, ExpectedFailure):
            raise AirflowFailException(str(exc)) from None
        raise


def _notify(what: str, build: Callable[[], Any]) -> None:
    from airloop.orchestration.notifiers import notify_built

    notify_built(what, build)


def ingest_extract(model: str) -> dict[str, Any]:
    from airloop.stages.ingest.runner import Ingestion, check_conf, extract

    context = get_current_context()
    spec = get_spec(model)
    interval = _grid_interval(context, spec)
    ing = Ingestion.for_spec(spec)
    with guard(context, f"extracting {model} from its source"):
        check_conf(spec, dict(context["dag_run"].conf or {}))
        return extract(ing, interval).to_dict()


def ingest_validate(model: str) -> dict[str, Any]:
    from airloop.adapters.expectations import SuiteError
    from airloop.orchestration import events
    from airloop.stages.ingest.runner import Ingestion, QuarantinedBatch, validate_interval

    context = get_current_context()
    spec = get_spec(model)
    interval = _grid_interval(context, spec)
    ing = Ingestion.for_spec(spec)
    with guard(context, f"validating {model}"):
        try:
            validated = validate_interval(ing, interval, dag_run_id=context["run_id"])
        except QuarantinedBatch as exc:
            details, dag_id, run_id = exc.details, spec.dag_id("ingest"), context["run_id"]
            _notify("quarantine", lambda: events.quarantine(model, interval, details, dag_id, run_id))
            raise
        except SuiteError as exc:
            raise SuiteError(
                f"The suites of {model} cannot be used, so interval {interval} was not validated:\n"
                f"{exc}\nFix the suite file named above (check it with `airloop suites check {model}`), "
                "then clear this task."
            ) from None
    lineage.record(context, lambda: _validation_lineage(ing, validated.partition, validated.report, publish=False))
    return validated.to_dict()


def _validation_lineage(ing: Any, key: str, report: str, *, publish: bool) -> Any:
    """Validate reads the raw partition and asserts its suites on it; publish reads it and writes the validated
    copy, which carries the same assertions and its content digest."""
    import json
    from pathlib import Path

    from airloop.core import lineage as ol

    checks = json.loads(Path(report).read_text(encoding="utf-8")).get("checks") or []
    quality = {ol.DATA_QUALITY: ol.data_quality_facet(checks)}
    model = ing.spec.name
    raw = lineage.partition(ing.lake, model, "raw", key)
    if not publish:
        return ol.TaskLineage(inputs=[ol.DatasetRef(raw.namespace, raw.name, raw.facets, quality)])
    return ol.TaskLineage(inputs=[raw], outputs=[lineage.partition(ing.lake, model, "validated", key, extra=quality)])


def ingest_publish(model: str, validated: dict[str, Any]) -> dict[str, Any]:
    from airloop.core.contracts import Validated
    from airloop.orchestration.assets import validated_asset
    from airloop.stages.ingest.runner import Ingestion, publish

    context = get_current_context()
    spec = get_spec(model)
    interval = _grid_interval(context, spec)
    ing = Ingestion.for_spec(spec)
    with guard(context, f"publishing {model}"):
        checked = Validated.from_dict(validated)
        extra = publish(ing, interval, checked).to_dict()
    context["outlet_events"][validated_asset(spec)].extra = extra
    lineage.record(context, lambda: _validation_lineage(ing, checked.partition, checked.report, publish=True))
    return extra


# --- model lifecycle: train, gate, approve, promote, record -------------------------------------------------


def _run_info(context: Any) -> Any:
    from airloop.core.contracts import RunInfo

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


def train_check(model: str) -> dict[str, Any]:
    from airloop.stages.train import runner as train_stage

    context = get_current_context()
    with guard(context, f"checking the request to train {model}"):
        request = train_stage.train_request(
            get_spec(model),
            dict(context["dag_run"].conf or {}),
            dict(context["params"]),
            _run_info(context),
            _asset_extras(context),
        )
    return request.to_dict()


def train_fit(model: str, request: dict[str, Any]) -> dict[str, Any]:
    from airloop.core.contracts import TrainRequest
    from airloop.stages.train import runner as train_stage

    context = get_current_context()
    window = f"window {request.get('window_start') or 'default'} to {request.get('window_end') or 'newest data'}"
    with guard(context, f"training {model} ({window})"):
        trained = train_stage.train(get_spec(model), TrainRequest.from_dict(request), _run_info(context))
    lineage.record(context, lambda: _version_lineage(model, trained.version, "trained"))
    return trained.to_dict()


def _version_lineage(model: str, version: str, role: str) -> Any:
    """A run that trained, gated or promoted a version: the version, its MLflow run and the partitions it was
    trained on (which are the training run's inputs)."""
    from airloop.adapters.lake import default_lake
    from airloop.core import lineage as ol

    lake = default_lake()
    run_id, keys, datasets = lineage.trained_on(lake, model, version)
    facet = ol.model_version_facet(model, version, role, mlflow_run_id=run_id, training_partitions=datasets)
    inputs = [lineage.partition(lake, model, "validated", k) for k in keys] if role == "trained" else []
    return ol.TaskLineage(inputs=inputs, run_facets={ol.MODEL_VERSION: facet})


def gate_trained(model: str, trained: dict[str, Any]) -> bool:
    """Gate the freshly trained challenger on its own holdout; push the verdict; True when it may go on."""
    from airloop.core.contracts import TrainedVersion
    from airloop.stages.promote import runner as promote_stage

    context = get_current_context()
    with guard(context, f"gating {model} v{trained.get('version')}"):
        result = promote_stage.gate_trained(get_spec(model), TrainedVersion.from_dict(trained), _run_info(context))
    _notify_out_of_band(model, context)
    context["ti"].xcom_push(key="gate", value=result.to_dict())
    lineage.record(context, lambda: _version_lineage(model, result.candidate, "gated"))
    return result.promote


def promote_check(model: str) -> dict[str, Any]:
    from airloop.stages.promote import runner as promote_stage

    context = get_current_context()
    with guard(context, f"checking the request to promote {model}"):
        request = promote_stage.promote_request(
            get_spec(model), dict(context["dag_run"].conf or {}), dict(context["params"])
        )
    return request.to_dict()


def gate_requested(model: str, request: dict[str, Any]) -> bool:
    """Gate a named version (or the rollback target) on the newest holdout; push the verdict."""
    from airloop.core.contracts import PromoteRequest
    from airloop.stages.promote import runner as promote_stage

    context = get_current_context()
    with guard(context, f"gating {model} v{request.get('candidate')} ({request.get('action')})"):
        result = promote_stage.gate_requested(get_spec(model), PromoteRequest.from_dict(request), _run_info(context))
    _notify_out_of_band(model, context)
    context["ti"].xcom_push(key="gate", value=result.to_dict())
    lineage.record(context, lambda: _version_lineage(model, result.candidate, "gated"))
    return result.promote


def _approval(context: Any, model: str) -> dict[str, Any] | None:
    if not get_spec(model).gate.approval.required:
        return None
    from airloop.orchestration.approval import ANSWER_KEY

    return context["ti"].xcom_pull(task_ids="approve", key=ANSWER_KEY)


def decision_promote(model: str) -> dict[str, Any]:
    from airloop.core.contracts import GateResult
    from airloop.stages.promote import runner as promote_stage

    context = get_current_context()
    gate_result = context["ti"].xcom_pull(task_ids="gate", key="gate")
    with guard(context, f"promoting {model} v{(gate_result or {}).get('candidate')}"):
        promoted = promote_stage.promote(
            GateResult.from_dict(gate_result), _approval(context, model), _run_info(context)
        )
    if promoted.moved and promoted.champion_after:
        version = promoted.champion_after
        lineage.record(context, lambda: _version_lineage(model, version, "promoted"))
    return promoted.to_dict()


def decision_rescore(model: str) -> dict[str, Any]:
    """After ``@champion`` moved, announce the newest validated intervals to ``<model>_score`` (an event on the
    model's ``validated`` Asset, ``scoring.rescore_on_promotion``); skipped when it did not move."""
    from airflow.sdk.exceptions import AirflowSkipException

    from airloop.adapters.lake import default_lake
    from airloop.core.contracts import PromotionOutcome
    from airloop.orchestration.assets import validated_asset
    from airloop.stages.score.rescore import rescore_request

    context = get_current_context()
    spec = get_spec(model)
    with guard(context, f"asking {spec.dag_id('score')} to re-score {model} with the new champion"):
        promoted = context["ti"].xcom_pull(task_ids="promote")
        extra = (
            None if promoted is None else rescore_request(spec, PromotionOutcome.from_dict(promoted), default_lake())
        )
    if extra is None:
        raise AirflowSkipException("@champion did not move (or nothing is validated yet): nothing to re-score.")
    context["outlet_events"][validated_asset(spec)].extra = extra
    return extra


def decision_record(model: str) -> dict[str, Any] | None:
    from airloop.core.contracts import GateResult, PromotionOutcome
    from airloop.stages.promote import runner as promote_stage

    context = get_current_context()
    ti = context["ti"]
    with guard(context, f"recording the decision on {model} in the promotion ledger"):
        gate_result, promoted = ti.xcom_pull(task_ids="gate", key="gate"), ti.xcom_pull(task_ids="promote")
        row = promote_stage.record_outcome(
            None if gate_result is None else GateResult.from_dict(gate_result),
            _approval(context, model),
            None if promoted is None else PromotionOutcome.from_dict(promoted),
            get_spec(model).gate.approval.required,
            _run_info(context),
        )
    if row is not None and gate_result is not None:
        from airloop.orchestration import events

        gate, dag_id, run_id = GateResult.from_dict(gate_result), context["dag_run"].dag_id, context["run_id"]
        _notify("promotion", lambda: events.promotion(gate, row, dag_id, run_id))
    return None if row is None else row.to_dict()


def decision_outcome() -> None:
    """Fail the run because an earlier task failed (this task runs only then)."""
    context = get_current_context()
    raise AirflowFailException(
        f"An earlier task of run {context['run_id']} failed, so the run fails: open the failed task's log "
        "(its last lines say what broke and what to do). The promotion ledger holds any decision that was made."
    )


# --- batch scoring ----------------------------------------------------------------------------------------------


def score_pin(model: str) -> dict[str, str]:
    """Resolve the champion once for the run (the promotion ledger's, checked against ``@champion``:
    :func:`airloop.stages.promote.ledger.served_champion`); no champion skips the run's scoring (not a failure)."""
    from airflow.sdk.exceptions import AirflowSkipException

    from airloop.adapters.db import engine_for
    from airloop.core.errors import NoChampion
    from airloop.core.settings import WAREHOUSE_CONN_ID
    from airloop.stages.promote.ledger import served_champion

    context = get_current_context()
    try:
        with guard(context, f"resolving @champion of {model}"):
            # The ledger's champion, by version number; an @champion moved outside airloop is recorded, not adopted.
            engine, run = engine_for(WAREHOUSE_CONN_ID), _run_info(context)
            pinned, _ = served_champion(engine, model, "scoring", dag_id=run.dag_id, dag_run_id=run.run_id)
            return pinned.to_dict()
    except NoChampion as exc:
        raise AirflowSkipException(str(exc)) from None
    finally:
        _notify_out_of_band(model, context)


def _notify_out_of_band(model: str, context: Any) -> None:
    """Notify the ``out_of_band`` ledger rows this run appended (an ``@champion`` moved outside airloop)."""
    from airloop.adapters.db import engine_for
    from airloop.core.settings import WAREHOUSE_CONN_ID
    from airloop.orchestration import events
    from airloop.stages.promote.ledger import OUT_OF_BAND, ledger

    dag_id, run_id = context["dag_run"].dag_id, context["run_id"]
    try:
        rows = [
            r
            for r in ledger(engine_for(WAREHOUSE_CONN_ID), model, limit=20)
            if r["outcome"] == OUT_OF_BAND and r["dag_run_id"] == run_id
        ]
    except Exception:  # the warehouse is down: the task itself has failed on it and says so
        return
    for row in rows:
        _notify("out-of-band @champion", partial(events.out_of_band, model, row, dag_id, run_id))


def score_select(model: str) -> list[str]:
    from airloop.stages.score.runner import select_partitions

    context = get_current_context()
    with guard(context, f"selecting the partitions of {model} to score"):
        return select_partitions(
            get_spec(model), _asset_extras(context), dict(context["params"]), dict(context["dag_run"].conf or {})
        )


def score_partitions(model: str, partitions: list[str], pinned: dict[str, str]) -> list[dict[str, Any]]:
    """Score the run's partitions one after another in this one process (the model is loaded once)."""
    from airloop.core.contracts import PinnedChampion
    from airloop.stages.score import runner as scoring

    context = get_current_context()
    spanned = f"{partitions[0]} to {partitions[-1]}" if partitions else "none"
    with guard(context, f"reading the champion pinned for {model}"):
        champion = PinnedChampion.from_dict(pinned)
    with guard(context, f"scoring {len(partitions)} partition(s) of {model} ({spanned}) with v{champion.version}"):
        results = scoring.score_partitions(get_spec(model), partitions, champion, _run_info(context))
    lineage.record(context, lambda: _scoring_lineage(model, results, champion))
    return [r.to_dict() for r in results]


def score_shadow(model: str, partitions: list[str]) -> dict[str, Any]:
    """Score the run's partitions with the waiting challenger too (never served); nothing when none waits."""
    from airloop.stages.score.shadow import shadow_partitions

    context = get_current_context()
    with guard(context, f"shadow-scoring {len(partitions)} partition(s) of {model} with @challenger"):
        return shadow_partitions(get_spec(model), partitions, _run_info(context)).to_dict()


def shadow_gate_due(shadowed: dict[str, Any]) -> bool:
    """True (the promote DAG is triggered next) when the shadow step found the live gate due."""
    return bool(shadowed.get("trigger"))


def _scoring_lineage(model: str, results: list[Any], champion: Any) -> Any:
    """Scoring reads validated partitions and writes prediction partitions and the ``predictions`` table, with
    the version that scored them and the partitions that version was trained on."""
    from airloop.adapters.lake import default_lake
    from airloop.core import lineage as ol

    lake = default_lake()
    _, _, trained_on = lineage.trained_on(lake, model, champion.version)
    version = ol.model_version_facet(
        model, champion.version, "scoring", mlflow_run_id=champion.run_id, training_partitions=trained_on
    )
    return ol.TaskLineage(
        inputs=[lineage.partition(lake, model, "validated", r.partition) for r in results],
        outputs=[
            *(lineage.partition(lake, model, "predictions", r.partition) for r in results),
            lineage.warehouse_table("predictions"),
        ],
        run_facets={ol.MODEL_VERSION: version},
    )


# --- monitoring ---------------------------------------------------------------------------------------------


def monitor_check(model: str) -> dict[str, Any]:
    from airloop.stages.monitor import runner as monitoring

    context = get_current_context()
    with guard(context, f"resolving the window of {model} to monitor"):
        return monitoring.monitor_request(
            get_spec(model),
            dict(context["params"]),
            dict(context["dag_run"].conf or {}),
            context.get("data_interval_end"),
        ).to_dict()


def monitor_judge(model: str, request: dict[str, Any]) -> dict[str, Any]:
    """Judge the window; no champion yet skips (nothing to monitor), a window that cannot be judged fails."""
    from airflow.sdk.exceptions import AirflowSkipException

    from airloop.core.contracts import MonitorRequest
    from airloop.core.errors import NoChampion
    from airloop.stages.monitor import runner as monitoring

    context = get_current_context()
    with guard(context, f"reading the monitor request of {model}"):
        judged = MonitorRequest.from_dict(request)
    try:
        with guard(context, f"judging the window of {model} ending {judged.as_of:%Y-%m-%d}"):
            summary = monitoring.monitor(get_spec(model), judged, _run_info(context))
    except NoChampion:
        raise AirflowSkipException(
            f"{model} has no @champion yet, so there is nothing to monitor. Train and promote one ({model}_train)."
        ) from None
    lineage.record(context, lambda: _drift_lineage(summary))
    return summary.to_dict()


def _drift_lineage(summary: Any) -> Any:
    """Monitoring reads the champion's predictions and writes a drift verdict on them."""
    from airloop.core import lineage as ol

    verdict = ol.drift_verdict_facet(summary.drifted, summary.drift_share, summary.drifted_columns)
    return ol.TaskLineage(
        inputs=[lineage.warehouse_table("predictions")],
        outputs=[lineage.warehouse_table("drift_metrics")],
        run_facets={ol.DRIFT_VERDICT: verdict},
    )


def monitor_request_retraining(model: str, summary: dict[str, Any]) -> dict[str, Any]:
    """Record the request and announce it on the retrain Asset; skipped (no event) when none is due."""
    from airflow.sdk.exceptions import AirflowSkipException

    from airloop.core.contracts import MonitorSummary
    from airloop.orchestration.assets import retrain_asset
    from airloop.stages.monitor.runner import request_retraining

    context = get_current_context()
    spec = get_spec(model)
    with guard(context, f"reading the monitor summary of {model}"):
        judged = MonitorSummary.from_dict(summary)
    ending = f"{judged.window_end:%Y-%m-%d}"
    with guard(context, f"recording the retrain request of {model} for the window ending {ending}"):
        extra = request_retraining(spec, judged, _run_info(context))
    if extra is None:
        raise AirflowSkipException(f"No retraining: {judged.reason}.")
    context["outlet_events"][retrain_asset(spec)].extra = extra
    from airloop.orchestration import events

    dag_id, run_id = context["dag_run"].dag_id, context["run_id"]
    _notify("retrain", lambda: events.retrain(judged, extra, dag_id, run_id))
    return extra


def monitor_freshness(model: str) -> dict[str, Any]:
    """Fail (and notify ``freshness``) when no interval was validated for the last N expected intervals.

    "As of" is the run's ``as_of`` param when given (data time, as in a replay), else the end of the run's data
    interval, else now; never capped at the data, as the monitor's window is, since the gap is what is measured.
    The newest validated interval is the newest ``validated`` partition in the lake (what training and monitoring
    read). The task's failure is the run's visible signal, so silence never passes for health.
    """
    import logging
    from datetime import UTC, datetime

    from airloop.adapters.lake import default_lake
    from airloop.core import freshness, settings
    from airloop.core.errors import ExpectedFailure
    from airloop.core.params import day
    from airloop.orchestration import events
    from airloop.stages.train.steps import newest_validated_end

    context = get_current_context()
    spec = get_spec(model)
    with guard(context, f"checking the freshness of {model}"):
        try:
            after = settings.freshness_after()
        except ValueError as exc:
            raise ExpectedFailure(str(exc)) from None
        as_of = day("as_of", dict(context["params"]).get("as_of"))
        as_of = as_of or context.get("data_interval_end") or datetime.now(UTC)
        checked = freshness.check(spec, newest_validated_end(spec, default_lake()), as_of, after=after)
    logging.getLogger(__name__).info("Freshness: %s", checked.summary)
    if checked.breached:
        dag_id, run_id = context["dag_run"].dag_id, context["run_id"]
        _notify("freshness", lambda: events.freshness(checked, spec.dag_id("ingest"), dag_id, run_id))
        raise AirflowFailException(
            f"Freshness breach: {checked.summary} Check {spec.dag_id('ingest')} (paused? failing? quarantining?) "
            "and its source; this task passes again once a new interval is validated."
        )
    return checked.to_dict()


# --- labels -----------------------------------------------------------------------------------------------------


def labels_collect(model: str) -> dict[str, Any]:
    """Record the interval's labels and join them with its served predictions (``airloop.stages.labels``), after
    reading the earlier intervals within ``labels.max_lag`` again (labels that arrived late).

    Labels still missing longer than ``labels.max_lag`` after they were due send a freshness notification (the
    task does not fail for it); refused labels fail the task after the rest was written, and alert first too.
    """
    from airloop.core.intervals import check_on_grid
    from airloop.stages.labels import runner as labelling

    context = get_current_context()
    spec = get_spec(model)
    interval = _interval(context)
    with guard(context, f"checking the data interval of {model}"):
        check_on_grid(spec, interval, dag_id=spec.dag_id("labels"))
    with guard(context, f"reading the labels of {model} before interval {interval} again"):
        earlier = labelling.revisit(spec, interval, _run_info(context))
    for revisited in earlier:
        _labels_lag_alert(context, revisited)
    with guard(context, f"recording the labels of {model} for interval {interval}"):
        try:
            summary = labelling.collect(spec, interval, _run_info(context))
        except labelling.RefusedLabels as refused:
            _labels_lag_alert(context, refused.summary)
            raise
    _labels_lag_alert(context, summary)
    return {**summary.to_dict(), "revisited": [s.to_dict() for s in earlier]}


def _labels_lag_alert(context: Any, summary: Any) -> None:
    if not summary.lagging:
        return
    from airloop.orchestration import events

    dag_id, run_id, data = context["dag_run"].dag_id, context["run_id"], summary.to_dict()
    _notify("freshness", lambda: events.labels_lagging(data, dag_id, run_id))

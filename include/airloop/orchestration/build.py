"""What DAG files need at parse time: specs, timetables, default args, tags and runbooks.

Imported by every DAG file on every parse, so it imports ``airflow.sdk`` and airloop's light modules only
(a test proves no pandas, sklearn, MLflow, GX or Evidently is loaded).
"""

from __future__ import annotations

import functools
from datetime import timedelta
from importlib import resources
from typing import TYPE_CHECKING, Any

from airloop.core.settings import paths
from airloop.core.spec import ModelSpec, format_duration, load_specs
from airloop.orchestration.assets import retrain_asset

if TYPE_CHECKING:
    from airflow.sdk import CronDataIntervalTimetable, DeltaDataIntervalTimetable

STAGE_TAG = "airloop"


def model_specs() -> list[ModelSpec]:
    """Every model spec; a broken one raises, which Airflow shows as this DAG file's import error."""
    return load_specs(paths().models_dir)


def ingest_timetable(spec: ModelSpec) -> DeltaDataIntervalTimetable | CronDataIntervalTimetable:
    """A timetable with real data intervals (never the zero-length intervals of a plain cron string)."""
    # Imported here: the cron timetable loads croniter, which only a cron-scheduled ingest DAG needs.
    from airflow.sdk import CronDataIntervalTimetable, DeltaDataIntervalTimetable

    step = spec.schedule.interval
    if step is not None:
        return DeltaDataIntervalTimetable(step)
    assert spec.schedule.cron is not None
    return CronDataIntervalTimetable(spec.schedule.cron, timezone="UTC")


def default_args(spec: ModelSpec, stage: str, *, retries: int = 2) -> dict[str, Any]:
    """Owner from the spec; the stage's time limit on each try (``timeouts.<stage>.task``: a hung call fails the
    try, which retries); retries with backoff for transient failures (data failures never retry); a failure
    alert when a task has finally failed (``airloop.orchestration.notifiers``: e-mail or webhook per deployment, off
    by default; retries do not alert).
    """
    from airloop.orchestration.notifiers import FailureAlert

    return {
        "owner": spec.owner,
        "execution_timeout": spec.stage_timeouts(stage).task,
        "retries": retries,
        "retry_delay": timedelta(seconds=30),
        "retry_exponential_backoff": True,
        "max_retry_delay": timedelta(minutes=10),
        "on_failure_callback": FailureAlert(),
    }


def run_limits(spec: ModelSpec, stage: str) -> dict[str, Any]:
    """A stage DAG's ``dagrun_timeout`` and ``deadline`` (``timeouts.<stage>`` of the spec), as DAG arguments.

    The deadline is measured from when the run was queued (a run waiting for a free slot is late too); when it
    passes before the run ends, the scheduler has the executor call
    :func:`airloop.orchestration.notifiers.deadline_missed`, which alerts through the failure alert channel.
    A run still going at ``run`` is failed by the scheduler, freeing its slot.
    """
    from airflow.sdk.definitions.callback import SyncCallback
    from airflow.sdk.definitions.deadline import DeadlineAlert, DeadlineReference

    from airloop.core.spec import format_duration
    from airloop.orchestration.notifiers import deadline_missed

    limits = spec.stage_timeouts(stage)
    alert = DeadlineAlert(
        reference=DeadlineReference.DAGRUN_QUEUED_AT,
        interval=limits.deadline,
        callback=SyncCallback(
            deadline_missed, kwargs={"owner": spec.owner, "allowed": format_duration(limits.deadline)}
        ),
        name=f"{spec.dag_id(stage)} not finished {format_duration(limits.deadline)} after it was queued",
    )
    return {"dagrun_timeout": limits.run, "deadline": alert}


def tags(spec: ModelSpec, stage: str) -> list[str]:
    return sorted({STAGE_TAG, f"model:{spec.name}", f"stage:{stage}", *spec.tags})


#: The runbook templates: ``runbooks/<stage>.md`` (``str.format`` fields; ``{{`` for a brace) ending in
#: ``{triage}``, where ``runbooks/triage.md``, the triage every DAG shares, goes.
RUNBOOKS = ("ingest", "train", "promote", "score", "monitor", "labels")


@functools.cache
def runbook_template(name: str) -> str:
    """The text of ``runbooks/<name>.md`` (package data), read once per process: DAG files parse often."""
    return resources.files("airloop.orchestration").joinpath("runbooks", f"{name}.md").read_text(encoding="utf-8")


def _runbook(stage: str, **fields: Any) -> str:
    """One DAG's ``doc_md``: its stage's template filled in for one model, with the shared triage."""
    return runbook_template(stage).format(triage=runbook_template("triage").rstrip("\n"), **fields)


def ingest_runbook(spec: ModelSpec) -> str:
    s = spec.schedule
    return _runbook(
        "ingest",
        name=spec.name,
        owner=spec.owner,
        description=spec.description,
        schedule=s.every or s.cron or "1d",
        start=s.start,
        end=f" to {s.end}" if s.end else "",
        connection=spec.source.connection,
        source=spec.source.table or "query",
        time_column=spec.source.time_column,
        suite_dir=spec.suite_dir,
    )


def train_schedule(spec: ModelSpec) -> Any:
    """Retrain requests always; plus the spec's cron when it has one (never both at once: one run at a time)."""
    from airflow.sdk import AssetOrTimeSchedule, CronTriggerTimetable

    if spec.training.cron is None:
        return [retrain_asset(spec)]
    return AssetOrTimeSchedule(
        timetable=CronTriggerTimetable(spec.training.cron, timezone="UTC"), assets=[retrain_asset(spec)]
    )


def decision_tasks(spec: ModelSpec, stage: str, gated: Any) -> None:
    """Wire what follows a gate: optional human approval, the serialised promotion, and the ledger record.

    ``gated`` is the short-circuiting gate task: when it returns False (refused, dry run, nothing to do),
    approval and promotion are skipped, and ``record`` still writes why nothing moved. ``outcome`` runs only
    when a task failed, and fails the run with it.
    """
    from airflow.sdk import TriggerRule, task

    from airloop.orchestration import tasks

    @task(multiple_outputs=False, retries=0)
    def promote(model: str) -> dict:
        return tasks.decision_promote(model)

    @task(trigger_rule=TriggerRule.ALL_DONE)
    def record(model: str) -> dict | None:
        return tasks.decision_record(model)

    promoted = promote(spec.name)
    approval = spec.gate.approval
    if approval.required:
        from airloop.orchestration.approval import ApprovalWaiting, RecordedApproval

        approve = RecordedApproval(
            task_id="approve",
            subject=f"Promote {spec.name} v{{{{ ti.xcom_pull(task_ids='gate', key='gate')['candidate'] }}}} "
            "to @champion?",
            body="{{ ti.xcom_pull(task_ids='gate', key='gate')['markdown'] }}",
            response_timeout=timedelta(hours=approval.timeout_hours),
            # A deferred task's trigger times out at its execution_timeout: the person's whole wait must fit.
            execution_timeout=timedelta(hours=approval.timeout_hours) + spec.stage_timeouts(stage).task,
            retries=0,
            notifiers=[ApprovalWaiting()],
        )
        gated >> approve >> promoted
    else:
        gated >> promoted
    recorded = record(spec.name)
    promoted >> recorded
    finals = [promoted, recorded]
    if spec.scoring.rescore_on_promotion is not None:
        from airloop.orchestration.assets import validated_asset

        # Only when @champion moved: the newest intervals go to <model>_score as an event on `validated`.
        @task(task_id="rescore", multiple_outputs=False, outlets=[validated_asset(spec)])
        def rescore(model: str) -> dict:
            return tasks.decision_rescore(model)

        rescored = rescore(spec.name)
        promoted >> rescored
        finals.append(rescored)

    # `record` runs whatever happened, so on its own it would make every run end "success"; this last task
    # fails the run when anything before it failed (a refused or rejected challenger is not a failure).
    @task(task_id="outcome", trigger_rule=TriggerRule.ONE_FAILED, retries=0)
    def outcome() -> None:
        tasks.decision_outcome()

    finals >> outcome()


def live_gate_trigger_args(spec: ModelSpec) -> dict[str, Any]:
    """The arguments of the score DAG's last task, a ``TriggerDagRunOperator`` that triggers ``<model>_promote``
    for the shadowed challenger's live gate.

    It runs only when the ``shadow`` task found ``gate.shadow`` due (enough labelled shadow intervals); the run id
    names the version and the count of labelled intervals, so a later score run does not trigger it again (an
    existing run is skipped) until more intervals are labelled. The DAG file imports the operator itself: the
    dag-processor imports the Airflow modules a DAG file names once, before it forks its parsing processes
    (``[dag_processor] parsing_pre_import_modules``), and this one loads Airflow's ORM models (tens to hundreds of
    ms per parse when imported here instead).
    """
    due = "ti.xcom_pull(task_ids='shadow')['trigger']"
    return {
        "task_id": "live_gate",
        "trigger_dag_id": spec.dag_id("promote"),
        "trigger_run_id": f"{{{{ {due}['run_id'] }}}}",
        "conf": {key: f"{{{{ {due}['conf']['{key}'] }}}}" for key in ("action", "version", "reason")},
        "skip_when_already_exists": True,  # so a retry after the run was created is a no-op
    }


def train_runbook(spec: ModelSpec) -> str:
    t, g = spec.training, spec.gate
    triggers = f"retrain requests (Asset `{spec.name}.retrain_requested`)"
    if t.cron:
        triggers += f" and cron `{t.cron}` (UTC)"
    approval_line = (
        "   **approve**: a person approves in Browse > Required Actions "
        f"(times out after {g.approval.timeout_hours:g} h;\n   reject and timeout are recorded, nothing moves);\n"
        if g.approval.required
        else ""
    )
    return _runbook(
        "train",
        name=spec.name,
        owner=spec.owner,
        description=spec.description,
        window=t.window_days,
        holdout=t.holdout_days,
        estimator=spec.estimator_class,
        mode=g.mode,
        thresholds=", ".join(f"{k} {'>=' if k == 'r2' else '<='} {v:g}" for k, v in g.thresholds.items()) or "none",
        improvement=g.min_improvement,
        metric=g.metric,
        tolerance=g.slice_tolerance,
        approval_line=approval_line,
        triggers=triggers,
        overridable=overridable_text(spec),
    )


def overridable_text(spec: ModelSpec) -> str:
    """What a train run may override, with each range: ``max_iter [1, 1000], learning_rate [0.001, 1]``."""
    return ", ".join(f"{name} {allowed.describe()}" for name, allowed in spec.training.overridable.items()) or "none"


def promote_runbook(spec: ModelSpec) -> str:
    return _runbook("promote", name=spec.name, owner=spec.owner, mode=spec.gate.mode)


def score_runbook(spec: ModelSpec) -> str:
    return _runbook("score", name=spec.name, owner=spec.owner)


def monitor_schedule(spec: ModelSpec) -> Any:
    """The spec's monitoring cron (UTC); None (manual and API runs only) when the spec sets no cron."""
    from airflow.sdk import CronTriggerTimetable

    cron = spec.monitoring.cron
    return None if cron is None else CronTriggerTimetable(cron, timezone="UTC")


def monitor_runbook(spec: ModelSpec) -> str:
    m = spec.monitoring
    reference = "whole"
    if m.reference == "seasonal":
        reference = f"its rows from the same weeks of the year, ±{m.seasonal_margin_days} days"
    return _runbook(
        "monitor",
        name=spec.name,
        owner=spec.owner,
        schedule=f"cron `{m.cron}` (UTC)" if m.cron else "manual and API only",
        window=m.window_days,
        reference=reference,
        cap=f"{m.sample_cap:,}",
        features=", ".join(spec.monitored_features),
        labels=format_duration(spec.label_latency),
        share=m.drift_share,
        n=m.hysteresis.n,
        m=m.hysteresis.m,
        degradation=m.max_degradation,
        cooldown=m.cooldown_days,
    )


def labels_collect(spec: ModelSpec) -> Any:
    """The labels DAG's one task, ``collect``: it waits until the run's interval's labels are due (its end +
    ``labels.after``) deferred to the triggerer (every runtime runs one: the embedded one and compose), so a waiting
    run holds no worker slot, then records them; an interval whose labels are already due (a backfill, catch-up)
    collects at once, with no task instance spent on waiting
    (:class:`airloop.orchestration.labels_task.CollectLabelsWhenDue`).

    Its time limits: each stretch it runs in a worker gets ``timeouts.labels.task``; the deferred wait may last
    ``labels.after`` plus that (the run's limit and deadline, ``timeouts.labels``, add ``labels.after`` too)."""
    from airloop.orchestration.labels_task import CollectLabelsWhenDue

    return CollectLabelsWhenDue.for_spec(spec)


def labels_runbook(spec: ModelSpec) -> str:
    given = spec.labels.source
    if given is None:
        where = f"the target column `{spec.target.name}` of the source ({spec.source.table or 'query'})"
    else:
        where = (
            f"`labels.source`: {f'table `{given.table}`' if given.table else 'a query'} on connection "
            f"`{given.connection or spec.source.connection}`, label column `{given.column or spec.target.name}`"
        )
    return _runbook(
        "labels",
        name=spec.name,
        owner=spec.owner,
        schedule=spec.schedule.every or spec.schedule.cron or "1d",
        after=format_duration(spec.label_latency),
        max_lag=format_duration(spec.label_max_lag),
        source=where,
    )

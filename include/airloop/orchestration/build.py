"""What DAG files need at parse time: specs, timetables, default args, tags and runbooks.

Imported by every DAG file on every parse, so it imports ``airflow.sdk`` and airloop's light modules only
(a test proves no pandas, sklearn, MLflow, GX or Evidently is loaded).
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from airflow.sdk import CronDataIntervalTimetable, DeltaDataIntervalTimetable

from airloop.core.settings import paths
from airloop.core.spec import ModelSpec, load_specs
from airloop.orchestration.assets import retrain_asset

STAGE_TAG = "airloop"


def model_specs() -> list[ModelSpec]:
    """Every model spec; a broken one raises, which Airflow shows as this DAG file's import error."""
    return load_specs(paths().models_dir)


def ingest_timetable(spec: ModelSpec) -> DeltaDataIntervalTimetable | CronDataIntervalTimetable:
    """A timetable with real data intervals (never the zero-length intervals of a plain cron string)."""
    step = spec.schedule.interval
    if step is not None:
        return DeltaDataIntervalTimetable(step)
    assert spec.schedule.cron is not None
    return CronDataIntervalTimetable(spec.schedule.cron, timezone="UTC")


def default_args(spec: ModelSpec, *, retries: int = 2) -> dict[str, Any]:
    """Owner from the spec; retries with backoff for transient failures (data failures never retry); a failure
    alert when a task has finally failed (``airloop.orchestration.notifiers``: e-mail or webhook per deployment, off
    by default; retries do not alert).
    """
    from airloop.orchestration.notifiers import FailureAlert

    return {
        "owner": spec.owner,
        "retries": retries,
        "retry_delay": timedelta(seconds=30),
        "retry_exponential_backoff": True,
        "max_retry_delay": timedelta(minutes=10),
        "on_failure_callback": FailureAlert(),
    }


def tags(spec: ModelSpec, stage: str) -> list[str]:
    return sorted({STAGE_TAG, f"model:{spec.name}", f"stage:{stage}", *spec.tags})


_INGEST_RUNBOOK = """\
# {name}_ingest

**Owner:** {owner} · **Model:** `{name}` ({description})

## What it does
For each data interval of the timetable (`{schedule}`, from {start}{end}), it
1. **extract**: reads exactly `[data_interval_start, data_interval_end)` from connection `{connection}`
   (`{source}`, time column `{time_column}`) with bound SQL parameters, and writes the `raw` lake partition;
2. **validate**: checks the partition against the suites in `expectations/{suite_dir}/` (Great Expectations);
   a failing batch is moved to `quarantine` with its validation result and a Data Docs page, and the task fails;
3. **publish**: copies the batch to `validated` and emits an event on Asset `{name}.validated`
   (extra: partition, interval, rows, content digest, suite digests).

Re-running an interval overwrites its own partitions with identical bytes; it never duplicates rows.
Backfill from the UI (Trigger > Backfill), the REST API (`POST /api/v2/backfills`) or the CLI
(`airflow backfill create --dag-id {name}_ingest --from-date ... --to-date ...`).

## Outputs
- the lake (`$AIRLOOP_HOME/lake`, or `AIRLOOP_LAKE_URL` such as `s3://bucket/lake`):
  `{name}/raw|validated|quarantine/<interval start>/` (`_manifest.json` + a version folder with the Parquet file)
- `$AIRLOOP_HOME/reports/{name}/validation/<interval start>/validation.json` (+ `data_docs/` on failure)
- warehouse table `validation_results` (one row per interval, latest verdict)

## Triage
- **validate failed, log says "Batch QUARANTINED"**: the data broke a steward's rule. The log lists the failed
  expectations, example values and timestamps, and the report's path. Bad source data: fix it at the source, then
  clear the task. A rule that is wrong: a data steward edits `expectations/{suite_dir}/` and runs
  `airloop suites check {name} --on <date>`; then clear the task. Nothing downstream saw this interval.
- **extract failed with a connection error**: check connection `{connection}` (Admin > Connections); the task
  retries by itself with backoff. "table does not exist": for the demo, run `airloop seed`.
- **publish failed, "changed after validation"**: two runs wrote the same interval; clear the whole DAG run.
- **a task fails with "The lake at ... cannot be used / refused the credentials / is unreachable"**: the
  lake's object store; the message names the bucket, the endpoint and the setting to check (`AIRLOOP_LAKE_URL`,
  `AWS_*`). Clear the task once fixed.
- **DAG import error naming `include/models/{name}.yaml`**: the spec is invalid; the message names the field
  and the fix.
- **"MLflow ... is unreachable" / "the database of connection ... is unreachable"**: a service is down, not the
  data. The try fails within seconds and Airflow retries it (backoff from 30 s); check `airloop status` or the
  named service, and clear the task if its last try failed.
- **Where to look**: this task's extra links (MLflow run, reports), the airloop view (nav "airloop"), and the
  failure alert, when alerts are on (`AIRLOOP_ALERTS_CONN_ID`: README, "Alerts").
"""


def ingest_runbook(spec: ModelSpec) -> str:
    s = spec.schedule
    return _INGEST_RUNBOOK.format(
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


def decision_tasks(spec: ModelSpec, gated: Any) -> None:
    """Wire what follows a gate: optional human approval, the serialised promotion, and the ledger record.

    ``gated`` is the short-circuiting gate task: when it returns False (refused, dry run, nothing to do),
    approval and promotion are skipped, and ``record`` still writes why nothing moved. ``outcome`` runs only
    when a task failed, and fails the run with it.
    """
    from airflow.sdk import TriggerRule, task

    from airloop.orchestration import tasks

    @task(retries=0)
    def promote(model: str) -> dict:
        return tasks.decision_promote(model)

    @task(trigger_rule=TriggerRule.ALL_DONE)
    def record(model: str) -> dict | None:
        return tasks.decision_record(model)

    promoted = promote(spec.name)
    approval = spec.gate.approval
    if approval.required:
        from airloop.orchestration.approval import RecordedApproval

        approve = RecordedApproval(
            task_id="approve",
            subject=f"Promote {spec.name} v{{{{ ti.xcom_pull(task_ids='gate', key='gate')['candidate'] }}}} "
            "to @champion?",
            body="{{ ti.xcom_pull(task_ids='gate', key='gate')['markdown'] }}",
            response_timeout=timedelta(hours=approval.timeout_hours),
            retries=0,
        )
        gated >> approve >> promoted
    else:
        gated >> promoted
    recorded = record(spec.name)
    promoted >> recorded

    # `record` runs whatever happened, so on its own it would make every run end "success"; this last task
    # fails the run when anything before it failed (a refused or rejected challenger is not a failure).
    @task(task_id="outcome", trigger_rule=TriggerRule.ONE_FAILED, retries=0)
    def outcome() -> None:
        tasks.decision_outcome()

    [promoted, recorded] >> outcome()


_TRAIN_RUNBOOK = """\
# {name}_train

**Owner:** {owner} · **Model:** `{name}` ({description})

## What it does
1. **check**: refuses unknown or invalid params in seconds (a manual or API run must give a `reason`);
2. **train**: takes the latest {window} days of validated data (or `window_start`/`window_end`), holds out the
   last {holdout} days, fits `{estimator}`, logs params, metrics (overall and per slice), the training data
   (partitions and digests), plots and the model to MLflow experiment `{name}`, registers a version as `@challenger`;
3. **gate**: scores challenger and `@champion` on the same holdout; mode `{mode}`; thresholds {thresholds};
   at least {improvement:.0%} better on {metric}; no slice more than {tolerance:.0%} worse; sane predictions;
   same signature. The verdict is written on the model version (tags and description);
{approval_line}4. **promote**: moves `@champion` (serialised with every other promotion), clears `@challenger`,
   appends to the `promotion_ledger` table; **record** writes the ledger row when nothing moved (refused,
   dry run, rejected).

Runs on: {triggers}; and by hand (Trigger, with a `reason`) or `POST /api/v2/dags/{name}_train/dagRuns`
with `{{"logical_date": null, "conf": {{"reason": "..."}}}}`. One run at a time.
Params: `reason`, `window_start`, `window_end` (dates), `overrides` (allowed: {overridable}).

## Triage
- **check failed**: the log names the param and the fix; trigger again with corrected conf.
- **train failed, "no validated partitions" / "only N training rows"**: ingest (backfill `{name}_ingest`) the
  window first, or pass another window.
- **gate passed but record says refused**: read the reasons in the log, the version's description in MLflow,
  or `SELECT * FROM promotion_ledger WHERE model='{name}' ORDER BY seq DESC`.
- **promote failed, "@champion is now ..."**: another promotion won the race; nothing moved and the conflict is in
  the ledger. Trigger training (or `{name}_promote`) again to compare against the new champion.
- **"MLflow ... is unreachable" / "the database of connection ... is unreachable"**: a service is down, not the
  data. The try fails within seconds and Airflow retries it (backoff from 30 s); check `airloop status` or the
  named service, and clear the task if its last try failed.
- **Where to look**: this task's extra links (MLflow run, reports), the airloop view (nav "airloop"), and the
  failure alert, when alerts are on (`AIRLOOP_ALERTS_CONN_ID`: README, "Alerts").
"""


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
    return _TRAIN_RUNBOOK.format(
        name=spec.name,
        owner=spec.owner,
        description=spec.description,
        window=t.window_days,
        holdout=t.holdout_days,
        estimator=t.estimator.class_path,
        mode=g.mode,
        thresholds=", ".join(f"{k} {'>=' if k == 'r2' else '<='} {v:g}" for k, v in g.thresholds.items()) or "none",
        improvement=g.min_improvement,
        metric=g.metric,
        tolerance=g.slice_tolerance,
        approval_line=approval_line,
        triggers=triggers,
        overridable=", ".join(t.overridable) or "none",
    )


_PROMOTE_RUNBOOK = """\
# {name}_promote

**Owner:** {owner} · manual and API only.

Promote a named registry version to `@champion`, or roll back to the previous champion, through the same gate
as training (mode `{mode}`) and into the same `promotion_ledger`.

Params: `action` (`promote` or `rollback`), `version` (for promote), `reason` (required), `override`
(true skips the gate's verdict; the override and who triggered it are recorded).

Rollback restores the champion that preceded the current one according to the ledger; it must still pass the
absolute thresholds and sanity checks on the newest holdout (or be overridden).

API: `POST /api/v2/dags/{name}_promote/dagRuns` with
`{{"logical_date": null, "conf": {{"action": "rollback", "reason": "v7 over-predicts weekends"}}}}`.

## Triage
- **check failed**: the log names the param; "no earlier champion": the ledger has nothing to roll back to.
- **gate refused**: the reasons are in the log and the ledger; re-run with `override: true` only if you mean it.
- **promote failed, "@champion is now ..."**: another promotion ran at the same time; nothing moved; run again.
- **"MLflow ... is unreachable" / "the database of connection ... is unreachable"**: a service is down, not the
  data. The try fails within seconds and Airflow retries it (backoff from 30 s); check `airloop status` or the
  named service, and clear the task if its last try failed.
- **Where to look**: this task's extra links (MLflow run, reports), the airloop view (nav "airloop"), and the
  failure alert, when alerts are on (`AIRLOOP_ALERTS_CONN_ID`: README, "Alerts").
"""


def promote_runbook(spec: ModelSpec) -> str:
    return _PROMOTE_RUNBOOK.format(name=spec.name, owner=spec.owner, mode=spec.gate.mode)


_SCORE_RUNBOOK = """\
# {name}_score

**Owner:** {owner} · **Model:** `{name}`

## What it does
Runs when `{name}_ingest` publishes a partition (Asset `{name}.validated`; queued events merge into one run).
1. **pin**: resolves `@champion` to a concrete version once, so every partition of this run is scored by the same
   model even if a promotion happens meanwhile. No champion yet: the task is skipped with a log line saying so.
2. **select**: the partitions announced by the Asset events, or every validated partition starting in
   `[start, end)` when triggered by hand or API with params `start` and `end` (re-scoring with today's champion).
3. **score**: for each partition in turn (one process, the model loaded once; each partition's write is atomic,
   so a retry simply re-scores them all), reads it in bounded chunks, predicts, and replaces that interval's rows
   in warehouse table `predictions` (delete + insert in one transaction) and lake partition
   `predictions/<interval>` (atomic). Every row names model, version, MLflow run, input digest and the Airflow run.

Re-score a range: Trigger with `{{"start": "2012-01-01", "end": "2013-01-01"}}`, or
`POST /api/v2/dags/{name}_score/dagRuns` with `{{"logical_date": null, "conf": {{"start": ..., "end": ...}}}}`.

## Triage
- **pin skipped, "no @champion yet"**: train and promote one (`{name}_train`), then re-score the range.
- **select failed**: the log names the param, or says no validated partition is in the range.
- **score failed, "non-finite predictions"**: the champion is broken for these rows; nothing was written. Roll
  back with `{name}_promote` and re-score.
- **"MLflow ... is unreachable" / "the database of connection ... is unreachable"**: a service is down, not the
  data. The try fails within seconds and Airflow retries it (backoff from 30 s); check `airloop status` or the
  named service, and clear the task if its last try failed.
- **Where to look**: this task's extra links (MLflow run, reports), the airloop view (nav "airloop"), and the
  failure alert, when alerts are on (`AIRLOOP_ALERTS_CONN_ID`: README, "Alerts").
"""


def score_runbook(spec: ModelSpec) -> str:
    return _SCORE_RUNBOOK.format(name=spec.name, owner=spec.owner)


def monitor_schedule(spec: ModelSpec) -> Any:
    """The spec's monitoring cron (UTC); None (manual and API runs only) when the spec sets no cron."""
    from airflow.sdk import CronTriggerTimetable

    cron = spec.monitoring.cron
    return None if cron is None else CronTriggerTimetable(cron, timezone="UTC")


_MONITOR_RUNBOOK = """\
# {name}_monitor

**Owner:** {owner} · **Model:** `{name}` · **Schedule:** {schedule}

## What it does
Judges one window of validated data, `[as_of - {window} days, as_of)`, against the **champion's training data**
({reference}), found through the champion's MLflow lineage. `as_of` is the param, else the end of the run's data
interval, capped at the end of the newest validated data (a replay or a late source is judged on what arrived).
1. **check**: resolves `as_of`; an unknown param or a bad date fails in seconds, naming it.
2. **judge** (Evidently, at most {cap} sampled rows a side): drift of each monitored feature ({features}) and of
   the champion's predictions; with labels (rows older than {labels} days), the champion's MAE and RMSE against
   its holdout at training. A window has drifted when at least {share:.0%} of the features did, or the
   predictions did. Figures go to table `drift_metrics`, the Evidently report (HTML, JSON) to
   `AIRLOOP_HOME/reports/{name}/drift/` and to MLflow (experiment `{name}-monitoring`). The log ends with a
   verdict: drifted columns and scores, performance, the decision and why, and where the report is.
3. **request**: runs only when retraining is due: drift in {n} of the last {m} windows judged against this
   champion, the latest included, or MAE more than {degradation:.0%} worse than at training; never within {cooldown}
   days (data time) of the champion's training data or the last request; at most once per window. It writes a
   `retrain_requests` row and an event on Asset `{name}.retrain_requested` (reason and window in `extra`),
   which starts `{name}_train` on data up to that window. Skipped otherwise (no event).

Judge a past window: Trigger with `{{"as_of": "2012-06-16"}}`, or
`POST /api/v2/dags/{name}_monitor/dagRuns` with `{{"logical_date": null, "conf": {{"as_of": "2012-06-16"}}}}`.

## Triage
- **judge skipped, "no @champion yet"**: nothing to monitor until one is promoted (`{name}_train`).
- **judge failed, "has no rows" / "fewer than monitoring.min_rows"**: the window has no (or too little)
  validated data: check `{name}_ingest` for those intervals (quarantined ones are listed in the log).
- **judge failed, "no finite value"**: a column is all NaN/inf in the window: a source fault the suites let
  through; fix the source or tighten the suite, re-ingest, then clear this task.
- **Too many or too few alarms**: tune `monitoring` in `{name}.yaml` (drift_share, column_threshold, reference,
  exclude, hysteresis, cooldown_days); `SELECT * FROM drift_metrics WHERE model='{name}' ORDER BY window_end`
  shows every window's scores.
- **"MLflow ... is unreachable" / "the database of connection ... is unreachable"**: a service is down, not the
  data. The try fails within seconds and Airflow retries it (backoff from 30 s); check `airloop status` or the
  named service, and clear the task if its last try failed.
- **Where to look**: this task's extra links (MLflow run, reports), the airloop view (nav "airloop"), and the
  failure alert, when alerts are on (`AIRLOOP_ALERTS_CONN_ID`: README, "Alerts").
"""


def monitor_runbook(spec: ModelSpec) -> str:
    m = spec.monitoring
    reference = "whole"
    if m.reference == "seasonal":
        reference = f"its rows from the same weeks of the year, ±{m.seasonal_margin_days} days"
    return _MONITOR_RUNBOOK.format(
        name=spec.name,
        owner=spec.owner,
        schedule=f"cron `{m.cron}` (UTC)" if m.cron else "manual and API only",
        window=m.window_days,
        reference=reference,
        cap=f"{m.sample_cap:,}",
        features=", ".join(spec.monitored_features),
        labels=m.labels_after_days,
        share=m.drift_share,
        n=m.hysteresis.n,
        m=m.hysteresis.m,
        degradation=m.max_degradation,
        cooldown=m.cooldown_days,
    )

"""What DAG files need at parse time: specs, timetables, default args, tags and runbooks.

Imported by every DAG file on every parse, so it imports ``airflow.sdk`` and airloop's light modules only
(a test proves no pandas, sklearn, MLflow, GX or Evidently is loaded).
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from airflow.sdk import Asset, CronDataIntervalTimetable, DeltaDataIntervalTimetable

from airloop.config import paths
from airloop.spec import ModelSpec, load_specs

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


def validated_asset(spec: ModelSpec) -> Asset:
    """The Asset each validated partition is published to; its events carry the partition in ``extra``."""
    return Asset(name=f"{spec.name}.validated", uri=f"airloop://{spec.name}/validated", group="airloop")


def default_args(spec: ModelSpec, *, retries: int = 2) -> dict[str, Any]:
    """Owner from the spec; retries with backoff for transient failures (data failures never retry)."""
    return {
        "owner": spec.owner,
        "retries": retries,
        "retry_delay": timedelta(seconds=30),
        "retry_exponential_backoff": True,
        "max_retry_delay": timedelta(minutes=10),
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
- `$AIRLOOP_HOME/lake/{name}/raw|validated|quarantine/<interval start>/` (Parquet + `_manifest.json`)
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
- **DAG import error naming `include/models/{name}.yaml`**: the spec is invalid; the message names the field
  and the fix.
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

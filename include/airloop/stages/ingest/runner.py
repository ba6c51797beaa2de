"""Ingestion of one data interval: extract to ``raw``, validate, then publish to ``validated`` or quarantine.

Each step is keyed to the interval and overwrites only its own outputs, so running an interval again
(a retry, a clear, a backfill) gives byte-identical partitions and no duplicate rows. A validated and a
quarantined partition of the same interval never exist together.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn

from airloop.adapters.lake import Lake, default_lake
from airloop.core.contracts import Extracted, Published, Validated
from airloop.core.errors import ExpectedFailure
from airloop.core.intervals import Interval
from airloop.core.params import refuse_unknown
from airloop.core.settings import paths
from airloop.core.spec import ModelSpec
from airloop.stages.ingest.keys import advice as key_advice
from airloop.stages.ingest.keys import key_problems

if TYPE_CHECKING:
    import pandas as pd

log = logging.getLogger(__name__)

REPORT_FILE = "validation.json"


class QuarantinedBatch(ExpectedFailure):
    """The batch failed its suites and was quarantined; the message is the on-call summary.

    ``details`` holds the same facts for notifications: ``partition``, ``rows``, ``evaluated``, ``failed``,
    ``quarantined_rows``, ``failures`` (the first ten, described) and ``report`` (the validation result's path).
    """

    def __init__(self, message: str, details: dict[str, Any] | None = None) -> None:
        super().__init__(message)
        self.details: dict[str, Any] = dict(details or {})


class StaleRawPartition(RuntimeError):
    """The raw partition changed between validation and publication."""


@dataclass(frozen=True)
class Ingestion:
    """Where one model's ingestion reads and writes (all derived from ``AIRLOOP_HOME`` unless given)."""

    spec: ModelSpec
    lake: Lake
    reports: Path
    expectations: Path

    @classmethod
    def for_spec(cls, spec: ModelSpec) -> Ingestion:
        p = paths()
        return cls(spec=spec, lake=default_lake(), reports=p.reports, expectations=p.expectations_dir)

    def report_dir(self, interval: Interval) -> Path:
        return self.reports / self.spec.name / "validation" / interval.key


#: The conf keys ``<model>_ingest`` takes: none. Its interval is the run's data interval, nothing else.
INGEST_PARAMS: tuple[str, ...] = ()


def check_conf(spec: ModelSpec, conf: dict[str, Any]) -> None:
    """Refuse a run's ``conf`` with any key (Airflow accepts them silently), naming the keys and what to do."""
    refuse_unknown(
        conf,
        INGEST_PARAMS,
        spec.dag_id("ingest"),
        fix="An ingest run reads its data interval only: trigger it without conf, for the interval's logical date "
        "(or backfill a range of dates).",
    )


def extract(ing: Ingestion, interval: Interval) -> Extracted:
    """Copy the interval's source rows into the ``raw`` partition; return its summary (for XCom)."""
    from airloop.adapters.db import describe, engine_for
    from airloop.adapters.source import extract_interval, withheld_columns

    spec = ing.spec
    engine = engine_for(spec.source.connection)
    result = extract_interval(engine, spec, interval, withhold=withheld_columns(spec))
    frame = storable(result.frame, f"{spec.name} interval {interval}")
    manifest = ing.lake.write(
        spec.name,
        "raw",
        interval.key,
        frame,
        meta=_interval_meta(interval) | {"source": spec.source.connection, "table": spec.source.table},
    )
    log.info(
        "Extracted %d rows of %s for interval %s from %s (%s) into %s (content digest %s).",
        manifest.rows,
        spec.name,
        interval,
        spec.source.connection,
        describe(engine),
        ing.lake.partition_url(spec.name, "raw", interval.key),
        manifest.content_digest[:12],
    )
    return Extracted(partition=interval.key, rows=manifest.rows, content_digest=manifest.content_digest)


def storable(frame: pd.DataFrame, what: str) -> pd.DataFrame:
    """``frame`` with every column of values of several kinds (a number and a text in one column, as a dynamically
    typed source such as SQLite or a loose CSV gives) turned to text, so the raw partition can be written and the
    batch validated: its type rules then fail for that column and quarantine the batch with a reason. Parquet
    (Arrow) stores one type per column and refuses such a column outright, which would crash the extract step with
    no word on the data. Other columns are left as they are; each column changed is logged as a warning."""
    import pyarrow as pa

    changed: dict[str, list[str]] = {}
    out = frame
    for column in frame.columns:
        values = frame[column]
        if values.dtype != object:
            continue
        try:
            pa.array(values, from_pandas=True)
        except (pa.ArrowInvalid, pa.ArrowTypeError, pa.ArrowNotImplementedError):
            if out is frame:
                out = frame.copy()
            out[column] = [None if _missing(v) else str(v) for v in values.tolist()]
            changed[str(column)] = sorted({type(v).__name__ for v in values.tolist() if not _missing(v)})
    for column, kinds in changed.items():
        log.warning(
            "Column %r of %s holds values of several types (%s): kept as text so the batch can be validated; its "
            "type rules will quarantine it. Fix the column's values at the source.",
            column,
            what,
            ", ".join(kinds),
        )
    return out


def _missing(value: Any) -> bool:
    """None, NaN, NaT or NA (a list or other container is a value, never missing)."""
    import pandas as pd

    return bool(pd.api.types.is_scalar(value) and pd.isna(value))


def validate_interval(
    ing: Ingestion, interval: Interval, *, dag_run_id: str | None = None, now: datetime | None = None
) -> Validated:
    """Validate the raw partition. On failure quarantine it and raise :class:`QuarantinedBatch`.

    While the interval's labels are not due at ``now`` (default: the wall clock), the suites' rules on the target
    are set aside for this batch (:mod:`.label_rules`): named in the log and in the validation result.
    """
    from airloop.adapters.expectations import DocsTarget, load_suites, validate

    spec = ing.spec
    df = ing.lake.read(spec.name, "raw", interval.key)
    raw = ing.lake.manifest(spec.name, "raw", interval.key)
    assert raw is not None  # read() succeeded
    suites, deferred = _applicable_suites(ing, interval, load_suites(spec, ing.expectations), df, now)
    report_dir = ing.report_dir(interval)
    docs_target = DocsTarget(report_dir / "data_docs", f"{spec.name}-{interval.key}", interval.start)
    outcome = with_key_checks(validate(df, suites, keys=spec.keys, docs=docs_target), df, spec)
    docs = outcome.docs_index
    report = outcome.report(
        model=spec.name, partition=interval.key, content_digest=raw.content_digest, **_interval_meta(interval)
    )
    if deferred is not None:
        report[DEFERRED_KEY] = deferred
    report_bytes = (json.dumps(report, indent=2, sort_keys=True, default=str) + "\n").encode()
    report_dir.mkdir(parents=True, exist_ok=True)
    (report_dir / REPORT_FILE).write_bytes(report_bytes)
    _record(ing, interval, outcome, raw.content_digest, report_dir / REPORT_FILE, docs, dag_run_id)
    summary = Validated(
        partition=interval.key,
        rows=outcome.rows,
        content_digest=raw.content_digest,
        suite_digests=outcome.suite_digests,
        report=str(report_dir / REPORT_FILE),
    )
    if outcome.success:
        log.info(
            "Validation passed for %s interval %s: %d rows, %d expectations in %d suite(s) %s.",
            spec.name,
            interval,
            outcome.rows,
            outcome.evaluated,
            len(suites),
            outcome.suite_digests,
        )
        return summary
    _quarantine(ing, interval, df, outcome, report_bytes, report_dir / REPORT_FILE, docs)


#: Where a validation result records the label rules set aside for its batch (absent: every rule applied).
DEFERRED_KEY = "deferred_label_rules"


def _applicable_suites(
    ing: Ingestion, interval: Interval, suites: list[Any], df: pd.DataFrame, now: datetime | None
) -> tuple[list[Any], dict[str, Any] | None]:
    """The suites as they apply to this batch, and (labels not due) why and which label rules were set aside."""
    from airloop.stages.ingest.label_rules import defer_label_rules, labels_pending

    spec = ing.spec
    pending = labels_pending(spec, interval, now or datetime.now(UTC))
    if pending is None:
        return suites, None
    applied, rules = defer_label_rules(suites, spec.target.name, [str(c) for c in df.columns])
    missing = int(df[spec.target.name].isna().sum()) if spec.target.name in df.columns else len(df)
    log.warning(
        "Labels of %s interval %s are not due (%s): %d rule(s) on the target `%s` set aside for this batch, and "
        "its %d of %d rows without a label are not a fault:%s",
        spec.name,
        interval,
        pending,
        len(rules),
        spec.target.name,
        missing,
        len(df),
        "".join(f"\n  - {r.describe()}" for r in rules) or " (the suites have none)",
    )
    return applied, {
        "reason": pending,
        "target": spec.target.name,
        "rows_without_label": missing,
        "rules": [r.to_dict() for r in rules],
    }


def _quarantine(
    ing: Ingestion, interval: Interval, df: Any, outcome: Any, report_bytes: bytes, report_file: Path, docs: Any
) -> NoReturn:
    """Move a failed batch to quarantine (retracting what was published and scored from the interval before) and
    raise :class:`QuarantinedBatch` with the summary a person reads and the details a notification carries."""
    spec = ing.spec
    # The old validated copy (and what was scored from it) goes first: a crash in between leaves neither copy,
    # never both; the bad batch is still in raw, and the retry quarantines it.
    ing.lake.delete(spec.name, "validated", interval.key)
    retracted = retract_predictions(ing, interval)
    # The retraction is recorded with the quarantine (the view shows it), and survives the task's retry.
    earlier = ing.lake.manifest(spec.name, "quarantine", interval.key)
    recorded = retracted or (earlier.meta.get("retracted") if earlier is not None else None)
    quarantine = ing.lake.write(
        spec.name,
        "quarantine",
        interval.key,
        df,
        side_files={REPORT_FILE: report_bytes},
        meta=_interval_meta(interval)
        | {"suite_digests": outcome.suite_digests, "data_docs": str(docs)}
        | ({"retracted": recorded} if recorded else {}),
    )
    raise QuarantinedBatch(
        quarantine_summary(
            ing, interval, outcome.rows, outcome.evaluated, outcome.failures, docs, quarantine.rows, retracted
        ),
        details={
            "partition": interval.key,
            "rows": outcome.rows,
            "evaluated": outcome.evaluated,
            "failed": len(outcome.failures),
            "quarantined_rows": quarantine.rows,
            "failures": [f.describe() for f in outcome.failures[:10]],
            "report": str(report_file),
        },
    )


def retract_predictions(ing: Ingestion, interval: Interval) -> str | None:
    """Withdraw the predictions of an interval whose new batch was quarantined; the line saying so, or None.

    They were scored from the data the interval held before, which its source has since replaced: served on as the
    interval's predictions they would be wrong about it (and would be joined with its labels). Its rows of table
    ``predictions`` are deleted, and its ``predictions`` lake partition inside the same transaction (manifest
    first, so it disappears at once); a failure leaves the warehouse rows, and the task's retry retracts again.
    The interval is scored anew when a corrected batch is published.
    """
    from airloop.adapters.db import engine_for
    from airloop.adapters.warehouse import delete_predictions, ensure_schema
    from airloop.core.settings import WAREHOUSE_CONN_ID

    spec = ing.spec
    engine = engine_for(WAREHOUSE_CONN_ID)
    ensure_schema(engine)
    in_lake = ing.lake.manifest(spec.name, "predictions", interval.key)
    with engine.begin() as conn:
        by_version = delete_predictions(conn, spec.name, interval.key)
        if in_lake is not None:
            ing.lake.delete(spec.name, "predictions", interval.key)
    if not by_version and in_lake is None:
        return None
    if not by_version:  # the lake's copy alone (a scoring that failed before its transaction committed)
        by_version = {str(in_lake.meta.get("model_version", "?")): in_lake.rows} if in_lake else {}
    versions = ", ".join(f"v{v}" for v in sorted(by_version))
    line = (
        f"Retracted the {sum(by_version.values())} predictions of this interval ({versions}), scored from the data "
        f"it held before: deleted from warehouse table predictions and the lake "
        f"({ing.lake.partition_url(spec.name, 'predictions', interval.key)}). It is scored again when a corrected "
        "batch is published."
    )
    log.warning("%s interval %s: %s", spec.name, interval, line)
    return line


#: The "suite" name of the row-key checks in reports and summaries (they run on every batch, beside the suites).
KEY_CHECKS = "row keys (source.keys)"
_KEY_EXPECTATIONS = {
    "missing": "key_columns_present",
    "null": "key_values_not_null",
    "duplicate": "key_values_unique",
}


def with_key_checks(outcome: Any, frame: pd.DataFrame, spec: ModelSpec) -> Any:
    """The suites' outcome with the row-key checks added: each key problem a failure, and the batch failed."""
    from dataclasses import replace

    from airloop.adapters.expectations import Failure

    problems = key_problems(frame, spec.keys)
    failures = [
        Failure(
            suite=KEY_CHECKS,
            expectation=_KEY_EXPECTATIONS[p.kind],
            kwargs={"keys": list(p.keys)},
            unexpected_count=None if p.kind == "missing" else p.rows,
            element_count=None if p.kind == "missing" else len(frame),
            examples=p.examples,
            error=p.detail if p.kind == "missing" else None,
        )
        for p in problems
    ]
    return replace(
        outcome,
        success=outcome.success and not failures,
        evaluated=outcome.evaluated + len(_KEY_EXPECTATIONS),
        failures=[*failures, *outcome.failures],
    )


def quarantine_summary(
    ing: Ingestion,
    interval: Interval,
    rows: int,
    evaluated: int,
    failures: list[Any],
    docs: Path | None,
    quarantined_rows: int,
    retracted: str | None = None,
) -> str:
    """The message an on-call engineer reads at the end of the failed task's log."""
    spec = ing.spec
    where = ing.lake.partition_url(spec.name, "quarantine", interval.key)
    lines = [
        f"Batch QUARANTINED: {spec.name} interval {interval} (partition {interval.key}) failed "
        f"{len(failures)} of {evaluated} expectations on {rows} rows.",
        *(f"  - {f.describe()}" for f in failures[:10]),
    ]
    if len(failures) > 10:
        lines.append(f"  - ... and {len(failures) - 10} more (see the report)")
    suite_folder = ing.expectations / spec.suite_dir
    kinds = {
        k for k, name in _KEY_EXPECTATIONS.items() for f in failures if f.suite == KEY_CHECKS and f.expectation == name
    }
    if kinds:
        lines.append(f"Row keys: {key_advice(spec.name, spec.keys, kinds)}.")
    lines += [
        f"Quarantined {quarantined_rows} rows to {where}; nothing from this interval flows on.",
        *([retracted] if retracted else []),
        f"Validation result: {ing.report_dir(interval) / REPORT_FILE}",
        f"Data Docs: {docs}" if docs else "Data Docs: not built",
        "What to do: if the data is wrong, fix it at the source and clear this task to re-run the interval; "
        f"if the rule is wrong, a data steward edits the suite in {suite_folder} and checks it with "
        f"`airloop suites check {spec.name} --on {interval.start.date()}`, then clear this task.",
    ]
    return "\n".join(lines)


def publish(ing: Ingestion, interval: Interval, validated: Validated) -> Published:
    """Copy the validated raw partition to ``validated`` and drop any old quarantine of the interval.

    Returns the Asset event extra: partition, interval, rows, content digest and suite digests.
    """
    spec = ing.spec
    raw = ing.lake.manifest(spec.name, "raw", interval.key)
    if raw is None or raw.content_digest != validated.content_digest:
        raise StaleRawPartition(
            f"raw partition {interval.key} of {spec.name} changed after validation "
            f"(validated {validated.content_digest[:12]}, now {raw.content_digest[:12] if raw else 'missing'}). "
            "Another run of this interval is writing it: clear this whole DAG run to extract and validate again."
        )
    report = (ing.report_dir(interval) / REPORT_FILE).read_bytes()
    deferred = json.loads(report).get(DEFERRED_KEY)
    # The old quarantine goes first: a crash in between leaves neither copy, never both (the retry publishes).
    ing.lake.delete(spec.name, "quarantine", interval.key)
    manifest = ing.lake.copy(
        spec.name,
        "raw",
        "validated",
        interval.key,
        side_files={REPORT_FILE: report},
        meta=_interval_meta(interval)
        | {"suite_digests": validated.suite_digests}
        | ({"labels_pending": deferred["reason"], "deferred_label_rules": len(deferred["rules"])} if deferred else {}),
    )
    extra = Published(
        model=spec.name,
        partition=interval.key,
        **_interval_meta(interval),
        rows=manifest.rows,
        content_digest=manifest.content_digest,
        suite_digests=validated.suite_digests,
        path=str(ing.lake.partition_url(spec.name, "validated", interval.key)),
    )
    log.info(
        "Published %d validated rows of %s for interval %s to %s (content digest %s).",
        manifest.rows,
        spec.name,
        interval,
        extra.path,
        manifest.content_digest[:12],
    )
    return extra


def _interval_meta(interval: Interval) -> dict[str, str]:
    return {"interval_start": interval.start.isoformat(), "interval_end": interval.end.isoformat()}


def _record(
    ing: Ingestion,
    interval: Interval,
    outcome: Any,
    digest: str,
    report: Path,
    docs: Path | None,
    dag_run_id: str | None,
) -> None:
    from dataclasses import asdict

    from airloop.adapters.db import engine_for
    from airloop.adapters.warehouse import ensure_schema, upsert_validation_result
    from airloop.core.settings import WAREHOUSE_CONN_ID

    engine = engine_for(WAREHOUSE_CONN_ID)
    ensure_schema(engine)
    upsert_validation_result(
        engine,
        {
            "model": ing.spec.name,
            "partition": interval.key,
            "interval_start": interval.start,
            "interval_end": interval.end,
            "success": outcome.success,
            "rows": outcome.rows,
            "evaluated_expectations": outcome.evaluated,
            "failed_expectations": len(outcome.failures),
            "content_digest": digest,
            "suite_digests": outcome.suite_digests,
            "failures": json.loads(json.dumps([asdict(f) for f in outcome.failures], default=str)),
            "report_path": str(report),
            "docs_path": str(docs) if docs else None,
            "dag_run_id": dag_run_id,
        },
    )

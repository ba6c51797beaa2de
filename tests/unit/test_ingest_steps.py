"""The ingest stage's steps called directly: a real lake in tmp_path, the real SQLite source and warehouse, real GX.

extract -> validate -> publish on a clean interval; a bad batch quarantined (and its old validated copy gone); the
raw partition changing between validation and publication refused. The DAG around them is tested in
``tests/integration/test_ingest_dag.py``.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pytest
import sqlalchemy as sa

from airloop.core.contracts import Extracted, Published, Validated
from airloop.core.intervals import Interval
from airloop.stages.ingest.runner import REPORT_FILE, Ingestion, QuarantinedBatch, StaleRawPartition

ROOT = Path(__file__).resolve().parents[2]
INTERVAL = Interval.of(datetime(2011, 1, 1, tzinfo=UTC), datetime(2011, 1, 29, tzinfo=UTC))
MODEL = "ingunit"  # its own name: the session's warehouse is shared with other tests


@pytest.fixture
def ing(tmp_path, bikes_spec, seeded_source) -> Ingestion:
    """The bikes source and suites under another model name, with the lake and reports in ``tmp_path``."""
    from airloop.adapters.lake import Lake

    validation = bikes_spec.validation.model_copy(update={"suite_dir": bikes_spec.suite_dir})
    spec = bikes_spec.model_copy(update={"name": MODEL, "validation": validation})
    return Ingestion(
        spec=spec, lake=Lake(tmp_path / "lake"), reports=tmp_path / "reports", expectations=ROOT / "expectations"
    )


def _validation_row(partition: str) -> dict | None:
    from airloop.adapters import warehouse
    from airloop.adapters.db import engine_for
    from airloop.core.settings import WAREHOUSE_CONN_ID

    t = warehouse.validation_results
    with engine_for(WAREHOUSE_CONN_ID).connect() as conn:
        row = conn.execute(sa.select(t).where(t.c.model == MODEL, t.c.partition == partition)).first()
    return dict(row._mapping) if row else None


def _has_report(ing: Ingestion, stage: str) -> bool:
    """The partition carries the validation result beside its data file."""
    return any(Path(f).name == REPORT_FILE for f in ing.lake.files(MODEL, stage, INTERVAL.key))


def _corrupt_raw(ing: Ingestion) -> None:
    """Rewrite the raw partition with one hour of an impossible value (``hr`` 30), as a broken source would."""
    lake = ing.lake
    frame = lake.read(MODEL, "raw", INTERVAL.key)
    frame.loc[frame.index[:3], "hr"] = 30
    meta = lake.manifest(MODEL, "raw", INTERVAL.key).meta
    lake.write(MODEL, "raw", INTERVAL.key, frame, meta=meta)


def test_extract_writes_the_raw_partition_and_is_repeatable(ing):
    from airloop.stages.ingest.runner import extract

    first = extract(ing, INTERVAL)
    assert isinstance(first, Extracted) and first.partition == INTERVAL.key
    manifest = ing.lake.manifest(MODEL, "raw", INTERVAL.key)
    assert first.rows == manifest.rows == len(ing.lake.read(MODEL, "raw", INTERVAL.key)) > 600
    assert first.content_digest == manifest.content_digest
    assert manifest.meta["interval_start"] == INTERVAL.start.isoformat()
    assert extract(ing, INTERVAL) == first  # a re-run gives the same partition, byte for byte
    assert Extracted.from_dict(json.loads(json.dumps(first.to_dict()))) == first


def test_a_clean_interval_is_validated_recorded_and_published(ing):
    from airloop.stages.ingest.runner import extract, publish, validate_interval

    extracted = extract(ing, INTERVAL)
    validated = validate_interval(ing, INTERVAL, dag_run_id="manual__clean")
    assert isinstance(validated, Validated)
    assert (validated.partition, validated.rows, validated.content_digest) == (
        INTERVAL.key,
        extracted.rows,
        extracted.content_digest,
    )
    assert len(validated.suite_digests) == 2 and all(len(d) == 16 for d in validated.suite_digests.values())
    report = json.loads(Path(validated.report).read_text())
    assert report["success"] is True and report["partition"] == INTERVAL.key
    row = _validation_row(INTERVAL.key)
    assert row["success"] and row["rows"] == extracted.rows and row["dag_run_id"] == "manual__clean"
    assert row["failed_expectations"] == 0 and row["evaluated_expectations"] > 0

    published = publish(ing, INTERVAL, Validated.from_dict(validated.to_dict()))
    assert isinstance(published, Published)
    manifest = ing.lake.manifest(MODEL, "validated", INTERVAL.key)
    assert published.to_dict() == {  # the Asset event's extra: these keys are read by the score DAG and others
        "model": MODEL,
        "partition": INTERVAL.key,
        "interval_start": INTERVAL.start.isoformat(),
        "interval_end": INTERVAL.end.isoformat(),
        "rows": extracted.rows,
        "content_digest": manifest.content_digest,
        "suite_digests": validated.suite_digests,
        "path": str(ing.lake.partition_url(MODEL, "validated", INTERVAL.key)),
    }
    assert manifest.content_digest == extracted.content_digest  # the raw rows, unchanged
    assert _has_report(ing, "validated")
    assert ing.lake.manifest(MODEL, "quarantine", INTERVAL.key) is None


def test_a_bad_batch_is_quarantined_and_its_old_validated_copy_removed(ing):
    from airloop.stages.ingest.runner import extract, publish, validate_interval

    extract(ing, INTERVAL)
    publish(ing, INTERVAL, validate_interval(ing, INTERVAL))  # a first, clean run of the interval
    assert ing.lake.manifest(MODEL, "validated", INTERVAL.key) is not None
    _corrupt_raw(ing)

    with pytest.raises(QuarantinedBatch) as caught:
        validate_interval(ing, INTERVAL, dag_run_id="manual__bad")
    message = str(caught.value)
    assert message.startswith(f"Batch QUARANTINED: {MODEL} interval {INTERVAL} (partition {INTERVAL.key}) failed")
    assert "hr" in message and "What to do:" in message
    assert f"airloop suites check {MODEL} --on 2011-01-01" in message
    quarantined = ing.lake.manifest(MODEL, "quarantine", INTERVAL.key)
    assert quarantined is not None and quarantined.rows == ing.lake.manifest(MODEL, "raw", INTERVAL.key).rows
    assert _has_report(ing, "quarantine")
    assert ing.lake.manifest(MODEL, "validated", INTERVAL.key) is None  # never both for one interval
    row = _validation_row(INTERVAL.key)  # the re-run replaced the clean run's row
    assert not row["success"] and row["failed_expectations"] >= 1 and row["dag_run_id"] == "manual__bad"


def test_publish_refuses_a_raw_partition_that_changed_after_validation(ing):
    from airloop.stages.ingest.runner import extract, publish, validate_interval

    extract(ing, INTERVAL)
    validated = validate_interval(ing, INTERVAL)
    frame = ing.lake.read(MODEL, "raw", INTERVAL.key)
    frame["temp"] = np.round(frame["temp"] + 0.01, 4)  # another run of the interval rewrote raw meanwhile
    ing.lake.write(MODEL, "raw", INTERVAL.key, frame, meta=ing.lake.manifest(MODEL, "raw", INTERVAL.key).meta)
    with pytest.raises(StaleRawPartition, match=rf"raw partition {INTERVAL.key} of {MODEL} changed after validation"):
        publish(ing, INTERVAL, validated)
    assert ing.lake.manifest(MODEL, "validated", INTERVAL.key) is None

    ing.lake.delete(MODEL, "raw", INTERVAL.key)
    with pytest.raises(StaleRawPartition, match=r"now missing\).*clear this whole DAG run"):
        publish(ing, INTERVAL, validated)


def test_a_batch_with_duplicate_keys_is_quarantined_naming_the_keys(ing):
    from airloop.stages.ingest.runner import KEY_CHECKS, extract, publish, validate_interval

    extract(ing, INTERVAL)
    publish(ing, INTERVAL, validate_interval(ing, INTERVAL))  # clean: ts is unique per hour
    frame = ing.lake.read(MODEL, "raw", INTERVAL.key)
    frame.loc[frame.index[1:3], "ts"] = frame.loc[frame.index[0], "ts"]  # three rows at one hour, as a bad source
    ing.lake.write(MODEL, "raw", INTERVAL.key, frame, meta=ing.lake.manifest(MODEL, "raw", INTERVAL.key).meta)

    with pytest.raises(QuarantinedBatch) as caught:
        validate_interval(ing, INTERVAL, dag_run_id="manual__dupes")
    message = str(caught.value)
    assert f"{KEY_CHECKS}: key_values_unique(keys=['ts']): 3 of {len(frame)} rows fail" in message
    assert "values ['2011-01-01T00:00:00Z x3']" in message
    assert "Row keys: if several rows legitimately share ['ts']" in message and "such as a record id" in message
    assert ing.lake.manifest(MODEL, "quarantine", INTERVAL.key) is not None
    assert ing.lake.manifest(MODEL, "validated", INTERVAL.key) is None  # nothing published
    report = json.loads((ing.report_dir(INTERVAL) / REPORT_FILE).read_text())
    (failure,) = [f for f in report["failures"] if f["suite"] == KEY_CHECKS]
    assert (failure["unexpected_count"], failure["examples"]) == (3, ["2011-01-01T00:00:00Z x3"])
    row = _validation_row(INTERVAL.key)
    assert not row["success"] and row["failures"][0]["expectation"] == "key_values_unique"


def test_a_batch_without_its_key_column_is_quarantined(ing):
    from airloop.stages.ingest.runner import extract, validate_interval

    spec = ing.spec.model_copy(update={"source": ing.spec.source.model_copy(update={"keys": ["record_no"]})})
    keyed = Ingestion(spec=spec, lake=ing.lake, reports=ing.reports, expectations=ing.expectations)
    extract(keyed, INTERVAL)
    with pytest.raises(QuarantinedBatch, match=r"key_columns_present\(keys=\['record_no'\]\): could not be evaluated"):
        validate_interval(keyed, INTERVAL)
    assert keyed.lake.manifest(MODEL, "quarantine", INTERVAL.key) is not None


def _serve_predictions(ing: Ingestion, interval: Interval, version: str) -> int:
    """Predictions of ``interval`` as scoring stores them (warehouse rows and lake partition), from its validated
    partition if it has one, else from raw; returns how many rows."""
    from airloop.adapters import prediction_sink
    from airloop.adapters.db import engine_for
    from airloop.core.contracts import PinnedChampion, RunInfo
    from airloop.core.settings import WAREHOUSE_CONN_ID
    from airloop.stages.ingest.keys import row_keys
    from airloop.stages.score.outputs import Outputs
    from airloop.stages.score.runner import lake_meta, lake_rows, provenance_of, row_constants

    stage = "validated" if ing.lake.manifest(MODEL, "validated", interval.key) else "raw"
    manifest = ing.lake.manifest(MODEL, stage, interval.key)
    frame = ing.lake.read(MODEL, stage, interval.key)
    provenance = provenance_of(PinnedChampion(version=version, run_id="r" * 32), manifest.content_digest)
    constants = row_constants(MODEL, interval.key, manifest.meta, provenance, RunInfo("score", f"run-{version}"))
    ts = frame["ts"].dt.tz_convert("UTC")
    keys = row_keys(frame, ing.spec.keys)
    outputs = Outputs(prediction=np.arange(len(frame), dtype=float))
    with prediction_sink.replacing(engine_for(WAREHOUSE_CONN_ID), constants, 2) as (writes, _):
        writes.submit(prediction_sink.ScoredRows(ts.dt.tz_localize(None).to_numpy(), keys, **outputs.copy()))
        writes.finish()
        ing.lake.write(
            MODEL, "predictions", interval.key, lake_rows(ts, keys, outputs, provenance), meta=lake_meta(constants)
        )
    return len(frame)


def _served(partition: str) -> int:
    from airloop.adapters import warehouse
    from airloop.adapters.db import engine_for
    from airloop.core.settings import WAREHOUSE_CONN_ID

    t = warehouse.predictions.c
    query = sa.select(sa.func.count()).where(t.model == MODEL, t.partition == partition)
    with engine_for(WAREHOUSE_CONN_ID).connect() as conn:
        return int(conn.execute(query).scalar_one())


def test_a_scored_interval_re_ingested_into_quarantine_loses_its_predictions(ing):
    """Predictions scored from an interval's previous data are retracted, warehouse and lake, when the interval is
    re-ingested and quarantined; another interval's predictions stay."""
    from airloop.stages.ingest.runner import extract, publish, validate_interval

    neighbour = Interval.of(INTERVAL.end, datetime(2011, 2, 26, tzinfo=UTC))
    for interval in (INTERVAL, neighbour):
        extract(ing, interval)
        publish(ing, interval, validate_interval(ing, interval))
    rows = _serve_predictions(ing, INTERVAL, "3")
    kept = _serve_predictions(ing, neighbour, "3")
    assert _served(INTERVAL.key) == rows > 0 and ing.lake.manifest(MODEL, "predictions", INTERVAL.key) is not None

    _corrupt_raw(ing)  # the interval is re-ingested and its new batch is bad
    with pytest.raises(QuarantinedBatch) as caught:
        validate_interval(ing, INTERVAL, dag_run_id="manual__reingested")

    assert _served(INTERVAL.key) == 0  # nothing of the old data is served as this interval's predictions any more
    assert ing.lake.manifest(MODEL, "predictions", INTERVAL.key) is None
    assert INTERVAL.key not in ing.lake.partitions(MODEL, "predictions")
    assert f"Retracted the {rows} predictions of this interval (v3)" in str(caught.value)
    assert _served(neighbour.key) == kept and ing.lake.manifest(MODEL, "predictions", neighbour.key) is not None

    with pytest.raises(QuarantinedBatch) as again:  # a retry of the task: nothing left to retract, same verdict
        validate_interval(ing, INTERVAL, dag_run_id="manual__reingested")
    assert "Retracted" not in str(again.value) and _served(INTERVAL.key) == 0
    # Recorded with the quarantine (the retry keeps it) and shown by the view beside the quarantined interval.
    recorded = ing.lake.manifest(MODEL, "quarantine", INTERVAL.key).meta["retracted"]
    assert recorded.startswith(f"Retracted the {rows} predictions of this interval (v3)")
    _shows_retraction(ing, recorded)
    # The withdrawn validated version is kept (a model trained on it can be rebuilt), not served.
    assert INTERVAL.key not in ing.lake.partitions(MODEL, "validated")
    assert len(ing.lake.versions(MODEL, "validated", INTERVAL.key)) == 1

    predictions = ing.lake.read(MODEL, "predictions", neighbour.key)  # a lake partition without warehouse rows
    ing.lake.write(MODEL, "predictions", INTERVAL.key, predictions, meta={"model_version": "4"})
    with pytest.raises(
        QuarantinedBatch, match=rf"Retracted the {len(predictions)} predictions of this interval \(v4\)"
    ):
        validate_interval(ing, INTERVAL)
    assert ing.lake.manifest(MODEL, "predictions", INTERVAL.key) is None


def _shows_retraction(ing: Ingestion, recorded: str) -> None:
    from airloop.adapters.db import engine_for
    from airloop.core.settings import WAREHOUSE_CONN_ID
    from airloop.ui import board as view

    board = view.load_board(ing.spec, engine_for(WAREHOUSE_CONN_ID), lake=ing.lake)
    row = next(r for r in board.quarantined if r["partition"] == INTERVAL.key)
    assert row["retracted"] == recorded
    html = view.render_board(board, reports_root=ing.reports, airflow_ui="", models=[MODEL], user="op")
    shown = html.split('id="quarantined"')[1].split("</table>")[0]
    assert "retracted</span>" in shown and f"Retracted the {recorded.split()[2]} predictions" in shown


class _Crash(Exception):
    """A process dying between two lake writes, as a SIGKILL would (the writes before it stand)."""


def _crash_on_delete(ing: Ingestion, monkeypatch) -> None:
    def delete(*args, **kwargs):
        raise _Crash

    monkeypatch.setattr(ing.lake, "delete", delete)


def _both(ing: Ingestion) -> bool:
    return all(ing.lake.manifest(MODEL, stage, INTERVAL.key) for stage in ("validated", "quarantine"))


def test_a_crash_inside_quarantining_never_leaves_a_validated_and_a_quarantined_copy(ing, monkeypatch):
    from airloop.stages.ingest.runner import extract, publish, validate_interval

    extract(ing, INTERVAL)
    publish(ing, INTERVAL, validate_interval(ing, INTERVAL))
    _corrupt_raw(ing)
    with monkeypatch.context() as patched:
        _crash_on_delete(ing, patched)
        with pytest.raises(_Crash):
            validate_interval(ing, INTERVAL)
    assert not _both(ing)  # scoring would read the old validated copy of an interval being quarantined
    with pytest.raises(QuarantinedBatch):  # the retry
        validate_interval(ing, INTERVAL)
    assert ing.lake.manifest(MODEL, "quarantine", INTERVAL.key) and not _both(ing)


def test_a_crash_inside_publishing_never_leaves_a_validated_and_a_quarantined_copy(ing, monkeypatch):
    from airloop.stages.ingest.runner import extract, publish, validate_interval

    extract(ing, INTERVAL)
    clean = ing.lake.manifest(MODEL, "raw", INTERVAL.key)
    _corrupt_raw(ing)
    with pytest.raises(QuarantinedBatch):
        validate_interval(ing, INTERVAL)
    extract(ing, INTERVAL)  # the source fixed: the clean batch again
    assert ing.lake.manifest(MODEL, "raw", INTERVAL.key) == clean
    validated = validate_interval(ing, INTERVAL)
    with monkeypatch.context() as patched:
        _crash_on_delete(ing, patched)
        with pytest.raises(_Crash):
            publish(ing, INTERVAL, validated)
    assert not _both(ing)
    publish(ing, INTERVAL, validated)  # the retry
    assert ing.lake.manifest(MODEL, "validated", INTERVAL.key) and not _both(ing)

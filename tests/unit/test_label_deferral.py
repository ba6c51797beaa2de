"""Ingestion publishes an interval as soon as its features are in: the label's own rules wait until labels are due.

The ingest steps called directly on the real SQLite source, a real lake in ``tmp_path``, real GX and the session's
warehouse (as ``tests/unit/test_ingest_steps.py``), with the bikes spec and suites under another model name.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import sqlalchemy as sa

from airloop.core.intervals import Interval
from airloop.core.spec import Labels
from airloop.stages.ingest.runner import Ingestion, QuarantinedBatch

ROOT = Path(__file__).resolve().parents[2]
INTERVAL = Interval.of(datetime(2011, 1, 1, tzinfo=UTC), datetime(2011, 1, 29, tzinfo=UTC))
MODEL = "ingdefer"
#: Labels due two days after an interval ends; the tests pass ``now`` (the data is from 2011).
LATENCY = timedelta(days=2)
DEFERRED_KEY = "deferred_label_rules"  # where the validation result names the rules set aside


def _ingestion(tmp_path: Path, bikes_spec, labels: dict, **source: object) -> Ingestion:
    from airloop.adapters.lake import Lake

    validation = bikes_spec.validation.model_copy(update={"suite_dir": bikes_spec.suite_dir})
    spec = bikes_spec.model_copy(
        update={
            "name": MODEL,
            "validation": validation,
            "labels": Labels.model_validate(labels),
            "source": bikes_spec.source.model_copy(update=source),
        }
    )
    return Ingestion(
        spec=spec, lake=Lake(tmp_path / "lake"), reports=tmp_path / "reports", expectations=ROOT / "expectations"
    )


def _without_labels(ing: Ingestion, rows: int) -> None:
    """The raw partition with the first ``rows`` labels (``cnt``) missing, as a source that has no outcome yet."""
    frame = ing.lake.read(MODEL, "raw", INTERVAL.key)
    frame["cnt"] = frame["cnt"].astype("float64")
    frame.loc[frame.index[:rows], "cnt"] = None
    ing.lake.write(MODEL, "raw", INTERVAL.key, frame, meta=ing.lake.manifest(MODEL, "raw", INTERVAL.key).meta)


def test_missing_labels_not_yet_due_are_published_with_the_set_aside_rules_named_and_quarantined_once_due(
    tmp_path, bikes_spec, seeded_source, caplog
):
    from airloop.stages.ingest.runner import extract, publish, validate_interval

    ing = _ingestion(tmp_path, bikes_spec, {"after": f"{LATENCY.days}d"})
    extract(ing, INTERVAL)
    _without_labels(ing, 40)
    with caplog.at_level("WARNING"):
        validated = validate_interval(ing, INTERVAL, now=INTERVAL.end + LATENCY - timedelta(hours=1))
    published = publish(ing, INTERVAL, validated)
    assert published.rows == ing.lake.manifest(MODEL, "raw", INTERVAL.key).rows
    assert ing.lake.manifest(MODEL, "quarantine", INTERVAL.key) is None
    report = json.loads(Path(validated.report).read_text())
    assert report["success"] is True
    deferred = report[DEFERRED_KEY]
    assert deferred["target"] == "cnt" and deferred["rows_without_label"] == 40
    assert "labels.after" in deferred["reason"]
    set_aside = {(r["suite"], r["type"]) for r in deferred["rules"]}
    assert ("bikes_schema", "expect_column_values_to_not_be_null") in set_aside
    assert all(r["kwargs"].get("column") == "cnt" for r in deferred["rules"])
    assert "cnt is not missing" in caplog.text and "set aside" in caplog.text
    meta = ing.lake.manifest(MODEL, "validated", INTERVAL.key).meta
    assert meta["deferred_label_rules"] == len(deferred["rules"]) and "labels_pending" in meta

    # The same batch once its labels are due (a backfill run later): the label's rules apply, as before.
    with pytest.raises(QuarantinedBatch) as caught:
        validate_interval(ing, INTERVAL, now=INTERVAL.end + LATENCY + timedelta(hours=1))
    assert "expect_column_values_to_not_be_null(column='cnt')" in str(caught.value)
    report = json.loads((ing.report_dir(INTERVAL) / "validation.json").read_text())
    assert DEFERRED_KEY not in report


def test_labels_that_come_with_the_rows_are_due_at_once(tmp_path, bikes_spec, seeded_source):
    from airloop.stages.ingest.runner import extract, validate_interval

    ing = _ingestion(tmp_path, bikes_spec, {})
    extract(ing, INTERVAL)
    _without_labels(ing, 3)
    with pytest.raises(QuarantinedBatch, match="column='cnt'"):
        validate_interval(ing, INTERVAL)


def test_with_a_label_source_a_features_source_without_the_target_is_ingested(tmp_path, bikes_spec, seeded_source):
    import pandas as pd

    from airloop.adapters.csv_load import write_table
    from airloop.adapters.db import engine_for
    from airloop.core.settings import SOURCE_CONN_ID
    from airloop.stages.ingest.runner import extract, publish, validate_interval

    engine = engine_for(SOURCE_CONN_ID)
    features = pd.read_sql(sa.text("SELECT * FROM bike_rentals"), engine, parse_dates=["ts"]).drop(columns=["cnt"])
    write_table(engine, features, "ingdefer_features", time_column="ts", replace=True)
    ing = _ingestion(tmp_path, bikes_spec, {"source": {"table": "bike_labels"}}, table="ingdefer_features")
    extracted = extract(ing, INTERVAL)
    assert "cnt" not in ing.lake.manifest(MODEL, "raw", INTERVAL.key).columns
    validated = validate_interval(ing, INTERVAL)  # long past the interval: still the label source's to check
    publish(ing, INTERVAL, validated)
    assert ing.lake.manifest(MODEL, "validated", INTERVAL.key).rows == extracted.rows
    rules = json.loads(Path(validated.report).read_text())[DEFERRED_KEY]["rules"]
    assert any(r["type"] == "expect_table_columns_to_match_set" and "left out" in r["action"] for r in rules)


def test_with_a_label_source_the_target_column_of_the_features_source_is_not_extracted(
    tmp_path, bikes_spec, seeded_source
):
    from airloop.stages.ingest.runner import extract

    ing = _ingestion(tmp_path, bikes_spec, {"source": {"table": "bike_labels"}})
    extract(ing, INTERVAL)
    columns = ing.lake.manifest(MODEL, "raw", INTERVAL.key).columns
    assert "cnt" not in columns and {"ts", "temp", "casual"} <= set(columns)


def test_the_stewards_dry_run_sets_aside_the_target_rules_as_the_ingest_task_would(tmp_path, bikes_spec, seeded_source):
    from airloop.ops.suites import check

    spec = _ingestion(tmp_path, bikes_spec, {"source": {"table": "bike_labels"}}).spec
    report = check(spec, ROOT / "expectations", on="2011-01-10")
    assert report.passed is True and report.labels_pending and "labels.source" in report.labels_pending
    text = "\n".join(report.lines())
    assert "wait  cnt is not missing: set aside until the labels are due" in text
    assert "pass  temp is not missing" in text and "FAIL" not in text


def test_the_stewards_page_shows_the_set_aside_rules_as_waiting_not_passed(tmp_path, bikes_spec, seeded_source):
    from airloop.adapters.db import engine_for
    from airloop.core.settings import WAREHOUSE_CONN_ID
    from airloop.stages.ingest.runner import extract, validate_interval
    from airloop.ui.suites import load_suites_page

    ing = _ingestion(tmp_path, bikes_spec, {"after": f"{LATENCY.days}d"})
    extract(ing, INTERVAL)
    _without_labels(ing, 5)
    validate_interval(ing, INTERVAL, now=INTERVAL.end)
    page = load_suites_page(ing.spec, engine_for(WAREHOUSE_CONN_ID), ROOT / "expectations")
    at = [i.partition for i in page.intervals].index(INTERVAL.key)
    verdicts = {(s.name, r.type, r.column): r.history[at] for s in page.suites for r in s.rules}
    waiting = verdicts[("bikes_schema", "expect_column_values_to_not_be_null", "cnt")]
    assert waiting.status == "set-aside" and "labels were not due" in waiting.summary
    assert verdicts[("bikes_schema", "expect_column_values_to_not_be_null", "temp")].status == "pass"

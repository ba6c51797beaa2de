"""Failure results are bounded: a failing batch's stored result, quarantine note and Data Docs keep exact counts
but only a capped sample of bad values and row keys, so their size does not grow with the number of bad rows.
Real GX, a real lake in ``tmp_path`` and the session's SQLite warehouse."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from airloop.adapters.expectations import FAILURE_SAMPLE, load_suites, validate
from airloop.core.intervals import Interval
from airloop.stages.ingest.runner import REPORT_FILE, Ingestion, QuarantinedBatch, validate_interval

ROOT = Path(__file__).resolve().parents[2]
INTERVAL = Interval.of(datetime(2011, 1, 1, tzinfo=UTC), datetime(2011, 1, 29, tzinfo=UTC))
MODEL = "boundunit"  # its own name: the session's warehouse is shared with other tests
ROWS = 60_000


@pytest.fixture
def ing(tmp_path, bikes_spec) -> Ingestion:
    """The bikes suites under another model name, with the lake and reports in ``tmp_path``."""
    from airloop.adapters.lake import Lake

    validation = bikes_spec.validation.model_copy(update={"suite_dir": bikes_spec.suite_dir})
    spec = bikes_spec.model_copy(update={"name": MODEL, "validation": validation})
    return Ingestion(
        spec=spec, lake=Lake(tmp_path / "lake"), reports=tmp_path / "reports", expectations=ROOT / "expectations"
    )


def _batch(demo_frame: pd.DataFrame, bad_rows: int) -> pd.DataFrame:
    """``ROWS`` real rows (resampled, a unique hourly ``ts``), the first ``bad_rows`` of them with ``hr`` 30."""
    clean = demo_frame[demo_frame["hum"] > 0]  # hum == 0 on 2011-03-10 is a sensor fault the suite rejects
    batch = clean.iloc[np.random.default_rng(0).integers(0, len(clean), ROWS)].reset_index(drop=True)
    batch["ts"] = pd.date_range("2011-01-01", periods=ROWS, freq="h", tz="UTC")
    batch.loc[batch.index[:bad_rows], "hr"] = 30
    return batch


def _quarantine(ing: Ingestion, frame: pd.DataFrame) -> tuple[str, dict, int, int]:
    """Validate ``frame`` as the interval's raw partition: the quarantine note, the stored result, its size in bytes
    and the size of the Data Docs site."""
    ing.lake.write(MODEL, "raw", INTERVAL.key, frame)
    with pytest.raises(QuarantinedBatch) as caught:
        validate_interval(ing, INTERVAL)
    report_path = ing.report_dir(INTERVAL) / REPORT_FILE
    docs = ing.report_dir(INTERVAL) / "data_docs"
    # The site's pages; GX's static assets (about 4 MB of styles, scripts and fonts) are the same for every site.
    docs_bytes = sum(p.stat().st_size for p in docs.rglob("*.html") if "static" not in p.parts)
    return str(caught.value), json.loads(report_path.read_text()), report_path.stat().st_size, docs_bytes


def _hr_failure(report: dict) -> dict:
    (failure,) = [f for f in report["failures"] if f["expectation"] == "expect_column_values_to_be_between"]
    assert failure["kwargs"]["column"] == "hr"
    return failure


def test_a_failing_batch_result_does_not_grow_with_its_bad_rows(ing, demo_frame) -> None:
    few_note, few, few_size, few_docs = _quarantine(ing, _batch(demo_frame, 1_000))
    many_note, many, many_size, many_docs = _quarantine(ing, _batch(demo_frame, 50_000))

    # Counts are exact: every bad row is counted.
    assert (_hr_failure(few)["unexpected_count"], _hr_failure(many)["unexpected_count"]) == (1_000, 50_000)
    assert "50000 of 60000 rows fail" in many_note
    # ... but only a sample of values and row keys is kept, in the stored result and in GX's own results.
    for report in (few, many):
        (gx,) = [
            r
            for suite in report["gx_results"]
            for r in suite["results"]
            if not r["success"] and r["expectation_config"]["kwargs"].get("column") == "hr"
        ]
        assert gx["result"]["unexpected_count"] in (1_000, 50_000)
        assert len(gx["result"]["partial_unexpected_list"]) == FAILURE_SAMPLE
        assert len(gx["result"]["partial_unexpected_index_list"]) == FAILURE_SAMPLE
        assert "unexpected_list" not in gx["result"] and "unexpected_index_list" not in gx["result"]
    # Sizes: 50x the bad rows, (about) the same bytes, and all small.
    assert many_size < 100_000 and abs(many_size - few_size) < 0.05 * few_size, (few_size, many_size)
    assert many_docs < 500_000 and abs(many_docs - few_docs) < 0.05 * few_docs, (few_docs, many_docs)
    assert len(many_note) < 5_000 and abs(len(many_note) - len(few_note)) < 100


def test_an_expectation_gx_could_not_evaluate_says_why(bikes_spec, demo_frame) -> None:
    """Regression (poison-row fuzzing): a string among a numeric column's values makes GX's range rule raise inside
    a metric; GX reports that keyed by the metric's id, and the failure used to carry no reason at all."""
    suites = load_suites(bikes_spec, ROOT / "expectations")
    batch = demo_frame.iloc[:672].copy()
    batch = batch[batch["hum"] > 0].reset_index(drop=True)
    batch["temp"] = batch["temp"].astype(object)
    batch.loc[5, "temp"] = "warm"
    outcome = validate(batch, suites, keys=bikes_spec.keys)
    (between,) = [
        f
        for f in outcome.failures
        if f.expectation == "expect_column_values_to_be_between" and f.kwargs["column"] == "temp"
    ]
    assert between.error and "same type" in between.error, between
    assert "could not be evaluated: " in between.describe()
    (types,) = [f for f in outcome.failures if f.expectation == "expect_column_values_to_be_in_type_list"]
    assert types.kwargs["column"] == "temp" and types.unexpected_count == len(batch)

"""Failing rows are named by the model's row keys (``spec.keys``), all of them, not by the time column: with many
rows per timestamp, the time alone would not say which row broke a rule. Real SQLite source, real GX."""

from __future__ import annotations

import json
from datetime import date
from pathlib import Path

import pandas as pd
import pytest
import sqlalchemy as sa

from airloop.adapters.expectations import load_suites, validate
from airloop.core.spec import load_spec
from airloop.ops.suites import check

SPEC = """\
name: strikes
description: Many rows per day, keyed by day and a number within it.
owner: tests
source: {connection: keyed_source, table: events, time_column: day, keys: [day, seq]}
schedule: {every: 1d, start: 2020-01-01, end: 2020-01-03}
features: [{name: speed, kind: numeric}]
target: {name: label, task: classification}
"""
SUITE = {
    "name": "strikes_values",
    "expectations": [
        {"type": "expect_column_values_to_be_between", "kwargs": {"column": "speed", "min_value": 0, "max_value": 100}}
    ],
}


def _events(bad_seq: int) -> pd.DataFrame:
    """Five rows on 2020-01-01, all at midnight (one time, five rows), the row `bad_seq` with a speed out of range."""
    return pd.DataFrame(
        {
            "day": [pd.Timestamp("2020-01-01")] * 5,
            "seq": [1, 2, 3, 4, 5],
            "speed": [500.0 if s == bad_seq else 10.0 * s for s in range(1, 6)],
            "label": [0, 1, 0, 1, 0],
        }
    )


@pytest.fixture
def keyed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """The spec, its suite and a source table `events` behind the connection `keyed_source`."""
    (tmp_path / "models").mkdir()
    (tmp_path / "models" / "strikes.yaml").write_text(SPEC)
    (tmp_path / "expectations" / "strikes").mkdir(parents=True)
    (tmp_path / "expectations" / "strikes" / "values.json").write_text(json.dumps(SUITE))
    engine = sa.create_engine(f"sqlite:///{tmp_path / 'source.db'}")
    _events(bad_seq=3).to_sql("events", engine, index=False)
    engine.dispose()
    monkeypatch.setenv(
        "AIRFLOW_CONN_KEYED_SOURCE", json.dumps({"conn_type": "sqlite", "host": str(tmp_path / "source.db")})
    )
    return load_spec(tmp_path / "models" / "strikes.yaml"), tmp_path / "expectations"


def test_suites_check_names_the_failing_row_by_every_key(keyed) -> None:
    spec, expectations = keyed
    report = check(spec, expectations, on=date(2020, 1, 1))
    assert report.passed is False and report.rows == 5
    (failure,) = report.failures
    assert failure.examples == [500.0]
    (row,) = failure.example_ids
    assert row["seq"] == 3 and str(row["day"]).startswith("2020-01-01"), row
    assert "'seq': 3" in failure.describe()


def test_one_key_names_rows_by_its_value_and_no_key_names_none(keyed) -> None:
    spec, expectations = keyed
    suites = load_suites(spec, expectations)
    batch = _events(bad_seq=4)
    (failure,) = validate(batch, suites, keys=["seq"]).failures
    assert failure.example_ids == [4]
    (failure,) = validate(batch, suites, keys=None).failures
    assert failure.example_ids == [] and failure.unexpected_count == 1
    # A key column the batch lacks is left out (the ingest's key check reports it), the others still name the row.
    (failure,) = validate(batch.drop(columns=["day"]), suites, keys=["day", "seq"]).failures
    assert failure.example_ids == [{"seq": 4}]

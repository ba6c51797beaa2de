"""Data tests: the stewards' bikes suites on real data and on crafted bad batches (real GX runs)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from airloop.adapters.expectations import SuiteError, load_suites, validate

ROOT = Path(__file__).resolve().parents[2]
EXPECTATIONS = ROOT / "expectations"


@pytest.fixture(scope="module")
def suites(bikes_spec):
    return load_suites(bikes_spec, EXPECTATIONS)


@pytest.fixture
def batch(demo_frame) -> pd.DataFrame:
    """A clean real four-batch interval: 2011-01-29 to 2011-02-26 (650 hourly rows)."""
    mask = (demo_frame["ts"] >= "2011-01-29") & (demo_frame["ts"] < "2011-02-26")
    df = demo_frame[mask].reset_index(drop=True)
    df["ts"] = df["ts"].dt.tz_localize("UTC")
    return df


def _failed(outcome) -> set[tuple[str, str | None]]:
    return {(f.expectation, f.kwargs.get("column")) for f in outcome.failures}


def test_every_suite_file_loads(suites):
    assert {s.name for s in suites} == {"bikes_schema", "bikes_values"}
    assert sum(s.expectation_count for s in suites) >= 40


def test_clean_real_interval_passes(batch, suites):
    outcome = validate(batch, suites, keys=["ts"])
    assert outcome.success, [f.describe() for f in outcome.failures]
    assert outcome.rows == len(batch) and outcome.evaluated >= 40


def test_real_sensor_fault_interval_fails_on_humidity(demo_frame, suites):
    mask = (demo_frame["ts"] >= "2011-02-26") & (demo_frame["ts"] < "2011-03-26")
    df = demo_frame[mask].reset_index(drop=True)
    df["ts"] = df["ts"].dt.tz_localize("UTC")
    outcome = validate(df, suites, keys=["ts"])
    assert _failed(outcome) == {("expect_column_values_to_be_between", "hum")}
    (failure,) = outcome.failures
    assert failure.unexpected_count == 22
    assert failure.example_ids[0] == "2011-03-10T00:00:00+00:00"


def test_nan_is_caught(batch, suites):
    batch.loc[3, "temp"] = np.nan
    assert ("expect_column_values_to_not_be_null", "temp") in _failed(validate(batch, suites, keys=["ts"]))


def test_out_of_range_names_rows(batch, suites):
    batch.loc[5, "hr"] = 25
    outcome = validate(batch, suites, keys=["ts"])
    (failure,) = [f for f in outcome.failures if f.kwargs.get("column") == "hr"]
    assert failure.examples == [25] and failure.unexpected_count == 1
    assert failure.example_ids == [batch.loc[5, "ts"].isoformat()]


def test_wrong_type_is_caught(batch, suites):
    batch["windspeed"] = batch["windspeed"].astype(str)
    assert ("expect_column_values_to_be_in_type_list", "windspeed") in _failed(validate(batch, suites, keys=["ts"]))


def test_missing_column_is_caught(batch, suites):
    outcome = validate(batch.drop(columns=["weathersit"]), suites, keys=["ts"])
    assert ("expect_table_columns_to_match_set", None) in _failed(outcome)
    assert any(f.kwargs.get("column") == "weathersit" for f in outcome.failures)


def test_empty_interval_fails_on_row_count(batch, suites):
    outcome = validate(batch.iloc[0:0], suites, keys=["ts"])
    assert ("expect_table_row_count_to_be_between", None) in _failed(outcome)


def test_duplicate_hours_are_caught(batch, suites):
    doubled = pd.concat([batch, batch.iloc[[7]]], ignore_index=True)
    assert ("expect_column_values_to_be_unique", "ts") in _failed(validate(doubled, suites, keys=["ts"]))


def test_unknown_category_is_caught(batch, suites):
    batch.loc[0, "weathersit"] = 7
    assert ("expect_column_values_to_be_in_set", "weathersit") in _failed(validate(batch, suites, keys=["ts"]))


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (lambda text: text.replace('"expectations"', '"expectations" x', 1), "not valid JSON at line"),
        (
            lambda text: text.replace("expect_column_values_to_be_unique", "expect_column_to_be_uniq"),
            "unknown expectation type",
        ),
        (
            lambda text: text.replace('"column": "ts"', '"column": "tss"', 1),
            "column 'tss' is not a column of model bikes",
        ),
        (lambda text: text.replace('"min_value": 600', '"min_value": "lots"', 1), "refused the suite"),
    ],
)
def test_broken_suite_is_named(tmp_path, bikes_spec, edit, message):
    folder = tmp_path / "bikes"
    shutil.copytree(EXPECTATIONS / "bikes", folder)
    path = folder / "schema.json"
    path.write_text(edit(path.read_text()))
    with pytest.raises(SuiteError, match=message) as err:
        load_suites(bikes_spec, tmp_path)
    assert "schema.json" in str(err.value)


def test_no_suite_at_all_is_an_error(tmp_path, bikes_spec):
    (tmp_path / "bikes").mkdir()
    with pytest.raises(SuiteError, match="every batch must be validated"):
        load_suites(bikes_spec, tmp_path)


def test_suite_digest_changes_with_a_rule(tmp_path, bikes_spec, suites):
    folder = tmp_path / "bikes"
    shutil.copytree(EXPECTATIONS / "bikes", folder)
    data = json.loads((folder / "values.json").read_text())
    data["expectations"][0]["kwargs"]["value_set"] = [1, 2, 3]
    (folder / "values.json").write_text(json.dumps(data))
    changed = {s.name: s.digest for s in load_suites(bikes_spec, tmp_path)}
    original = {s.name: s.digest for s in suites}
    assert changed["bikes_schema"] == original["bikes_schema"]
    assert changed["bikes_values"] != original["bikes_values"]

"""Data tests: the stewards' birds suites on every real month of the schedule and on broken ones (real GX runs).

The batches come from the spec's own query over the seeded ``birds`` table (``airloop seed``'s manifest), so the
derived label, the key and the time column are what ingestion would validate.
"""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pandas as pd
import pytest
import sqlalchemy as sa

from airloop.adapters.datasets import seed
from airloop.adapters.expectations import load_suites, validate
from airloop.adapters.source import extract_interval
from airloop.core.intervals import Interval, expected_intervals
from airloop.core.spec import get_spec

ROOT = Path(__file__).resolve().parents[2]
EXPECTATIONS = ROOT / "expectations"
MARCH_1993 = Interval(datetime(1993, 3, 1, tzinfo=UTC), datetime(1993, 4, 1, tzinfo=UTC))


@pytest.fixture(scope="module")
def birds_spec():
    return get_spec("birds", ROOT / "include" / "models")


@pytest.fixture(scope="module")
def engine(tmp_path_factory):
    eng = sa.create_engine(f"sqlite:///{tmp_path_factory.mktemp('birds') / 'source.db'}")
    seed(eng, ROOT / "include" / "data" / "faa_birdstrikes")
    return eng


@pytest.fixture(scope="module")
def suites(birds_spec):
    return load_suites(birds_spec, EXPECTATIONS)


@pytest.fixture
def batch(engine, birds_spec) -> pd.DataFrame:
    """A real month: March 1993, 133 strikes, 15 with an effect."""
    return extract_interval(engine, birds_spec, MARCH_1993).frame


def _check(frame: pd.DataFrame, suites):
    return validate(frame, suites, keys=["record_id"])


def _failed(outcome) -> set[tuple[str, str | None]]:
    return {(f.expectation, f.kwargs.get("column")) for f in outcome.failures}


def test_every_suite_file_loads(suites):
    assert {s.name for s in suites} == {"birds_schema", "birds_values"}
    assert sum(s.expectation_count for s in suites) >= 35


def test_every_real_month_of_the_schedule_passes(engine, birds_spec, suites):
    months = list(expected_intervals(birds_spec, until=datetime(2001, 1, 1, tzinfo=UTC)))
    assert (months[0].start, months[-1].end) == (datetime(1990, 1, 1, tzinfo=UTC), datetime(1998, 11, 1, tzinfo=UTC))
    frames = [extract_interval(engine, birds_spec, month).frame for month in months]
    failing = {}
    for month, frame in zip(months, frames, strict=True):
        result = _check(frame, suites)
        if not result.success:
            failing[month.key] = [f.describe() for f in result.failures]
    assert failing == {}
    assert min(len(f) for f in frames) == 4 and sum(len(f) for f in frames) == 19_139


def test_the_label_is_derived_from_effect(batch):
    assert len(batch) == 133 and batch["had_effect"].sum() == 15
    assert (batch["had_effect"] == batch["effect"].notna().astype(int)).all()
    assert batch["record_id"].is_unique and str(batch["date"].dt.tz) == "UTC"


def test_a_repeated_record_is_caught(batch, suites):
    doubled = pd.concat([batch, batch.iloc[[7]]], ignore_index=True)
    assert ("expect_column_values_to_be_unique", "record_id") in _failed(_check(doubled, suites))


def test_an_empty_month_fails_on_row_count(batch, suites):
    assert ("expect_table_row_count_to_be_between", None) in _failed(_check(batch.iloc[0:0], suites))


def test_a_lost_column_fails_on_completeness_not_on_its_usual_gaps(batch, suites):
    assert batch["speed"].isna().any(), "a real month has missing speeds, and passes"
    batch["speed"] = float("nan")
    outcome = _check(batch, suites)
    assert _failed(outcome) == {("expect_column_values_to_not_be_null", "speed")}
    (failure,) = outcome.failures
    assert failure.unexpected_count == 133 and failure.kwargs["mostly"] == 0.35


def test_an_unknown_category_names_its_row(batch, suites):
    batch.loc[4, "phase_of_flt"] = "Hovering"
    outcome = _check(batch, suites)
    (failure,) = outcome.failures
    assert (failure.expectation, failure.kwargs["column"]) == ("expect_column_values_to_be_in_set", "phase_of_flt")
    assert failure.examples == ["Hovering"] and failure.example_ids == [batch.loc[4, "record_id"]]


@pytest.mark.parametrize(
    ("column", "value", "expectation"),
    [
        ("height", 60_000.0, "expect_column_values_to_be_between"),
        ("speed", -5.0, "expect_column_values_to_be_between"),
        ("birds_struck", "2-20", "expect_column_values_to_be_in_set"),
        ("effect", "Crashed", "expect_column_values_to_be_in_set"),
        ("ac_mass", 7.0, "expect_column_values_to_be_in_set"),
        ("opid", "american airlines", "expect_column_values_to_match_regex"),
    ],
)
def test_a_broken_value_fails_naming_the_expectation(batch, suites, column, value, expectation):
    batch.loc[2, column] = value
    assert _failed(_check(batch, suites)) == {(expectation, column)}


def test_numbers_loaded_as_text_are_caught(batch, suites):
    batch["height"] = batch["height"].astype(str)
    assert ("expect_column_values_to_be_in_type_list", "height") in _failed(_check(batch, suites))


def test_a_missing_label_column_is_caught(batch, suites):
    outcome = _check(batch.drop(columns=["had_effect"]), suites)
    assert ("expect_table_columns_to_match_set", None) in _failed(outcome)

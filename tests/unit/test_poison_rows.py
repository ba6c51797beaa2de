"""Poison rows, fuzzed: batches of the real bikes spec and suites with any mix of NaN, inf, wrong types (text in a
numeric column), out-of-range values, unseen categories and duplicate keys. Validation never crashes, the batch is
quarantined with reasons that account for every bad row, and nothing is published.

Batches go the real way: rows written to a SQLite source table, ``extract`` to the raw partition of a lake in a
temporary folder, ``validate_interval`` (real GX, Data Docs, the session's SQLite warehouse), then ``publish`` must
have nothing to publish. Hypothesis draws the poison; the clean rows are four weeks of the vendored data.
"""

from __future__ import annotations

import json
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from airloop.core.intervals import Interval
from airloop.stages.ingest.runner import KEY_CHECKS, Ingestion, QuarantinedBatch, extract, storable, validate_interval

ROOT = Path(__file__).resolve().parents[2]
INTERVAL = Interval.of(datetime(2011, 1, 1, tzinfo=UTC), datetime(2011, 1, 29, tzinfo=UTC))
MODEL = "poisonunit"  # its own name: the session's warehouse is shared with other tests
CONNECTION = "poison_source"
TABLE = "poisoned_rentals"
TYPE_RULE = "expect_column_values_to_be_in_type_list"
NULL_RULE = "expect_column_values_to_not_be_null"

# What each kind of poison may hit, from the bikes suites (expectations/bikes/*.json). Texts are never numbers in
# disguise: SQLite would store "12" written to a numeric column as the number 12, which is not a bad value.
FLOATS = ("temp", "atemp", "hum", "windspeed")
NUMERIC = (*FLOATS, "season", "yr", "mnth", "hr", "holiday", "weekday", "workingday", "weathersit", "cnt")
OUT_OF_RANGE = {"hr": (24, -1), "mnth": (13, 0), "weekday": (7, -3), "temp": (1.5, -0.2), "hum": (0.0, 2.0)}
UNSEEN = {"season": (0, 5), "yr": (2, -1), "holiday": (3,), "workingday": (2,), "weathersit": (0, 7)}


@dataclass(frozen=True)
class Poison:
    kind: str  # nan | inf | wrong_type | out_of_range | unseen | duplicate_key
    column: str
    value: Any


def poisons() -> st.SearchStrategy[Poison]:
    return st.one_of(
        st.builds(Poison, st.just("nan"), st.sampled_from(NUMERIC), st.just(np.nan)),
        st.builds(Poison, st.just("inf"), st.sampled_from(FLOATS), st.sampled_from([np.inf, -np.inf])),
        st.builds(
            Poison, st.just("wrong_type"), st.sampled_from(NUMERIC), st.sampled_from(["n/a", "", "0.5x", "twelve"])
        ),
        st.sampled_from(sorted(OUT_OF_RANGE)).flatmap(
            lambda c: st.builds(Poison, st.just("out_of_range"), st.just(c), st.sampled_from(OUT_OF_RANGE[c]))
        ),
        st.sampled_from(sorted(UNSEEN)).flatmap(
            lambda c: st.builds(Poison, st.just("unseen"), st.just(c), st.sampled_from(UNSEEN[c]))
        ),
        st.builds(Poison, st.just("duplicate_key"), st.just("ts"), st.integers(0, 10_000)),
    )


@pytest.fixture(scope="module")
def clean(demo_frame: pd.DataFrame) -> pd.DataFrame:
    """The interval's real rows: they pass every suite (checked once here)."""
    ts = demo_frame["ts"]
    start, end = (pd.Timestamp(t).tz_localize(None) for t in (INTERVAL.start, INTERVAL.end))  # naive UTC
    rows = demo_frame[(ts >= start) & (ts < end)].reset_index(drop=True)
    assert 600 <= len(rows) <= 672
    return rows


@pytest.fixture(scope="module")
def suites(bikes_spec) -> list[Any]:
    from airloop.adapters.expectations import load_suites

    return load_suites(bikes_spec, ROOT / "expectations")


@pytest.fixture(scope="module")
def world(bikes_spec) -> Iterator[tuple[Ingestion, Any]]:
    """The bikes spec under another name reading ``TABLE`` behind its own connection; a lake in a temp folder."""
    import sqlalchemy as sa

    from airloop.adapters.lake import Lake

    with tempfile.TemporaryDirectory(prefix="airloop-poison-") as name, pytest.MonkeyPatch.context() as mp:
        folder = Path(name)
        mp.setenv(
            f"AIRFLOW_CONN_{CONNECTION.upper()}", json.dumps({"conn_type": "sqlite", "host": str(folder / "s.db")})
        )
        source = bikes_spec.source.model_copy(update={"connection": CONNECTION, "table": TABLE})
        validation = bikes_spec.validation.model_copy(update={"suite_dir": bikes_spec.suite_dir})
        spec = bikes_spec.model_copy(update={"name": MODEL, "source": source, "validation": validation})
        ing = Ingestion(
            spec=spec, lake=Lake(folder / "lake"), reports=folder / "reports", expectations=ROOT / "expectations"
        )
        engine = sa.create_engine(f"sqlite:///{folder / 's.db'}")
        yield ing, engine
        engine.dispose()


def poisoned(clean: pd.DataFrame, hits: list[tuple[int, Poison]]) -> pd.DataFrame:
    """``clean`` with each poison put in its row (``hits`` has one poison per row)."""
    frame = clean.copy()
    for row, p in hits:
        if p.kind == "duplicate_key":
            other = p.value % (len(frame) - 1)
            other += other >= row  # another row than this one
            frame.loc[row, "ts"] = clean.loc[other, "ts"]
            continue
        if p.kind == "wrong_type" or frame[p.column].dtype == object:
            frame[p.column] = frame[p.column].astype(object)
        elif isinstance(p.value, float) and frame[p.column].dtype.kind == "i":
            frame[p.column] = frame[p.column].astype(float)
        frame.loc[row, p.column] = p.value
    return frame


def _load_source(engine: Any, clean: pd.DataFrame, hits: list[tuple[int, Poison]]) -> None:
    """Write the poisoned rows as the source table. A text among numbers is written by an ``UPDATE`` into the
    numeric column, as a dynamically typed source (SQLite) stores it: the column keeps its type, the value its own."""
    import sqlalchemy as sa

    from airloop.adapters.csv_load import write_table

    texts = [(row, p) for row, p in hits if p.kind == "wrong_type"]
    frame = poisoned(clean, [h for h in hits if h[1].kind != "wrong_type"])
    write_table(engine, frame, TABLE, time_column="ts", replace=True)  # no unique key: the source may repeat one
    with engine.begin() as conn:
        for row, p in texts:
            conn.execute(
                sa.text(f'UPDATE {TABLE} SET "{p.column}" = :value WHERE instant = :instant'),
                {"value": p.value, "instant": int(frame.loc[row, "instant"])},
            )


def accounted(failures: list[Any], hits: list[tuple[int, Poison]], rows: int) -> list[str]:
    """Each poison that no failure accounts for (empty: every bad row is counted by a reason naming its column).

    A column's rule counts its bad rows (``unexpected_count``); a type rule that fails on the column's dtype as a
    whole (no count, an observed dtype) accounts for all its rows. NaN is counted exactly by the not-null rule."""
    by_column: dict[str, list[Poison]] = {}
    for _, p in hits:
        by_column.setdefault(p.column, []).append(p)
    problems = []
    for column, ps in by_column.items():
        if column == "ts":  # duplicate keys: the suite's uniqueness rule and the key check count both rows of a pair
            counts = [
                f.unexpected_count or 0
                for f in failures
                if (f.suite == KEY_CHECKS and f.kwargs.get("keys") == ["ts"])
                or (f.kwargs.get("column") == "ts" and "unique" in f.expectation)
            ]
            if len(counts) < 2 or min(counts) < len(ps) + 1:
                problems.append(f"ts: {len(ps)} duplicated keys, counted {counts}")
            continue
        mine = [f for f in failures if f.kwargs.get("column") == column]
        nans = sum(p.kind == "nan" for p in ps)
        null_counts = [f.unexpected_count for f in mine if f.expectation == NULL_RULE]
        if nans and null_counts != [nans]:
            problems.append(f"{column}: {nans} NaN, not-null rule counted {null_counts}")
        whole_column = any(f.expectation == TYPE_RULE and f.unexpected_count is None for f in mine)
        covered = rows if whole_column else sum(f.unexpected_count or 0 for f in mine)
        if covered < len(ps):
            problems.append(f"{column}: {len(ps)} bad rows {ps}, counted {covered} by {[f.describe() for f in mine]}")
    return problems


def _quarantined(ing: Ingestion, engine: Any, clean: pd.DataFrame, hits: list[tuple[int, Poison]]) -> tuple[str, dict]:
    """Load the poisoned rows as the source, extract and validate them: the quarantine note and the stored result."""
    from airloop.stages.ingest.runner import REPORT_FILE

    _load_source(engine, clean, hits)
    extracted = extract(ing, INTERVAL)
    with pytest.raises(QuarantinedBatch) as caught:
        validate_interval(ing, INTERVAL)
    assert ing.lake.manifest(MODEL, "validated", INTERVAL.key) is None  # nothing published
    assert ing.lake.manifest(MODEL, "quarantine", INTERVAL.key).rows == extracted.rows
    return str(caught.value), json.loads((ing.report_dir(INTERVAL) / REPORT_FILE).read_text())


def _hits(clean: pd.DataFrame, max_size: int) -> st.SearchStrategy[list[tuple[int, Poison]]]:
    rows = st.integers(0, len(clean) - 1)
    return st.lists(st.tuples(rows, poisons()), min_size=1, max_size=max_size, unique_by=lambda h: h[0])


@settings(
    max_examples=25,
    deadline=None,
    derandomize=True,  # the same examples on every run (CI and local), so a failure is reproducible
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(data=st.data())
def test_poison_rows_never_crash_validation_and_every_bad_row_has_a_reason(data, clean, suites, bikes_spec) -> None:
    """The validate step's own work on the batch (keeping it storable, the suites, the key checks), without the
    lake, so many mixes are tried quickly; the test below runs fewer through the whole ingest."""
    from airloop.adapters.expectations import validate
    from airloop.stages.ingest.runner import with_key_checks

    hits = data.draw(_hits(clean, 8))
    frame = storable(poisoned(clean, hits), "fuzz")
    outcome = with_key_checks(validate(frame, suites, keys=bikes_spec.keys), frame, bikes_spec)
    assert outcome.success is False
    assert accounted(outcome.failures, hits, len(frame)) == []


@settings(
    max_examples=4,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(data=st.data())
def test_poison_rows_from_the_source_are_quarantined_and_nothing_is_published(data, clean, world) -> None:
    from airloop.adapters.expectations import Failure

    ing, engine = world
    hits = data.draw(_hits(clean, 6))
    note, report = _quarantined(ing, engine, clean, hits)
    failures = [Failure(**f) for f in report["failures"]]
    assert report["success"] is False and note.startswith(f"Batch QUARANTINED: {MODEL}")
    assert accounted(failures, hits, report["rows"]) == [], note


def test_a_column_of_numbers_and_text_is_quarantined_not_a_crash(clean, world, caplog) -> None:
    """Regression (fuzzing): a source column holding numbers and a text (SQLite keeps each value's own type) made
    the extract step crash in Arrow (``ArrowInvalid: Could not convert 'n/a' with type str: tried to convert to
    double``); now the column is kept as text, a warning names it, and its type rule quarantines the batch."""
    ing, engine = world
    hits = [(5, Poison("wrong_type", "temp", "n/a")), (9, Poison("out_of_range", "hr", 24))]
    with caplog.at_level("WARNING", logger="airloop.stages.ingest.runner"):
        note, report = _quarantined(ing, engine, clean, hits)
    assert "Column 'temp' of poisonunit interval" in caplog.text and "(float, str)" in caplog.text
    assert "expect_column_values_to_be_in_type_list(column='temp', type_list=['float64', 'float32']): " in note
    assert "expect_column_values_to_be_between(column='hr', min_value=0.0, max_value=23.0): 1 of" in note
    raw = ing.lake.read(MODEL, "raw", INTERVAL.key)
    assert raw.loc[5, "temp"] == "n/a" and raw.loc[4, "temp"] == str(clean.loc[4, "temp"])
    assert [f["expectation"] for f in report["failures"] if f["kwargs"].get("column") == "temp"]


def test_storable_leaves_storable_columns_alone() -> None:
    frame = pd.DataFrame({"a": [1.5, 2.0], "b": ["x", None], "c": pd.Series([1, 2.5], dtype=object)})
    assert storable(frame, "t") is frame
    mixed = pd.DataFrame({"a": pd.Series([1, "x", None, np.nan], dtype=object), "b": [1, 2, 3, 4]})
    out = storable(mixed, "t")
    assert out["a"].tolist() == ["1", "x", None, None] and out["b"].tolist() == [1, 2, 3, 4]
    assert mixed["a"].tolist()[:2] == [1, "x"]  # the input is not changed

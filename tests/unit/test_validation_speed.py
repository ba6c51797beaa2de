"""Validation without the costs GX adds beyond the checks (``airloop.adapters.expectations._lean_gx``): no
fingerprint of the whole frame, no whole-frame copy per per-row rule; and the same verdicts, counts and row keys
as GX's default way for every expectation type the demo suites use. Real GX on the vendored bikes data.

The first two tests guard the GX and pandas behaviour the bypass relies on: they fail when a new version changes it
(then re-measure with ``python -m benchmarks.run --only validation`` and adapt ``_lean_gx``).
"""

from __future__ import annotations

import contextlib
import json
import tracemalloc
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from airloop.adapters import expectations
from airloop.adapters.expectations import SuiteFile, suite_digest, validate

ROOT = Path(__file__).resolve().parents[2]


def _fingerprints(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Count the calls of GX's whole-frame fingerprint (the module global its pandas engine calls)."""
    from great_expectations.execution_engine import pandas_execution_engine as engine

    calls: list[int] = []
    original = engine.hash_pandas_dataframe

    def spy(df: pd.DataFrame) -> str:
        calls.append(len(df))
        return original(df)

    monkeypatch.setattr(engine, "hash_pandas_dataframe", spy)
    return calls


def test_gx_fingerprints_a_pandas_batch_unless_its_hash_threshold_is_zero(monkeypatch, demo_frame) -> None:
    """The GX internal ``_lean_gx`` turns off: a pandas batch's ``pandas_data_fingerprint`` hashes the whole frame
    unless the frame's memory is at least ``HASH_THRESHOLD``. If GX stops fingerprinting, drop the bypass; if it
    stops reading the constant, find the new switch (the next test then fails too)."""
    from great_expectations.execution_engine import pandas_execution_engine as engine

    calls = _fingerprints(monkeypatch)
    definition = expectations._shared_batch_definition()
    batch = definition.get_batch(batch_parameters={"dataframe": demo_frame})
    assert "pandas_data_fingerprint" in batch.batch_markers and calls == [len(demo_frame)]
    monkeypatch.setattr(engine, "HASH_THRESHOLD", 0)
    batch = definition.get_batch(batch_parameters={"dataframe": demo_frame})
    assert "pandas_data_fingerprint" not in batch.batch_markers and calls == [len(demo_frame)]


def test_copy_on_write_makes_an_all_true_boolean_selection_share_the_data(demo_frame) -> None:
    """The pandas behaviour ``_lean_gx`` relies on: GX drops a column's missing values with ``df[mask]``; without
    Copy-on-Write an all-true mask deep-copies every column, with it the selection shares the frame's data."""
    mask = demo_frame["hum"].notnull()
    assert mask.all()
    assert not np.shares_memory(demo_frame[mask]["temp"].to_numpy(), demo_frame["temp"].to_numpy())
    with pd.option_context("mode.copy_on_write", True):
        assert np.shares_memory(demo_frame[mask]["temp"].to_numpy(), demo_frame["temp"].to_numpy())
    assert not pd.get_option("mode.copy_on_write")


def _bikes_suites(bikes_spec: Any) -> list[SuiteFile]:
    suites = expectations.load_suites(bikes_spec, ROOT / "expectations")
    return [_lift_row_count(s) for s in suites]


def _lift_row_count(suite: SuiteFile) -> SuiteFile:
    """The suite without the weekly row-count maximum, so a batch of any size passes it."""
    raw = json.loads(json.dumps(suite.raw))
    for exp in raw["expectations"]:
        if exp["type"] == "expect_table_row_count_to_be_between":
            exp["kwargs"]["max_value"] = None
    return SuiteFile(path=suite.path, name=suite.name, digest=suite_digest(raw), raw=raw)


def _passing_batch(demo_frame: pd.DataFrame, rows: int) -> pd.DataFrame:
    clean = demo_frame[demo_frame["hum"] > 0]  # hum == 0 on 2011-03-10 is a sensor fault the suite rejects
    batch = clean.iloc[np.random.default_rng(0).integers(0, len(clean), rows)].reset_index(drop=True)
    batch["ts"] = pd.date_range("2011-01-01", periods=rows, freq="h", tz="UTC")
    return batch


def test_a_passing_batch_is_validated_without_fingerprinting_or_copying_it(monkeypatch, bikes_spec, demo_frame):
    """Regression (issue 16, item 2): each validate call hashed the whole frame twice (``get_batch`` and again in
    ``Batch.validate``) and copied it whole once per per-row rule: a passing 1M-row batch cost 13x the same checks
    in pandas. Now the peak memory of the call stays well under one copy of the frame."""
    suites = _bikes_suites(bikes_spec)
    batch = _passing_batch(demo_frame, 100_000)
    assert validate(batch, suites, keys=bikes_spec.keys).success  # warm: GX's lazily imported metric code
    calls = _fingerprints(monkeypatch)
    frame_bytes = int(batch.memory_usage(deep=True).sum())
    tracemalloc.start()
    try:
        outcome = validate(batch, suites, keys=bikes_spec.keys)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert outcome.success and outcome.evaluated == sum(s.expectation_count for s in suites)
    assert calls == []
    assert peak < 0.5 * frame_bytes, f"peak {peak / 2**20:.1f} MiB for a frame of {frame_bytes / 2**20:.1f} MiB"
    assert not pd.get_option("mode.copy_on_write"), "the pandas option must be restored after the call"


def test_a_column_with_missing_values_is_not_copied_whole_frame(monkeypatch, bikes_spec, demo_frame) -> None:
    """Regression (issue 16, item 2): GX drops a column's missing values from the whole batch before a per-row rule
    (``df[df[column].notnull()]``), a real copy of every column when some are missing: a failing 1M-row batch with
    missing ``hum`` values peaked at 3.4x a passing one's memory. Now the rule's frame is its column alone."""
    suites = _bikes_suites(bikes_spec)
    batch = _passing_batch(demo_frame, 100_000)
    batch.loc[batch.index[::10], "hum"] = np.nan
    validate(batch, suites, keys=bikes_spec.keys)  # warm: GX's lazily imported metric code
    frame_bytes = int(batch.memory_usage(deep=True).sum())
    tracemalloc.start()
    try:
        outcome = validate(batch, suites, keys=bikes_spec.keys)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    (null,) = [f for f in outcome.failures if f.kwargs.get("column") == "hum"]
    assert null.expectation == "expect_column_values_to_not_be_null" and null.unexpected_count == 10_000
    assert peak < 0.5 * frame_bytes, f"peak {peak / 2**20:.1f} MiB for a frame of {frame_bytes / 2**20:.1f} MiB"


# --- the same outcome: every expectation type of the demo suites, passing and failing, with missing values -------

#: One passing and one failing expectation per type the demo suites use, on the bikes columns (``dteday`` stands in
#: for a text column). The failing batch also has missing values, so the per-row rules really drop rows.
CASES: dict[str, list[dict[str, Any]]] = {
    "expect_column_values_to_be_between": [
        {"column": "hum", "min_value": 0, "max_value": 1, "strict_min": True},
        {"column": "hr", "min_value": 0, "max_value": 23},
    ],
    "expect_column_values_to_be_in_set": [
        {"column": "season", "value_set": [1, 2, 3, 4]},
        {"column": "weathersit", "value_set": [1, 2, 3, 4]},
    ],
    "expect_column_values_to_be_in_type_list": [
        {"column": "cnt", "type_list": ["int64", "Int64"]},
        {"column": "hr", "type_list": ["float64"]},
    ],
    "expect_column_values_to_be_unique": [{"column": "row"}, {"column": "ts"}],
    "expect_column_values_to_match_regex": [
        {"column": "dteday", "regex": r"^\d{4}-\d{2}-\d{2}$"},
        {"column": "dteday", "regex": r"^2011-"},
    ],
    "expect_column_values_to_not_be_null": [{"column": "cnt"}, {"column": "temp"}],
    "expect_table_columns_to_match_set": [
        {"column_set": ["ts", "hr", "cnt"], "exact_match": False},
        {"column_set": ["ts", "hr", "cnt", "windspeed"], "exact_match": False},
    ],
    "expect_table_row_count_to_be_between": [{"min_value": 100}, {"min_value": 10, "max_value": 100}],
}


def _demo_suite_types() -> set[str]:
    return {
        e["type"]
        for path in (ROOT / "expectations").glob("*/*.json")
        for e in json.loads(path.read_text())["expectations"]
    }


def _broken(demo_frame: pd.DataFrame, rows: int) -> pd.DataFrame:
    """A batch that fails one expectation of each pair above, with missing values in the checked columns."""
    batch = _passing_batch(demo_frame, rows)
    batch["row"] = np.arange(rows)
    bad = np.random.default_rng(1).choice(rows, rows // 10, replace=False)
    batch.loc[bad[::4], "hr"] = 30
    batch.loc[bad[1::4], "weathersit"] = 9
    batch.loc[bad[2::4], "hum"] = np.nan  # dropped by the range rule, not-null fails, float64 still
    batch.loc[bad[3::4], "temp"] = np.nan
    batch.loc[bad[::3], "ts"] = batch["ts"].iloc[0]
    batch.loc[bad[::5], "dteday"] = None
    return batch.drop(columns=["windspeed"])


def test_the_cases_cover_every_expectation_type_of_the_demo_suites() -> None:
    assert _demo_suite_types() <= set(CASES), "add the new type to CASES"


def _outcome(batch: pd.DataFrame, suite: SuiteFile, tmp: Path) -> dict[str, Any]:
    from datetime import UTC, datetime

    docs = expectations.DocsTarget(tmp, "run", datetime(2011, 1, 1, tzinfo=UTC))
    out = validate(batch, [suite], keys=["ts"], docs=docs)
    pages = sorted(p.relative_to(tmp).parts[0] for p in tmp.rglob("*.html") if "static" not in p.parts)
    return {
        "success": out.success,
        "checks": out.checks,
        "failures": [asdict(f) for f in out.failures],
        "results": out.results,
        "docs": pages,
    }


def _every_type_suite(tmp_path: Path) -> SuiteFile:
    raw = {
        "name": "every-type",
        "expectations": [{"type": t, "kwargs": kw} for t, pair in CASES.items() for kw in pair],
    }
    return SuiteFile(path=tmp_path / "every-type.json", name="every-type", digest=suite_digest(raw), raw=raw)


def test_lean_and_default_gx_give_the_same_outcome_for_every_type(monkeypatch, demo_frame, tmp_path) -> None:
    """Verdicts, counts, example values and row keys, GX's stored results and the Data Docs pages: the same with
    ``_lean_gx`` as with GX's default way, for a passing and a failing expectation of each type."""
    suite = _every_type_suite(tmp_path)
    batch = _broken(demo_frame, 20_000)
    lean = _outcome(batch, suite, tmp_path / "lean")
    monkeypatch.setattr(expectations, "_lean_gx", contextlib.nullcontext)
    default = _outcome(batch, suite, tmp_path / "default")
    assert lean == default
    # GX orders results its own way: one passing and one failing expectation of each type.
    verdicts = {t: sorted(c["success"] for c in lean["checks"] if c["type"] == t) for t in CASES}
    assert verdicts == {t: [False, True] for t in CASES}, lean["checks"]
    assert lean["docs"] == ["expectations", "index.html", "validations"]
    hr = next(f for f in lean["failures"] if f["kwargs"].get("column") == "hr")
    assert hr["unexpected_count"] == len(batch[batch["hr"] == 30]) and hr["example_ids"]


def _summary_passes(monkeypatch: pytest.MonkeyPatch) -> list[tuple[int, Any]]:
    """Record each GX suite validation: how many expectations, in which result format."""
    from great_expectations.validator.v1_validator import Validator

    calls: list[tuple[int, Any]] = []
    original = Validator.validate_expectation_suite

    def spy(self: Any, expectation_suite: Any, *args: Any, **kwargs: Any) -> Any:
        fmt = self.result_format
        calls.append((len(expectation_suite.expectations), fmt if isinstance(fmt, str) else fmt["result_format"]))
        return original(self, expectation_suite, *args, **kwargs)

    monkeypatch.setattr(Validator, "validate_expectation_suite", spy)
    return calls


def test_a_failing_batch_is_detailed_only_for_its_failed_expectations(monkeypatch, demo_frame, tmp_path) -> None:
    """Regression (issue 16, item 2): a failing batch was validated again in full, every expectation of every
    suite in ``SUMMARY`` format, through a checkpoint that also rebuilt its Data Docs once per suite: a 1M-row batch
    with 10 % bad rows took 4.5x a passing one. Now only the failed expectations are evaluated again; each suite's
    result, its verdicts and statistics, and its Data Docs page are still there."""
    suite = _every_type_suite(tmp_path)
    batch = _broken(demo_frame, 20_000)
    calls = _summary_passes(monkeypatch)
    out = _outcome(batch, suite, tmp_path / "docs")
    failed = len(CASES)
    assert calls == [(2 * failed, "BOOLEAN_ONLY"), (failed, "SUMMARY")]
    assert len(out["failures"]) == failed
    (result,) = out["results"]
    assert len(result["results"]) == 2 * failed
    assert result["statistics"]["evaluated_expectations"] == 2 * failed
    assert result["statistics"]["unsuccessful_expectations"] == failed
    assert list((tmp_path / "docs" / "validations").rglob("*.html")), "no Data Docs page for the suite's result"


def test_the_detailed_results_are_those_of_a_full_summary_pass(demo_frame, tmp_path) -> None:
    """The failed expectations' results, the verdicts and the statistics equal what one GX ``SUMMARY`` pass over the
    whole suite gives (GX's own way, through ``Batch.validate``), for every expectation type of the demo suites."""
    suite = _every_type_suite(tmp_path)
    batch = _broken(demo_frame, 20_000)
    ours = validate(batch, [suite], keys=["ts"]).results[0]
    gx_batch = expectations._shared_batch_definition().get_batch(batch_parameters={"dataframe": batch})
    full = expectations._report_json(
        gx_batch.validate(expectations._to_gx_suite(suite.raw), result_format=expectations._result_format())
    )
    assert ours["statistics"] == full["statistics"]

    def key(r: dict[str, Any]) -> str:
        return json.dumps([r["expectation_config"]["type"], r["expectation_config"]["kwargs"]], sort_keys=True)

    theirs = {key(r): r for r in full["results"]}
    assert sorted(theirs) == sorted(key(r) for r in ours["results"])
    for r in ours["results"]:
        assert r["success"] == theirs[key(r)]["success"], key(r)
        if not r["success"]:
            assert r == theirs[key(r)], key(r)

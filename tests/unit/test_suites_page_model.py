"""The data steward's page (airloop.ui.suites): suites in plain words and their history, read from a real SQLite
warehouse holding validation results of real GX runs on the demo data."""

from __future__ import annotations

import json
import shutil
from dataclasses import asdict
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

from airloop.adapters import warehouse
from airloop.adapters.expectations import load_suites, validate
from airloop.core.intervals import Interval
from airloop.ui import suites as steward

ROOT = Path(__file__).resolve().parents[2]


def _interval_frame(demo_frame: pd.DataFrame, interval: Interval) -> pd.DataFrame:
    start, end = interval.start.replace(tzinfo=None), interval.end.replace(tzinfo=None)
    df = demo_frame[(demo_frame["ts"] >= start) & (demo_frame["ts"] < end)].reset_index(drop=True)
    df["ts"] = df["ts"].dt.tz_localize("UTC")
    return df


def _record(engine: Any, model: str, interval: Interval, outcome: Any) -> None:
    """The row ingestion writes (airloop.stages.ingest.runner._record) for one validated interval."""
    warehouse.upsert_validation_result(
        engine,
        {
            "model": model,
            "partition": interval.key,
            "interval_start": interval.start,
            "interval_end": interval.end,
            "success": outcome.success,
            "rows": outcome.rows,
            "evaluated_expectations": outcome.evaluated,
            "failed_expectations": len(outcome.failures),
            "content_digest": "d" * 64,
            "suite_digests": outcome.suite_digests,
            "failures": json.loads(json.dumps([asdict(f) for f in outcome.failures], default=str)),
            "report_path": f"/nowhere/{interval.key}/validation_result.json",
            "docs_path": None,
        },
    )


BASE = datetime(2011, 1, 1, tzinfo=UTC)
OLD, CLEAN, FAULT = (Interval(BASE + timedelta(days=28 * i), BASE + timedelta(days=28 * (i + 1))) for i in range(3))


@pytest.fixture(scope="module")
def story(tmp_path_factory, demo_frame, bikes_spec):
    """Three intervals of bikes: the oldest validated under an older values suite, then a clean one and the
    humidity sensor fault (2011-03-10) under the suites as shipped."""
    tmp = tmp_path_factory.mktemp("steward")
    expectations = tmp / "expectations"
    shutil.copytree(ROOT / "expectations", expectations)
    values = expectations / "bikes" / "values.json"
    raw = json.loads(values.read_text())
    raw["meta"]["notes"] = "an older version of the suite"
    values.write_text(json.dumps(raw))
    engine = warehouse.sa.create_engine(f"sqlite:///{tmp / 'warehouse.db'}")
    warehouse.ensure_schema(engine)
    _record(
        engine,
        "bikes",
        OLD,
        validate(_interval_frame(demo_frame, OLD), load_suites(bikes_spec, expectations), keys=bikes_spec.keys),
    )
    shutil.copy(ROOT / "expectations" / "bikes" / "values.json", values)  # the steward's change merges
    now = load_suites(bikes_spec, expectations)
    fault = validate(_interval_frame(demo_frame, FAULT), now, keys=bikes_spec.keys)
    for interval in (CLEAN, FAULT):
        outcome = (
            fault if interval is FAULT else validate(_interval_frame(demo_frame, interval), now, keys=bikes_spec.keys)
        )
        _record(engine, "bikes", interval, outcome)
    page = steward.load_suites_page(bikes_spec, engine, expectations, project=tmp)
    return {"page": page, "fault": fault, "tmp": tmp}


def _rule(page: steward.SuitesPage, suite: str, column: str, kind: str) -> steward.Rule:
    found = [r for s in page.suites if s.name == suite for r in s.rules if r.column == column and r.type == kind]
    assert len(found) == 1, found
    return found[0]


def test_every_rule_in_plain_words(story):
    page = story["page"]
    assert [s.name for s in page.suites] == ["bikes_schema", "bikes_values"]
    assert [s.file for s in page.suites] == ["expectations/bikes/schema.json", "expectations/bikes/values.json"]
    hum = _rule(page, "bikes_values", "hum", "expect_column_values_to_be_between")
    assert hum.text == "hum is greater than 0 and at most 1"
    assert hum.notes and "sensor fault" in hum.notes
    counts = [r for r in page.suites[0].rules if r.type == "expect_table_row_count_to_be_between"]
    assert counts[0].text == "the batch's row count is between 600 and 672"
    assert sum(len(s.rules) for s in page.suites) == sum(
        len(json.loads(p.read_text())["expectations"]) for p in (ROOT / "expectations" / "bikes").glob("*.json")
    )


def test_history_per_rule_newest_first(story):
    page, fault = story["page"], story["fault"]
    assert [i.partition for i in page.intervals] == [FAULT.key, CLEAN.key, OLD.key]
    hum = _rule(page, "bikes_values", "hum", "expect_column_values_to_be_between")
    failed = next(f for f in fault.failures if f.kwargs.get("column") == "hum")
    assert [v.status for v in hum.history] == ["fail", "pass", "other-version"]
    first = hum.history[0]
    assert (first.unexpected_count, first.element_count) == (failed.unexpected_count, failed.element_count)
    assert first.unexpected_count and first.unexpected_share == failed.unexpected_count / failed.element_count
    assert first.examples == failed.examples and all(v == 0 for v in first.examples)
    assert first.summary.startswith(f"fail: {failed.unexpected_count} of {failed.element_count} rows (")
    assert hum.failures == 1
    # The schema suite did not change: it passed in all three, under the digest in force now.
    unique = _rule(page, "bikes_schema", "ts", "expect_column_values_to_be_unique")
    assert [v.status for v in unique.history] == ["pass", "pass", "pass"]


def test_top_failing_and_digests_per_interval(story):
    page = story["page"]
    assert [t.text for t in page.top_failing] == ["hum is greater than 0 and at most 1"]
    top = page.top_failing[0]
    assert top.intervals == 1 and top.last == FAULT.key and top.in_force and top.suite == "bikes_values"
    fault, clean, old = page.intervals
    values_now = next(s.digest for s in page.suites if s.name == "bikes_values")
    assert fault.digests["bikes_values"] == clean.digests["bikes_values"] == values_now != old.digests["bikes_values"]
    assert (fault.changed, clean.changed, old.changed) == ([], ["bikes_values"], [])
    assert (fault.current, clean.current, old.current) == (True, True, False)
    assert not fault.success and clean.success
    assert fault.command == f"airloop suites check bikes --on {FAULT.key}"


def test_json_and_html(story):
    page = story["page"]
    data = page.to_dict()
    hum = next(r for r in data["suites"][1]["rules"] if r["column"] == "hum")
    assert hum["failures"] == 1 and hum["history"][0]["status"] == "fail" and hum["history"][0]["unexpected_share"] > 0
    html = steward.render_suites_page(page, reports_root=story["tmp"], models=["bikes"], user="steward")
    assert "hum is greater than 0 and at most 1" in html
    assert f"airloop suites check bikes --on {FAULT.key}" in html
    assert "changed: bikes_values" in html
    assert html.count('class="verdict fail bad"') == 1


def test_problems_are_said_not_raised(tmp_path, bikes_spec):
    (tmp_path / "bikes").mkdir()
    (tmp_path / "bikes" / "values.json").write_text("{ not json")
    engine = warehouse.sa.create_engine(f"sqlite:///{tmp_path / 'w.db'}")
    page = steward.load_suites_page(bikes_spec, engine, tmp_path)
    assert page.suites == [] and "values.json: not valid JSON" in page.problems[0]
    html = steward.render_suites_page(page, reports_root=tmp_path, models=["bikes"], user="x")
    assert "not valid JSON" in html and "No interval validated yet" in html

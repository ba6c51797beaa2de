"""The ingest, score and monitor contracts: JSON round trips, and errors that name the contract, field and value."""

from __future__ import annotations

import json
import math
from datetime import UTC, datetime

import pytest

from airloop.core.contracts import (
    ContractError,
    Extracted,
    MonitorRequest,
    MonitorSummary,
    PinnedChampion,
    Published,
    ScoredPartition,
    Validated,
)
from airloop.core.errors import ExpectedFailure

SUMMARY = MonitorSummary(
    model="m",
    champion_version="3",
    window_start=datetime(2012, 5, 19, tzinfo=UTC),
    window_end=datetime(2012, 6, 16, tzinfo=UTC),
    drifted=True,
    drift_share=0.25,
    drifted_columns=("a",),
    scores={"a": 0.31, "b": 0.02},
    prediction_score=0.04,
    prediction_drifted=False,
    performance={"rows": 10, "mae": 1.5, "degradation": None, "degraded": False},
    retrain=True,
    reason="drift in 2 of the last 2 windows",
    report="/reports/m/drift/report.html",
    report_json="/reports/m/drift/report.json",
    notes=("the window has a gap",),
    mlflow_run_id="abc",
    seconds=1.25,
)

EXAMPLES = [
    PinnedChampion(version="7", run_id="0123abcd"),
    Extracted(partition="2012-01-01T000000Z", rows=670, content_digest="f" * 64),
    Validated(
        partition="2012-01-01T000000Z", rows=670, content_digest="f" * 64, suite_digests={"s": "1"}, report="/r.json"
    ),
    Published(
        model="m",
        partition="2012-01-01T000000Z",
        interval_start="2012-01-01T00:00:00+00:00",
        interval_end="2012-01-29T00:00:00+00:00",
        rows=670,
        content_digest="f" * 64,
        suite_digests={"s": "1"},
        path="/lake/m/validated/2012-01-01T000000Z",
    ),
    ScoredPartition(partition="2012-01-01T000000Z", rows=670, version="7", digest="e" * 64),
    MonitorRequest(as_of=datetime(2012, 6, 16, tzinfo=UTC), explicit=True),
    SUMMARY,
]


@pytest.mark.parametrize("contract", EXAMPLES, ids=lambda c: type(c).__name__)
def test_round_trip_through_json(contract):
    carried = json.loads(json.dumps(contract.to_dict(), allow_nan=False))  # what XCom stores
    assert type(contract).from_dict(carried) == contract


def test_the_keys_are_the_ones_readers_use():
    assert MonitorRequest(as_of=datetime(2012, 6, 16, tzinfo=UTC), explicit=False).to_dict() == {
        "as_of": "2012-06-16T00:00:00+00:00",
        "explicit": False,
    }
    summary = SUMMARY.to_dict()
    assert summary["decision"] == {"request": True, "reason": "drift in 2 of the last 2 windows"}
    assert (summary["window_end"], summary["drifted_columns"], summary["notes"]) == (
        "2012-06-16T00:00:00+00:00",
        ["a"],
        ["the window has a gap"],
    )
    assert list(summary)[-2:] == ["mlflow_run_id", "seconds"]
    assert PinnedChampion("7", "r").to_dict() == {"version": "7", "run_id": "r"}


def test_a_nan_figure_travels_as_null_and_comes_back_nan():
    nan = MonitorSummary(**{**SUMMARY.__dict__, "drift_share": math.nan, "scores": {"a": math.inf}})
    carried = json.loads(json.dumps(nan.to_dict(), allow_nan=False))
    assert carried["drift_share"] is None and carried["scores"] == {"a": None}
    back = MonitorSummary.from_dict(carried)
    assert math.isnan(back.drift_share) and math.isnan(back.scores["a"])


def test_optional_fields_may_be_missing():
    carried = SUMMARY.to_dict()
    for key in ("notes", "mlflow_run_id", "seconds"):
        del carried[key]
    back = MonitorSummary.from_dict(carried)
    assert (back.notes, back.mlflow_run_id, back.seconds) == ((), None, None)


@pytest.mark.parametrize(
    ("contract", "data", "message"),
    [
        (PinnedChampion, None, r"PinnedChampion: expected an object of fields, got NoneType None"),
        (
            PinnedChampion,
            {"version": "7"},
            r"PinnedChampion: field `run_id` is missing \(got the fields \['version'\]\)",
        ),
        (PinnedChampion, {"version": 7, "run_id": "r"}, "PinnedChampion: field `version` must be a string, got int 7"),
        (
            Extracted,
            {"partition": "p", "rows": "670", "content_digest": "d"},
            "Extracted: field `rows` must be a whole number, got str '670'",
        ),
        (
            Extracted,
            {"partition": "p", "rows": True, "content_digest": "d"},
            "Extracted: field `rows` must be a whole number, got bool True",
        ),
        (
            Validated,
            {"partition": "p", "rows": 1, "content_digest": "d", "suite_digests": {"s": 1}, "report": "r"},
            r"Validated: field `suite_digests\['s'\]` must be a string, got int 1",
        ),
        (
            Published,
            {**EXAMPLES[3].to_dict(), "interval_end": "next tuesday"},
            "Published: field `interval_end` must be an ISO 8601 timestamp, got str 'next tuesday'",
        ),
        (ScoredPartition, {"partition": "p", "rows": 1, "version": "7"}, "ScoredPartition: field `digest` is missing"),
        (
            MonitorRequest,
            {"as_of": "2012-06-16", "explicit": "yes"},
            "MonitorRequest: field `explicit` must be true or false, got str 'yes'",
        ),
        (MonitorRequest, {"explicit": False}, "MonitorRequest: field `as_of` is missing"),
        (
            MonitorSummary,
            {**SUMMARY.to_dict(), "decision": {"request": True}},
            "MonitorSummary.decision: field `reason` is missing",
        ),
        (
            MonitorSummary,
            {**SUMMARY.to_dict(), "drifted_columns": "a"},
            "MonitorSummary: field `drifted_columns` must be a list, got str 'a'",
        ),
        (
            MonitorSummary,
            {**SUMMARY.to_dict(), "drift_share": "0.2"},
            "MonitorSummary: field `drift_share` must be a number or null, got str '0.2'",
        ),
    ],
)
def test_a_missing_or_mistyped_field_is_named(contract, data, message):
    with pytest.raises(ContractError, match=message) as caught:
        contract.from_dict(data)
    assert isinstance(caught.value, ExpectedFailure) and isinstance(caught.value, ValueError)  # fails, no retry
    assert str(caught.value).endswith("so that it writes the value again."), "every message says what to do"


@pytest.mark.parametrize(
    ("contract", "data", "message"),
    [
        (MonitorSummary, {**SUMMARY.to_dict(), "drifted_columns": ["a", 2]}, r"field `drifted_columns\[1\]`"),
        (MonitorSummary, {**SUMMARY.to_dict(), "scores": {"a": "high"}}, r"field `scores\['a'\]` must be a number"),
        (MonitorSummary, {**SUMMARY.to_dict(), "decision": "yes"}, r"field `decision` must be an object, got str"),
        (MonitorSummary, {**SUMMARY.to_dict(), "seconds": "1s"}, r"field `seconds` must be a number or null"),
        (MonitorSummary, {**SUMMARY.to_dict(), "performance": [1]}, r"field `performance` must be an object"),
        (Published, {**EXAMPLES[3].to_dict(), "interval_start": None}, r"field `interval_start` must be a string"),
    ],
)
def test_nested_and_optional_fields_are_named_too(contract, data, message):
    with pytest.raises(ContractError, match=message):
        contract.from_dict(data)


def test_numbers_come_back_as_floats_and_null_scores_as_nan():
    carried = {**SUMMARY.to_dict(), "drift_share": 1, "scores": {"a": 2, "b": None}, "seconds": None}
    back = MonitorSummary.from_dict(carried)
    assert back.drift_share == 1.0 and isinstance(back.drift_share, float) and back.seconds is None
    assert back.scores["a"] == 2.0 and isinstance(back.scores["a"], float) and math.isnan(back.scores["b"])

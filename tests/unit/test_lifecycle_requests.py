"""Run parameters of the train and promote DAGs: refused early, each problem named with its fix."""

from __future__ import annotations

import pytest

from airloop.core.contracts import RunInfo
from airloop.core.params import RequestProblem
from airloop.stages.promote.steps import decided_by
from airloop.stages.train.runner import train_request

MANUAL = RunInfo(dag_id="bikes_train", run_id="manual__1", run_type="manual", triggered_by="alice")
SCHEDULED = RunInfo(dag_id="bikes_train", run_id="scheduled__1", run_type="scheduled")
ASSET = RunInfo(dag_id="bikes_train", run_id="asset_triggered__1", run_type="asset_triggered")
DEFAULTS = {"reason": None, "window_start": None, "window_end": None, "overrides": {}}


def _request(spec, conf, run=MANUAL, events=()) -> dict:
    """The checked request as the check task pushes it to XCom."""
    return train_request(spec, conf, {**DEFAULTS, **conf}, run, list(events)).to_dict()


def test_manual_run_with_reason_and_window(bikes_spec):
    req = _request(bikes_spec, {"reason": " new data ", "window_start": "2012-01-01", "window_end": "2012-10-01"})
    assert req == {
        "reason": "new data",
        "window_start": "2012-01-01T00:00:00+00:00",
        "window_end": "2012-10-01T00:00:00+00:00",
        "overrides": {},
    }


@pytest.mark.parametrize(
    ("conf", "message"),
    [
        ({}, "param `reason` is required"),
        ({"reason": "  "}, "param `reason` is required"),
        ({"reason": "x", "reasn": "y"}, "does not know the param(s) ['reasn']"),
        ({"reason": "x", "window_end": "yesterday"}, "param `window_end` is 'yesterday'"),
        ({"reason": "x", "window_start": "2012-06-01", "window_end": "2012-01-01"}, "must be before"),
        ({"reason": "x", "overrides": {"loss": "absolute_error"}}, "not allowed"),
        ({"reason": "x", "overrides": {"max_iter": "many"}}, "param `overrides`"),
        ({"reason": "x", "overrides": [1]}, "must be an object"),
    ],
    ids=[
        "no-reason",
        "blank-reason",
        "unknown-key",
        "bad-date",
        "inverted-window",
        "not-overridable",
        "bad-value",
        "not-an-object",
    ],
)
def test_bad_requests_are_refused_with_the_parameter_named(bikes_spec, conf, message):
    with pytest.raises(RequestProblem) as err:
        _request(bikes_spec, conf)
    assert message in str(err.value)


def test_scheduled_and_requested_runs_carry_their_own_reason(bikes_spec):
    assert _request(bikes_spec, {}, run=SCHEDULED)["reason"].startswith("scheduled retraining")
    req = _request(bikes_spec, {}, run=ASSET, events=[{"reason": "drift in 3 of the last 4 windows"}])
    assert req["reason"] == "retrain requested: drift in 3 of the last 4 windows"
    assert req["window_end"] is None  # no window in the event: the newest validated data, as usual


def test_a_retrain_request_trains_up_to_its_window_unless_a_window_is_given(bikes_spec):
    events = [
        {"reason": "drift", "window_end": "2012-02-25T00:00:00+00:00"},
        {"reason": "degraded", "window_end": "2012-03-24T00:00:00+00:00"},
    ]
    req = _request(bikes_spec, {}, run=ASSET, events=events)
    assert req["window_end"] == "2012-03-24T00:00:00+00:00"  # merged events: the latest window
    assert req["reason"] == "retrain requested: drift; degraded"
    pinned = _request(bikes_spec, {"reason": "by hand", "window_end": "2012-01-01"}, run=ASSET, events=events)
    assert pinned["window_end"] == "2012-01-01T00:00:00+00:00"


def test_decided_by_names_gate_approver_and_override():
    assert decided_by(False, None, MANUAL) == "gate"
    approval = {"chosen_options": ["Approve"], "responded_by_user": {"id": "operator", "name": "operator"}}
    assert decided_by(False, approval, MANUAL) == "gate + approval by operator"
    assert decided_by(True, None, MANUAL) == "override by alice"


def test_date_params_accept_a_day_or_a_timestamp_and_name_a_bad_one():
    from airloop.core.params import ParamProblem, day

    assert day("window_end", "2012-10-01") == day("window_end", "2012-10-01T13:45:00Z")
    assert day("window_end", None) is None and day("window_end", "") is None
    with pytest.raises(ParamProblem, match="param `start` is '01/10/2012'"):
        day("start", "01/10/2012")


@pytest.mark.parametrize("junk", ["2012-01-01<junk>", "2012-01-01; DROP TABLE x", "2012-01-01T25:00:00", "2012-13-01"])
def test_a_date_param_with_anything_after_the_day_is_refused(junk: str) -> None:
    from datetime import UTC, date, datetime

    from airloop.core.params import ParamProblem, day

    with pytest.raises(ParamProblem, match="expected a date like 2012-06-30"):
        day("start", junk)
    # what is a date is still one: a date, a datetime (its day), an offset timestamp (the day as written)
    assert day("start", date(2012, 1, 1)) == datetime(2012, 1, 1, tzinfo=UTC)
    assert day("start", datetime(2012, 1, 1, 23, 59)) == datetime(2012, 1, 1, tzinfo=UTC)
    assert day("start", " 2012-01-01T23:00:00-05:00 ") == datetime(2012, 1, 1, tzinfo=UTC)

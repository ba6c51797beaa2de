"""The small pure helpers every layer shares: UTC moments, number formatting, JSON-ready data."""

from __future__ import annotations

import math
import os
import re
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta, timezone

import pytest

from airloop.core.intervals import Interval
from airloop.core.jsonable import jsonable
from airloop.core.numbers import num, nums, shown
from airloop.core.times import as_utc

NAIVE = datetime(2012, 3, 4, 5, 6, 7, 8)


@pytest.fixture
def far_from_utc(monkeypatch: pytest.MonkeyPatch):
    """This process in a time zone far from UTC (so reading a naive value as local time would show)."""
    monkeypatch.setenv("TZ", "Pacific/Kiritimati")  # UTC+14
    time.tzset()
    assert datetime(2012, 1, 1).astimezone().utcoffset() == timedelta(hours=14)
    yield
    monkeypatch.undo()
    time.tzset()


def test_a_naive_value_is_utc_whatever_the_local_zone(far_from_utc: None) -> None:
    assert as_utc(NAIVE) == NAIVE.replace(tzinfo=UTC)
    interval = Interval.of(NAIVE, NAIVE + timedelta(days=1))
    assert interval.start == NAIVE.replace(tzinfo=UTC) and interval.key == "2012-03-04T050607Z"


def test_the_same_meaning_in_a_fresh_process_under_tz() -> None:
    """Belt and braces: a process started with TZ set (no tzset games) reads naive values as UTC too."""
    code = (
        "from datetime import datetime; from airloop.core.times import as_utc; "
        "print(as_utc(datetime(2012, 1, 1)).isoformat())"
    )
    env = {**os.environ, "TZ": "America/Los_Angeles"}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, env=env)
    assert out.stdout.strip() == "2012-01-01T00:00:00+00:00"


def test_an_aware_value_is_converted() -> None:
    plus_two = datetime(2012, 3, 4, 7, 0, tzinfo=timezone(timedelta(hours=2)))
    moment = as_utc(plus_two)
    assert moment == plus_two and moment.utcoffset() == timedelta(0) and moment.hour == 5
    assert type(moment) is datetime


def test_a_pendulum_value_comes_back_as_a_plain_datetime() -> None:
    pendulum = pytest.importorskip("pendulum")
    moment = as_utc(pendulum.datetime(2012, 3, 4, 5, tz="Europe/Lisbon"))
    assert type(moment) is datetime and moment == datetime(2012, 3, 4, 5, tzinfo=UTC)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("2026-12-07", datetime(2026, 12, 7, tzinfo=UTC)),
        ("2026-12-07T14:30:00Z", datetime(2026, 12, 7, 14, 30, tzinfo=UTC)),
        ("2026-12-07 14:30", datetime(2026, 12, 7, 14, 30, tzinfo=UTC)),  # no zone: UTC
        ("2026-12-07T16:30:00+02:00", datetime(2026, 12, 7, 14, 30, tzinfo=UTC)),
        (" NOW ", datetime(2026, 1, 2, 3, 4, tzinfo=UTC)),
    ],
)
def test_a_moment_given_by_a_person(text: str, expected: datetime) -> None:
    from airloop.core.times import moment

    assert moment(text, "TIME", now=datetime(2026, 1, 2, 3, 4, tzinfo=UTC)) == expected


@pytest.mark.parametrize("text", ["yesterday", "", "2026-13-01", "07/12/2026"])
def test_a_bad_moment_names_the_parameter_and_the_form(text: str) -> None:
    from airloop.core.times import moment

    with pytest.raises(ValueError, match=rf"^param `at` is '{re.escape(text)}', not a time: give ISO 8601, e\.g\. "):
        moment(text, "param `at`")


@pytest.mark.parametrize(
    ("value", "text"),
    [
        (0.61234, "0.612"),
        (672.0, "672"),
        (1234.5, "1,234"),
        (999.7, "1,000"),
        (1234, "1,234"),
        (-12345.6, "-12,346"),
        (1.2345e-05, "1.23e-05"),
        (math.nan, "NaN"),
        (math.inf, "inf"),
        (-math.inf, "-inf"),
    ],
)
def test_one_number_format(value: float, text: str) -> None:
    assert num(value) == text
    assert shown(value) == text, "the view's filter is the same format"


def test_close_numbers_differ_and_keep_the_separator() -> None:
    assert nums(60.04, 60.01) == ("60.04", "60.01")
    assert nums(1234.56, 1234.51) == ("1,234.6", "1,234.5")


def test_no_value_is_a_dash_on_a_page_and_nan_in_text() -> None:
    assert shown(None) == "–" and num(None) == "NaN"  # type: ignore[arg-type]


def test_jsonable_turns_datetimes_into_text_at_any_depth() -> None:
    when = datetime(2012, 1, 1, tzinfo=UTC)
    data = {"at": when, "rows": [{"at": when, "n": 1}], "pair": (when, None), "text": "x"}
    assert jsonable(data) == {
        "at": "2012-01-01T00:00:00+00:00",
        "rows": [{"at": "2012-01-01T00:00:00+00:00", "n": 1}],
        "pair": ["2012-01-01T00:00:00+00:00", None],
        "text": "x",
    }
    assert data["at"] is when, "the input is not changed"


def test_unknown_params_are_named_with_the_params_a_dag_takes_or_none():
    from airloop.core.params import ParamProblem, refuse_unknown

    refuse_unknown({"reason": "x"}, ("reason",), "bikes_train")
    with pytest.raises(ParamProblem, match=r"bikes_train does not know the param\(s\) \['x'\]; it takes \['reason'\]"):
        refuse_unknown({"x": 1, "reason": "y"}, ("reason",), "bikes_train")
    with pytest.raises(
        ParamProblem, match=r"bikes_ingest does not know the param\(s\) \['a'\]; it takes no params\. Do"
    ):
        refuse_unknown({"a": 1}, (), "bikes_ingest", fix="Do this.")
    refuse_unknown({}, (), "bikes_ingest")

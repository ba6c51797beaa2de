from __future__ import annotations

import itertools
from datetime import UTC, datetime

import pytest
import yaml

from airloop.core.intervals import Interval, expected_intervals, parse_key
from airloop.core.spec import ModelSpec

UTC = UTC


def _spec(bikes_spec, **schedule) -> ModelSpec:
    raw = yaml.safe_load(yaml.safe_dump(bikes_spec.model_dump(mode="json")))
    raw["schedule"] = {"start": "2011-01-01", **schedule}
    return ModelSpec.model_validate(raw)


def test_key_round_trips():
    interval = Interval(datetime(2011, 3, 5, tzinfo=UTC), datetime(2011, 3, 12, tzinfo=UTC))
    assert interval.key == "2011-03-05T000000Z"
    assert parse_key(interval.key) == interval.start


def test_rejects_naive_and_empty_intervals():
    with pytest.raises(ValueError, match="timezone-aware"):
        Interval(datetime(2011, 1, 1), datetime(2011, 1, 2))
    moment = datetime(2011, 1, 1, tzinfo=UTC)
    with pytest.raises(ValueError, match="empty data interval"):
        Interval(moment, moment)


def test_weekly_intervals_are_contiguous_and_bounded_by_end(bikes_spec):
    got = list(expected_intervals(bikes_spec, until=datetime(2030, 1, 1, tzinfo=UTC)))
    assert got[0].key == "2011-01-01T000000Z"
    assert all(a.end == b.start for a, b in itertools.pairwise(got))
    assert got[-1].start <= datetime(2012, 12, 1, tzinfo=UTC) < got[-1].end
    assert len(got) == 26


def test_only_finished_intervals_are_expected(bikes_spec):
    got = list(expected_intervals(bikes_spec, until=datetime(2011, 3, 20, tzinfo=UTC)))
    assert [i.key for i in got] == ["2011-01-01T000000Z", "2011-01-29T000000Z"]


def test_cron_schedule(bikes_spec):
    spec = _spec(bikes_spec, cron="0 6 * * *")
    got = list(expected_intervals(spec, until=datetime(2011, 1, 4, 6, tzinfo=UTC)))
    assert [(i.start.day, i.start.hour, i.end.day) for i in got] == [(1, 6, 2), (2, 6, 3), (3, 6, 4)]


def test_of_accepts_other_time_zones():
    from zoneinfo import ZoneInfo

    local = datetime(2011, 1, 1, 1, tzinfo=ZoneInfo("Europe/Paris"))
    assert Interval.of(local, datetime(2011, 1, 2, tzinfo=UTC)).start == datetime(2011, 1, 1, tzinfo=UTC)

from __future__ import annotations

import itertools
from datetime import UTC, datetime, timedelta

import pytest
import yaml

from airloop.core.errors import ExpectedFailure
from airloop.core.intervals import (
    Interval,
    OffGridInterval,
    check_on_grid,
    expected_intervals,
    grid_intervals,
    parse_key,
)
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


# --- the grid: a run's interval must be exactly one interval of the timetable -----------------------------------

DAY = timedelta(days=1)


def _at(*parts: int) -> datetime:
    return datetime(*parts, tzinfo=UTC)


def test_every_interval_of_the_timetable_is_on_the_grid(bikes_spec):
    for interval in itertools.islice(expected_intervals(bikes_spec, until=_at(2013, 1, 1)), 30):
        check_on_grid(bikes_spec, interval, dag_id="m_ingest")  # does not raise, the first interval included


def test_off_grid_run_is_refused_naming_the_overlaps_and_the_backfill(bikes_spec):
    # A manual run at logical date 2011-02-12 of a 28-day timetable from 2011-01-01: [2011-01-15, 2011-02-12).
    with pytest.raises(OffGridInterval) as refused:
        check_on_grid(bikes_spec, Interval(_at(2011, 1, 15), _at(2011, 2, 12)), dag_id="m_ingest")
    message = str(refused.value)
    assert "[2011-01-15T00:00:00+00:00, 2011-02-12T00:00:00+00:00)" in message
    assert "[2011-01-01T00:00:00+00:00, 2011-01-29T00:00:00+00:00) (partition 2011-01-01T000000Z)" in message
    assert "[2011-01-29T00:00:00+00:00, 2011-02-26T00:00:00+00:00) (partition 2011-01-29T000000Z)" in message
    assert (
        "airflow backfill create --dag-id m_ingest --from-date 2011-01-01T00:00:00+00:00 "
        "--to-date 2011-01-29T00:00:00+00:00 --reprocess-behavior completed"
    ) in message
    assert isinstance(refused.value, ExpectedFailure)  # the task guard fails it without retries


def test_aligned_start_with_the_wrong_length_is_refused(bikes_spec):
    # Starts on the grid but spans two intervals (e.g. a timetable changed under old runs): both are named.
    with pytest.raises(OffGridInterval, match=r"--from-date 2011-01-01T00:00:00\+00:00 --to-date 2011-01-29"):
        check_on_grid(bikes_spec, Interval(_at(2011, 1, 1), _at(2011, 2, 26)), dag_id="m_ingest")


def test_interval_straddling_the_start_names_only_the_first_interval(bikes_spec):
    with pytest.raises(OffGridInterval) as refused:
        check_on_grid(bikes_spec, Interval(_at(2010, 12, 18), _at(2011, 1, 15)), dag_id="m_ingest")
    assert "--from-date 2011-01-01T00:00:00+00:00 --to-date 2011-01-01T00:00:00+00:00" in str(refused.value)
    assert "2010-12" not in str(refused.value).split("is not an interval")[1]


def test_interval_before_the_timetable_is_refused(bikes_spec):
    with pytest.raises(OffGridInterval, match="ends before the timetable's first interval"):
        check_on_grid(bikes_spec, Interval(_at(2010, 12, 4), _at(2011, 1, 1)), dag_id="m_ingest")


def test_time_zone_of_the_bounds_does_not_matter(bikes_spec):
    from zoneinfo import ZoneInfo

    paris = ZoneInfo("Europe/Paris")
    # [2011-01-29, 2011-02-26) UTC, given as Paris wall time (UTC+1 in winter).
    on_grid = Interval.of(datetime(2011, 1, 29, 1, tzinfo=paris), datetime(2011, 2, 26, 1, tzinfo=paris))
    check_on_grid(bikes_spec, on_grid, dag_id="m_ingest")
    # Paris midnight is 23:00 UTC the day before: off the grid by an hour.
    with pytest.raises(OffGridInterval, match="2011-01-28T23:00:00"):
        check_on_grid(
            bikes_spec,
            Interval.of(datetime(2011, 1, 29, tzinfo=paris), datetime(2011, 2, 26, tzinfo=paris)),
            dag_id="m",
        )


def test_monthly_cron_grid_has_uneven_intervals(bikes_spec):
    spec = _spec(bikes_spec, cron="0 0 1 * *")
    check_on_grid(spec, Interval(_at(2011, 2, 1), _at(2011, 3, 1)), dag_id="m_ingest")  # 28 days
    check_on_grid(spec, Interval(_at(2011, 3, 1), _at(2011, 4, 1)), dag_id="m_ingest")  # 31 days
    with pytest.raises(OffGridInterval) as refused:
        check_on_grid(spec, Interval(_at(2011, 2, 1), _at(2011, 3, 4)), dag_id="m_ingest")  # 31 days, off
    assert "--from-date 2011-02-01T00:00:00+00:00 --to-date 2011-03-01T00:00:00+00:00" in str(refused.value)


def test_irregular_cron_grid(bikes_spec):
    # Mondays and Thursdays at 06:00: intervals of 3 and 4 days. 2011-01-03 is a Monday.
    spec = _spec(bikes_spec, cron="0 6 * * 1,4")
    mon, thu, next_mon = _at(2011, 1, 3, 6), _at(2011, 1, 6, 6), _at(2011, 1, 10, 6)
    check_on_grid(spec, Interval(mon, thu), dag_id="m_ingest")
    check_on_grid(spec, Interval(thu, next_mon), dag_id="m_ingest")
    assert grid_intervals(spec, Interval(mon + DAY, next_mon)) == [Interval(mon, thu), Interval(thu, next_mon)]
    with pytest.raises(OffGridInterval, match=r"--from-date 2011-01-03T06:00:00\+00:00 --to-date 2011-01-06T06"):
        check_on_grid(spec, Interval(mon + DAY, thu + DAY), dag_id="m_ingest")  # 3 days, shifted by one


def test_first_cron_interval_starts_at_the_first_tick_after_the_start(bikes_spec):
    # Schedule start 2011-01-01 (a Saturday): the grid opens at Monday 2011-01-03 06:00; the tick before is not on it.
    spec = _spec(bikes_spec, cron="0 6 * * 1,4")
    first = Interval(_at(2011, 1, 3, 6), _at(2011, 1, 6, 6))
    assert grid_intervals(spec, Interval(_at(2010, 12, 30, 6), _at(2011, 1, 4))) == [first]
    check_on_grid(spec, first, dag_id="m_ingest")
    with pytest.raises(OffGridInterval, match="ends before the timetable's first interval"):
        check_on_grid(spec, Interval(_at(2010, 12, 30, 6), _at(2011, 1, 3, 6)), dag_id="m_ingest")

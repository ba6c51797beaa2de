"""Data intervals: the unit of everything airloop writes.

Every partition, report and prediction batch is keyed to one interval ``[start, end)`` of the model's timetable,
so re-running an interval overwrites exactly its own outputs and nothing else.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime

from airloop.core.spec import ModelSpec
from airloop.core.times import as_utc

_KEY_FORMAT = "%Y-%m-%dT%H%M%SZ"
#: croniter yields ticks strictly after its base time, so start one tick before the schedule start.
_TICK = datetime.resolution


@dataclass(frozen=True, order=True)
class Interval:
    """A half-open data interval in UTC."""

    start: datetime
    end: datetime

    def __post_init__(self) -> None:
        if self.start.tzinfo is None or self.end.tzinfo is None:
            raise ValueError(f"interval bounds must be timezone-aware, got {self.start!r} and {self.end!r}")
        if self.end <= self.start:
            raise ValueError(
                f"empty data interval {self.start.isoformat()} -> {self.end.isoformat()}: the DAG needs a timetable "
                "with real intervals (CronDataIntervalTimetable or DeltaDataIntervalTimetable), not a plain cron"
            )

    @property
    def key(self) -> str:
        """The partition key: the interval start in ISO 8601 basic time, e.g. ``2011-01-01T000000Z``."""
        return self.start.astimezone(UTC).strftime(_KEY_FORMAT)

    def __str__(self) -> str:
        return f"[{self.start.isoformat()}, {self.end.isoformat()})"

    @classmethod
    def of(cls, start: datetime, end: datetime) -> Interval:
        """Build from Airflow's ``data_interval_start``/``data_interval_end`` (pendulum or datetime)."""
        return cls(as_utc(start), as_utc(end))


def parse_key(key: str) -> datetime:
    """The interval start encoded in a partition key."""
    return datetime.strptime(key, _KEY_FORMAT).replace(tzinfo=UTC)


def expected_intervals(spec: ModelSpec, until: datetime) -> Iterator[Interval]:
    """The intervals the timetable produces whose end is at or before ``until`` (and within the spec's end)."""
    schedule = spec.schedule
    last_start = schedule.end_datetime
    step = schedule.interval
    if step is not None:
        start = schedule.start_datetime
        while start + step <= until and (last_start is None or start <= last_start):
            yield Interval(start, start + step)
            start += step
        return
    from croniter import croniter  # only for cron schedules; Airflow depends on it

    assert schedule.cron is not None
    ticks = croniter(schedule.cron, schedule.start_datetime - _TICK)
    start = ticks.get_next(datetime)
    while True:
        end = ticks.get_next(datetime)
        if end > until or (last_start is not None and start > last_start):
            return
        yield Interval(start, end)
        start = end

"""Data intervals: the unit of everything airloop writes.

Every partition, report and prediction batch is keyed to one interval ``[start, end)`` of the model's timetable,
so re-running an interval overwrites exactly its own outputs and nothing else.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime

from airloop.core.errors import ExpectedFailure
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


class OffGridInterval(ExpectedFailure, ValueError):
    """A run's data interval is not one of the timetable's intervals: publishing it would duplicate rows."""


def grid_intervals(spec: ModelSpec, span: Interval) -> list[Interval]:
    """The timetable's intervals that overlap ``span``, in order.

    The grid is every interval the spec's schedule produces from its start onward: ``every`` steps from the start
    date, or consecutive cron ticks from the first tick at or after it. The schedule's ``end`` is not applied
    (it stops the timetable, it does not move the grid), so a run past the end is judged by its alignment alone.
    """
    schedule = spec.schedule
    origin = schedule.start_datetime
    step = schedule.interval
    if step is not None:
        first = max(0, (span.start - origin) // step)
        last = -((origin - span.end) // step)  # ceil((end - origin) / step): the first grid start at or after end
        return [Interval(origin + k * step, origin + (k + 1) * step) for k in range(first, last)]
    from croniter import croniter  # only for cron schedules; Airflow depends on it

    assert schedule.cron is not None
    # The first tick at or after max(origin, span.start); the tick before it opens an interval overlapping the
    # span's start when that tick is on the grid too (at or after the origin).
    base = max(origin, span.start)
    tick = croniter(schedule.cron, base - _TICK).get_next(datetime)
    found: list[Interval] = []
    if tick > span.start:
        # croniter marks a previous tick fold=1; drop it so the bounds print and compare like the others.
        before = croniter(schedule.cron, tick).get_prev(datetime).replace(fold=0)
        if before >= origin:
            found.append(Interval(before, tick))
    ticks = croniter(schedule.cron, tick)
    while tick < span.end:
        following = ticks.get_next(datetime)
        found.append(Interval(tick, following))
        tick = following
    return found


def backfill_command(dag_id: str, intervals: list[Interval]) -> str:
    """The Airflow CLI command that (re-)runs exactly these consecutive grid intervals.

    A backfill runs every interval whose start (its logical date) lies in ``[--from-date, --to-date]``, both
    inclusive; full ISO timestamps keep the command exact whatever Airflow's default time zone is.
    """
    return (
        f"airflow backfill create --dag-id {dag_id} --from-date {intervals[0].start.isoformat()} "
        f"--to-date {intervals[-1].start.isoformat()} --reprocess-behavior completed"
    )


def check_on_grid(spec: ModelSpec, interval: Interval, *, dag_id: str) -> None:
    """Refuse a data interval that is not exactly one interval of the spec's timetable.

    A manual run at an off-grid logical date (Trigger in the UI, a backfill from an off-grid date) gets an interval
    that overlaps one or two grid intervals; its partition would hold their rows a second time. The error names the
    grid intervals it overlaps and the backfill command that runs them instead.
    """
    overlapping = grid_intervals(spec, interval)
    if overlapping == [interval]:
        return
    s = spec.schedule
    timetable = f"`{s.every or s.cron or '1d'}` from {s.start}"
    head = (
        f"This {dag_id} run's data interval {interval} is not an interval of the model's timetable ({timetable}), "
        "so it is refused and nothing of it is extracted or published: "
    )
    if not overlapping:
        raise OffGridInterval(
            f"{head}it ends before the timetable's first interval, so there is nothing of it to ingest. "
            "Check the run's logical date."
        )
    listed = ", ".join(f"{i} (partition {i.key})" for i in overlapping)
    raise OffGridInterval(
        f"{head}it overlaps the timetable interval(s) {listed}, and publishing it would count their rows twice "
        "(training, the holdout, the gate, the monitor and scoring).\n"
        f"To (re-)ingest those intervals, backfill them:\n  {backfill_command(dag_id, overlapping)}\n"
        f"To run one by hand, Trigger {dag_id} with its end as the logical date "
        f"(e.g. {overlapping[0].end.isoformat()} for {overlapping[0]}): a manual run covers the interval that "
        "ends at its logical date."
    )

"""Freshness: has a new interval been validated as often as the model's schedule expects?

A model's ingest DAG validates one interval per tick of its timetable. When its source stops delivering (or every
batch is quarantined, or the DAG is paused) nothing fails on its own: the data just gets old. :func:`check` counts
the expected intervals (:func:`airloop.core.intervals.expected_intervals`, which honours the schedule's start and
end) that have ended after the newest validated one; ``after`` or more of them is a breach. The interval that has
just ended is normally still being ingested, so ``after`` should be 2 or more.

Pure: the newest validated end is read by the caller (the warehouse's ``validation_results``).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from airloop.core.intervals import Interval, expected_intervals
from airloop.core.spec import ModelSpec
from airloop.core.times import as_utc


@dataclass(frozen=True)
class Freshness:
    """One freshness check of one model: what was expected by ``as_of`` and what is missing."""

    model: str
    as_of: datetime
    newest_end: datetime | None
    #: Expected intervals that have ended (by ``as_of``) after the newest validated one, oldest first.
    missing: tuple[Interval, ...]
    after: int
    schedule: str

    @property
    def breached(self) -> bool:
        return len(self.missing) >= self.after

    @property
    def summary(self) -> str:
        """One paragraph for the log, the task's failure and the notification."""
        newest = self.newest_end.isoformat() if self.newest_end else "none (nothing validated yet)"
        head = (
            f"{self.model}: newest validated interval ends {newest}; as of {self.as_of.isoformat()}, "
            f"{len(self.missing)} expected interval(s) of schedule {self.schedule} have ended since"
        )
        if not self.missing:
            return f"{head}. Fresh."
        span = f"{self.missing[0].start.isoformat()} to {self.missing[-1].end.isoformat()}"
        verdict = "STALE" if self.breached else "within tolerance"
        return f"{head} ({span}); {verdict} (breach at {self.after})."

    def to_dict(self) -> dict[str, object]:
        return {
            "model": self.model,
            "as_of": self.as_of.isoformat(),
            "newest_end": None if self.newest_end is None else self.newest_end.isoformat(),
            "missing": len(self.missing),
            "first_missing_start": self.missing[0].start.isoformat() if self.missing else None,
            "last_missing_end": self.missing[-1].end.isoformat() if self.missing else None,
            "after": self.after,
            "schedule": self.schedule,
            "breached": self.breached,
            "summary": self.summary,
        }


def check(spec: ModelSpec, newest_end: datetime | None, as_of: datetime, *, after: int) -> Freshness:
    """Count the expected intervals that ended by ``as_of`` after ``newest_end`` (all of them when None)."""
    if after < 1:
        raise ValueError(f"after must be 1 or more intervals, got {after}")
    as_of = as_utc(as_of)
    newest = None if newest_end is None else as_utc(newest_end)
    missing = tuple(i for i in expected_intervals(spec, as_of) if newest is None or i.end > newest)
    s = spec.schedule
    return Freshness(
        model=spec.name,
        as_of=as_of,
        newest_end=newest,
        missing=missing,
        after=after,
        schedule=s.every or s.cron or "1d",
    )

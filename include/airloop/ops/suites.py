"""The data steward's check: does a suite load, and what would it say about an interval's data?

``airloop suites check MODEL [--on DATE]`` calls :func:`check`. It reads the source and the suites and
writes nothing: no lake partition, no warehouse row, no report.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

from airloop.adapters.expectations import Failure, SuiteFile, load_suites
from airloop.core.intervals import Interval, expected_intervals
from airloop.core.spec import ModelSpec


@dataclass
class CheckReport:
    suites: list[SuiteFile]
    interval: Interval | None = None
    rows: int | None = None
    passed: bool | None = None
    failures: list[Failure] = field(default_factory=list)

    def lines(self) -> list[str]:
        out = [
            f"OK   {s.path.name}: suite {s.name!r}, {s.expectation_count} expectations, digest {s.digest}"
            for s in self.suites
        ]
        if self.interval is None:
            return out
        verdict = "would PASS" if self.passed else "would FAIL (and be quarantined)"
        out.append(f"Dry run on interval {self.interval} ({self.rows} rows): {verdict}.")
        out += [f"  - {f.describe()}" for f in self.failures]
        return out


def interval_containing(spec: ModelSpec, day: date) -> Interval:
    """The timetable's interval that contains the start of ``day``."""
    moment = datetime(day.year, day.month, day.day, tzinfo=UTC)
    for interval in expected_intervals(spec, until=moment + _FAR):
        if interval.start <= moment < interval.end:
            return interval
    raise ValueError(
        f"{day} is outside the schedule of {spec.name} (starts {spec.schedule.start}"
        f"{', ends ' + str(spec.schedule.end) if spec.schedule.end else ''}); pick a date inside it"
    )


def check(spec: ModelSpec, expectations_dir: Path, on: date | None = None) -> CheckReport:
    """Load the model's suites (raising :class:`airloop.adapters.expectations.SuiteError`), then optionally dry-run
    them."""
    suites = load_suites(spec, expectations_dir)
    report = CheckReport(suites=suites)
    if on is None:
        return report
    from airloop.adapters.db import engine_for
    from airloop.adapters.expectations import validate
    from airloop.adapters.source import extract_interval

    interval = interval_containing(spec, on)
    frame = extract_interval(engine_for(spec.source.connection), spec, interval).frame
    outcome = validate(frame, suites, keys=spec.keys)
    report.interval, report.rows, report.passed, report.failures = (
        interval,
        len(frame),
        outcome.success,
        outcome.failures,
    )
    return report


_FAR = timedelta(days=366)  # longer than any interval a timetable gives

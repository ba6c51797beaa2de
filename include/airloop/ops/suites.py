"""The data steward's check: does a suite load, and what would it say about an interval's data?

``airloop suites check MODEL [--suite FILE ...] [--on DATE|PARTITION]`` calls :func:`check`. It reads the source and
the suites and writes nothing: no lake partition, no warehouse row, no report. ``--on`` takes a date (the interval
that contains it) or a partition key (``2011-02-26T000000Z``: exactly that interval, as the view's steward page
lists them); ``--suite`` dry-runs only the given suite files (a draft anywhere on disk), not the model's folder.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

from airloop.adapters.expectations import Failure, SuiteError, SuiteFile, load_suite_file, load_suites
from airloop.core.errors import ExpectedFailure
from airloop.core.intervals import Interval, expected_intervals, parse_key
from airloop.core.rules import rule_text, same_rule, share_text
from airloop.core.spec import ModelSpec
from airloop.stages.ingest.label_rules import DeferredRule, defer_label_rules, labels_pending


class IntervalNotFound(ExpectedFailure, ValueError):
    """``--on`` names no interval of the model's schedule; the message says which exist near it."""


@dataclass
class CheckReport:
    suites: list[SuiteFile]
    interval: Interval | None = None
    rows: int | None = None
    passed: bool | None = None
    failures: list[Failure] = field(default_factory=list)
    #: Why the interval's labels are not due (None: they are), and the rules on the target set aside meanwhile.
    labels_pending: str | None = None
    deferred: list[DeferredRule] = field(default_factory=list)

    def lines(self) -> list[str]:
        out = [
            f"OK   {s.path.name}: suite {s.name!r}, {s.expectation_count} expectations, digest {s.digest}"
            for s in self.suites
        ]
        if self.interval is None:
            return out
        verdict = "would PASS" if self.passed else "would FAIL (and be quarantined)"
        out.append(f"Dry run on interval {self.interval} (partition {self.interval.key}, {self.rows} rows): {verdict}.")
        if self.labels_pending:
            out.append(f"Labels not due ({self.labels_pending}): rules on the target are set aside for this batch.")
        aside = {(d.suite, d.type, repr(d.kwargs)) for d in self.deferred if d.action == "set aside"}
        for s in self.suites:
            out.append(f"  suite {s.name}:")
            for exp in s.raw["expectations"]:
                kwargs = exp.get("kwargs") or {}
                if (s.name, exp["type"], repr(dict(kwargs))) in aside:
                    out.append(f"    wait  {rule_text(exp['type'], kwargs)}: set aside until the labels are due")
                    continue
                found = next((f for f in self.failures if same_rule(s.name, exp["type"], kwargs, asdict(f))), None)
                out.append(f"    {'FAIL' if found else 'pass'}  {rule_text(exp['type'], kwargs)}{_counts(found)}")
        out += ["Failures in detail:", *(f"  - {f.describe()}" for f in self.failures)] if self.failures else []
        return out


def _counts(failure: Failure | None) -> str:
    if failure is None:
        return ""
    if failure.error:
        return f": could not be evaluated: {failure.error}"
    if failure.unexpected_count is not None:
        share = f" ({share_text(failure.unexpected_count / failure.element_count)})" if failure.element_count else ""
        return f": {failure.unexpected_count} of {failure.element_count} rows unexpected{share}"
    return f": observed {failure.observed!r}" if failure.observed is not None else ""


def interval_containing(spec: ModelSpec, day: date) -> Interval:
    """The timetable's interval that contains the start of ``day``."""
    moment = datetime(day.year, day.month, day.day, tzinfo=UTC)
    for interval in expected_intervals(spec, until=moment + _FAR):
        if interval.start <= moment < interval.end:
            return interval
    raise IntervalNotFound(
        f"{day} is outside the schedule of {spec.name} (starts {spec.schedule.start}"
        f"{', ends ' + str(spec.schedule.end) if spec.schedule.end else ''}); pick a date inside it"
    )


def interval_of_key(spec: ModelSpec, key: str) -> Interval:
    """The timetable's interval whose partition key is ``key`` (e.g. ``2011-02-26T000000Z``)."""
    try:
        start = parse_key(key)
    except ValueError:
        raise IntervalNotFound(
            f"--on {key!r} is neither a date (YYYY-MM-DD) nor a partition key (YYYY-MM-DDTHHMMSSZ, e.g. "
            "2011-02-26T000000Z; the view's steward page and `airloop status` list them)"
        ) from None
    before: Interval | None = None
    after: Interval | None = None
    for interval in expected_intervals(spec, until=start + _FAR):
        if interval.key == key:
            return interval
        if interval.start > start:
            after = interval
            break
        before = interval
    near = [i for i in (before, after) if i is not None]
    listed = ", ".join(i.key for i in near) or "none"
    raise IntervalNotFound(
        f"no interval of {spec.name}'s schedule has partition key {key!r} (nearest: {listed}); "
        "use one of those, or a date (YYYY-MM-DD) for the interval that contains it"
    )


def resolve_interval(spec: ModelSpec, on: str | date) -> Interval:
    """``--on``: a date (the interval containing it) or a partition key (exactly that interval)."""
    if isinstance(on, date):
        return interval_containing(spec, on)
    try:
        day = date.fromisoformat(on) if len(on) == 10 else None
    except ValueError:
        day = None
    return interval_containing(spec, day) if day is not None else interval_of_key(spec, on)


def check(
    spec: ModelSpec,
    expectations_dir: Path,
    on: str | date | None = None,
    *,
    suite_files: list[Path] | None = None,
) -> CheckReport:
    """Load the model's suites (or only ``suite_files``; raising :class:`SuiteError` naming each bad file), then
    optionally dry-run them on the interval ``on`` names (raising :class:`IntervalNotFound` when none)."""
    suites = _given(spec, suite_files) if suite_files else load_suites(spec, expectations_dir)
    report = CheckReport(suites=suites)
    if on is None:
        return report
    from airloop.adapters.db import engine_for
    from airloop.adapters.expectations import validate
    from airloop.adapters.source import extract_interval, withheld_columns

    interval = resolve_interval(spec, on)
    frame = extract_interval(engine_for(spec.source.connection), spec, interval, withhold=withheld_columns(spec)).frame
    # As the ingest task would validate it now: the target's rules wait while its labels are not due.
    report.labels_pending = labels_pending(spec, interval, datetime.now(UTC))
    applied = suites
    if report.labels_pending:
        applied, report.deferred = defer_label_rules(suites, spec.target.name, [str(c) for c in frame.columns])
    outcome = validate(frame, applied, keys=spec.keys)
    report.interval, report.rows, report.passed, report.failures = (
        interval,
        len(frame),
        outcome.success,
        outcome.failures,
    )
    return report


def _given(spec: ModelSpec, files: list[Path]) -> list[SuiteFile]:
    problems, suites = [], []
    for path in files:
        if not path.is_file():
            problems.append(
                f"{path}: no such suite file (give the path of a suite JSON file, e.g. expectations/"
                f"{spec.suite_dir}/values.json)"
            )
            continue
        try:
            suites.append(load_suite_file(path, spec))
        except SuiteError as exc:
            problems.append(str(exc))
    if problems:
        raise SuiteError("\n".join(problems))
    return suites


_FAR = timedelta(days=366)  # longer than any interval a timetable gives

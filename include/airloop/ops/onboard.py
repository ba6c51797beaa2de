"""Onboarding a model: ``airloop model new`` (profile a source, write a starter spec and suites) and
``airloop model check`` (load them and dry-run one interval: extract, validate, fit; nothing written).

The source is read through :func:`airloop.adapters.db.engine_for` (the model's connection) with SQLAlchemy: the row
count and time range over every row, and at most :data:`airloop.ops.profiling.PROFILE_ROWS` of the newest rows to
profile. The pure steps are in :mod:`airloop.ops.profiling` and :mod:`airloop.ops.starter_spec`.
"""

from __future__ import annotations

import dataclasses
import json
import tempfile
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

from airloop.core.intervals import Interval, expected_intervals
from airloop.core.spec import ModelSpec, load_spec
from airloop.core.times import as_utc
from airloop.ops import profiling, starter_spec
from airloop.ops.profiling import OnboardProblem, Request, Sample

if TYPE_CHECKING:
    import pandas as pd
    from sqlalchemy.engine import Connection

_EARLIEST = datetime(1900, 1, 1)
_LATEST = datetime(2200, 1, 1)
#: Historical data (the newest row older than this) gets a schedule `end` and no monitoring cron.
_LIVE = timedelta(days=60)
SUITE_FILES = ("schema.json", "values.json")


def _utc(value: Any) -> datetime:
    """A time as the source returns it (a datetime, or text on SQLite) in UTC, by :func:`core.times.as_utc`."""
    import pandas as pd

    return as_utc(pd.Timestamp(value).to_pydatetime())


def _selectable(conn: Connection, request: Request, start: datetime | None) -> tuple[Any, Any]:
    """The source as a selectable and its time column, from ``start`` on (naive UTC bounds, as stored)."""
    import sqlalchemy as sa

    lower = (start or _EARLIEST).replace(tzinfo=None)
    if request.table is not None:
        try:
            table = sa.Table(request.table, sa.MetaData(), autoload_with=conn)
        except sa.exc.NoSuchTableError:
            tables = sa.inspect(conn).get_table_names()
            raise OnboardProblem(
                f"--table {request.table!r} does not exist (tables: {', '.join(tables) or 'none'}). Load a CSV with "
                "`airloop source load FILE --table T`, or pass --connection"
            ) from None
        if request.time_column not in table.c:
            raise OnboardProblem(
                f"--time-column {request.time_column!r} is not a column of {request.table!r} "
                f"(columns: {', '.join(table.c.keys())})"
            )
        time = table.c[request.time_column]
        return sa.select(table).where(time >= lower).subquery("profiled"), request.time_column
    if not request.query or ":start" not in request.query or ":end" not in request.query:
        raise OnboardProblem("--query must select `time >= :start AND time < :end` with the bound :start and :end")
    query = sa.text(request.query).bindparams(start=lower, end=_LATEST)
    columns = conn.execute(sa.text(request.query).bindparams(start=_LATEST, end=_LATEST)).keys()
    if request.time_column not in columns:
        raise OnboardProblem(
            f"--time-column {request.time_column!r} is not a column of the --query (columns: {', '.join(columns)})"
        )
    return query.columns(*[sa.column(c) for c in columns]).subquery("profiled"), request.time_column


def read_sample(request: Request, cap: int = profiling.PROFILE_ROWS) -> Sample:
    """Count the source's rows and time range, and read at most ``cap`` of its newest rows."""
    import pandas as pd
    import sqlalchemy as sa

    from airloop.adapters.db import engine_for

    start = datetime(request.start.year, request.start.month, request.start.day) if request.start else None
    with engine_for(request.connection).connect() as conn:
        source, time = _selectable(conn, request, start)
        t = source.c[time]
        total, first, last = conn.execute(sa.select(sa.func.count(), sa.func.min(t), sa.func.max(t))).one()
        if not total:
            raise OnboardProblem(
                f"the source has no rows{' from ' + str(request.start) if request.start else ''}: nothing to profile"
            )
        frame = pd.read_sql(sa.select(source).order_by(t.desc()).limit(cap), conn)
    frame[time] = pd.to_datetime(frame[time], utc=True)
    frame = frame.sort_values(time, kind="stable").reset_index(drop=True)
    return Sample(frame=frame, total_rows=int(total), first=_utc(first), last=_utc(last))


@dataclass
class NewModel:
    """What ``airloop model new`` wrote."""

    spec_path: Path
    suite_paths: list[Path]
    kept: list[Path]
    features: list[str]
    left_out: list[str]
    profiled_rows: int
    intervals: int

    def lines(self) -> list[str]:
        out = [f"Wrote {self.spec_path} ({len(self.features)} features: {', '.join(self.features)})."]
        if self.left_out:
            out.append(f"Left out (see the comment in the spec): {', '.join(self.left_out)}.")
        out += [f"Wrote {p}." for p in self.suite_paths]
        out += [f"Kept {p} (not generated; --force leaves it as it is)." for p in self.kept]
        out.append(
            f"Profiled {self.profiled_rows} rows; the suites pass on the {self.intervals} complete intervals profiled."
        )
        name = self.spec_path.stem
        out.append(f"Next: edit both (comments say why each value is there), then `airloop model check {name}`.")
        return out


def new_model(request: Request, models_dir: Path, expectations_dir: Path, *, force: bool = False) -> NewModel:
    """Profile the source and write ``<models_dir>/<name>.yaml`` and ``<expectations_dir>/<name>/*.json``.

    Refuses to overwrite an existing spec or suite folder unless ``force`` (which rewrites the spec and the
    generated suite files, keeping any other file in the folder). Both are checked (the spec loads, the suites load
    and pass on every complete interval profiled) before anything is written.
    """
    spec_path, suite_dir = models_dir / f"{request.name}.yaml", expectations_dir / request.name
    existing = [p for p in (spec_path, suite_dir) if p.exists()]
    if existing and not force:
        raise OnboardProblem(
            f"{' and '.join(map(str, existing))} already exist: `airloop model new` never overwrites a spec or suites "
            "people may have edited. Pick another name, remove them, or pass --force to rewrite the spec and the "
            "generated suite files"
        )
    sample = read_sample(request)
    drafted = draft(request, sample)
    with tempfile.TemporaryDirectory(prefix="airloop-onboard-") as tmp:
        staged = _stage(Path(tmp), request.name, drafted.text, drafted.suites)
        spec = load_spec(staged / "models" / f"{request.name}.yaml")
        _check_suites(spec, staged / "expectations", sample, drafted.intervals)
    models_dir.mkdir(parents=True, exist_ok=True)
    suite_dir.mkdir(parents=True, exist_ok=True)
    spec_path.write_text(drafted.text, encoding="utf-8")
    written = []
    for file_name, suite in drafted.suites.items():
        (suite_dir / file_name).write_text(json.dumps(suite, indent=2) + "\n", encoding="utf-8")
        written.append(suite_dir / file_name)
    kept = sorted(p for p in suite_dir.glob("*.json") if p not in written)
    return NewModel(
        spec_path,
        written,
        kept,
        drafted.features,
        drafted.left_out,
        len(sample.frame),
        len(drafted.intervals),
    )


def _stage(folder: Path, name: str, text: str, suites: dict[str, dict[str, Any]]) -> Path:
    (folder / "models").mkdir()
    (folder / "expectations" / name).mkdir(parents=True)
    (folder / "models" / f"{name}.yaml").write_text(text, encoding="utf-8")
    for file_name, suite in suites.items():
        (folder / "expectations" / name / file_name).write_text(json.dumps(suite), encoding="utf-8")
    return folder


#: The generated suites are checked on at most this many profiled intervals (spread over the profile).
SELF_CHECKS = 24


def _check_suites(spec: ModelSpec, expectations_dir: Path, sample: Sample, intervals: list[Interval]) -> None:
    """The generated suites must load and pass on the profiled intervals (anything else is a bug here)."""
    from airloop.adapters.expectations import load_suites, validate

    suites = load_suites(spec, expectations_dir)
    step = max(1, len(intervals) // SELF_CHECKS)
    times = sample.frame[spec.source.time_column]
    for interval in intervals[::step]:
        frame = sample.frame.loc[(times >= interval.start) & (times < interval.end)].reset_index(drop=True)
        outcome = validate(frame, suites, keys=spec.keys)
        if not outcome.success:
            problems = "; ".join(f.describe() for f in outcome.failures)
            raise RuntimeError(f"generated suites fail on the profiled interval {interval}: {problems}")


@dataclass(frozen=True)
class Drafted:
    """The rendered spec and suites, and what they were made from."""

    text: str
    suites: dict[str, dict[str, Any]]
    features: list[str]
    left_out: list[str]
    intervals: list[Interval]


@dataclass(frozen=True)
class _Timetable:
    """Enough of a spec for :func:`airloop.core.intervals.expected_intervals`: its schedule."""

    schedule: Any


def _intervals(request: Request, choice: profiling.Choice, start: date, until: datetime) -> list[Interval]:
    from pydantic import ValidationError

    from airloop.core.spec import Schedule

    try:
        schedule = Schedule(every=choice.every, cron=choice.cron, start=start)
        return list(expected_intervals(cast(ModelSpec, _Timetable(schedule)), until=until))
    except ValidationError as exc:
        raise OnboardProblem(f"the schedule (--every/--cron/--start) is not valid: {exc.errors()[0]['msg']}") from None
    except (ValueError, KeyError) as exc:  # croniter's errors for a bad expression are ValueErrors
        raise OnboardProblem(f"--cron {choice.cron!r} is not a cron expression ({exc}); e.g. '0 0 1 * *'") from None


def draft(request: Request, sample: Sample) -> Drafted:
    """Profile the sample, check the request, and render the starter spec and suites."""
    columns = profiling.profile(sample.frame)
    profiling.check_request(request, columns, sample.frame)
    choice = profiling.suggest_schedule(request, sample.total_rows, sample.first, sample.last)
    start = _start_of(request, sample)
    intervals = _intervals(request, choice, start, sample.last)
    live = sample.last > datetime.now(UTC) - _LIVE
    end = None if live or not intervals else intervals[-1].start.date()
    counts = profiling.count_intervals(sample.frame, request.time_column, intervals)
    target, classes = _target(request, columns[request.target], sample.frame[request.target])
    columns[request.target] = target
    special = {request.time_column, request.target, *request.key_columns, *request.leakage}
    usable = [c for c in columns.values() if c.name not in special and c.kind in ("numeric", "categorical")]
    left_out = [c for c in columns.values() if c.name not in special and c not in usable]
    left_out += [
        dataclasses.replace(
            columns[k], reason="a key (--keys): it identifies a row; make it a feature if it also carries signal"
        )
        for k in request.keys
        if k != request.time_column and columns[k].kind in ("numeric", "categorical")
    ]
    if not usable:
        raise OnboardProblem(
            "no column can be a feature: every column is the time column, the target, a key, a leakage column or "
            f"left out ({'; '.join(f'{c.name}: {c.reason}' for c in left_out) or 'none'})"
        )
    known = [c for c in columns.values() if c.name in special or c in usable]
    suites = {"schema.json": profiling.schema_suite(request.name, request, known, counts)}
    values = profiling.values_suite(request.name, known)
    if values:
        suites["values.json"] = values
    days = max((sample.last - sample.first).total_seconds() / 86400, 1.0)
    text = starter_spec.render(
        starter_spec.Draft(
            request=request,
            choice=choice,
            start=start,
            end=end,
            first=sample.first.date(),
            last=sample.last.date(),
            profiled_rows=len(sample.frame),
            total_rows=sample.total_rows,
            features=usable,
            left_out=left_out,
            target=target,
            classes=classes,
            rows_per_day=sample.total_rows / days,
        )
    )
    covered = [iv for iv, n in zip(counts.intervals, counts.rows, strict=True) if n > 0]
    return Drafted(text, suites, [c.name for c in usable], [c.name for c in left_out], covered)


def _target(
    request: Request, column: profiling.Column, values: pd.Series
) -> tuple[profiling.Column, dict[Any, float] | None]:
    """A classification target becomes categorical with its classes (value set) and their shares."""
    if request.task != "classification":
        return column, None
    shares = values.dropna().value_counts(normalize=True).sort_index()
    classes = {profiling.plain(k): float(v) for k, v in shares.items()}
    return dataclasses.replace(column, kind="categorical", values=list(classes)), classes


def _start_of(request: Request, sample: Sample) -> date:
    """The schedule's start: as given, else the first row's day (the first of its month for a cron schedule)."""
    if request.start is not None:
        return request.start
    first = sample.first.date()
    return first.replace(day=1) if request.cron else first


@dataclass
class ModelCheck:
    """What ``airloop model check`` found: each step's line, and the problems that would fail."""

    name: str
    lines: list[str]
    problems: list[str]

    @property
    def passed(self) -> bool:
        return not self.problems

    def report(self) -> list[str]:
        verdict = "PASS" if self.passed else f"FAIL ({len(self.problems)} problem(s))"
        return [*self.lines, *(f"  - {p}" for p in self.problems), f"model check {self.name}: {verdict}"]


def check_model(name: str, models_dir: Path, expectations_dir: Path, on: date | None = None) -> ModelCheck:
    """Load the spec and its suites, then dry-run one interval (``on``'s, default the newest with data): extract it,
    validate it, fit the spec's pipeline on it. Writes nothing (no lake, warehouse or MLflow)."""
    from airloop.adapters.expectations import SuiteError, load_suites
    from airloop.core.spec import SpecError, get_spec

    result = ModelCheck(name, [], [])
    try:
        spec = get_spec(name, models_dir)
    except SpecError as exc:
        result.problems.append(f"the spec does not load: {exc}")
        return result
    result.lines.append(f"OK   spec {models_dir / (name + '.yaml')} loads ({len(spec.features)} features).")
    try:
        suites = load_suites(spec, expectations_dir)
    except SuiteError as exc:
        result.problems.append(f"the suites do not load:\n{exc}")
        return result
    for s in suites:
        result.lines.append(f"OK   suite {s.path.name} ({s.name!r}, {s.expectation_count} expectations) loads.")
    dry_run(spec, suites, on, result)
    return result


def dry_run(spec: ModelSpec, suites: list[Any], on: date | None, result: ModelCheck) -> None:
    """Extract the interval of ``on`` (default: the newest with data), validate it with ``suites`` and fit the
    spec's pipeline on it; each step's line or problem goes to ``result``. Writes nothing."""
    from airloop.adapters.db import engine_for
    from airloop.adapters.expectations import validate
    from airloop.adapters.source import SourceProblem, SourceUnavailable, extract_interval

    engine = engine_for(spec.source.connection)
    try:
        interval = _interval_of(spec, on) if on is not None else newest_interval(spec)
        frame = extract_interval(engine, spec, interval).frame
        # Plain str column names, as the lake gives them to training (SQLAlchemy's are a str subclass that
        # scikit-learn's column selection refuses).
        frame.columns = [str(c) for c in frame.columns]
    except (SourceProblem, SourceUnavailable, OnboardProblem) as exc:
        result.problems.append(f"the source: {exc}")
        return
    result.lines.append(f"Dry run on interval {interval}: {len(frame)} rows extracted.")
    needed = [*spec.keys, *spec.feature_names, spec.target.name, *spec.leakage_columns]
    missing = sorted(set(needed) - set(frame.columns))
    if missing:
        result.problems.append(
            f"the source gives no column(s) {missing}, which the spec names (features, target, keys, leakage "
            f"columns); the source has {', '.join(map(str, frame.columns))}. Fix the source or {spec.name}.yaml"
        )
    outcome = validate(frame, suites, keys=spec.keys)
    if outcome.success:
        result.lines.append(f"OK   the suites pass ({outcome.evaluated} expectations).")
    else:
        result.problems += [f"the batch would be quarantined: {f.describe()}" for f in outcome.failures]
    if not missing:
        _dry_fit(spec, frame, result)


def _dry_fit(spec: ModelSpec, frame: pd.DataFrame, result: ModelCheck) -> None:
    """Fit the spec's pipeline on the interval's labelled rows (in memory only)."""
    from airloop.stages.train import steps

    labelled = frame.loc[frame[spec.target.name].notna()]
    if labelled.empty:
        result.problems.append(f"no row of the interval has a label ({spec.target.name}): nothing to fit")
        return
    classes = labelled[spec.target.name].nunique()
    if spec.target.task == "classification" and classes < 2:
        result.lines.append(
            f"SKIP the fit: the interval's {len(labelled)} labelled rows hold one class only; a classifier needs two "
            "(pass --on a date in a larger interval)"
        )
        return
    try:
        fitted = steps.fit(spec, labelled.reset_index(drop=True))
    except Exception as exc:  # a dry run reports whatever the fit would raise, naming it
        result.problems.append(f"the pipeline does not fit on this interval: {type(exc).__name__}: {exc}")
        return
    model = fitted.pipeline.steps[-1][1]
    result.lines.append(f"OK   {type(model).__name__} fits on {len(labelled)} labelled rows (nothing saved).")


def _interval_of(spec: ModelSpec, day: date) -> Interval:
    from airloop.ops.suites import interval_containing

    try:
        return interval_containing(spec, day)
    except ValueError as exc:
        raise OnboardProblem(str(exc)) from None


def newest_interval(spec: ModelSpec) -> Interval:
    """The schedule's newest interval that holds the source's newest row (or the last before it)."""
    import sqlalchemy as sa

    from airloop.adapters.db import engine_for

    request = Request(
        spec.name,
        spec.source.time_column,
        spec.target.name,
        spec.target.task,
        table=spec.source.table,
        query=spec.source.query,
    )
    with engine_for(spec.source.connection).connect() as conn:
        source, time = _selectable(conn, request, None)
        last = conn.execute(sa.select(sa.func.max(source.c[time]))).scalar()
    if last is None:
        raise OnboardProblem(f"the source of {spec.name} has no rows: load data first (`airloop source load`)")
    newest = _utc(last)
    candidates = [iv for iv in expected_intervals(spec, until=newest + timedelta(days=366)) if iv.start <= newest]
    if not candidates:
        raise OnboardProblem(
            f"the newest row ({newest:%Y-%m-%d}) is before the schedule's start ({spec.schedule.start}): fix "
            "`schedule.start`, or pass --on"
        )
    return candidates[-1]

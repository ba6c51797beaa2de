"""Pure steps of onboarding a model (``airloop model new``): profile sampled rows, check the request against them,
suggest a schedule, and build the starter suites. No I/O: :mod:`airloop.ops.onboard` reads the source and writes
the files; :mod:`airloop.ops.starter_spec` renders the spec's YAML.

Every threshold a suite gets is derived from what the profile saw, with a margin, so the starter suites pass on the
profiled data; the notes of each expectation say what was observed, so a data steward can tighten it knowingly.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from datetime import date, datetime
from typing import TYPE_CHECKING, Any, Literal

from airloop.core.errors import ExpectedFailure

if TYPE_CHECKING:
    import pandas as pd

    from airloop.core.intervals import Interval

#: At most this many of the newest rows are read to profile a source (the totals and time range use every row).
PROFILE_ROWS = 100_000
#: A categorical column with at most this many values gets its value set checked by the suite.
VALUE_SET_LIMIT = 50
#: A text column with more distinct values is left out of the features (one-hot would add a column per value).
MAX_CATEGORIES = 100
#: A text column whose values are longer than this on average is free text, never a category.
TEXT_LENGTH = 40
#: A column whose values are distinct in at least this share of its filled rows (and more than 50) is id-like.
ID_SHARE = 0.9
#: A classification target has at most this many classes (more looks like a number to regress or an id).
MAX_CLASSES = 50
#: ``class_weight: balanced`` is suggested when the rarest class is less than this share of the rows.
MINORITY_SHARE = 0.2
#: The schedule suggested (when none is given) is the shortest of these intervals with this many rows on average.
ROWS_PER_INTERVAL = 200
EVERY_CHOICES = (1, 7, 28)
#: Margins: not-null `mostly` this much below the worst interval's share; ranges widened by this share of their
#: span; the row-count floor at this share of the smallest interval's rows.
MOSTLY_MARGIN = 0.05
RANGE_MARGIN = 0.1
COUNT_MARGIN = 0.5
NAME = re.compile(r"^[a-z][a-z0-9_]{0,39}$")
NUMERIC_TYPES = ["int64", "int32", "Int64", "float64", "float32", "Float64"]
TEXT_TYPES = ["object", "str", "string"]

Kind = Literal["numeric", "categorical", "text", "id", "time", "empty"]


class OnboardProblem(ExpectedFailure, ValueError):
    """A model cannot be onboarded as asked; the message names the argument, what was found and what to do."""


@dataclass(frozen=True)
class Request:
    """What ``airloop model new`` was asked for."""

    name: str
    time_column: str
    target: str
    task: Literal["regression", "classification"]
    table: str | None = None
    query: str | None = None
    keys: tuple[str, ...] = ()
    leakage: tuple[str, ...] = ()
    connection: str = "airloop_source"
    start: date | None = None
    every: str | None = None
    cron: str | None = None

    @property
    def key_columns(self) -> list[str]:
        return list(self.keys) or [self.time_column]


@dataclass(frozen=True)
class Column:
    """What the profile saw of one column."""

    name: str
    kind: Kind
    missing: float
    distinct: int
    minimum: float | None = None
    maximum: float | None = None
    integer: bool = False
    values: list[Any] | None = None
    reason: str | None = None


@dataclass(frozen=True)
class Sample:
    """The rows read to profile a source, and what is known of all its rows."""

    frame: pd.DataFrame
    total_rows: int
    first: datetime
    last: datetime

    @property
    def capped(self) -> bool:
        return len(self.frame) < self.total_rows


def plain(value: Any) -> Any:
    """A numpy scalar as the Python value (for JSON and YAML)."""
    return value.item() if hasattr(value, "item") else value


def profile_column(name: str, series: pd.Series) -> Column:
    """Kind, missing share, range and (small) value set of one column."""
    import pandas as pd

    filled = series.dropna()
    missing = float(series.isna().mean()) if len(series) else 0.0
    distinct = int(filled.nunique())
    if filled.empty:
        return Column(name, "empty", missing, 0, reason="no values in the rows profiled")
    if pd.api.types.is_datetime64_any_dtype(series):
        return Column(name, "time", missing, distinct, reason="a timestamp: derive calendar features in a --query")
    if pd.api.types.is_bool_dtype(series) or pd.api.types.is_numeric_dtype(series):
        numbers = filled.astype(float)
        integer = bool((numbers == numbers.round()).all())
        kind: Kind = "numeric"
        reason = None
        if integer and distinct > 50 and distinct >= ID_SHARE * len(filled):
            kind, reason = "id", f"id-like: {distinct} distinct integers in {len(filled)} rows"
        values = sorted(plain(v) for v in filled.unique()) if distinct <= VALUE_SET_LIMIT else None
        return Column(
            name, kind, missing, distinct, float(numbers.min()), float(numbers.max()), integer, values, reason
        )
    text = filled.astype(str)
    length = float(text.str.len().mean())
    if length > TEXT_LENGTH:
        return Column(name, "text", missing, distinct, reason=f"free text: {length:.0f} characters on average")
    if distinct > 50 and distinct >= ID_SHARE * len(filled):
        return Column(
            name, "id", missing, distinct, reason=f"id-like: {distinct} distinct values in {len(filled)} rows"
        )
    if distinct > MAX_CATEGORIES:
        return Column(
            name,
            "text",
            missing,
            distinct,
            reason=f"{distinct} distinct values: as a category it adds that many one-hot columns; group rare values "
            "in a --query (or add it back by hand)",
        )
    values = sorted(str(v) for v in text.unique()) if distinct <= VALUE_SET_LIMIT else None
    return Column(name, "categorical", missing, distinct, values=values)


def profile(frame: pd.DataFrame) -> dict[str, Column]:
    """Every column of the sample, in the source's order."""
    return {str(name): profile_column(str(name), frame[name]) for name in frame.columns}


def check_request(request: Request, columns: dict[str, Column], frame: pd.DataFrame) -> None:
    """Refuse arguments the data cannot satisfy, naming the argument, what was found and what to do."""
    if not NAME.match(request.name):
        raise OnboardProblem(
            f"model name {request.name!r}: use lower-case letters, digits and _, starting with a letter (max 40)"
        )
    named = [("--time-column", request.time_column), ("--target", request.target)]
    named += [("--keys", k) for k in request.keys] + [("--leakage", c) for c in request.leakage]
    unknown = [f"{option} {name!r}" for option, name in named if name not in columns]
    if unknown:
        raise OnboardProblem(
            f"{', '.join(unknown)}: no such column in the source; its columns are {', '.join(columns)}"
        )
    if request.target == request.time_column or request.target in request.keys + request.leakage:
        raise OnboardProblem(
            f"--target {request.target!r} is also the time column, a key or a leakage column: the label must be "
            "none of these"
        )
    _check_target(request, columns[request.target])
    keys = request.key_columns
    duplicated = frame.duplicated(subset=keys, keep=False)
    if duplicated.any():
        example = frame.loc[duplicated, keys].head(3).to_dict("records")
        raise OnboardProblem(
            f"the key {keys} does not identify a row: {int(duplicated.sum())} rows share their key, e.g. {example}. "
            "Pass --keys with the column(s) that make each row unique (e.g. a record id)"
        )


def _check_target(request: Request, target: Column) -> None:
    name = request.target
    if target.kind == "empty":
        raise OnboardProblem(f"--target {name!r} has no values in the rows profiled: nothing to learn from")
    if request.task == "regression" and target.kind not in ("numeric", "id"):
        raise OnboardProblem(
            f"--target {name!r} is not numeric ({target.kind}), so it cannot be regressed: use "
            "--task classification, or a numeric column"
        )
    if request.task == "classification":
        if target.distinct < 2:
            seen = target.values[0] if target.values else "?"
            raise OnboardProblem(
                f"--target {name!r} has one class ({seen!r}) in the rows profiled: a classifier needs at least two. "
                "Pick another target, or profile a longer range (--start)"
            )
        if target.distinct > MAX_CLASSES:
            raise OnboardProblem(
                f"--target {name!r} has {target.distinct} distinct values: too many classes (at most {MAX_CLASSES}). "
                "If it is a quantity, use --task regression"
            )


@dataclass(frozen=True)
class Choice:
    """A schedule: ``every`` or ``cron``, with a comment saying why."""

    every: str | None
    cron: str | None
    why: str


def suggest_schedule(request: Request, total_rows: int, first: datetime, last: datetime) -> Choice:
    """The given ``--every``/``--cron``, or the shortest interval with enough rows on average."""
    if request.every or request.cron:
        return Choice(request.every, request.cron, "as given to `airloop model new`")
    days = max((last - first).total_seconds() / 86400, 1.0)
    per_day = total_rows / days
    for step in EVERY_CHOICES:
        if per_day * step >= ROWS_PER_INTERVAL:
            return Choice(
                f"{step}d",
                None,
                f"{total_rows} rows over {days:.0f} days: about {per_day * step:.0f} rows per {step}-day interval, "
                f"the shortest interval with at least {ROWS_PER_INTERVAL} (enough to validate and monitor)",
            )
    step = EVERY_CHOICES[-1]
    return Choice(
        f"{step}d",
        None,
        f"{total_rows} rows over {days:.0f} days: only about {per_day * step:.0f} rows per {step} days; consider a "
        "longer interval (e.g. `every: 91d`) if batches are too small to judge",
    )


@dataclass
class IntervalCounts:
    """Rows and filled share per column in each interval the sample covers completely."""

    intervals: list[Interval]
    rows: list[int]
    filled: dict[str, list[float]] = field(default_factory=dict)

    @property
    def with_rows(self) -> list[int]:
        return [n for n in self.rows if n > 0]


def count_intervals(frame: pd.DataFrame, time_column: str, intervals: list[Interval]) -> IntervalCounts:
    """Assign sampled rows to intervals (``[start, end)``) and count rows and filled cells per interval."""
    import numpy as np
    import pandas as pd

    times = pd.to_datetime(frame[time_column], utc=True)
    covered = [iv for iv in intervals if iv.start >= times.min()] if len(frame) else []
    if not covered:
        return IntervalCounts([], [])
    starts = pd.DatetimeIndex([iv.start for iv in covered])
    ends = pd.DatetimeIndex([iv.end for iv in covered])
    position = starts.searchsorted(pd.DatetimeIndex(times), side="right") - 1
    inside = (position >= 0) & (pd.DatetimeIndex(times) < ends[np.clip(position, 0, None)])
    groups = pd.Series(position[inside])
    rows = groups.value_counts().reindex(range(len(covered)), fill_value=0)
    shares = frame.loc[inside].notna().groupby(groups.to_numpy()).mean()
    filled = {str(c): [float(shares[c].get(i, 1.0)) for i in range(len(covered))] for c in frame.columns}
    return IntervalCounts(covered, [int(n) for n in rows], filled)


def _floor(value: float, digits: int = 2) -> float:
    scale = 10**digits
    return math.floor(value * scale) / scale


def widened(column: Column) -> tuple[float | int, float | int]:
    """The observed range widened by :data:`RANGE_MARGIN` of its span; non-negative columns stay non-negative."""
    assert column.minimum is not None and column.maximum is not None
    low, high = column.minimum, column.maximum
    pad = (high - low) * RANGE_MARGIN or abs(high) * RANGE_MARGIN or 1.0
    lower, upper = low - pad, high + pad
    if low >= 0:
        lower = max(lower, 0.0)
    if column.integer:
        return math.floor(lower), math.ceil(upper)
    return _round_out(lower, math.floor), _round_out(upper, math.ceil)


def _round_out(value: float, how: Any) -> float:
    """Round outward to 3 significant digits, so ranges read well and still contain what was seen."""
    if value == 0:
        return 0.0
    scale = 10 ** (math.floor(math.log10(abs(value))) - 2)
    return round(float(how(value / scale) * scale), 12)


def _expectation(kind: str, notes: str | None = None, **kwargs: Any) -> dict[str, Any]:
    out: dict[str, Any] = {"type": kind, "kwargs": kwargs}
    if notes:
        out["meta"] = {"notes": notes}
    return out


def _row_floor(counts: IntervalCounts) -> dict[str, Any]:
    """A row-count floor per interval: :data:`COUNT_MARGIN` of the smallest interval with rows."""
    rows = counts.with_rows
    floor = max(1, math.floor(min(rows) * COUNT_MARGIN)) if rows else 1
    empty = len(counts.rows) - len(rows)
    seen = (
        f"observed {min(rows)} to {max(rows)} rows (median {sorted(rows)[len(rows) // 2]}) in {len(rows)} intervals"
        + (f"; {empty} intervals had no rows" if empty else "")
        if rows
        else "no complete interval was profiled"
    )
    return _expectation(
        "expect_table_row_count_to_be_between",
        f"Generated floor: {COUNT_MARGIN:.0%} of the smallest interval seen ({seen}). Raise it to what "
        "a complete interval must hold.",
        min_value=floor,
    )


def _unique(keys: list[str]) -> dict[str, Any]:
    """Key uniqueness: one column, or a compound key."""
    notes = "The key identifies a row: a repeat is a duplicated load."
    if len(keys) == 1:
        return _expectation("expect_column_values_to_be_unique", notes, column=keys[0])
    return _expectation("expect_compound_columns_to_be_unique", notes, column_list=keys)


def schema_suite(name: str, request: Request, columns: list[Column], counts: IntervalCounts) -> dict[str, Any]:
    """Columns present, a row-count floor per interval, unique keys, not-null (with the observed ``mostly``), types."""
    expectations = [
        _row_floor(counts),
        _expectation(
            "expect_table_columns_to_match_set",
            "Every column the model and its lineage need.",
            column_set=[c.name for c in columns],
            exact_match=False,
        ),
        _unique(request.key_columns),
    ]
    for column in columns:
        expectations += _not_null(column, counts)
    for column in columns:
        if column.kind in ("time", "empty"):
            continue
        number = column.minimum is not None
        expectations.append(
            _expectation(
                "expect_column_values_to_be_in_type_list",
                "Numbers (integers with missing values arrive as floats)." if number else "Text.",
                column=column.name,
                type_list=NUMERIC_TYPES if number else TEXT_TYPES,
            )
        )
    return {
        "name": f"{name}_schema",
        "meta": _meta(name, "Structure of one interval: columns, row count, keys, completeness, types."),
        "expectations": expectations,
    }


def _not_null(column: Column, counts: IntervalCounts) -> list[dict[str, Any]]:
    """Not-null, strict when every profiled value was filled, else ``mostly`` below the worst interval's share."""
    shares = [s for s, n in zip(counts.filled.get(column.name, []), counts.rows, strict=False) if n > 0]
    worst = min(shares, default=1.0 - column.missing)
    if column.missing == 0 and worst >= 1.0:
        return [_expectation("expect_column_values_to_not_be_null", column=column.name)]
    mostly = _floor(min(worst, 1.0 - column.missing) - MOSTLY_MARGIN)
    if mostly < 0.01:
        return []
    notes = (
        f"Generated: {1 - column.missing:.1%} of the profiled rows are filled, {worst:.1%} in the worst "
        f"interval; `mostly` is {MOSTLY_MARGIN:.0%} below that."
    )
    return [_expectation("expect_column_values_to_not_be_null", notes, column=column.name, mostly=mostly)]


def values_suite(name: str, columns: list[Column]) -> dict[str, Any]:
    """Numeric ranges (widened) and categorical value sets, as profiled."""
    expectations = []
    for column in columns:
        if column.kind == "numeric" and column.minimum is not None and column.maximum is not None:
            low, high = widened(column)
            expectations.append(
                _expectation(
                    "expect_column_values_to_be_between",
                    f"Generated: observed {column.minimum:g} to {column.maximum:g}, widened by {RANGE_MARGIN:.0%} of "
                    "that span. Replace with the real bounds of the measure.",
                    column=column.name,
                    min_value=low,
                    max_value=high,
                )
            )
        elif column.kind == "categorical" and column.values is not None:
            expectations.append(
                _expectation(
                    "expect_column_values_to_be_in_set",
                    f"Generated: the {len(column.values)} values seen. A new value fails the batch: add it if valid.",
                    column=column.name,
                    value_set=column.values,
                )
            )
    if not expectations:
        return {}
    return {
        "name": f"{name}_values",
        "meta": _meta(name, "Allowed values and ranges, as first profiled."),
        "expectations": expectations,
    }


def _meta(name: str, notes: str) -> dict[str, str]:
    return {"owner": f"data-stewards@{name}", "notes": notes + " Generated by `airloop model new`: edit freely."}

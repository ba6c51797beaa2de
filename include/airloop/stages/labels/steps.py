"""The labels step's pure parts: where an interval's labels come from, their checks, their revisions and their
join with the served predictions. No I/O: the runner reads and writes, these decide.

- :func:`binding`: the label source as the spec gives it (``labels.source``, each field defaulting to the
  source's), or the source's own target column.
- :func:`check_labels`: the labels read for an interval, keyed by row (the same canonical key text predictions
  carry, :func:`airloop.stages.ingest.keys.row_keys`), each as canonical text (a class as text, a number as the
  ``repr`` of its float). A null label has not arrived yet; a row without a key, a label of the wrong type, and
  rows with the same key and different labels are refused and named; exact duplicates collapse into one.
- :func:`revise`: which labels are new (revision 1) or changed (a correction: revision + 1). ``labels`` is
  append-only, so nothing else is ever written there.
- :func:`join`: the served predictions of the interval with their current labels, by row key: the ``outcomes``
  rows to insert or update, and what is left unjoined on either side.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from airloop.core.errors import ExpectedFailure
from airloop.core.intervals import Interval
from airloop.core.spec import ModelSpec, Source

if TYPE_CHECKING:
    import pandas as pd

#: How many keys a summary line names (its count is always the full number).
SAMPLE = 10


class LabelSourceProblem(ExpectedFailure, ValueError):
    """The label source does not give what the spec says (a missing key, time or label column)."""


@dataclass(frozen=True)
class Binding:
    """Where one model's labels are read from, every default resolved."""

    connection: str
    table: str | None
    query: str | None
    time_column: str
    keys: list[str]
    column: str
    separate: bool  # a label source of its own (``labels.source``), not the source's target column

    def as_source(self) -> Source:
        """The binding as a :class:`~airloop.core.spec.Source`, so the source adapter extracts it."""
        return Source(
            connection=self.connection,
            table=self.table,
            query=self.query,
            time_column=self.time_column,
            keys=self.keys,
        )

    def describe(self) -> str:
        where = f"table {self.table}" if self.table else "its query"
        origin = "labels.source" if self.separate else "the source's target column"
        return f"{origin}: {where} on connection {self.connection}, label column {self.column}, keys {self.keys}"


def binding(spec: ModelSpec) -> Binding:
    """The label source of ``spec``: ``labels.source`` (each field defaulting to ``source``'s, the label column to
    the target's name, the keys to the spec's keys), or else the source's own rows and target column."""
    src, given = spec.source, spec.labels.source
    if given is None:
        return Binding(src.connection, src.table, src.query, src.time_column, spec.keys, spec.target.name, False)
    return Binding(
        connection=given.connection or src.connection,
        table=given.table,
        query=given.query,
        time_column=given.time_column or src.time_column,
        keys=list(given.keys or spec.keys),
        column=given.column or spec.target.name,
        separate=True,
    )


def due_at(spec: ModelSpec, interval_end: datetime) -> datetime:
    """When an interval's labels are due: its end plus ``labels.after``."""
    return interval_end + spec.label_latency


def lagging(spec: ModelSpec, interval_end: datetime, now: datetime, missing: int) -> timedelta | None:
    """How long past due the interval's missing labels are, when that is more than ``labels.max_lag`` (else None)."""
    late = now - due_at(spec, interval_end)
    return late if missing > 0 and late > spec.label_max_lag else None


def revisits(spec: ModelSpec, interval: Interval) -> list[Interval]:
    """The earlier intervals a run of ``interval`` reads again: those that ended at most ``labels.max_lag`` plus one
    interval before it did, oldest first.

    A run happens when its interval's labels are due; labels that arrive later are recorded by the next runs, and
    the run at which an interval's missing labels first pass ``labels.max_lag`` (measured in data time: the
    distance between the two intervals' ends, see :func:`data_lag`) alerts. So each interval is read by its own run
    and the runs of the next ``max_lag`` (plus one interval), and a lagging interval is alerted once."""
    from airloop.core.intervals import grid_intervals

    reach = spec.label_max_lag + (interval.end - interval.start)
    span = Interval.of(interval.start - reach, interval.start)
    return [i for i in grid_intervals(spec, span) if interval.end - reach <= i.end <= interval.start]


def data_lag(spec: ModelSpec, earlier: Interval, interval: Interval, missing: int) -> timedelta | None:
    """How long past due an earlier interval's missing labels are when ``interval``'s labels are due, when that is
    more than ``labels.max_lag`` (else None)."""
    return lagging(spec, earlier.end, due_at(spec, interval.end), missing)


@dataclass
class Checked:
    """The labels read for one interval, checked: ``accepted`` (row_key, ts, label) and what was left out."""

    accepted: pd.DataFrame
    read: int
    not_arrived: int = 0
    collapsed: int = 0
    unkeyed: list[str] = field(default_factory=list)
    wrong_type: list[str] = field(default_factory=list)
    conflicting: list[str] = field(default_factory=list)

    @property
    def refused(self) -> int:
        return len(self.unkeyed) + len(self.wrong_type) + len(self.conflicting)


def label_text(value: Any, task: str) -> str | None:
    """A label's canonical text (None when it is not of the task's type).

    Regression: a finite number, as the ``repr`` of its float (``3`` and ``3.0`` are both ``3.0``).
    Classification: a class as the predictions write it: a whole number as its digits (also when the column
    arrived as floats, ``1.0`` -> ``1``), a boolean as ``True``/``False``, other values as their text."""
    item = getattr(value, "item", None)
    value = item() if callable(item) and not isinstance(value, str) else value
    if task == "regression":
        if isinstance(value, bool):
            return None
        if isinstance(value, str):
            try:
                value = float(value.strip())
            except ValueError:
                return None
        if not isinstance(value, int | float):
            return None
        number = float(value)
        return repr(number) if math.isfinite(number) else None
    if isinstance(value, bool):
        return str(value)
    if isinstance(value, float):
        if not math.isfinite(value):
            return None
        return str(int(value)) if value.is_integer() else repr(value)
    if isinstance(value, int | str):
        text = str(value)
        return text if text.strip() else None
    return None


def check_labels(frame: pd.DataFrame, where: Binding, task: str) -> Checked:
    """Key, type-check and de-duplicate the labels read for one interval (see the module docstring).

    Raises :class:`LabelSourceProblem` naming the missing columns when the frame lacks a key, the time or the
    label column."""
    import pandas as pd

    from airloop.stages.ingest.keys import row_keys

    needed = [*where.keys, where.time_column, where.column]
    missing = [c for c in dict.fromkeys(needed) if c not in frame.columns]
    if missing:
        raise LabelSourceProblem(
            f"the label source ({where.describe()}) gives no column(s) {missing} (its columns: "
            f"{sorted(map(str, frame.columns))}). Fix `labels.source` (keys, time_column, column) in the model spec, "
            "or the label table or query."
        )
    empty = pd.DataFrame({"row_key": pd.Series(dtype=object), "ts": pd.Series(dtype="datetime64[ns, UTC]")})
    empty["label"] = pd.Series(dtype=object)
    out = Checked(accepted=empty, read=len(frame))
    arrived = frame[frame[where.column].notna()]
    out.not_arrived = len(frame) - len(arrived)
    null_key = arrived[where.keys].isna().any(axis=1) | arrived[where.time_column].isna()
    if null_key.any():
        out.unkeyed = [f"row {i}" for i in arrived.index[null_key].tolist()]
        arrived = arrived[~null_key]
    if arrived.empty:
        return out
    keyed = pd.DataFrame(
        {
            "row_key": row_keys(arrived, where.keys),
            "ts": arrived[where.time_column].to_numpy(),
            "label": [label_text(v, task) for v in arrived[where.column].tolist()],
        }
    )
    bad = keyed["label"].isna()
    out.wrong_type = sorted(set(keyed.loc[bad, "row_key"]))
    keyed = keyed[~bad]
    distinct = keyed.drop_duplicates(["row_key", "label"])
    out.collapsed = len(keyed) - len(distinct)
    clash = distinct["row_key"].duplicated(keep=False)
    out.conflicting = sorted(set(distinct.loc[clash, "row_key"]))
    accepted = distinct[~clash].sort_values("row_key").reset_index(drop=True)
    accepted["ts"] = pd.to_datetime(accepted["ts"], utc=True)
    out.accepted = accepted
    return out


@dataclass(frozen=True)
class Revisions:
    """The ``labels`` rows to append (new keys at revision 1, corrections at their next revision), and the
    current label of every key afterwards."""

    rows: list[dict[str, Any]]
    new: list[str]
    corrected: list[str]
    current: dict[str, dict[str, Any]]


def revise(
    stored: dict[str, dict[str, Any]],
    accepted: pd.DataFrame,
    *,
    model: str,
    partition: str,
    now: datetime,
    dag_run_id: str | None,
) -> Revisions:
    """Compare the accepted labels with the stored current ones: an unchanged label writes nothing, a new key
    its revision 1, a changed value the next revision (a correction; the old revision stays)."""
    rows: list[dict[str, Any]] = []
    new: list[str] = []
    corrected: list[str] = []
    current = dict(stored)
    for key, ts, label in accepted[["row_key", "ts", "label"]].itertuples(index=False):
        before = stored.get(key)
        if before is not None and before["label"] == label:
            continue
        revision = 1 if before is None else int(before["revision"]) + 1
        (new if before is None else corrected).append(key)
        row = {
            "model": model,
            "partition": partition,
            "row_key": key,
            "ts": ts.to_pydatetime(),
            "label": label,
            "revision": revision,
            "arrived_at": now,
            "dag_run_id": dag_run_id,
        }
        rows.append(row)
        current[key] = row
    return Revisions(rows, new, corrected, current)


#: The outcome columns that come from the served prediction, and from the current label.
_SERVED = ("ts", "model_version", "prediction", "predicted_class", "probability", "probabilities")
_LABEL = {"label": "label", "label_revision": "revision", "label_arrived_at": "arrived_at"}


@dataclass(frozen=True)
class Joined:
    """The outcomes of one interval to write, and what did not join."""

    inserts: list[dict[str, Any]]
    updates: list[dict[str, Any]]
    #: Model version -> outcomes of this interval (all of them, written now or before).
    by_version: dict[str, int]
    unpredicted: list[str]  # labelled row keys with no served prediction (kept in labels only)
    unlabelled: list[str]  # served row keys with no label yet


def _plain(value: Any) -> Any:
    """A frame's cell as a plain Python value (None for a missing one), as the warehouse stores it."""
    import pandas as pd

    if value is None or (not isinstance(value, str) and pd.isna(value)):
        return None
    if isinstance(value, pd.Timestamp):
        return value.to_pydatetime()
    item = getattr(value, "item", None)
    return item() if callable(item) else value


def join(
    served: pd.DataFrame,
    current: dict[str, dict[str, Any]],
    stored: dict[str, dict[str, Any]],
    *,
    model: str,
    partition: str,
    now: datetime,
) -> Joined:
    """Join the served predictions with the current labels by row key: an outcome row per served and labelled
    key, inserted when new, updated when its label (a correction) or its served prediction (a re-scored interval)
    differs from the stored one, left alone otherwise (so re-running an interval writes nothing)."""
    inserts: list[dict[str, Any]] = []
    updates: list[dict[str, Any]] = []
    by_version: dict[str, int] = {}
    unlabelled: list[str] = []
    served_keys: set[str] = set()
    for record in served.to_dict("records"):
        key = str(record["row_key"])
        served_keys.add(key)
        label = current.get(key)
        if label is None:
            unlabelled.append(key)
            continue
        row = {"model": model, "partition": partition, "row_key": key}
        row |= {c: _plain(record[c]) for c in _SERVED}
        row |= {c: label[source] for c, source in _LABEL.items()}
        version = str(row["model_version"])
        by_version[version] = by_version.get(version, 0) + 1
        before = stored.get(key)
        if before is None:
            inserts.append({**row, "joined_at": now})
        elif any(_differs(before.get(c), row[c]) for c in (*_SERVED, *_LABEL)):
            updates.append({**row, "joined_at": now})
    unpredicted = sorted(k for k in current if k not in served_keys)
    return Joined(inserts, updates, by_version, unpredicted, unlabelled)


def _differs(stored: Any, value: Any) -> bool:
    """Whether a stored outcome value differs from the one joined now (times compared in UTC)."""
    from airloop.core.times import as_utc

    if isinstance(stored, datetime) and isinstance(value, datetime):
        return as_utc(stored) != as_utc(value)
    if isinstance(stored, float) and isinstance(value, float):
        return not (stored == value or (math.isnan(stored) and math.isnan(value)))
    return bool(stored != value)


def named(keys: list[str], count: int | None = None, sample: int = SAMPLE) -> str:
    """``n (first: a, b, ...)`` for a summary line, ``n`` being ``count`` (default: how many ``keys``); ``0`` when
    there are none."""
    count = len(keys) if count is None else count
    if not count:
        return "0"
    more = ", ..." if count > min(len(keys), sample) else ""
    return f"{count} (first: {', '.join(keys[:sample])}{more})"

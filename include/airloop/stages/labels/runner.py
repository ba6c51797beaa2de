"""The labels step of one data interval: read the labels that have arrived, check them, record them by revision in
``labels`` and join them with the predictions that were served for the interval into ``outcomes``.

Runs once the interval's labels are due (its end plus ``labels.after``; the DAG's first task waits for that).
Idempotent: re-running an interval whose labels did not change writes nothing. Labels that were refused (no key,
the wrong type, conflicting values for one key) are named and written nowhere; the rest of the interval is
written, then the run fails so on-call sees it (:class:`RefusedLabels`). Labels still missing longer than
``labels.max_lag`` after they were due make the summary ``lagging`` (the task sends a freshness alert); that is
not a failure.
"""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from typing import Any

from airloop.core.contracts import RunInfo
from airloop.core.errors import ExpectedFailure
from airloop.core.intervals import Interval
from airloop.core.spec import ModelSpec
from airloop.stages.labels import steps

log = logging.getLogger(__name__)


#: The kinds of row key that are refused (nothing written for them).
REFUSED = ("conflicting", "wrong_type", "unkeyed")


class RefusedLabels(ExpectedFailure):
    """Some labels of the interval were refused (named in the message); the others were recorded and joined.
    ``summary`` is the run's :class:`LabelsSummary` (the task still alerts on a lag before it fails)."""

    def __init__(self, message: str, summary: LabelsSummary) -> None:
        super().__init__(message)
        self.summary = summary


@dataclass(frozen=True)
class LabelsSummary:
    """What one labels run did for one interval (its XCom, its log summary and its alert's facts)."""

    model: str
    partition: str
    interval_start: str
    interval_end: str
    due_at: str
    source: str
    read: int
    not_arrived: int
    accepted: int
    new: int
    corrected: int
    collapsed: int
    #: Kind -> how many row keys: ``conflicting``, ``wrong_type``, ``unkeyed`` (refused), ``unpredicted``,
    #: ``unlabelled``; ``first`` holds the first keys of each (at most ``steps.SAMPLE``), so the summary stays small.
    counts: dict[str, int] = field(default_factory=dict)
    first: dict[str, list[str]] = field(default_factory=dict)
    outcomes_by_version: dict[str, int] = field(default_factory=dict)
    outcomes_written: int = 0
    missing: int = 0
    lag_seconds: float | None = None  # set when missing labels are more than labels.max_lag past due
    max_lag: str = ""

    @property
    def lagging(self) -> bool:
        return self.lag_seconds is not None

    @property
    def refused(self) -> int:
        return sum(self.counts.get(kind, 0) for kind in REFUSED)

    def named(self, kind: str) -> str:
        """``n (first: a, b, ...)`` of one kind of row key, ``0`` when none."""
        return steps.named(self.first.get(kind, []), self.counts.get(kind, 0))

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> LabelsSummary:
        return cls(**data)

    def lines(self) -> list[str]:
        """The task log's summary, one fact a line."""
        versions = ", ".join(f"v{v}: {n}" for v, n in sorted(self.outcomes_by_version.items())) or "none"
        lines = [
            f"Labels of {self.model} interval {self.interval_start} to {self.interval_end} (partition "
            f"{self.partition}), due {self.due_at}, from {self.source}:",
            f"  read {self.read} rows: {self.not_arrived} without a label yet (not arrived), {self.accepted} "
            f"accepted, {self.collapsed} exact duplicate(s) collapsed",
            f"  written to labels: {self.new} new, {self.corrected} corrected (new revisions; old ones kept)",
            f"  refused (nothing written for them): conflicting values {self.named('conflicting')}; wrong "
            f"type {self.named('wrong_type')}; without key {self.named('unkeyed')}",
            f"  labels for rows never predicted (kept in labels, not in outcomes): {self.named('unpredicted')}",
            f"  predicted rows still without a label: {self.named('unlabelled')}",
            f"  outcomes of this interval per model version: {versions} ({self.outcomes_written} written now)",
        ]
        if self.lagging:
            assert self.lag_seconds is not None
            lines.append(
                f"  LAGGING: {self.missing} label(s) still missing {_hours(self.lag_seconds)} after they were due "
                f"(allowed: labels.max_lag {self.max_lag}); a freshness alert is sent"
            )
        return lines


def _hours(seconds: float) -> str:
    hours = seconds / 3600
    return f"{hours / 24:.1f} days" if hours >= 48 else f"{hours:.1f} h"


def collect(
    spec: ModelSpec,
    interval: Interval,
    run: RunInfo,
    now: datetime | None = None,
    *,
    lag_as_of: datetime | None = None,
) -> LabelsSummary:
    """Read, check, record and join the labels of ``interval`` (see the module docstring); log the summary.

    Missing labels lag when they are more than ``labels.max_lag`` past due as of ``lag_as_of`` (default: now).
    Raises :class:`RefusedLabels` after writing, when labels were refused; the summary is in its message."""
    now = now or datetime.now(UTC)
    where = steps.binding(spec)
    checked = read_labels(spec, where, interval)
    stored, revised, joined, served = record(spec, interval, checked, run, now)
    summary = summarize(spec, interval, where, checked, revised, joined, served, lag_as_of or now)
    for key in revised.corrected:
        before, after = stored[key], revised.current[key]
        log.warning(
            "Label correction: %s row %s changed from %r (revision %s) to %r (revision %s); the old revision is kept.",
            spec.name,
            key,
            before["label"],
            before["revision"],
            after["label"],
            after["revision"],
        )
    if summary.counts.get("unpredicted"):
        log.warning(
            "%d label(s) of %s interval %s name rows that were never predicted (first: %s): kept in labels, not "
            "joined. A key that differs from the predictions' (source.keys vs labels.source.keys) does this too.",
            summary.counts["unpredicted"],
            spec.name,
            interval.key,
            ", ".join(summary.first["unpredicted"]),
        )
    for line in summary.lines():
        log.info("%s", line)
    if summary.refused:
        raise RefusedLabels(refused_message(summary), summary)
    return summary


def revisit(spec: ModelSpec, interval: Interval, run: RunInfo, now: datetime | None = None) -> list[LabelsSummary]:
    """Read the earlier intervals again (:func:`steps.revisits`): labels that arrived since their runs are recorded
    and joined, and an interval whose labels are still missing more than ``labels.max_lag`` after they were due
    (in data time: as of when ``interval``'s labels are due) comes back ``lagging``. Refused labels of an earlier
    interval do not fail this run (they failed their own): they are logged, and their summary returned."""
    summaries = []
    as_of = steps.due_at(spec, interval.end)
    for earlier in steps.revisits(spec, interval):
        log.info("Reading the labels of the earlier interval %s again (late arrivals, lag check).", earlier)
        try:
            summaries.append(collect(spec, earlier, run, now, lag_as_of=as_of))
        except RefusedLabels as refused:
            log.warning("Earlier interval %s: %s", earlier, refused)
            summaries.append(refused.summary)
    return summaries


def read_labels(spec: ModelSpec, where: steps.Binding, interval: Interval) -> steps.Checked:
    """The interval's labels from their source (the source adapter, on the label source's fields), checked."""
    from airloop.adapters.db import engine_for
    from airloop.adapters.source import SourceProblem, extract_interval

    try:
        extracted = extract_interval(
            engine_for(where.connection), spec.model_copy(update={"source": where.as_source()}), interval
        )
    except SourceProblem as exc:
        raise SourceProblem(f"label source of {spec.name} ({where.describe()}): {exc}") from exc
    return steps.check_labels(extracted.frame, where, spec.target.task)


def record(
    spec: ModelSpec, interval: Interval, checked: steps.Checked, run: RunInfo, now: datetime
) -> tuple[dict[str, dict[str, Any]], steps.Revisions, steps.Joined, int]:
    """In one warehouse transaction, the only labels writer while it lasts (``lock_labels``): append the new label
    revisions, join with the served predictions and write the outcomes that changed. Returns the labels stored
    before, the revisions, the join and the rows served."""
    from airloop.adapters.db import engine_for
    from airloop.adapters.warehouse import (
        append_labels,
        current_labels,
        ensure_schema,
        lock_labels,
        outcomes_of,
        served_predictions,
        write_outcomes,
    )
    from airloop.core.settings import WAREHOUSE_CONN_ID

    warehouse = engine_for(WAREHOUSE_CONN_ID)
    ensure_schema(warehouse)
    model, partition = spec.name, interval.key
    with warehouse.begin() as conn:
        lock_labels(conn)  # another run recording the same interval's labels waits until this one committed
        stored = current_labels(conn, model, partition)
        revised = steps.revise(
            stored, checked.accepted, model=model, partition=partition, now=now, dag_run_id=run.run_id
        )
        append_labels(conn, revised.rows)
        served = served_predictions(conn, model, partition)
        joined = steps.join(
            served, revised.current, outcomes_of(conn, model, partition), model=model, partition=partition, now=now
        )
        write_outcomes(conn, joined.inserts, joined.updates)
    return stored, revised, joined, len(served)


def summarize(
    spec: ModelSpec,
    interval: Interval,
    where: steps.Binding,
    checked: steps.Checked,
    revised: steps.Revisions,
    joined: steps.Joined,
    served: int,
    as_of: datetime,
) -> LabelsSummary:
    """The run's summary; ``missing`` is the predicted rows still without a label (the rows read without one, when
    nothing of the interval was scored), and it lags when that lasts beyond ``labels.max_lag`` past due (as of
    ``as_of``)."""
    from airloop.core.spec import format_duration

    missing = len(joined.unlabelled) if served else checked.not_arrived
    late = steps.lagging(spec, interval.end, as_of, missing)
    named = {
        "conflicting": checked.conflicting,
        "wrong_type": checked.wrong_type,
        "unkeyed": checked.unkeyed,
        "unpredicted": joined.unpredicted,
        "unlabelled": joined.unlabelled,
    }
    return LabelsSummary(
        model=spec.name,
        partition=interval.key,
        interval_start=interval.start.isoformat(),
        interval_end=interval.end.isoformat(),
        due_at=steps.due_at(spec, interval.end).isoformat(),
        source=where.describe(),
        read=checked.read,
        not_arrived=checked.not_arrived,
        accepted=len(checked.accepted),
        new=len(revised.new),
        corrected=len(revised.corrected),
        collapsed=checked.collapsed,
        counts={kind: len(keys) for kind, keys in named.items()},
        first={kind: keys[: steps.SAMPLE] for kind, keys in named.items()},
        outcomes_by_version=joined.by_version,
        outcomes_written=len(joined.inserts) + len(joined.updates),
        missing=missing,
        lag_seconds=None if late is None else late.total_seconds(),
        max_lag=format_duration(spec.label_max_lag),
    )


def refused_message(summary: LabelsSummary) -> str:
    """The on-call summary of a run that refused labels: which, why, and what to do."""
    parts = []
    if summary.counts.get("conflicting"):
        parts.append(f"conflicting values for one row key: {summary.named('conflicting')}")
    if summary.counts.get("wrong_type"):
        parts.append(f"labels of the wrong type for the task (or not finite): {summary.named('wrong_type')}")
    if summary.counts.get("unkeyed"):
        parts.append(f"label rows without a key or time value: {summary.named('unkeyed')}")
    return (
        f"Labels REFUSED for {summary.model} interval {summary.interval_start} to {summary.interval_end}: "
        + "; ".join(parts)
        + f". Nothing was written for them; the other {summary.accepted} accepted label(s) were recorded and joined "
        f"({summary.new} new, {summary.corrected} corrected). What to do: fix those rows at the label source "
        f"({summary.source}), then clear this task: the interval is read again and only what changed is written."
    )

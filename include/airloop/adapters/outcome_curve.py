"""Realized performance per model version and window, read from the warehouse's ``outcomes``: the served
predictions joined with the labels that arrived (the labels step writes them). What the airloop view draws as the
outcome curve and the demo prints beside each monitored window.

Every figure here comes from stored outcomes: nothing is predicted again. A window is a data interval
(``partition``) unless the caller gives its own windows (e.g. the monitor's); a version's figure in a window uses
only the rows that version served there. Metrics come from :mod:`airloop.core.metrics`, in the task's terms:
regression compares the served value with the label as a number, classification the served class with the label
as text (a metric that needs probabilities is named in ``note`` instead of computed).
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from airloop.core import metrics


def _aware(value: datetime) -> datetime:
    return value if value.tzinfo is not None else value.replace(tzinfo=UTC)


def _figure(task: str, metric: str, labels: list[str], served: list[Any]) -> tuple[float | None, str]:
    """The metric on one group's rows: (value, note); a value of None says why in the note."""
    try:
        if task == "regression":
            y_true: list[Any] = [float(v) for v in labels]
            y_pred: list[Any] = [float(v) for v in served]
        else:
            y_true, y_pred = labels, [str(v) for v in served]
        scores = metrics.compute(task, y_true, y_pred=y_pred, names=[metric])
    except (metrics.MetricError, ValueError, TypeError) as exc:
        return None, str(exc)
    value = scores.get(metric)
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return None, scores.notes.get(metric, "not computed")
    return float(value), ""


def realized_curve(
    engine: Engine,
    model: str,
    *,
    task: str,
    metric: str,
    windows: Sequence[tuple[datetime, datetime]] | None = None,
) -> list[dict[str, Any]]:
    """Realized ``metric`` per window and model version, oldest window first, from ``outcomes``.

    ``windows`` are [start, end) spans of the rows' time (``ts``); without them, each data interval (``partition``)
    is a window. Each item: ``window`` (the partition, or ``start..end``), ``start``, ``end`` (None for partitions),
    ``version``, ``rows`` (outcomes counted), ``value`` (None when the metric is undefined: see ``note``).
    A window without outcomes has no item: its labels have not arrived (or nothing was served).
    """
    from airloop.adapters.warehouse import outcomes

    metrics.get(metric, task)  # fail early, naming the metrics that fit the task
    served = outcomes.c.prediction if task == "regression" else outcomes.c.predicted_class
    query = sa.select(
        outcomes.c.partition, outcomes.c.ts, outcomes.c.model_version, outcomes.c.label, served.label("served")
    ).where(outcomes.c.model == model)
    groups: dict[tuple[str, str], tuple[list[str], list[Any]]] = defaultdict(lambda: ([], []))
    spans = [(_aware(a), _aware(b)) for a, b in windows or ()]
    with engine.connect() as conn:
        for row in conn.execute(query):
            if row.served is None:
                continue
            if windows is None:
                key = row.partition
            else:
                ts = _aware(row.ts)
                span = next(((a, b) for a, b in spans if a <= ts < b), None)
                if span is None:
                    continue
                key = f"{span[0]:%Y-%m-%d}..{span[1]:%Y-%m-%d}"
            labels, values = groups[(key, str(row.model_version))]
            labels.append(row.label)
            values.append(row.served)
    order = {f"{a:%Y-%m-%d}..{b:%Y-%m-%d}": (a, b) for a, b in spans}
    curve: list[dict[str, Any]] = []
    for (window, version), (labels, values) in groups.items():
        value, note = _figure(task, metric, labels, values)
        start, end = order.get(window, (None, None))
        curve.append(
            {
                "window": window,
                "start": start,
                "end": end,
                "version": version,
                "rows": len(labels),
                "metric": metric,
                "value": value,
                "note": note,
            }
        )
    curve.sort(key=lambda c: (c["start"] or c["window"], _version_order(str(c["version"]))))
    return curve


def _version_order(version: str) -> tuple[int, str]:
    return (int(version), "") if version.isdigit() else (0, version)


def outcome_counts(engine: Engine, model: str) -> dict[str, int]:
    """How many outcomes (served predictions with their label) each version of ``model`` has."""
    from airloop.adapters.warehouse import outcomes

    with engine.connect() as conn:
        rows = conn.execute(
            sa.select(outcomes.c.model_version, sa.func.count())
            .where(outcomes.c.model == model)
            .group_by(outcomes.c.model_version)
        ).all()
    return {str(version): int(count) for version, count in sorted(rows, key=lambda r: _version_order(str(r[0])))}

"""The live half of the gate (``gate.shadow``): the challenger against what was served, on labelled intervals.

The rows compared are the challenger's shadow predictions that have a current label and a served prediction
(:func:`airloop.adapters.shadow.live_rows`): both sides are scored on exactly the same rows with the gate's metric
(:func:`airloop.core.metrics.compute`, in the metric's direction). "Served" is whatever version served each row
(usually the champion; the versions are named). Fewer labelled shadow intervals than ``gate.shadow.intervals``:
the comparison is not made and the challenger keeps waiting.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from numbers import Real
from typing import TYPE_CHECKING, Any

from airloop.core import metrics

if TYPE_CHECKING:
    from airloop.core.spec import ModelSpec


@dataclass(frozen=True)
class LiveComparison:
    """The challenger and the served predictions on the labelled shadow intervals, or how many there are so far."""

    version: str
    metric: str
    needed: int
    intervals: dict[str, int]
    challenger: float = math.nan
    served: float = math.nan
    served_versions: list[str] = field(default_factory=list)
    rows: int = 0
    notes: list[str] = field(default_factory=list)

    @property
    def enough(self) -> bool:
        """Enough labelled shadow intervals for the live gate."""
        return len(self.intervals) >= self.needed

    @property
    def status(self) -> str:
        """``compared`` (the figures are in) or ``waiting`` (too few labelled intervals)."""
        return "compared" if self.enough else "waiting"

    def describe(self) -> str:
        """One line: the figures, or how many labelled intervals there are of how many needed."""
        if not self.enough:
            return (
                f"live gate: {len(self.intervals)} of the {self.needed} labelled shadow intervals gate.shadow needs "
                f"for v{self.version} so far"
            )
        served = ", ".join(f"v{v}" for v in self.served_versions) or "none"
        return (
            f"live on {len(self.intervals)} labelled shadow interval(s), {self.rows:,} rows: {self.metric} "
            f"v{self.version} {_num(self.challenger)} vs served ({served}) {_num(self.served)}"
        )

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe, for the gate's XCom and the ledger's evidence (NaN as None)."""
        return {
            "status": self.status,
            "version": self.version,
            "metric": self.metric,
            "needed": self.needed,
            "intervals": dict(self.intervals),
            "challenger": _json(self.challenger),
            "served": _json(self.served),
            "served_versions": list(self.served_versions),
            "rows": self.rows,
            "notes": list(self.notes),
            "summary": self.describe(),
        }


def _num(value: float) -> str:
    return f"{value:.4g}" if math.isfinite(value) else "NaN"


def _json(value: float) -> float | None:
    return value if math.isfinite(value) else None


def label_text(value: Any, classes: list[str]) -> str:
    """A label as one of ``classes`` where it is one by value (``1.0`` is class ``1``); else as it is."""
    text = str(value)
    if text in classes:
        return text
    try:
        number = float(text)
    except ValueError:
        return text
    if math.isfinite(number) and number.is_integer() and str(int(number)) in classes:
        return str(int(number))
    return text


def _outputs(rows: list[dict[str, Any]], side: str, task: str, classes: list[str]) -> dict[str, Any]:
    """One side's (``shadow`` or ``served``) metric inputs for :func:`metrics.compute`."""
    if task == "regression":
        return {"y_pred": [_float(r[f"{side}_prediction"]) for r in rows]}
    predicted = [r[f"{side}_predicted_class"] for r in rows]
    if task == "binary":
        return {"y_pred": predicted, "proba": [_float(r[f"{side}_probability"]) for r in rows]}
    proba = []
    for r in rows:
        given = json.loads(r[f"{side}_probabilities"] or "{}")
        proba.append([_float(given.get(c)) for c in classes])
    return {"y_pred": predicted, "proba": proba}


def _float(value: Any) -> float:
    """A number, or NaN for anything that is not one (a missing output, a label that is not a number)."""
    if not isinstance(value, Real | str):
        return math.nan
    try:
        return float(value)
    except ValueError:
        return math.nan


def metric_classes(classes: list[str], positive: Any | None) -> list[str]:
    """Classes in the metric registry's order: binary ``[negative, positive]`` (the spec's positive class, else
    the model's second), multiclass as the model has them."""
    if len(classes) != 2:
        return list(classes)
    chosen = str(positive) if positive is not None and str(positive) in classes else classes[1]
    return [c for c in classes if c != chosen] + [chosen]


def compare(
    rows: list[dict[str, Any]],
    *,
    version: str,
    metric: str,
    needed: int,
    intervals: dict[str, int],
    classes: list[str] | None,
    positive: Any | None = None,
    threshold: float = 0.5,
) -> LiveComparison:
    """The gate metric of the challenger's shadow rows and of the served rows on the same labelled rows.

    ``classes``: the challenger's classes as text (None: a regression).
    """
    base = LiveComparison(version=version, metric=metric, needed=needed, intervals=dict(intervals))
    if not base.enough:
        return base
    if classes is None:
        task, ordered = "regression", []
        y: list[Any] = [_float(r["label"]) for r in rows]
    else:
        ordered = metric_classes(classes, positive)
        task = "binary" if len(ordered) == 2 else "multiclass"
        y = [label_text(r["label"], ordered) for r in rows]
    scored: dict[str, float] = {}
    notes: list[str] = []
    for side in ("shadow", "served"):
        inputs = _outputs(rows, side, task, ordered)
        found = metrics.compute(task, y, classes=ordered or None, threshold=threshold, names=[metric], **inputs)
        scored[side] = found[metric]
        if metric in found.notes:
            notes.append(f"{side}: {found.notes[metric]}")
    return LiveComparison(
        version=version,
        metric=metric,
        needed=needed,
        intervals=dict(intervals),
        challenger=scored["shadow"],
        served=scored["served"],
        served_versions=sorted({str(r["served_version"]) for r in rows}, key=lambda v: (len(v), v)),
        rows=len(rows),
        notes=notes,
    )


def live_comparison(spec: ModelSpec, version: str, classes: list[str] | None) -> LiveComparison:
    """Read the labelled shadow rows of ``version`` from the warehouse and compare them (see :func:`compare`)."""
    from airloop.adapters import shadow as store
    from airloop.adapters.db import engine_for
    from airloop.core.settings import WAREHOUSE_CONN_ID

    assert spec.gate.shadow is not None
    engine = engine_for(WAREHOUSE_CONN_ID)
    intervals = store.labelled_intervals(engine, spec.name, version)
    needed = spec.gate.shadow.intervals
    rows = store.live_rows(engine, spec.name, version) if len(intervals) >= needed else []
    return compare(
        rows,
        version=version,
        metric=spec.gate_metric,
        needed=needed,
        intervals=intervals,
        classes=classes,
        positive=spec.target.positive_class,
        threshold=spec.target.decision_threshold,
    )

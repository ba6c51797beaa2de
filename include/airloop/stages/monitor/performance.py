"""The champion's performance on a window's labelled rows, by task, and whether it degraded since training.

Every metric of the task that the outputs allow is computed with :func:`airloop.core.metrics.compute`
(regression: rmse, mae, r2, ...; binary: roc_auc, log_loss, accuracy, brier, ...; multiclass: log_loss,
accuracy, f1_macro, ...). Degradation is judged on one metric (``spec.performance_metric``) in its direction:
the relative worsening against the champion's holdout value of that metric at training (``holdout_<metric>``
in its MLflow run), ``0.12`` = 12 % worse, negative = better. It is not judged (None, never "degraded") when
the training run lacks that figure, the figure is 0, or the window's value is NaN (one class in the window, too
few labels): :attr:`Performance.unjudged` says which.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from airloop.core import metrics
from airloop.core.numbers import json_number, num, pct
from airloop.core.spec import PREDICTION_COLUMN
from airloop.stages.monitor.outputs import ClassOutputs, as_classes

if TYPE_CHECKING:
    import pandas as pd


@dataclass(frozen=True)
class Performance:
    """The champion on the window's labelled rows: the task's scores, its holdout figures, the judged metric."""

    rows: int
    task: str
    metric: str
    scores: dict[str, float]
    reference: dict[str, float]
    max_degradation: float
    notes: dict[str, str] = field(default_factory=dict)
    unseen: dict[str, int] = field(default_factory=dict)
    #: ``realized`` (from labels) or ``estimated`` (from calibrated probabilities, no labels yet).
    kind: str = "realized"
    #: Fewer rows than this: shown, not judged (``monitoring.min_labels``).
    min_rows: int = 0
    #: The model version whose served predictions these are (None: not said).
    version: str | None = None

    @property
    def lower_is_better(self) -> bool:
        return metrics.get(self.metric).lower_is_better

    @property
    def value(self) -> float:
        """The judged metric on the window (NaN when undefined there)."""
        return self.scores.get(self.metric, math.nan)

    @property
    def reference_value(self) -> float | None:
        """The judged metric on the champion's holdout at training; None when its run lacks it."""
        return self.reference.get(self.metric)

    @property
    def unjudged(self) -> str | None:
        """Why degradation is not judged (a sentence), or None when it is."""
        if self.rows < self.min_rows:
            what = "labelled outcomes" if self.kind == "realized" else "unlabelled rows estimated"
            return (
                f"only {self.rows} {what}, fewer than monitoring.min_labels ({self.min_rows}): too few to judge, "
                "degradation not judged"
            )
        ref = self.reference_value
        if ref is None or not math.isfinite(ref):
            return f"the champion's training run has no holdout_{self.metric}: degradation not judged"
        if math.isnan(self.value):
            why = self.notes.get(self.metric, "undefined on these rows")
            return f"{self.metric} is NaN on this window ({why}): degradation not judged"
        if ref == 0:
            return f"the champion's holdout {self.metric} is 0: a relative change is undefined, degradation not judged"
        return None

    @property
    def degradation(self) -> float | None:
        """Relative worsening of the judged metric against training (0.5 = 50 % worse, negative = better)."""
        if self.unjudged is not None:
            return None
        ref = self.reference_value
        assert ref is not None
        worse = self.value - ref if self.lower_is_better else ref - self.value
        return worse / abs(ref)

    @property
    def degraded(self) -> bool:
        return self.degradation is not None and self.degradation > self.max_degradation

    @property
    def mae(self) -> float | None:
        """Regression's MAE (None for a classifier): the warehouse's and the demo's long-standing column."""
        return self.scores.get("mae")

    @property
    def rmse(self) -> float | None:
        return self.scores.get("rmse")

    @property
    def reference_mae(self) -> float | None:
        return self.reference.get("mae")

    @property
    def reference_rmse(self) -> float | None:
        return self.reference.get("rmse")

    def change(self) -> str:
        """The judged metric against training, for people: ``log_loss 0.45 vs training's 0.4: worse by 12 %``."""
        head = f"{self.metric} {num(self.value)}"
        degradation = self.degradation
        if degradation is None:
            return f"{head} ({self.unjudged})"
        ref = num(self.reference_value or 0.0)
        way = "worse" if degradation > 0 else "better"
        return f"{head} vs training's {ref} ({metrics.get(self.metric).direction}): {way} by {pct(degradation)}"

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe figures (NaN as None, with the registry's notes saying why)."""
        return {
            "kind": self.kind,
            "version": self.version,
            "rows": self.rows,
            "min_rows": self.min_rows,
            "task": self.task,
            "metric": self.metric,
            "lower_is_better": self.lower_is_better,
            "value": json_number(self.value),
            "reference_value": json_number(self.reference_value),
            "degradation": json_number(self.degradation),
            "degraded": self.degraded,
            "max_degradation": self.max_degradation,
            "unjudged": self.unjudged,
            "scores": {k: json_number(v) for k, v in self.scores.items()},
            "reference": {k: json_number(v) for k, v in self.reference.items()},
            "notes": dict(self.notes),
            "unseen_labels": dict(self.unseen),
            "mae": json_number(self.mae),
            "rmse": json_number(self.rmse),
            "reference_mae": json_number(self.reference_mae),
            "reference_rmse": json_number(self.reference_rmse),
        }


def performance(
    frame: pd.DataFrame,
    target: str,
    reference: dict[str, float],
    max_degradation: float,
    *,
    metric: str = "mae",
    outputs: ClassOutputs | None = None,
) -> Performance | None:
    """The task's scores of the champion's outputs on the rows with a label; None when no row has one yet.

    ``reference``: the champion's training run metrics (``holdout_<metric>``). ``outputs``: a classifier's
    classes (None: a regression, scored on ``_prediction``). ``metric``: the one degradation is judged on.
    """
    if outputs is None:
        return _regression(frame, target, reference, max_degradation, metric)
    return _classification(frame, target, reference, max_degradation, metric, outputs)


def _holdout(reference: dict[str, float], names: Any) -> dict[str, float]:
    """The training run's ``holdout_<name>`` figures for the metrics scored (those it has)."""
    return {n: float(reference[f"holdout_{n}"]) for n in names if f"holdout_{n}" in reference}


def _regression(
    frame: pd.DataFrame, target: str, reference: dict[str, float], max_degradation: float, metric: str
) -> Performance | None:
    import numpy as np

    predicted = frame[PREDICTION_COLUMN].to_numpy(dtype=float)
    labelled = frame[frame[target].notna().to_numpy() & np.isfinite(predicted)]
    if labelled.empty:
        return None
    y = labelled[target].to_numpy(dtype=float)
    scores = metrics.compute("regression", y, y_pred=labelled[PREDICTION_COLUMN].to_numpy(dtype=float))
    return Performance(
        rows=len(labelled),
        task="regression",
        metric=metric,
        scores=dict(scores),
        reference=_holdout(reference, scores),
        max_degradation=max_degradation,
        notes=dict(scores.notes),
    )


def _classification(
    frame: pd.DataFrame,
    target: str,
    reference: dict[str, float],
    max_degradation: float,
    metric: str,
    outputs: ClassOutputs,
) -> Performance | None:
    import numpy as np

    labelled = frame[frame[target].notna()]
    if labelled.empty:
        return None
    y, unseen = as_classes(labelled[target], outputs)
    known = y.notna().to_numpy()
    rows = labelled[known]
    classes = outputs.metric_classes
    if outputs.task == "binary":
        proba = rows[outputs.watched[0]].to_numpy(dtype=float)
    else:
        proba = rows[[outputs.columns[outputs.classes.index(c)] for c in classes]].to_numpy(dtype=float)
    scores = metrics.compute(
        outputs.task,
        np.asarray(y[known].tolist(), dtype=object),
        y_pred=np.asarray(rows[PREDICTION_COLUMN].tolist(), dtype=object),
        proba=proba,
        classes=classes,
        threshold=outputs.threshold,
    )
    return Performance(
        rows=len(rows),
        task=outputs.task,
        metric=metric,
        scores=dict(scores),
        reference=_holdout(reference, scores),
        max_degradation=max_degradation,
        notes=dict(scores.notes),
        unseen=unseen,
    )


def outcome_frame(outcomes: pd.DataFrame, target: str, outputs: ClassOutputs | None) -> pd.DataFrame:
    """``outcomes`` rows (served prediction and label, as text) as :func:`performance` reads a frame.

    Regression: the label as a number in ``target``, the served value in ``_prediction``. Classification: the
    label text in ``target`` (matched to the classes by text), the served class in ``_prediction``, and the served
    probabilities in the ``_proba_<class>`` columns (binary: ``probability``, P(positive); multiclass: the JSON of
    every class's probability).
    """
    import json

    import pandas as pd

    from airloop.stages.monitor.outputs import label_key

    frame = pd.DataFrame(index=outcomes.index)
    if outputs is None:
        frame[target] = pd.to_numeric(outcomes["label"], errors="coerce")
        frame[PREDICTION_COLUMN] = pd.to_numeric(outcomes["prediction"], errors="coerce")
        return frame.reset_index(drop=True)
    by_key = {label_key(c): c for c in outputs.classes}
    frame[target] = outcomes["label"].astype(object)
    frame[PREDICTION_COLUMN] = outcomes["predicted_class"].map(lambda t: by_key.get(str(t))).astype(object)
    if outputs.task == "binary":
        frame[outputs.watched[0]] = pd.to_numeric(outcomes["probability"], errors="coerce")
    else:
        parsed = [json.loads(p) if isinstance(p, str) else {} for p in outcomes["probabilities"]]
        for column, cls in zip(outputs.columns, outputs.classes, strict=True):
            frame[column] = [float(p.get(label_key(cls), math.nan)) for p in parsed]
    return frame.reset_index(drop=True)

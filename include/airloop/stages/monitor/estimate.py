"""Performance estimated before the labels arrive: confidence-based performance estimation (CBPE), as NannyML does.

For the rows of a window that were served but have no label yet, a classifier's calibrated probabilities say how
often each prediction should come true. Summed, they give the expected confusion matrix, hence expected metrics:

- binary, with p = calibrated P(positive) and the served class: expected TP = sum of p over rows predicted
  positive, FP = sum of 1 - p there, FN = sum of p over rows predicted negative, TN = sum of 1 - p there; then
  accuracy, balanced accuracy, precision, recall and f1. ``roc_auc``: the expected true and false positive rates
  at every threshold of the served score (NannyML's CBPE ROC AUC). ``brier`` and ``log_loss``: their expectation
  over each row's outcome. ``average_precision`` is not estimated (CBPE gives no standard form of it);
- multiclass: expected accuracy, the mean calibrated confidence of the served class (top-label calibration).

The calibration is fitted on the version's holdout at training (``airloop.stages.train.calibration``). When its
expected calibration error, measured cross-fitted on that holdout, exceeds ``monitoring.max_calibration_error``,
the version says "not estimated: calibration poor, ECE x > y" instead of estimating: an estimate from
probabilities that do not mean what they say would be a number without meaning.

Why hand-written and not ``nannyml``: it resolves with our locked numpy/pandas/scikit-learn, but pulls about 90
packages (lightgbm, xgboost, flaml, plotly, matplotlib, ...) into the runtime image, and its API estimates over
chunks of a reference and an analysis frame with its own plots and storage; what airloop needs is the ~60 lines
of arithmetic below on rows it already has, beside its own realized figures.

Regressors are not estimated: direct loss estimation (DLE) fits a loss model on the holdout's features and errors,
so it would keep the holdout's feature rows with every version and assumes the relation between features and error
holds in the window (no concept shift), which is exactly what a monitor cannot assume for a regressor whose labels
(e.g. demand) follow the inputs it drifts on. Saying "not estimated" with that reason is honest; realized
performance from ``outcomes`` follows as soon as labels arrive.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from airloop.core import metrics
from airloop.core.numbers import json_number, num
from airloop.stages.monitor.performance import Performance

if TYPE_CHECKING:
    import numpy as np
    import pandas as pd

    from airloop.stages.train.calibration import Calibration

#: Metrics CBPE estimates, by task.
ESTIMATED = {
    "binary": ("roc_auc", "accuracy", "balanced_accuracy", "precision", "recall", "f1", "brier", "log_loss"),
    "multiclass": ("accuracy",),
}
REGRESSION_REASON = (
    "not estimated: a regressor's performance is not estimated without labels (direct loss estimation would "
    "assume the error's relation to the inputs holds in a drifting window); realized figures follow with the labels"
)


@dataclass(frozen=True)
class Estimate:
    """One version's estimated performance on a window's unlabelled rows, or why it was not estimated."""

    version: str
    rows: int
    performance: Performance | None = None
    reason: str | None = None
    ece: float | None = None
    max_ece: float | None = None

    @property
    def estimated(self) -> bool:
        return self.performance is not None

    def line(self) -> str:
        """One verdict line: the estimate and its calibration, or why there is none."""
        if self.performance is None:
            return f"  estimated (v{self.version}, {self.rows} unlabelled rows): {self.reason}"
        perf = self.performance
        scores = ", ".join(f"{name} {num(value)}" for name, value in perf.scores.items())
        return (
            f"  estimated (CBPE, v{self.version}, {perf.rows} unlabelled rows, calibration ECE {num(self.ece or 0)}): "
            f"{scores}; judged on {perf.change()}"
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "version": self.version,
            "rows": self.rows,
            "status": "estimated" if self.estimated else "not estimated",
            "reason": self.reason,
            "ece": json_number(self.ece),
            "max_ece": self.max_ece,
            "performance": None if self.performance is None else self.performance.to_dict(),
        }


def _safe(num_: float, den: float) -> float:
    return num_ / den if den > 0 else math.nan


def binary_scores(p: np.ndarray, score: np.ndarray, positive: np.ndarray) -> dict[str, float]:
    """Expected binary metrics from calibrated P(positive) ``p``, the served score and the served class."""
    import numpy as np

    tp = float(p[positive].sum())
    fp = float((1 - p[positive]).sum())
    fn = float(p[~positive].sum())
    tn = float((1 - p[~positive]).sum())
    n = len(p)
    recall = _safe(tp, tp + fn)
    specificity = _safe(tn, tn + fp)
    s = np.clip(score, 1e-15, 1 - 1e-15)
    return {
        "roc_auc": expected_roc_auc(p, score),
        "accuracy": _safe(tp + tn, n),
        "balanced_accuracy": (recall + specificity) / 2,
        "precision": _safe(tp, tp + fp),
        "recall": recall,
        "f1": _safe(2 * tp, 2 * tp + fp + fn),
        "brier": float(np.mean(p * (1 - score) ** 2 + (1 - p) * score**2)) if n else math.nan,
        "log_loss": float(-np.mean(p * np.log(s) + (1 - p) * np.log(1 - s))) if n else math.nan,
    }


def expected_roc_auc(p: np.ndarray, score: np.ndarray) -> float:
    """ROC AUC of ``score`` with each row positive with probability ``p``: expected TPR and FPR per threshold."""
    import numpy as np

    positives, negatives = float(p.sum()), float((1 - p).sum())
    if positives <= 0 or negatives <= 0:
        return math.nan
    order = np.argsort(-score, kind="stable")
    s, pp = score[order], p[order]
    last = np.r_[np.flatnonzero(np.diff(s) != 0), len(s) - 1]  # tied scores form one threshold
    tpr = np.r_[0.0, np.cumsum(pp)[last] / positives]
    fpr = np.r_[0.0, np.cumsum(1 - pp)[last] / negatives]
    return float(np.sum((fpr[1:] - fpr[:-1]) * (tpr[1:] + tpr[:-1]) / 2))


def _refusal(version: str, rows: int, calibration: Calibration | None, max_ece: float) -> Estimate | None:
    """Why this version's rows are not estimated (no calibration, poor calibration, no unlabelled row), or None."""
    if calibration is None:
        return Estimate(
            version,
            rows,
            reason="not estimated: the version's training run kept no holdout probabilities "
            "(calibration/holdout.json); retrain it with this airloop to estimate",
        )
    ece = calibration.ece
    if not math.isfinite(ece) or ece > max_ece:
        how = "after isotonic calibration on the holdout" if calibration.calibrated else "uncalibrated"
        return Estimate(
            version,
            rows,
            reason=f"not estimated: calibration poor, ECE {num(ece)} > {num(max_ece)} ({how}, "
            f"{calibration.rows} holdout rows)",
            ece=ece,
            max_ece=max_ece,
        )
    if rows == 0:
        return Estimate(
            version, 0, reason="not estimated: no served prediction of the window is waiting for its label", ece=ece
        )
    return None


def estimate(
    served: pd.DataFrame,
    calibration: Calibration | None,
    reference: dict[str, float],
    *,
    version: str,
    metric: str,
    max_degradation: float,
    max_ece: float,
    min_rows: int,
) -> Estimate:
    """CBPE of one version on its served, still unlabelled rows (``predicted_class``, ``probability``).

    ``calibration``: the version's, from its holdout (None: the version kept none). ``reference``: its training
    run's metrics (``holdout_<metric>``), against which the estimate is judged like a realized figure.
    """
    import numpy as np

    rows = len(served)
    refused = _refusal(version, rows, calibration, max_ece)
    if refused is not None or calibration is None:
        return refused or Estimate(version, rows)
    ece = calibration.ece
    score = served["probability"].to_numpy(dtype=float)
    p = calibration.apply(score)
    if calibration.task == "binary":
        positive = (served["predicted_class"].astype(str) == str(calibration.positive)).to_numpy()
        scores = binary_scores(p, score, positive)
    else:
        scores = {"accuracy": float(np.mean(p))}
    task = calibration.task
    notes = {}
    if metrics.find(metric) is not None and metric not in scores:
        notes[metric] = f"CBPE gives no estimate of {metric} (it estimates {', '.join(ESTIMATED[task])})"
    holdout = {n: float(reference[f"holdout_{n}"]) for n in scores if f"holdout_{n}" in reference}
    perf = Performance(
        rows=rows,
        task=task,
        metric=metric,
        scores=scores,
        reference=holdout,
        max_degradation=max_degradation,
        notes=notes,
        kind="estimated",
        min_rows=min_rows,
        version=version,
    )
    return Estimate(version, rows, performance=perf, ece=ece, max_ece=max_ece)

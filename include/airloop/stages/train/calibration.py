"""A classifier's holdout probabilities and outcomes, kept with its MLflow run, and the calibration fitted on them.

Performance can be estimated before the labels arrive (confidence-based performance estimation, CBPE, as NannyML
does it) only from probabilities that mean what they say. At training, :func:`holdout_artifact` keeps the holdout's
scores and whether each came true as the run's artifact :data:`ARTIFACT` (one small call from the train stage):

- binary: the score is P(positive class), the event "the label is the positive class";
- multiclass: the score is the probability of the predicted class (the model's confidence), the event "the
  predicted class is right" (top-label calibration: what an expected accuracy needs).

At monitoring, :func:`calibration` fits an isotonic map from score to event on those rows and measures the
expected calibration error (ECE) both of the raw scores and of the calibrated ones, cross-fitted (each fold mapped
by a calibration fitted on the other folds, so the figure is not flattered by fitting and scoring the same rows).

Regressors keep nothing here: their estimate (direct loss estimation) would need the holdout's features too; see
``airloop.stages.monitor.estimate`` for why they are "not estimated".
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import numpy as np
    import pandas as pd

    from airloop.core.spec import ModelSpec

log = logging.getLogger(__name__)

#: The run artifact holding the holdout's scores and events.
ARTIFACT = "calibration/holdout.json"
#: At most this many holdout rows are kept (a seeded sample): a calibration map needs thousands, not millions.
MAX_ROWS = 20_000
#: Bins of the expected calibration error: equal-mass (each holds the same number of rows), so a score range
#: crowded near 0 (rare positives) is not summarised by one bin.
BINS = 10
FOLDS = 5


def class_text(value: Any) -> str:
    """A class as text, as the prediction tables write it (``1``, ``1.0`` and ``"1"`` are ``1``)."""
    if hasattr(value, "item"):
        value = value.item()
    if isinstance(value, bool | int):
        return str(value)
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def holdout_record(spec: ModelSpec, model: Any, holdout: pd.DataFrame) -> dict[str, Any] | None:
    """The holdout's scores and events of a fitted classifier (None for a regressor or an empty holdout)."""
    import numpy as np

    if spec.target.task == "regression" or holdout.empty or not hasattr(model, "predict_proba"):
        return None
    classes = [c.item() if hasattr(c, "item") else c for c in model.classes_]
    texts = [class_text(c) for c in classes]
    frame = holdout
    if len(frame) > MAX_ROWS:
        frame = frame.sample(n=MAX_ROWS, random_state=np.random.default_rng(spec.training.seed))
    labels = frame[spec.target.name]
    known = labels.notna().to_numpy()
    proba = np.asarray(model.predict_proba(frame.loc[known, spec.feature_names]), dtype=float)
    y = np.asarray([class_text(v) for v in labels[known]], dtype=object)
    if len(classes) == 2:
        positive = texts[1]
        if spec.target.positive_class is not None and class_text(spec.target.positive_class) in texts:
            positive = class_text(spec.target.positive_class)
        scores = proba[:, texts.index(positive)]
        events = y == positive
        task = "binary"
    else:
        positive = None
        scores = proba.max(axis=1)
        events = np.asarray(texts, dtype=object)[proba.argmax(axis=1)] == y
        task = "multiclass"
    return {
        "task": task,
        "classes": texts,
        "positive": positive,
        "threshold": spec.target.decision_threshold,
        "rows": len(scores),
        "scores": [round(float(s), 6) for s in scores],
        "events": [int(e) for e in events],
    }


def holdout_artifact(spec: ModelSpec, model: Any, holdout: pd.DataFrame) -> dict[str, Any]:
    """:func:`holdout_record` as the run's :data:`ARTIFACT` (``{path: record}``, logged with the run's other JSON
    files); nothing for a regressor."""
    record = holdout_record(spec, model, holdout)
    if record is None:
        return {}
    log.info("Keeping %d holdout scores of %s for performance estimation (%s).", record["rows"], spec.name, ARTIFACT)
    return {ARTIFACT: record}


def load_holdout(run_id: str) -> dict[str, Any] | None:
    """The run's holdout record; None when it has none (a regressor, or a version trained before it was kept)."""
    from airloop.adapters import registry

    return registry.run_dict(run_id, ARTIFACT)


def expected_calibration_error(scores: np.ndarray, events: np.ndarray, bins: int = BINS) -> float:
    """Mean |observed rate - mean score| over equal-mass bins of the scores, weighed by their rows."""
    import numpy as np

    if len(scores) == 0:
        return float("nan")
    order = np.argsort(scores, kind="stable")
    total = 0.0
    for chunk in np.array_split(order, min(bins, len(order))):
        total += len(chunk) * abs(float(events[chunk].mean()) - float(scores[chunk].mean()))
    return total / len(scores)


@dataclass(frozen=True)
class Calibration:
    """An isotonic map of a version's scores to probabilities, and how well calibrated it is."""

    task: str
    classes: tuple[str, ...]
    positive: str | None
    rows: int
    raw_ece: float
    calibrated_ece: float
    calibrated: bool
    mapper: Any  # a fitted IsotonicRegression, or None when the scores are used as they are

    @property
    def ece(self) -> float:
        """The error the estimate relies on: the calibrated scores' (cross-fitted), or the raw ones'."""
        return self.calibrated_ece if self.calibrated else self.raw_ece

    def apply(self, scores: np.ndarray) -> np.ndarray:
        """The scores as calibrated probabilities (as they are when not calibrated), clipped to [0, 1]."""
        import numpy as np

        scores = np.clip(np.asarray(scores, dtype=float), 0.0, 1.0)
        return scores if self.mapper is None else np.clip(self.mapper.predict(scores), 0.0, 1.0)


def _isotonic() -> Any:
    from sklearn.isotonic import IsotonicRegression

    return IsotonicRegression(y_min=0.0, y_max=1.0, out_of_bounds="clip")


def calibration(record: dict[str, Any], *, calibrate: bool = True, seed: int = 0) -> Calibration:
    """Fit the isotonic map on the record's rows and measure both ECEs (the calibrated one cross-fitted)."""
    import numpy as np

    scores = np.asarray(record["scores"], dtype=float)
    events = np.asarray(record["events"], dtype=float)
    raw = expected_calibration_error(scores, events)
    crossed = np.empty_like(scores)
    folds = np.random.default_rng(seed).permutation(len(scores)) % FOLDS
    for k in range(FOLDS):
        test = folds == k
        if test.all() or not test.any():
            crossed[test] = scores[test]
            continue
        crossed[test] = _isotonic().fit(scores[~test], events[~test]).predict(scores[test])
    mapper = _isotonic().fit(scores, events) if calibrate and len(scores) else None
    return Calibration(
        task=record["task"],
        classes=tuple(record["classes"]),
        positive=record.get("positive"),
        rows=len(scores),
        raw_ece=raw,
        calibrated_ece=expected_calibration_error(crossed, events),
        calibrated=calibrate,
        mapper=mapper,
    )

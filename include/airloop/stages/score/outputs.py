"""What a scored row carries besides its key: a regression's number, or a classifier's class and probabilities.

Pure steps on arrays. A classifier's probabilities are predicted once per chunk and everything else derives from
them: binary, the positive class's probability against the spec's ``decision_threshold``; multiclass, the most
probable class (argmax) and every class's probability. Classes are written as text (``str`` of the label), so
string, integer and boolean labels all work.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from collections.abc import Sequence

    import numpy as np


@dataclass(frozen=True)
class Classes:
    """A classifier's classes in ``classes_`` order: the labels as text, and the positive one's index (binary)."""

    labels: tuple[str, ...]
    positive: int | None  # None: multiclass

    @property
    def binary(self) -> bool:
        return len(self.labels) == 2


@dataclass(frozen=True)
class Outputs:
    """One chunk's per-row outputs; a field left None is null in every row (see ``prediction_sink.ScoredRows``)."""

    prediction: np.ndarray | None = None
    predicted_class: list[str] | None = None
    probability: np.ndarray | None = None
    probabilities: list[str] | None = None

    def copy(self) -> dict[str, Any]:
        """The fields as keyword arguments, arrays copied (the sink's thread gets values of its own)."""
        return {
            "prediction": None if self.prediction is None else self.prediction.copy(),
            "predicted_class": None if self.predicted_class is None else list(self.predicted_class),
            "probability": None if self.probability is None else self.probability.copy(),
            "probabilities": None if self.probabilities is None else list(self.probabilities),
        }


def positive_index(classes: Sequence[Any], positive_class: Any) -> int | None:
    """Where the positive class is among two ``classes``: the spec's ``positive_class`` (matched by value or by its
    text), else the second class (1 of 0/1, True of False, as scikit-learn sorts them); None when it is not there."""
    if positive_class is None:
        return 1
    for i, label in enumerate(classes):
        if label == positive_class or str(label) == str(positive_class):
            return i
    return None


def classify(proba: np.ndarray, classes: Classes, threshold: float) -> Outputs:
    """The predicted class and probabilities of each row from checked probabilities (one column per class).

    Binary: ``probability`` is P(positive), the class is the positive one when it is at least ``threshold``.
    Multiclass: the most probable class (the first on a tie), its probability, and ``probabilities`` as JSON text
    of class -> probability in class order.
    """
    import numpy as np

    labels = np.asarray(classes.labels, dtype=object)
    if proba.ndim == 1:  # two classes, the positive one's probability
        proba = np.column_stack([1 - proba, proba])
    if classes.binary:
        assert classes.positive is not None
        p = proba[:, classes.positive].copy()
        chosen = np.where(p >= threshold, classes.positive, 1 - classes.positive)
        return Outputs(predicted_class=labels[chosen].tolist(), probability=p)
    best = proba.argmax(axis=1)
    texts = [json.dumps(dict(zip(classes.labels, row, strict=True))) for row in proba.tolist()]
    return Outputs(
        predicted_class=labels[best].tolist(),
        probability=proba[np.arange(len(proba)), best].copy(),
        probabilities=texts,
    )


def bad_probability_rows(proba: Any, classes: int, tolerance: float) -> np.ndarray:
    """Positions of rows whose probabilities are not finite, outside [0, 1] or do not sum to 1 (all rows when the
    array does not have one column per class)."""
    import numpy as np

    arr = np.asarray(proba, dtype=float)
    if arr.ndim == 1 and classes == 2:
        arr = np.column_stack([1 - arr, arr])
    if arr.ndim != 2 or arr.shape[1] != classes:
        return np.arange(len(arr))
    with np.errstate(invalid="ignore"):
        bad = ~np.isfinite(arr).all(axis=1) | ((arr < 0) | (arr > 1)).any(axis=1)
        bad |= ~(np.abs(arr.sum(axis=1) - 1) <= tolerance)
    return np.flatnonzero(bad)

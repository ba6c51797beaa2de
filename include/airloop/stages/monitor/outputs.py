"""What the champion outputs, as the monitor compares it: predicted values, or class probabilities and classes.

A regressor's predictions go to ``_prediction`` (numeric). A classifier's go to

- ``_proba_<class>``: the probability of the positive class (binary: ``target.positive_class``, else the second
  of the model's ``classes_``) or of each class (multiclass), numeric;
- ``_prediction``: the predicted class (binary: the positive class when its probability is at least
  ``target.decision_threshold``; multiclass: the most probable class), a category whose mix is compared.

``<class>`` is the class's text with anything but letters, digits, ``.``, ``-`` and ``_`` replaced by ``_``
(``_2``, ``_3``, ... when two classes render alike). The spec refuses data columns with these names
(:func:`airloop.core.spec.reserved_column`). Labels are matched to the model's classes by their text (a label
``1.0`` read from a column with gaps is class ``1``); a label the model never saw is counted, never scored.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from numbers import Integral, Real
from typing import TYPE_CHECKING, Any

from airloop.core.params import ParamProblem
from airloop.core.spec import PREDICTION_COLUMN, PROBA_PREFIX, ModelSpec

if TYPE_CHECKING:
    import numpy as np
    import pandas as pd


class OutputProblem(ParamProblem):
    """A champion whose outputs do not fit its spec (classes, positive class); the message says what to do."""


@dataclass(frozen=True)
class ClassOutputs:
    """A classifier's classes as the monitor uses them: the probability columns, the positive class, the threshold."""

    classes: tuple[Any, ...]
    columns: tuple[str, ...]
    positive: Any | None
    threshold: float

    @property
    def task(self) -> str:
        """The metric registry's task: ``binary`` or ``multiclass``."""
        return "binary" if len(self.classes) == 2 else "multiclass"

    @property
    def watched(self) -> tuple[str, ...]:
        """The probability columns compared: the positive class's (binary) or every class's (multiclass)."""
        if self.task == "binary":
            return (self.columns[self.classes.index(self.positive)],)
        return self.columns

    @property
    def metric_classes(self) -> list[Any]:
        """The classes in the metric registry's order: binary ``[negative, positive]``; multiclass as trained."""
        if self.task == "binary":
            return [c for c in self.classes if c != self.positive] + [self.positive]
        return list(self.classes)

    def class_of(self, column: str) -> Any:
        """The class whose probability ``column`` holds."""
        return self.classes[self.columns.index(column)]


def label_key(value: Any) -> str:
    """A label as text, the same for one class whatever its type: ``1``, ``1.0`` and ``"1"`` are ``1``."""
    if hasattr(value, "item"):
        value = value.item()  # numpy scalars
    if isinstance(value, Integral):  # bool too
        return str(value)
    if isinstance(value, Real) and math.isfinite(value) and float(value).is_integer():
        return str(int(float(value)))
    return str(value)


def proba_columns(classes: tuple[Any, ...]) -> tuple[str, ...]:
    """``_proba_<class>`` per class, with a safe rendering of the class, unique."""
    out: list[str] = []
    for c in classes:
        base = PROBA_PREFIX + (re.sub(r"[^0-9A-Za-z_.-]+", "_", label_key(c)) or "_")
        name, n = base, 1
        while name in out:
            n += 1
            name = f"{base}_{n}"
        out.append(name)
    return tuple(out)


def class_outputs(spec: ModelSpec, classes: Any) -> ClassOutputs:
    """The champion's classes (its ``classes_``) with the spec's positive class and threshold resolved."""
    found = tuple(c.item() if hasattr(c, "item") else c for c in classes)  # numpy scalars as Python values
    if len(found) < 2:
        raise OutputProblem(
            f"The champion of {spec.name} knows {len(found)} class(es) ({list(found)!r}); a classifier needs at least "
            "two. Retrain it on data holding every class, then promote it."
        )
    target = spec.target
    positive = None
    if len(found) == 2:
        positive = found[1]
        if target.positive_class is not None:
            keys = [label_key(c) for c in found]
            wanted = label_key(target.positive_class)
            if wanted not in keys:
                raise OutputProblem(
                    f"target.positive_class {target.positive_class!r} of {spec.name} is not a class of its champion "
                    f"(classes: {list(found)!r}). Fix the spec's positive_class, or retrain on data holding it."
                )
            positive = found[keys.index(wanted)]
    return ClassOutputs(found, proba_columns(found), positive, target.decision_threshold)


def predicted_classes(proba: np.ndarray, outputs: ClassOutputs) -> np.ndarray:
    """The predicted class per row: binary by the threshold on the positive class, multiclass by the argmax."""
    import numpy as np

    classes = np.asarray(outputs.classes, dtype=object)
    if outputs.task == "binary":
        negative, positive = outputs.metric_classes
        picked = proba[:, outputs.classes.index(positive)] >= outputs.threshold
        return np.where(picked, positive, negative).astype(object)
    return classes[proba.argmax(axis=1)]


def with_predictions(frame: pd.DataFrame, model: Any, features: list[str], outputs: ClassOutputs | None) -> None:
    """Add the champion's outputs to ``frame`` in place: ``_prediction``, and a classifier's probabilities."""
    import numpy as np

    from airloop.stages.train.threads import few_rows

    with few_rows(len(frame)):
        if outputs is None:
            frame[PREDICTION_COLUMN] = model.predict(frame[features])
            return
        proba = np.asarray(model.predict_proba(frame[features]), dtype=float)
    for column in outputs.watched:
        frame[column] = proba[:, outputs.columns.index(column)]
    frame[PREDICTION_COLUMN] = predicted_classes(proba, outputs)


def prediction_columns(spec: ModelSpec, frame: pd.DataFrame) -> tuple[list[str], list[str]]:
    """The monitor's output columns in ``frame``: (numeric, categorical), as their drift is measured."""
    if spec.target.task == "regression":
        return [PREDICTION_COLUMN], []
    return [c for c in frame.columns if str(c).startswith(PROBA_PREFIX)], [PREDICTION_COLUMN]


def as_classes(labels: pd.Series, outputs: ClassOutputs) -> tuple[pd.Series, dict[str, int]]:
    """Labels as the model's classes (matched by text); None for a label it never saw, those counted by label."""
    by_key = {label_key(c): c for c in outputs.classes}
    keys = labels.map(label_key)
    known = keys.isin(list(by_key))
    unseen = keys[~known].value_counts()
    mapped = keys.map(lambda k: by_key.get(k)).astype(object)
    return mapped.where(known, None), {str(k): int(n) for k, n in unseen.items()}

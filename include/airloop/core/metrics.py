"""Metrics by task: one record per metric (which tasks it fits, its direction, what it needs) and one way to compute.

Tasks: ``regression`` (predicted values), ``binary`` and ``multiclass`` classification (predicted classes and/or
class probabilities). :func:`compute` never raises on data: a metric that has no value on the rows given (one class
present, no rows, constant target, non-positive predictions for a deviance) is NaN, and ``Scores.notes`` says why.
It raises :class:`MetricError` only for a misuse of the call (an unknown task or metric, a metric asked for without
the input it needs, inputs of different lengths, a threshold outside [0, 1]).

Conventions: probabilities are a matrix with one column per class, in the order of ``classes`` (scikit-learn's
``predict_proba`` with ``model.classes_``); for a binary task a 1-D array is read as the probability of the positive
class. The positive class is ``classes[1]``; without ``classes``, the labels seen in ``y_true`` and ``y_pred`` in
sorted order (scikit-learn's convention: for 0/1 the positive class is 1). Predicted classes come from ``y_pred``
when given; otherwise from the probabilities: ``P(positive) >= threshold`` for a binary task, the most probable
class for a multiclass one.

Why sMAPE and not MAPE as the scale-free regression metric: MAPE divides by the target, so a single zero target
(an hour with no rentals, a day with no sales) makes it infinite or, in scikit-learn, a meaningless 1e15. sMAPE
divides by ``|y| + |ŷ|``; a row where both are 0 is a perfect prediction and counts 0 (range 0 to 2). For count
targets ``poisson_deviance`` is offered too (it needs predictions > 0, so a model that can predict 0 or below gets
NaN with the rows named).

Pure and light: numpy and scikit-learn are imported inside the functions that use them, so importing this module
costs nothing at DAG parse time.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

from airloop.core.errors import ExpectedFailure

if TYPE_CHECKING:
    import numpy as np

TASKS: tuple[str, ...] = ("regression", "binary", "multiclass")
Needs = Literal["values", "classes", "proba"]
_NEEDS_TEXT = {
    "values": "predicted values (pass y_pred=)",
    "classes": "predicted classes (pass y_pred= or proba=)",
    "proba": "class probabilities (pass proba=)",
}
#: How far a row of probabilities may sum from 1 (float32 models are off by about 1e-7).
PROBA_TOLERANCE = 1e-5


class MetricError(ExpectedFailure, ValueError):
    """A metric or task that does not exist or does not fit, or a call missing what a metric needs."""


class Undefined(Exception):
    """A metric has no value on these rows; the message says why (it becomes a note beside a NaN)."""


@dataclass(frozen=True)
class Metric:
    """One metric: the tasks it fits, its direction, what it needs and how it is computed."""

    name: str
    tasks: frozenset[str]
    lower_is_better: bool
    needs: Needs
    fn: Callable[[Any, Any, list[Any]], float] = field(repr=False, compare=False)
    description: str

    def fits(self, task: str) -> bool:
        """True if the metric applies to ``task``."""
        return task in self.tasks

    @property
    def direction(self) -> str:
        return "lower is better" if self.lower_is_better else "higher is better"


class Scores(dict[str, float]):
    """Metric values by name; ``notes`` says why a value is NaN or why a metric was not computed."""

    def __init__(self) -> None:
        super().__init__()
        self.notes: dict[str, str] = {}

    def explain(self) -> list[str]:
        """One readable line per note, e.g. ``roc_auc: NaN: only one class ('no') is present in y_true``."""
        lines = []
        for name, reason in self.notes.items():
            state = "NaN" if name in self else "not computed"
            lines.append(f"{name}: {state}: {reason}")
        return lines


# ---- regression -------------------------------------------------------------------------------------------------


def _rmse(y: np.ndarray, pred: np.ndarray, _classes: list[Any]) -> float:
    from sklearn.metrics import root_mean_squared_error

    return float(root_mean_squared_error(y, pred))


def _mae(y: np.ndarray, pred: np.ndarray, _classes: list[Any]) -> float:
    from sklearn.metrics import mean_absolute_error

    return float(mean_absolute_error(y, pred))


def _r2(y: np.ndarray, pred: np.ndarray, _classes: list[Any]) -> float:
    import numpy as np
    from sklearn.metrics import r2_score

    if len(y) < 2 or np.all(y == y[0]):
        first = y[:1].tolist()[0] if len(y) else None
        raise Undefined(f"the target is constant ({first!r} on all {len(y)} rows): R² divides by its variance")
    return float(r2_score(y, pred))


def _smape(y: np.ndarray, pred: np.ndarray, _classes: list[Any]) -> float:
    import numpy as np

    y, pred = y.astype(float), pred.astype(float)
    denom = np.abs(y) + np.abs(pred)
    terms = np.divide(2 * np.abs(y - pred), denom, out=np.zeros_like(denom), where=denom > 0)
    return float(terms.mean())


def _poisson_deviance(y: np.ndarray, pred: np.ndarray, _classes: list[Any]) -> float:
    import numpy as np
    from sklearn.metrics import mean_poisson_deviance

    for values, what, bad in ((pred, "predictions", pred <= 0), (y, "targets", y < 0)):
        if bad.any():
            rows = np.flatnonzero(bad)
            raise Undefined(
                f"{len(rows)} of {len(y)} {what} are {'<= 0' if what == 'predictions' else 'negative'} (first at row "
                f"{rows[0]}: {values[rows[:1]].tolist()[0]!r}); Poisson deviance needs predictions > 0, targets >= 0"
            )
    return float(mean_poisson_deviance(y, pred))


# ---- classification ---------------------------------------------------------------------------------------------


def _positives(y: np.ndarray, classes: list[Any]) -> np.ndarray:
    """``y == classes[1]`` as 0/1, with both classes required in ``y``."""
    import numpy as np

    present = [c for c in classes if np.any(y == c)]
    if len(present) < 2:
        raise Undefined(f"only one class ({present[0]!r}) is present in y_true; it needs both {classes!r}")
    return (y == classes[1]).astype(int)


def _roc_auc(y: np.ndarray, proba: np.ndarray, classes: list[Any]) -> float:
    from sklearn.metrics import roc_auc_score

    return float(roc_auc_score(_positives(y, classes), proba[:, 1]))


def _average_precision(y: np.ndarray, proba: np.ndarray, classes: list[Any]) -> float:
    from sklearn.metrics import average_precision_score

    positive = y == classes[1]
    if not positive.any():
        raise Undefined(f"no row of y_true is the positive class {classes[1]!r}; precision-recall has no curve")
    return float(average_precision_score(positive.astype(int), proba[:, 1]))


def _brier(y: np.ndarray, proba: np.ndarray, classes: list[Any]) -> float:
    import numpy as np

    return float(np.mean((proba[:, 1] - (y == classes[1])) ** 2))


def _log_loss(y: np.ndarray, proba: np.ndarray, classes: list[Any]) -> float:
    from sklearn.metrics import log_loss

    return float(log_loss(y, proba, labels=classes))


def _roc_auc_ovr(average: str) -> Callable[[np.ndarray, np.ndarray, list[Any]], float]:
    def fn(y: np.ndarray, proba: np.ndarray, classes: list[Any]) -> float:
        import numpy as np
        from sklearn.metrics import roc_auc_score

        absent = [c for c in classes if not np.any(y == c)]
        if absent:
            raise Undefined(f"classes {absent!r} are absent from y_true: their one-vs-rest AUC is undefined")
        return float(roc_auc_score(y, proba, multi_class="ovr", average=average, labels=classes))

    return fn


def _accuracy(y: np.ndarray, pred: np.ndarray, _classes: list[Any]) -> float:
    import numpy as np

    return float(np.mean(y == pred))


def _balanced_accuracy(y: np.ndarray, pred: np.ndarray, _classes: list[Any]) -> float:
    from sklearn.metrics import balanced_accuracy_score

    return float(balanced_accuracy_score(y, pred))


def _binary_counts(y: np.ndarray, pred: np.ndarray, positive: Any) -> tuple[int, int, int]:
    """True positives, predicted positives and actual positives."""
    import numpy as np

    return int(np.sum((y == positive) & (pred == positive))), int(np.sum(pred == positive)), int(np.sum(y == positive))


def _precision(y: np.ndarray, pred: np.ndarray, classes: list[Any]) -> float:
    tp, predicted, _ = _binary_counts(y, pred, classes[1])
    if predicted == 0:
        raise Undefined(
            f"no row is predicted as the positive class {classes[1]!r} (raise recall or lower the threshold)"
        )
    return tp / predicted


def _recall(y: np.ndarray, pred: np.ndarray, classes: list[Any]) -> float:
    tp, _, actual = _binary_counts(y, pred, classes[1])
    if actual == 0:
        raise Undefined(f"no row of y_true is the positive class {classes[1]!r}")
    return tp / actual


def _f1(y: np.ndarray, pred: np.ndarray, classes: list[Any]) -> float:
    tp, predicted, actual = _binary_counts(y, pred, classes[1])
    if predicted + actual == 0:
        raise Undefined(f"the positive class {classes[1]!r} is neither present nor predicted")
    return 2 * tp / (predicted + actual)


def _averaged(score: str, average: str) -> Callable[[np.ndarray, np.ndarray, list[Any]], float]:
    """Macro or weighted F1/precision/recall over ``classes`` (a class never predicted scores 0, as in sklearn)."""

    def fn(y: np.ndarray, pred: np.ndarray, classes: list[Any]) -> float:
        import numpy as np
        from sklearn import metrics as skm

        labels = [c for c in classes if np.any(y == c) or np.any(pred == c)]
        func = getattr(skm, f"{score}_score")
        return float(func(y, pred, labels=labels, average=average, zero_division=0.0))

    return fn


# ---- the registry -----------------------------------------------------------------------------------------------

_R = frozenset({"regression"})
_B = frozenset({"binary"})
_M = frozenset({"multiclass"})
_C = frozenset({"binary", "multiclass"})

_ALL: tuple[Metric, ...] = (
    Metric("rmse", _R, True, "values", _rmse, "root mean squared error, in the target's unit; punishes large misses"),
    Metric("mae", _R, True, "values", _mae, "mean absolute error, in the target's unit"),
    Metric("r2", _R, False, "values", _r2, "share of the target's variance explained (1 perfect, 0 = the mean)"),
    Metric("smape", _R, True, "values", _smape, "symmetric mean absolute percentage error, 0-2; zero targets safe"),
    Metric("poisson_deviance", _R, True, "values", _poisson_deviance, "mean Poisson deviance, for count targets"),
    Metric("roc_auc", _B, False, "proba", _roc_auc, "area under the ROC curve: ranking quality, threshold-free"),
    Metric("average_precision", _B, False, "proba", _average_precision, "area under precision-recall; rare positives"),
    Metric("log_loss", _C, True, "proba", _log_loss, "cross-entropy of the probabilities: calibration and ranking"),
    Metric("brier", _B, True, "proba", _brier, "mean squared error of the positive class's probability"),
    Metric(
        "roc_auc_ovr_macro", _M, False, "proba", _roc_auc_ovr("macro"), "one-vs-rest ROC AUC, classes weighed equally"
    ),
    Metric("roc_auc_ovr_weighted", _M, False, "proba", _roc_auc_ovr("weighted"), "one-vs-rest ROC AUC, by class size"),
    Metric("accuracy", _C, False, "classes", _accuracy, "share of rows whose predicted class is right"),
    Metric("balanced_accuracy", _C, False, "classes", _balanced_accuracy, "mean recall over classes; imbalance-safe"),
    Metric("precision", _B, False, "classes", _precision, "share of predicted positives that are positive"),
    Metric("recall", _B, False, "classes", _recall, "share of positives predicted positive"),
    Metric("f1", _B, False, "classes", _f1, "harmonic mean of precision and recall of the positive class"),
    Metric("f1_macro", _C, False, "classes", _averaged("f1", "macro"), "F1 per class, classes weighed equally"),
    Metric("f1_weighted", _C, False, "classes", _averaged("f1", "weighted"), "F1 per class, weighed by class size"),
    Metric("precision_macro", _M, False, "classes", _averaged("precision", "macro"), "precision per class, averaged"),
    Metric("recall_macro", _M, False, "classes", _averaged("recall", "macro"), "recall per class, averaged"),
)
_REGISTRY: dict[str, Metric] = {m.name: m for m in _ALL}


def _check_task(task: str) -> None:
    if task not in TASKS:
        raise MetricError(f"unknown task {task!r}; expected one of {', '.join(TASKS)}")


def metrics_for(task: str) -> list[Metric]:
    """Every metric that fits ``task``, in registry order."""
    _check_task(task)
    return [m for m in _ALL if m.fits(task)]


def find(name: str) -> Metric | None:
    """The metric called ``name``, or None when there is none."""
    return _REGISTRY.get(name)


def get(name: str, task: str | None = None) -> Metric:
    """The metric called ``name``; with ``task``, also checked to fit it. Errors list the metrics that would fit."""
    if task is not None:
        _check_task(task)
    metric = _REGISTRY.get(name)
    if metric is not None and (task is None or metric.fits(task)):
        return metric
    if task is None:
        known = "; ".join(f"{t}: {', '.join(m.name for m in metrics_for(t))}" for t in TASKS)
        raise MetricError(f"unknown metric {name!r}. Known metrics by task: {known}")
    fitting = ", ".join(m.name for m in metrics_for(task))
    if metric is None:
        raise MetricError(f"unknown metric {name!r} for a {task} task; metrics that fit {task}: {fitting}")
    fits = " and ".join(sorted(metric.tasks))
    raise MetricError(f"metric {name!r} fits {fits} tasks, not {task}; metrics that fit {task}: {fitting}")


def better(name: str, a: float, b: float) -> bool:
    """True if score ``a`` is strictly better than ``b`` under metric ``name``; NaN is never better than anything,
    and any number is better than NaN."""
    metric = get(name)
    if math.isnan(a):
        return False
    if math.isnan(b):
        return True
    return a < b if metric.lower_is_better else a > b


# ---- probabilities and inputs -----------------------------------------------------------------------------------


def check_probabilities(proba: Any, classes: Sequence[Any]) -> str | None:
    """What is wrong with ``proba`` as class probabilities for ``classes`` (a readable sentence), or None.

    Expected: one column per class in the order of ``classes``, each row in [0, 1] summing to 1 (within
    :data:`PROBA_TOLERANCE`); for two classes a 1-D array of the positive class's probability is accepted too.
    """
    import numpy as np

    labels = list(classes)
    if len(set(labels)) != len(labels):
        return f"classes {labels!r} repeat a label; each class must appear once"
    if len(labels) < 2:
        return f"classes {labels!r}: probabilities need at least two classes"
    try:
        arr = np.asarray(proba, dtype=float)
    except (TypeError, ValueError) as exc:
        return f"probabilities are not numbers ({exc})"
    if arr.ndim == 1:
        if len(labels) != 2:
            return f"a 1-D array of probabilities fits two classes only, not {len(labels)}: pass one column per class"
        arr = np.column_stack([1 - arr, arr])
    elif arr.ndim != 2 or arr.shape[1] != len(labels):
        return (
            f"probabilities have shape {arr.shape}; expected (rows, {len(labels)}): "
            f"one column per class of {labels!r}, in that order"
        )
    return _proba_values_problem(arr)


def _proba_values_problem(arr: np.ndarray) -> str | None:
    """Rows of a (rows, classes) matrix that are not finite, outside [0, 1] or do not sum to 1."""
    import numpy as np

    sums = arr.sum(axis=1)
    checks = (
        (~np.isfinite(arr).all(axis=1), "hold NaN or infinite values", ""),
        (((arr < 0) | (arr > 1)).any(axis=1), "hold values outside [0, 1]", ""),
        (np.abs(sums - 1) > PROBA_TOLERANCE, "do not sum to 1", "; use predict_proba, not scores or decision_function"),
    )
    for bad, what, hint in checks:
        if bad.any():
            rows = np.flatnonzero(bad)
            if hint:
                shown = ", ".join(f"row {r} sums to {sums[r]:.6g}" for r in rows[:3])
            else:
                shown = ", ".join(f"row {r}: {[round(v, 6) for v in arr[r].tolist()]}" for r in rows[:3])
            return f"{len(rows)} of {len(arr)} probability rows {what} ({shown}; rows 0-based){hint}"
    return None


def _column(values: Any, what: str) -> np.ndarray:
    """``values`` as a 1-D array (a single-column 2-D array is flattened)."""
    import numpy as np

    arr = np.asarray(values)
    if arr.ndim == 2 and arr.shape[1] == 1:
        arr = arr[:, 0]
    if arr.ndim != 1:
        raise MetricError(f"{what} must be one value per row; got an array of shape {arr.shape}")
    return _typed(arr)


def _typed(arr: np.ndarray) -> np.ndarray:
    """An object array of labels of one type (all text, all integers) as that type: scikit-learn reads object arrays
    of numbers as an unknown kind of target. Mixed or missing labels stay objects."""
    import numpy as np

    if arr.dtype != object or not len(arr):
        return arr
    values = arr.tolist()
    kinds = {type(v) for v in values}
    if len(kinds) != 1 or kinds.pop() not in (str, int, float, bool):
        return arr
    return np.asarray(values)


def _classes_of(task: str, y: np.ndarray, y_pred: np.ndarray | None, classes: Iterable[Any] | None) -> list[Any] | str:
    """The class labels in force, or why there are none usable for ``task``."""
    import numpy as np

    if classes is not None:
        labels, source = [c.item() if isinstance(c, np.generic) else c for c in classes], "given"
    else:
        seen = y if y_pred is None else np.concatenate([y.astype(object), y_pred.astype(object)])
        try:
            labels, source = sorted(set(seen.tolist())), "seen in y_true and y_pred"
        except TypeError:
            return "the labels mix types that do not sort (e.g. numbers and text): pass classes="
    if task == "binary" and len(labels) != 2:
        hint = "" if classes is not None else " (pass classes= when a batch may hold only one)"
        return f"a binary task needs exactly two classes; classes {source}: {labels!r}{hint}"
    if len(labels) < 2:
        return f"a multiclass task needs at least two classes; classes {source}: {labels!r} (pass classes=)"
    return labels


def _classification_inputs(
    task: str, y: np.ndarray, y_pred: np.ndarray | None, proba: Any, classes: Iterable[Any] | None, threshold: float
) -> tuple[list[Any], dict[str, Any], dict[str, str]]:
    """Classes in force, the usable inputs by need (``classes``, ``proba``), and the problems by need."""
    import numpy as np

    labels = _classes_of(task, y, y_pred, classes)
    if isinstance(labels, str):
        return [], {}, {"classes": labels, "proba": labels}
    inputs: dict[str, Any] = {}
    problems: dict[str, str] = {}
    if proba is not None:
        problem = check_probabilities(proba, labels)
        unknown = sorted({repr(v) for v in y.tolist()} - {repr(c) for c in labels})
        if problem is None and unknown:
            problem = f"y_true holds labels that are not among classes {labels!r}: {', '.join(unknown[:5])}"
        if problem is not None:
            problems["proba"] = problem + ("" if classes is not None else " (classes were inferred: pass classes=)")
        else:
            arr = np.asarray(proba, dtype=float)
            inputs["proba"] = np.column_stack([1 - arr, arr]) if arr.ndim == 1 else arr
    if y_pred is not None:
        inputs["classes"] = y_pred
    elif "proba" in inputs:
        p = inputs["proba"]
        picked = (p[:, 1] >= threshold).astype(int) if task == "binary" else p.argmax(axis=1)
        inputs["classes"] = _typed(np.asarray(labels, dtype=object))[picked]
    elif "proba" in problems:
        problems["classes"] = f"predicted classes come from the probabilities, which are unusable: {problems['proba']}"
    return labels, inputs, problems


def _one(metric: Metric, y: np.ndarray, given: Any, classes: list[Any]) -> tuple[float, str | None]:
    """The metric's value, or NaN and why."""
    import warnings

    if len(y) == 0:
        return math.nan, "no rows to score"
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            value = float(metric.fn(y, given, classes))
    except Undefined as exc:
        return math.nan, str(exc)
    except (ValueError, TypeError, ZeroDivisionError) as exc:
        return math.nan, f"{type(exc).__name__}: {exc}"
    if not math.isfinite(value):
        return math.nan, f"the value is not finite ({value})"
    return value, None


def compute(
    task: str,
    y_true: Any,
    *,
    y_pred: Any = None,
    proba: Any = None,
    classes: Iterable[Any] | None = None,
    threshold: float = 0.5,
    names: Iterable[str] | None = None,
) -> Scores:
    """Scores of the predictions against ``y_true`` for ``task``: every metric in ``names``, or (without names)
    every metric of the task that the inputs given allow (the others get a note, no value).

    NaN with a note for a metric undefined on these rows (see the module's docstring for the conventions).
    """
    import numpy as np

    chosen = metrics_for(task) if names is None else [get(n, task) for n in names]
    if not 0 <= threshold <= 1:
        raise MetricError(f"threshold {threshold!r} is not a probability; expected a number in [0, 1]")
    y = _column(y_true, "y_true")
    pred = None if y_pred is None else _column(y_pred, "y_pred")
    for what, values in (("y_pred", pred), ("proba", None if proba is None else np.asarray(proba))):
        if values is not None and values.ndim > 0 and len(values) != len(y):
            raise MetricError(f"{what} has {len(values)} rows but y_true has {len(y)}; they must match row for row")
    if task == "regression":
        labels: list[Any] = []
        problems: dict[str, str] = {}
        inputs: dict[str, Any] = {} if pred is None else {"values": pred}
    else:
        labels, inputs, problems = _classification_inputs(task, y, pred, proba, classes, threshold)
    scores = Scores()
    for metric in chosen:
        if metric.needs in problems:
            scores[metric.name], scores.notes[metric.name] = math.nan, problems[metric.needs]
        elif metric.needs not in inputs:
            if names is not None:
                raise MetricError(f"metric {metric.name!r} needs {_NEEDS_TEXT[metric.needs]}")
            scores.notes[metric.name] = f"needs {_NEEDS_TEXT[metric.needs]}"
        else:
            value, note = _one(metric, y, inputs[metric.needs], labels)
            scores[metric.name] = value
            if note is not None:
                scores.notes[metric.name] = note
    return scores


# ---- the reference ----------------------------------------------------------------------------------------------

_NEEDS_DOC = {"values": "predicted values", "classes": "predicted classes", "proba": "class probabilities"}


def metrics_markdown() -> str:
    """The table of metrics in ``docs/model-spec.md`` (between its ``metrics`` markers): one row per metric, in
    registry order. ``python -m airloop.core.metrics`` prints it; a unit test keeps the page equal to it."""
    lines = ["| metric | tasks | direction | needs | description |", "| --- | --- | --- | --- | --- |"]
    for m in _ALL:
        tasks = ", ".join(t for t in TASKS if m.fits(t))
        lines.append(f"| `{m.name}` | {tasks} | {m.direction} | {_NEEDS_DOC[m.needs]} | {m.description} |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    print(metrics_markdown(), end="")

"""The evaluation figures of a training run, by task (matplotlib, headless; the caller selects the Agg backend).

Regression: predicted vs actual, and the residuals by the first declared slice (or against the prediction when
the spec declares none). Classification: ROC and precision-recall curves (binary), the calibration curve and the
confusion matrix. Each function returns ``{file name: figure}``; the registry logs them under ``plots/``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import numpy as np
    import pandas as pd

#: The layout engine of the figures whose labels need room: ``fig.tight_layout()``'s algorithm, run when the figure
#: is drawn (the same pixels) instead of when it is built. Drawing happens on the run's MLflow logging thread
#: (``registry.render_figures``), so its text measuring (about half of building a figure) is not paid on the task's
#: own thread.
LAYOUT = "tight"


def regression(target: str, y: np.ndarray, y_pred: np.ndarray, groups: tuple[str, pd.Series] | None) -> dict[str, Any]:
    """Predicted vs actual, and residuals by ``groups`` (a slice's name and each row's label) or by prediction."""
    import matplotlib.pyplot as plt
    import numpy as np

    figures: dict[str, Any] = {}
    finite = np.isfinite(y_pred)
    fig, ax = plt.subplots(figsize=(5, 5))
    ax.scatter(y[finite], y_pred[finite], s=4, alpha=0.4)
    if finite.any():
        low = float(min(y[finite].min(), y_pred[finite].min()))
        high = float(max(y[finite].max(), y_pred[finite].max()))
        ax.plot([low, high], [low, high], color="black", linewidth=1)
    ax.set(xlabel=f"actual {target}", ylabel="predicted", title="Holdout: predicted vs actual")
    figures["predicted_vs_actual.png"] = fig

    residuals = y - y_pred
    fig, ax = plt.subplots(figsize=(7, 4), layout=LAYOUT)
    if groups is not None:
        name, labels = groups
        values = labels.to_numpy()
        keys = sorted(set(values.tolist()))
        ax.boxplot([residuals[(values == k) & finite] for k in keys], showfliers=False)
        ax.set_xticks(range(1, len(keys) + 1), [str(k).removeprefix(f"{name}=") for k in keys], rotation=30)
        ax.set(xlabel=name, ylabel="actual - predicted", title=f"Holdout residuals by {name}")
    else:
        ax.scatter(y_pred[finite], residuals[finite], s=4, alpha=0.4)
        ax.axhline(0, color="black", linewidth=1)
        ax.set(xlabel="predicted", ylabel="actual - predicted", title="Holdout residuals by prediction")
    figures["residuals.png"] = fig
    return figures


def classification(
    target: str, kind: str, classes: list[Any], y: np.ndarray, proba: np.ndarray, picked: np.ndarray
) -> dict[str, Any]:
    """ROC and PR curves (binary), calibration and the confusion matrix (of the ``picked`` classes, at the
    decision threshold), for the rows with finite probabilities and a label among ``classes``."""
    import numpy as np

    usable = np.isfinite(proba).all(axis=1) & np.isin(y.astype(object), np.asarray(classes, dtype=object))
    y, proba, picked = y[usable], proba[usable], picked[usable]
    figures: dict[str, Any] = {}
    if kind == "binary" and len(set(y.tolist())) == 2:
        figures.update(_curves(target, classes, y == classes[1], proba[:, 1]))
    figures["calibration.png"] = _calibration(kind, classes, y, proba)
    figures["confusion_matrix.png"] = _confusion(target, classes, y, picked)
    return figures


def _curves(target: str, classes: list[Any], positive: np.ndarray, score: np.ndarray) -> dict[str, Any]:
    import matplotlib.pyplot as plt
    from sklearn.metrics import PrecisionRecallDisplay, RocCurveDisplay

    fig, ax = plt.subplots(figsize=(5, 5))
    RocCurveDisplay.from_predictions(positive, score, ax=ax, name=f"{target} = {classes[1]!r}")
    ax.set(title="Holdout: ROC curve")
    roc = fig
    fig, ax = plt.subplots(figsize=(5, 5))
    PrecisionRecallDisplay.from_predictions(positive, score, ax=ax, name=f"{target} = {classes[1]!r}")
    ax.set(title="Holdout: precision-recall curve")
    return {"roc_curve.png": roc, "pr_curve.png": fig}


def _calibration(kind: str, classes: list[Any], y: np.ndarray, proba: np.ndarray) -> Any:
    """Binary: the positive class's predicted probability vs its observed frequency. Multiclass: the most
    probable class's probability vs how often that class is right (top-label calibration)."""
    import matplotlib.pyplot as plt
    import numpy as np
    from sklearn.calibration import calibration_curve

    fig, ax = plt.subplots(figsize=(5, 5))
    ax.plot([0, 1], [0, 1], color="black", linewidth=1, linestyle="--")
    if kind == "binary":
        hit, confidence, what = (y == classes[1]).astype(int), proba[:, 1], f"P({classes[1]!r})"
    else:
        top = proba.argmax(axis=1)
        hit = (np.asarray(classes, dtype=object)[top] == y).astype(int)
        confidence, what = proba.max(axis=1), "probability of the predicted class"
    if len(set(hit.tolist())) == 2:
        observed, predicted = calibration_curve(hit, confidence, n_bins=10, strategy="quantile")
        ax.plot(predicted, observed, marker="o")
    ax.set(xlabel=f"mean predicted {what}", ylabel="observed frequency", title="Holdout: calibration")
    return fig


def _confusion(target: str, classes: list[Any], y: np.ndarray, picked: np.ndarray) -> Any:
    import matplotlib.pyplot as plt
    import numpy as np
    from sklearn.metrics import ConfusionMatrixDisplay

    side = max(5.0, len(classes) * 0.6)
    fig, ax = plt.subplots(figsize=(side, side), layout=LAYOUT)
    if len(y):
        ConfusionMatrixDisplay.from_predictions(
            np.asarray([str(v) for v in y]),
            np.asarray([str(v) for v in picked]),
            labels=[str(c) for c in classes],
            ax=ax,
            colorbar=False,
            xticks_rotation=30,
        )
    ax.set(title=f"Holdout: confusion matrix ({target})")
    return fig

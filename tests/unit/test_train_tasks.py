"""Training steps by task on small made-up frames: messy features, classifiers' evaluation and what the gate reads."""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
import pytest

from airloop.core.spec import ModelSpec
from airloop.stages.promote.rules import evaluate_gate
from airloop.stages.train import steps
from airloop.stages.train.steps import TrainingProblem


def _spec(target: dict[str, Any], estimator: dict[str, Any] | None = None, **gate: Any) -> ModelSpec:
    return ModelSpec.model_validate(
        {
            "name": "made_up",
            "description": "made up by a test",
            "owner": "tests",
            "source": {"table": "t", "time_column": "ts", "keys": ["ts", "rid"]},
            "schedule": {"start": "2021-01-01"},
            "features": [
                {"name": "x", "kind": "numeric"},
                {"name": "n", "kind": "numeric"},
                {"name": "c", "kind": "categorical"},
            ],
            "target": {"name": "y", **target},
            "training": {
                "min_rows": 10,
                "estimator": estimator or {"params": {"max_iter": 30}},
                "slices": [{"name": "cat", "column": "c"}],
            },
            "gate": gate,
        }
    )


def _frame(n: int = 600, seed: int = 0) -> pd.DataFrame:
    """Missing numbers (NaN and pd.NA of a nullable column) and categories (None, NaN); ``y`` text labels."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=n)
    c = pd.Series(rng.choice(["a", "b"], size=n), dtype=object)
    c[::17], c[::23] = None, np.nan
    nullable = pd.array(rng.integers(0, 5, size=n), dtype="Int64")
    nullable[::11] = pd.NA
    return pd.DataFrame(
        {
            "x": np.where(np.arange(n) % 13 == 0, np.nan, x),
            "n": nullable,
            "c": c,
            "y": np.where(x + (c == "a") * 0.5 > 0.3, "late", "on_time"),
        }
    )


CLASSIFIER = {"task": "classification"}


def test_the_pipeline_takes_missing_values_and_unknown_categories():
    spec = _spec(CLASSIFIER)
    train = _frame()
    fitted = steps.fit(spec, train)
    assert fitted.task == steps.Task("binary", ("late", "on_time"), 0.5)
    later = pd.DataFrame({"x": [np.nan, 0.2], "n": pd.array([pd.NA, 3], dtype="Int64"), "c": ["never seen", None]})
    proba = fitted.pipeline.predict_proba(later)
    assert proba.shape == (2, 2) and np.isfinite(proba).all()


def test_an_estimator_that_refuses_nan_gets_imputed_numbers():
    spec = _spec(CLASSIFIER, {"class": "sklearn.linear_model.LogisticRegression", "params": {"max_iter": 200}})
    fitted = steps.fit(spec, _frame())
    evaluation = steps.evaluate(spec, fitted.pipeline, _frame(seed=1))
    assert evaluation.nan_predictions == 0 and evaluation.proba_problem is None


def test_positive_class_goes_last_and_the_threshold_decides():
    spec = _spec({**CLASSIFIER, "positive_class": "late", "decision_threshold": 0.99})
    fitted = steps.fit(spec, _frame())
    assert fitted.task.classes == ("on_time", "late")
    evaluation = steps.evaluate(spec, fitted.pipeline, _frame(seed=1))
    assert evaluation.classes == ["on_time", "late"]
    halfway = steps.evaluate(_spec({**CLASSIFIER, "positive_class": "late"}), fitted.pipeline, _frame(seed=1))
    assert evaluation.predicted_shares["late"] < halfway.predicted_shares["late"]  # at 0.99, only the surest
    assert 0 <= evaluation.proba_min <= evaluation.proba_max <= 1
    assert {"roc_auc", "log_loss", "f1", "brier"} <= set(evaluation.metrics)
    assert set(evaluation.slices) == {"cat=a", "cat=b", "cat=None", "cat=nan"}


def test_an_unknown_positive_class_is_named():
    with pytest.raises(TrainingProblem, match=r"positive_class 'yes' .* \['late', 'on_time'\]"):
        steps.fit(_spec({**CLASSIFIER, "positive_class": "yes"}), _frame())


class _Wrapped:
    """A fitted classifier whose probabilities are changed after the fact (a hand-made or broken model)."""

    def __init__(self, model: Any, change: Any) -> None:
        self.model, self.change, self.classes_ = model, change, model.classes_

    def predict_proba(self, x: pd.DataFrame) -> Any:
        return self.change(self.model.predict_proba(x))


@pytest.mark.parametrize(
    ("change", "check", "reason"),
    [
        pytest.param(lambda p: p * 0.8, "sanity:probabilities", "do not sum to 1", id="rows-not-summing-to-one"),
        pytest.param(
            lambda p: np.tile([0.9, 0.1], (len(p), 1)),
            "sanity:one_class",
            "predicts late for every one",
            id="one-class",
        ),
    ],
)
def test_the_gate_refuses_a_broken_classifier_evaluated_on_the_holdout(change, check, reason):
    spec = _spec(CLASSIFIER)
    fitted = steps.fit(spec, _frame())
    evaluation = steps.evaluate(spec, _Wrapped(fitted.pipeline, change), _frame(seed=1))
    verdict = evaluate_gate(spec.gate, evaluation, None, metric=spec.gate_metric)
    assert not verdict.promote
    failed = verdict.check(check)
    assert failed is not None and not failed.passed and reason in failed.detail


def test_class_weight_balanced_weighs_the_rare_class_up():
    frame = _frame()
    noise = np.random.default_rng(5).normal(scale=0.8, size=len(frame))
    frame["y"] = np.where(frame.x.fillna(0) + noise > 1.6, "late", "on_time")  # about 1 in 10 late, noisy
    plain = steps.fit(_spec(CLASSIFIER), frame)
    balanced = steps.fit(_spec({**CLASSIFIER, "class_weight": "balanced"}), frame)
    x = frame[["x", "n", "c"]]
    assert balanced.pipeline.predict_proba(x)[:, 0].mean() > plain.pipeline.predict_proba(x)[:, 0].mean() + 0.05
    assert steps.fit_params(_spec(CLASSIFIER), plain.task, frame.y) == {}


def test_regression_plots_group_residuals_by_the_first_slice():
    spec = _spec({}, {"params": {"max_iter": 20}})
    frame = _frame().assign(y=lambda f: f.x.fillna(0) * 3)
    fitted = steps.fit(spec, frame)
    figures = _plots(spec, fitted.pipeline, frame, {"x": 1.0, "n": 0.1, "c": 0.0})
    assert set(figures) == {"predicted_vs_actual.png", "residuals.png", "feature_importance.png"}
    assert figures["residuals.png"].axes[0].get_title() == "Holdout residuals by cat"


def test_classifier_plots():
    spec = _spec(CLASSIFIER)
    fitted = steps.fit(spec, _frame())
    importance = steps.feature_importance(spec, fitted.pipeline, _frame(seed=1))
    assert importance["x"] > importance["n"]  # log_loss worsens most without x
    figures = _plots(spec, fitted.pipeline, _frame(seed=1), importance)
    expected = {"roc_curve.png", "pr_curve.png", "calibration.png", "confusion_matrix.png", "feature_importance.png"}
    assert set(figures) == expected


def _plots(spec: Any, pipeline: Any, frame: Any, importance: dict[str, float]) -> dict[str, Any]:
    """A run's figures: the holdout's (by task) and the permutation importance's."""
    return {**steps.evaluation_plots(spec, pipeline, frame), **steps.importance_plot(spec, importance)}


def _png_pixels(figure: Any) -> np.ndarray:
    import io

    from PIL import Image

    buffer = io.BytesIO()
    figure.savefig(buffer, format="png")
    return np.asarray(Image.open(io.BytesIO(buffer.getvalue())))


@pytest.mark.parametrize("target", [{}, CLASSIFIER])
def test_plots_leave_their_layout_to_drawing_with_the_pixels_of_tight_layout(target, monkeypatch):
    """Building the figures measures no text (the tight layout runs when a figure is drawn, on the logging's worker
    thread); drawn, each has the pixels of the same figure laid out by ``tight_layout()`` while it was built."""
    import matplotlib.pyplot as plt
    import matplotlib.text

    spec = _spec(target, {"params": {"max_iter": 20}})
    frame = _frame() if target else _frame().assign(y=lambda f: f.x.fillna(0) * 3)
    fitted = steps.fit(spec, frame)
    importance = {"x": 1.0, "n": 0.1, "c": 0.0}
    measured = 0
    original = matplotlib.text.Text.get_window_extent

    def get_window_extent(self: Any, *args: Any, **kwargs: Any) -> Any:
        nonlocal measured
        measured += 1
        return original(self, *args, **kwargs)

    monkeypatch.setattr(matplotlib.text.Text, "get_window_extent", get_window_extent)
    deferred = _plots(spec, fitted.pipeline, frame, importance)
    assert measured == 0
    monkeypatch.undo()

    eager = _plots(spec, fitted.pipeline, frame, importance)
    laid_out = [name for name, figure in deferred.items() if figure.get_layout_engine() is not None]
    assert {"feature_importance.png", "residuals.png" if not target else "confusion_matrix.png"} <= set(laid_out)
    for name in laid_out:
        eager[name].set_layout_engine("none")
        eager[name].tight_layout()  # what the figure got while it was built, before
        assert np.array_equal(_png_pixels(deferred[name]), _png_pixels(eager[name])), name
    for figure in [*deferred.values(), *eager.values()]:
        plt.close(figure)


@pytest.mark.parametrize("task", ["regression", "classifier"])
def test_feature_importance_is_scikit_learns_permutation_importance_from_one_prediction(task, monkeypatch):
    """The same numbers as ``permutation_importance`` (same shuffles from ``training.seed``, same scorer), with one
    prediction of the stacked shuffled copies instead of one per feature and repeat (issue 16)."""
    from sklearn.inspection import permutation_importance

    if task == "regression":
        spec = _spec({}, {"params": {"max_iter": 20}})
        frame = _frame().assign(y=lambda f: f.x.fillna(0) * 3 + f.n.fillna(0))
        holdout = _frame(seed=1).assign(y=lambda f: f.x.fillna(0) * 3 + f.n.fillna(0))
    else:
        spec = _spec(CLASSIFIER)
        frame, holdout = _frame(), _frame(seed=1)
    fitted = steps.fit(spec, frame)
    sample = holdout.iloc[-steps.IMPORTANCE_ROWS :]
    theirs = permutation_importance(
        fitted.pipeline,
        sample[spec.feature_names],
        sample[spec.target.name],
        scoring=steps.scorer(spec, steps.model_task(spec, fitted.pipeline)),
        n_repeats=steps.IMPORTANCE_REPEATS,
        random_state=spec.training.seed,
        n_jobs=1,
    ).importances_mean

    predictions: list[int] = []
    method = "predict" if task == "regression" else "predict_proba"
    original = getattr(type(fitted.pipeline), method)

    def counted(self: Any, x: Any, *args: Any, **kwargs: Any) -> Any:
        predictions.append(len(x))
        return original(self, x, *args, **kwargs)

    monkeypatch.setattr(type(fitted.pipeline), method, counted)
    ours = steps.feature_importance(spec, fitted.pipeline, holdout)
    assert list(ours) == spec.feature_names
    assert list(ours.values()) == pytest.approx(list(theirs), rel=1e-12, abs=1e-12)
    assert any(v != 0 for v in ours.values())
    assert predictions == [len(sample) * (1 + steps.IMPORTANCE_REPEATS * len(spec.feature_names))]

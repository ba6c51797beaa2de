"""Training: assemble a window of validated partitions, split it by time, fit the spec's pipeline, evaluate it.

Pure functions over frames and specs (no MLflow, no Airflow), so each step is unit-tested on real data and
the benchmark can time them one by one. ``airloop.adapters.registry`` logs what these return;
``airloop.orchestration.tasks`` wires them into the train DAG.

Time is the only honest split for a model that predicts the future: the holdout is the most recent
``holdout_days`` of the window, never a random sample (a random split leaks tomorrow into training).
"""

from __future__ import annotations

import importlib
import logging
import math
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

from airloop.core.contracts import Evaluation
from airloop.core.errors import ExpectedFailure
from airloop.core.intervals import parse_key

if TYPE_CHECKING:
    import pandas as pd
    from sklearn.pipeline import Pipeline

    from airloop.adapters.lake import Lake
    from airloop.core.spec import ModelSpec

log = logging.getLogger(__name__)


class TrainingProblem(ExpectedFailure, ValueError):
    """Training cannot go on with these inputs; the message says which input and what to do."""


class NoValidatedData(TrainingProblem):
    """No validated partition overlaps the requested window."""


@dataclass(frozen=True)
class Window:
    """The training window ``[start, end)``; its last part ``[holdout_start, end)`` is held out."""

    start: datetime
    end: datetime
    holdout_start: datetime

    def __str__(self) -> str:
        return f"[{self.start:%Y-%m-%d}, {self.end:%Y-%m-%d}) holdout from {self.holdout_start:%Y-%m-%d}"

    def to_dict(self) -> dict[str, str]:
        return {k: getattr(self, k).isoformat() for k in ("start", "end", "holdout_start")}


@dataclass(frozen=True)
class PartitionRef:
    """One validated partition that fed a training run: the lineage link back to ingestion."""

    partition: str
    interval_start: str
    interval_end: str
    rows: int
    content_digest: str
    suite_digests: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class TrainingData:
    """The rows of a window (sorted by time) and the partitions they came from."""

    frame: pd.DataFrame
    window: Window
    partitions: list[PartitionRef]
    gaps: list[str]
    content_digest: str


def _utc(value: datetime) -> datetime:
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def newest_validated_end(spec: ModelSpec, lake: Lake) -> datetime | None:
    """The end of the newest validated partition of the model (None when there is none yet)."""
    for key in reversed(lake.partitions(spec.name, "validated")):
        manifest = lake.manifest(spec.name, "validated", key)
        if manifest is not None:
            return datetime.fromisoformat(manifest.meta["interval_end"])
    return None


def resolve_window(
    spec: ModelSpec, lake: Lake, *, end: datetime | None = None, start: datetime | None = None
) -> Window:
    """The window to train on: ``end`` defaults to the end of the newest validated partition.

    ``start`` defaults to ``end - window_days``; the holdout is always the last ``holdout_days`` before ``end``.
    """
    t = spec.training
    if end is None:
        newest = newest_validated_end(spec, lake)
        if newest is None:
            raise TrainingProblem(
                f"Model {spec.name} has no validated partitions yet, so there is nothing to train on. "
                f"Run {spec.dag_id('ingest')} (or backfill it) first."
            )
        end = newest
    end = _utc(end)
    start = _utc(start) if start is not None else end - timedelta(days=t.window_days)
    holdout_start = end - timedelta(days=t.holdout_days)
    if not start < holdout_start < end:
        raise TrainingProblem(
            f"Training window [{start:%Y-%m-%d}, {end:%Y-%m-%d}) leaves no training rows before its holdout "
            f"(the last {t.holdout_days} days, from {holdout_start:%Y-%m-%d}). "
            f"Choose a window_start before {holdout_start:%Y-%m-%d}."
        )
    return Window(start=start, end=end, holdout_start=holdout_start)


def assemble(spec: ModelSpec, lake: Lake, window: Window) -> TrainingData:
    """Read the validated partitions that overlap the window and keep the rows inside it, sorted by time.

    Quarantined or missing intervals inside the window are listed in ``gaps`` (and logged): training goes on
    without them, and the run records which ones were absent.
    """
    import pandas as pd

    from airloop.adapters.lake import content_digest

    time_col = spec.source.time_column
    columns = [*spec.feature_names, spec.target.name, time_col]
    frames: list[pd.DataFrame] = []
    refs: list[PartitionRef] = []
    covered: list[tuple[datetime, datetime]] = []
    for key in lake.partitions(spec.name, "validated"):
        manifest = lake.manifest(spec.name, "validated", key)
        if manifest is None:
            continue
        p_start = datetime.fromisoformat(manifest.meta["interval_start"])
        p_end = datetime.fromisoformat(manifest.meta["interval_end"])
        if p_end <= window.start or p_start >= window.end:
            continue
        missing = sorted(set(columns) - set(manifest.columns))
        if missing:
            raise TrainingProblem(
                f"Validated partition {key} of {spec.name} has no column(s) {missing}, which the spec's features "
                f"and target need. Fix the source or the spec ({spec.name}.yaml), then re-ingest the interval."
            )
        frames.append(lake.read(spec.name, "validated", key, columns=columns))
        covered.append((p_start, p_end))
        refs.append(
            PartitionRef(
                partition=key,
                interval_start=p_start.isoformat(),
                interval_end=p_end.isoformat(),
                rows=manifest.rows,
                content_digest=manifest.content_digest,
                suite_digests=dict(manifest.meta.get("suite_digests", {})),
            )
        )
    if not frames:
        raise NoValidatedData(
            f"No validated partition of {spec.name} overlaps the training window {window}. "
            f"Ingest that range first ({spec.dag_id('ingest')}), or pick another window."
        )
    frame = pd.concat(frames, ignore_index=True)
    times = pd.to_datetime(frame[time_col], utc=True)
    inside = (times >= pd.Timestamp(window.start)) & (times < pd.Timestamp(window.end))
    frame = frame.loc[inside].sort_values(time_col, kind="stable").reset_index(drop=True)
    gaps = _gaps(window, sorted(covered), lake.partitions(spec.name, "quarantine"))
    if gaps:
        log.warning("Training window %s has gaps (trained without them): %s", window, "; ".join(gaps))
    return TrainingData(frame=frame, window=window, partitions=refs, gaps=gaps, content_digest=content_digest(frame))


def _gaps(window: Window, covered: list[tuple[datetime, datetime]], quarantined: list[str]) -> list[str]:
    gaps: list[str] = []
    cursor = window.start
    for start, end in covered:
        if start > cursor:
            gaps.append(f"[{cursor:%Y-%m-%d}, {start:%Y-%m-%d}) has no validated data")
        cursor = max(cursor, end)
    if cursor < window.end:
        gaps.append(f"[{cursor:%Y-%m-%d}, {window.end:%Y-%m-%d}) has no validated data")
    for key in quarantined:
        when = parse_key(key)
        if window.start <= when < window.end:
            gaps.append(f"partition {key} is quarantined")
    return gaps


def split(spec: ModelSpec, data: TrainingData) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Train rows before ``holdout_start``, holdout rows from it: no row of the holdout is older than training."""
    import pandas as pd

    times = pd.to_datetime(data.frame[spec.source.time_column], utc=True)
    cut = times >= pd.Timestamp(data.window.holdout_start)
    train, holdout = data.frame.loc[~cut], data.frame.loc[cut]
    if len(train) < spec.training.min_rows:
        raise TrainingProblem(
            f"Only {len(train)} training rows in {data.window} (the spec's training.min_rows is "
            f"{spec.training.min_rows}). Widen the window (param window_start) or ingest more intervals."
        )
    if len(holdout) == 0:
        raise TrainingProblem(
            f"The holdout [{data.window.holdout_start:%Y-%m-%d}, {data.window.end:%Y-%m-%d}) has no rows; "
            "the newest intervals are missing or quarantined. Ingest them or choose an earlier window_end."
        )
    return train, holdout


def estimator_params(spec: ModelSpec, overrides: dict[str, Any] | None = None) -> dict[str, Any]:
    """The spec's estimator parameters with a run's overrides applied; only ``training.overridable`` keys."""
    overrides = overrides or {}
    refused = sorted(set(overrides) - set(spec.training.overridable))
    if refused:
        raise TrainingProblem(
            f"Override(s) {refused} are not allowed for {spec.name}; the spec allows "
            f"{spec.training.overridable or 'none'} (training.overridable in {spec.name}.yaml)."
        )
    return {**spec.training.estimator.params, **overrides}


def _estimator_class(path: str) -> type:
    module_name, _, class_name = path.rpartition(".")
    try:
        return getattr(importlib.import_module(module_name), class_name)
    except (ImportError, AttributeError) as exc:
        raise TrainingProblem(
            f"training.estimator.class {path!r} cannot be imported ({exc}). Use a scikit-learn estimator's "
            "import path, e.g. sklearn.ensemble.HistGradientBoostingRegressor."
        ) from None


def build_pipeline(spec: ModelSpec, params: dict[str, Any]) -> Pipeline:
    """Preprocessing by feature kind, then the spec's estimator with ``params`` and the spec's seed.

    Categorical features are one-hot encoded (unknown categories at scoring time are ignored, not fatal);
    numeric features pass through unchanged (tree ensembles need no scaling).
    """
    from sklearn.compose import ColumnTransformer
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import OneHotEncoder

    categorical = [f.name for f in spec.features if f.kind == "categorical"]
    numeric = [f.name for f in spec.features if f.kind == "numeric"]
    pre = ColumnTransformer(
        [
            ("categorical", OneHotEncoder(handle_unknown="ignore", sparse_output=False), categorical),
            ("numeric", "passthrough", numeric),
        ],
        verbose_feature_names_out=False,
    )
    cls = _estimator_class(spec.training.estimator.class_path)
    try:
        estimator = cls(**params)
    except TypeError as exc:
        raise TrainingProblem(
            f"{spec.training.estimator.class_path} does not accept these parameters: {exc}. "
            f"Fix training.estimator.params in {spec.name}.yaml or the run's overrides."
        ) from None
    if "random_state" in estimator.get_params():
        estimator.set_params(random_state=spec.training.seed)
    return Pipeline([("preprocess", pre), ("model", estimator)])


@dataclass(frozen=True)
class FitResult:
    pipeline: Pipeline
    params: dict[str, Any]
    trials: list[dict[str, Any]]


def fit(spec: ModelSpec, train: pd.DataFrame, overrides: dict[str, Any] | None = None) -> FitResult:
    """Fit the pipeline; with a ``training.search``, first pick parameters by a bounded search on time folds."""
    params = estimator_params(spec, overrides)
    x, y = train[spec.feature_names], train[spec.target.name]
    trials: list[dict[str, Any]] = []
    search = spec.training.search
    if search is not None:
        from sklearn.model_selection import ParameterGrid, RandomizedSearchCV, TimeSeriesSplit

        space = {f"model__{k}": v for k, v in search.space.items()}
        n_candidates = len(ParameterGrid(space))
        searcher = RandomizedSearchCV(
            build_pipeline(spec, params),
            space,
            n_iter=min(search.max_trials, n_candidates),
            cv=TimeSeriesSplit(n_splits=search.folds),
            scoring="neg_root_mean_squared_error",
            random_state=spec.training.seed,
            refit=False,
            n_jobs=1,
        )
        searcher.fit(x, y)
        results = searcher.cv_results_
        for i, candidate in enumerate(results["params"]):
            trials.append(
                {
                    "params": {k.removeprefix("model__"): v for k, v in candidate.items()},
                    "rmse": float(-results["mean_test_score"][i]),
                    "rank": int(results["rank_test_score"][i]),
                }
            )
        best = {k.removeprefix("model__"): v for k, v in searcher.best_params_.items()}
        params = {**params, **best}
        log.info("Search: %d trials on %d time folds; best %s", len(trials), search.folds, best)
    pipeline = build_pipeline(spec, params)
    pipeline.fit(x, y)
    return FitResult(pipeline=pipeline, params=params, trials=trials)


def _scores(y_true: Any, y_pred: Any) -> dict[str, float]:
    import numpy as np
    from sklearn.metrics import mean_absolute_error, r2_score, root_mean_squared_error

    finite = np.isfinite(y_pred)
    if not finite.all() or len(y_true) == 0:
        return {"rmse": math.nan, "mae": math.nan, "r2": math.nan}
    r2 = float(r2_score(y_true, y_pred)) if len(y_true) > 1 else math.nan
    return {
        "rmse": float(root_mean_squared_error(y_true, y_pred)),
        "mae": float(mean_absolute_error(y_true, y_pred)),
        "r2": r2,
    }


def slice_labels(spec: ModelSpec, frame: pd.DataFrame) -> dict[str, pd.Series]:
    """For each declared slice, the label of every row (``hour_band=night``, ``season=3``, ...)."""
    import pandas as pd

    labels: dict[str, pd.Series] = {}
    for sl in spec.training.slices:
        column = frame[sl.column]
        if sl.bins is not None:
            names = sl.labels or [f"[{a:g},{b:g})" for a, b in zip(sl.bins, sl.bins[1:], strict=False)]
            binned = pd.cut(column, bins=sl.bins, labels=names, right=False)
            labels[sl.name] = binned.astype(str).radd(f"{sl.name}=")
        else:
            labels[sl.name] = column.astype(str).radd(f"{sl.name}=")
    return labels


def evaluate(
    spec: ModelSpec,
    predict: Any,
    holdout: pd.DataFrame,
    *,
    signature: dict[str, str] | None = None,
    version: str | None = None,
) -> Evaluation:
    """Score ``predict`` (a callable or a fitted pipeline) on the holdout: overall, per slice, and sanity."""
    import numpy as np

    x, y = holdout[spec.feature_names], holdout[spec.target.name].to_numpy(dtype=float)
    raw = predict.predict(x) if hasattr(predict, "predict") else predict(x)
    y_pred = np.asarray(raw, dtype=float).reshape(-1)
    finite = np.isfinite(y_pred)
    slices: dict[str, dict[str, float]] = {}
    for labels in slice_labels(spec, holdout).values():
        for label in sorted(labels.unique()):
            mask = (labels == label).to_numpy()
            slices[label] = {**_scores(y[mask], y_pred[mask]), "rows": int(mask.sum())}
    return Evaluation(
        metrics=_scores(y, y_pred),
        slices=slices,
        predictions=len(y_pred),
        nan_predictions=int((~finite).sum()),
        min_prediction=float(y_pred[finite].min()) if finite.any() else math.nan,
        max_prediction=float(y_pred[finite].max()) if finite.any() else math.nan,
        signature=signature,
        version=version,
    )


def feature_importance(spec: ModelSpec, pipeline: Pipeline, holdout: pd.DataFrame) -> dict[str, float]:
    """Permutation importance on (at most 1,000 rows of) the holdout, per input feature, in the target's units."""
    from sklearn.inspection import permutation_importance

    sample = holdout.iloc[-1000:]
    result = permutation_importance(
        pipeline,
        sample[spec.feature_names],
        sample[spec.target.name],
        scoring="neg_root_mean_squared_error",
        n_repeats=2,
        random_state=spec.training.seed,
        n_jobs=1,
    )
    return {name: float(v) for name, v in zip(spec.feature_names, result.importances_mean, strict=True)}


def plots(spec: ModelSpec, pipeline: Pipeline, holdout: pd.DataFrame, importance: dict[str, float]) -> dict[str, Any]:
    """The evaluation figures (matplotlib, headless): predicted vs actual, residuals by hour, importance."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    y = holdout[spec.target.name].to_numpy(dtype=float)
    y_pred = pipeline.predict(holdout[spec.feature_names])
    figures: dict[str, Any] = {}

    fig, ax = plt.subplots(figsize=(5, 5))
    ax.scatter(y, y_pred, s=4, alpha=0.4)
    top = float(max(y.max(), y_pred.max()))
    ax.plot([0, top], [0, top], color="black", linewidth=1)
    ax.set(xlabel=f"actual {spec.target.name}", ylabel="predicted", title="Holdout: predicted vs actual")
    figures["predicted_vs_actual.png"] = fig

    fig, ax = plt.subplots(figsize=(7, 4))
    if "hr" in holdout.columns:
        groups = holdout["hr"].to_numpy()
        hours = np.unique(groups)
        ax.boxplot([(y - y_pred)[groups == h] for h in hours], showfliers=False)
        ax.set_xticks(range(1, len(hours) + 1), [str(int(h)) for h in hours])
        ax.set(xlabel="hour", ylabel="actual - predicted", title="Holdout residuals by hour")
    else:
        ax.hist(y - y_pred, bins=50)
        ax.set(xlabel="actual - predicted", title="Holdout residuals")
    figures["residuals_by_hour.png"] = fig

    fig, ax = plt.subplots(figsize=(6, 4))
    ranked = sorted(importance.items(), key=lambda kv: kv[1])
    ax.barh([k for k, _ in ranked], [v for _, v in ranked])
    ax.set(xlabel=f"RMSE increase when permuted ({spec.target.name})", title="Permutation importance")
    fig.tight_layout()
    figures["feature_importance.png"] = fig
    return figures

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
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from airloop.core.contracts import Evaluation
from airloop.core.errors import ExpectedFailure
from airloop.core.intervals import parse_key
from airloop.core.times import as_utc
from airloop.stages.train.labels import LabelsUsed

if TYPE_CHECKING:
    import pandas as pd
    from sklearn.pipeline import Pipeline

    from airloop.adapters.lake import Lake
    from airloop.core.spec import ModelSpec
    from airloop.stages.train.labels import LabelReader

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
    """The rows of a window (sorted by time), the partitions they came from, and where their labels came from."""

    frame: pd.DataFrame
    window: Window
    partitions: list[PartitionRef]
    gaps: list[str]
    content_digest: str
    labels: LabelsUsed = field(default_factory=LabelsUsed)


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
    end = as_utc(end)
    start = as_utc(start) if start is not None else end - timedelta(days=t.window_days)
    holdout_start = end - timedelta(days=t.holdout_days)
    if not start < holdout_start < end:
        raise TrainingProblem(
            f"Training window [{start:%Y-%m-%d}, {end:%Y-%m-%d}) leaves no training rows before its holdout "
            f"(the last {t.holdout_days} days, from {holdout_start:%Y-%m-%d}). "
            f"Choose a window_start before {holdout_start:%Y-%m-%d}."
        )
    return Window(start=start, end=end, holdout_start=holdout_start)


def assemble(spec: ModelSpec, lake: Lake, window: Window, labels: LabelReader | None = None) -> TrainingData:
    """Read the validated partitions that overlap the window and keep the rows inside it, sorted by time.

    Each row's target is its current label in the warehouse table ``labels`` where one arrived there (``labels``
    reads them; default: the warehouse), else the partition's own value; a row with neither keeps a null target
    (:func:`split` leaves it out) and is counted in ``TrainingData.labels`` (:mod:`.labels`). The frame's columns
    are the features, the target and the time column.

    Quarantined or missing intervals inside the window are listed in ``gaps`` (and logged): training goes on
    without them, and the run records which ones were absent.
    """
    import pandas as pd

    from airloop.adapters.lake import content_digest
    from airloop.stages.train.labels import join_labels, warehouse_reader

    time_col = spec.source.time_column
    columns = [*spec.feature_names, spec.target.name, time_col]
    frames, refs, covered = _read_partitions(spec, lake, window)
    _refuse_overlaps(spec, lake, refs)
    if not frames:
        raise NoValidatedData(
            f"No validated partition of {spec.name} overlaps the training window {window}. "
            f"Ingest that range first ({spec.dag_id('ingest')}), or pick another window."
        )
    frame = pd.concat(frames, ignore_index=True)
    times = pd.to_datetime(frame[time_col], utc=True)
    inside = (times >= pd.Timestamp(window.start)) & (times < pd.Timestamp(window.end))
    frame = frame.loc[inside].sort_values(time_col, kind="stable").reset_index(drop=True)
    table = (labels or warehouse_reader(spec.name))([r.partition for r in refs])
    frame, used = join_labels(spec, frame.drop(columns=[_PARTITION]), frame[_PARTITION], table)
    frame = frame[columns]
    if used.from_table or used.unlabelled:
        log.info("Labels of %s in %s: %s.", spec.name, window, used.describe())
    gaps = _gaps(window, sorted(covered), lake.partitions(spec.name, "quarantine"))
    if gaps:
        log.warning("Training window %s has gaps (trained without them): %s", window, "; ".join(gaps))
    return TrainingData(
        frame=frame, window=window, partitions=refs, gaps=gaps, content_digest=content_digest(frame), labels=used
    )


def _read_partitions(
    spec: ModelSpec, lake: Lake, window: Window
) -> tuple[list[pd.DataFrame], list[PartitionRef], list[tuple[datetime, datetime]]]:
    """The validated partitions overlapping the window: their rows (features, time column, keys, the target where
    the partition has it, and the partition's key), their lineage references and the spans they cover."""
    needed = list(dict.fromkeys([*spec.feature_names, spec.source.time_column, *spec.keys]))
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
        missing = sorted(set(needed) - set(manifest.columns))
        if missing:
            raise TrainingProblem(
                f"Validated partition {key} of {spec.name} has no column(s) {missing}, which the spec's features, "
                f"time column and row keys need. Fix the source or the spec ({spec.name}.yaml), then re-ingest the "
                "interval."
            )
        # The target is read where the partition has it: with a label source of its own (labels.source) ingestion
        # never extracts it, and every label comes from the table.
        read = [*needed, *([spec.target.name] if spec.target.name in manifest.columns else [])]
        frames.append(lake.read(spec.name, "validated", key, columns=read).assign(**{_PARTITION: key}))
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
    return frames, refs, covered


#: The column that names each row's partition while a window is assembled (dropped before it is returned).
_PARTITION = "__airloop_partition__"


class OverlappingPartitions(TrainingProblem):
    """Two validated partitions cover the same time: their shared rows would count twice."""


def _refuse_overlaps(spec: ModelSpec, lake: Lake, refs: list[PartitionRef]) -> None:
    """Refuse partitions whose intervals overlap, naming them and the ones off the timetable's grid.

    The ingest tasks refuse an off-grid interval; this second line of defence catches a partition published before
    that check existed, or written to the lake by other means. Training, the holdout, the gate and the monitor
    would otherwise count the overlapping rows twice.
    """
    from airloop.core.intervals import Interval, grid_intervals

    spans = sorted(
        (Interval(datetime.fromisoformat(r.interval_start), datetime.fromisoformat(r.interval_end)), r.partition)
        for r in refs
    )
    # Sorted by start, a partition can overlap one further back than its neighbour: compare with the furthest end.
    reach: tuple[Interval, str] | None = None
    pairs: list[tuple[tuple[Interval, str], tuple[Interval, str]]] = []
    for span in spans:
        if reach is not None and span[0].start < reach[0].end:
            pairs.append((reach, span))
        if reach is None or span[0].end > reach[0].end:
            reach = span
    if not pairs:
        return
    overlapping = {key: interval for pair in pairs for interval, key in pair}
    off_grid = sorted(key for key, interval in overlapping.items() if grid_intervals(spec, interval) != [interval])
    listed = "; ".join(f"{a[1]} {a[0]} and {b[1]} {b[0]}" for a, b in pairs)
    if off_grid:
        fix = (
            f"Partition(s) {off_grid} are not intervals of the timetable (an ingest run at an off-grid logical "
            "date, before the ingest tasks refused those): delete each from the lake ("
            + ", ".join(lake.partition_url(spec.name, "validated", key) for key in off_grid)
            + ", and the same key under raw/ and predictions/) and its rows in the warehouse tables predictions "
            "and validation_results, then retrain."
        )
    else:
        fix = "Delete the partition that should not be there from the lake, then retrain."
    raise OverlappingPartitions(
        f"Validated partitions of {spec.name} overlap: their shared rows would count twice in training, the "
        f"holdout, the gate and the monitor, so they are refused: {listed}. {fix} "
        f"The runbook of {spec.dag_id('ingest')} (triage, 'off-grid interval') has the steps."
    )


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

    frame = data.frame
    unlabelled = frame[spec.target.name].isna()
    if unlabelled.any():
        log.warning(
            "%d of %d rows in %s have no `%s` (the target); they are left out of training and the holdout.",
            int(unlabelled.sum()),
            len(frame),
            data.window,
            spec.target.name,
        )
        frame = frame.loc[~unlabelled]
    times = pd.to_datetime(frame[spec.source.time_column], utc=True)
    cut = times >= pd.Timestamp(data.window.holdout_start)
    train, holdout = frame.loc[~cut], frame.loc[cut]
    waiting = _waiting_for_labels(spec, data, int(unlabelled.sum()))
    if len(train) < spec.training.min_rows:
        raise TrainingProblem(
            f"Only {len(train)} labelled training rows in {data.window} (the spec's training.min_rows is "
            f"{spec.training.min_rows}). {waiting or 'Widen the window (param window_start) or ingest more intervals.'}"
        )
    if len(holdout) == 0:
        raise TrainingProblem(
            f"The holdout [{data.window.holdout_start:%Y-%m-%d}, {data.window.end:%Y-%m-%d}) has no labelled rows. "
            + (
                waiting
                or "The newest intervals are missing or quarantined. Ingest them or choose an earlier window_end."
            )
        )
    return train, holdout


def _waiting_for_labels(spec: ModelSpec, data: TrainingData, unlabelled: int) -> str:
    """What to do when rows of the window wait for their labels (empty when every row has one)."""
    if not unlabelled:
        return ""
    used = data.labels
    return (
        f"{unlabelled} of {len(data.frame)} rows of the window have no label yet ({used.from_table} labelled from "
        f"table labels, {used.from_partitions} from the partitions). Wait for their labels to arrive (the spec's "
        f"labels.after) and run {spec.dag_id('labels')} for those intervals, or choose an earlier window_end "
        "(param window_end), then retrain."
    )


def estimator_params(spec: ModelSpec, overrides: dict[str, Any] | None = None) -> dict[str, Any]:
    """The spec's estimator parameters with a run's overrides applied: only ``training.overridable`` keys, each
    within the range the spec declares for it (an unbounded ``max_iter`` could hold the run slot for days)."""
    overrides = overrides or {}
    problems = spec.training.override_problems(overrides, f"{spec.name}.yaml")
    if problems:
        raise TrainingProblem(
            f"Override(s) refused for {spec.name}: {'; '.join(problems)}. Choose values in range, or change "
            "the range in the spec (training.overridable)."
        )
    return {**spec.training.estimator.params, **overrides}


def _estimator_class(path: str) -> type:
    module_name, _, class_name = path.rpartition(".")
    try:
        cls = getattr(importlib.import_module(module_name), class_name)
    except (ImportError, AttributeError) as exc:
        raise TrainingProblem(
            f"training.estimator.class {path!r} cannot be imported ({exc}). Use a scikit-learn estimator's "
            "import path, e.g. sklearn.ensemble.HistGradientBoostingRegressor."
        ) from None
    if not isinstance(cls, type):
        raise TrainingProblem(f"training.estimator.class {path!r} is not a class; name a scikit-learn estimator.")
    return cls


def as_categories(frame: pd.DataFrame) -> pd.DataFrame:
    """Categorical features as the encoder needs them: every missing value (None, NaN, pd.NA) one marker, NaN;
    a column mixing text and numbers all text (the encoder refuses mixed types)."""
    import numpy as np

    out = frame.astype(object).where(frame.notna(), np.nan)
    for name in out.columns:
        values = out[name]
        present = values[values.notna()]
        if present.map(type).nunique() > 1:
            out[name] = values.where(values.isna(), values.astype(str))
    return out


def as_numbers(frame: pd.DataFrame) -> pd.DataFrame:
    """Numeric features as floats, missing values (pd.NA of nullable columns too) as NaN."""
    return frame.astype("float64")


def _preprocess(spec: ModelSpec, allow_nan: bool) -> Any:
    """One-hot categories (missing is a category, unknown ones encode as all zeros), numbers as floats; for an
    estimator that cannot take NaN, numbers are imputed by their median with a missing-value indicator."""
    from sklearn.compose import ColumnTransformer
    from sklearn.impute import SimpleImputer
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import FunctionTransformer, OneHotEncoder

    categorical = [f.name for f in spec.features if f.kind == "categorical"]
    numeric = [f.name for f in spec.features if f.kind == "numeric"]
    numbers = [FunctionTransformer(as_numbers, feature_names_out="one-to-one")]
    if not allow_nan:
        numbers.append(SimpleImputer(strategy="median", add_indicator=True, keep_empty_features=True))
    return ColumnTransformer(
        [
            (
                "categorical",
                make_pipeline(
                    FunctionTransformer(as_categories, feature_names_out="one-to-one"),
                    OneHotEncoder(handle_unknown="ignore", sparse_output=False),
                ),
                categorical,
            ),
            ("numeric", make_pipeline(*numbers), numeric),
        ],
        verbose_feature_names_out=False,
    )


def build_pipeline(spec: ModelSpec, params: dict[str, Any]) -> Pipeline:
    """Preprocessing by feature kind, then the spec's estimator with ``params`` and the spec's seed.

    Categorical features are one-hot encoded (unknown categories at scoring time are ignored, not fatal; a
    missing value is a category of its own); numeric features stay as they are (tree ensembles need no
    scaling; HistGradientBoosting reads NaN as missing), imputed only for an estimator that refuses NaN.
    """
    from sklearn.pipeline import Pipeline

    cls = _estimator_class(spec.estimator_class)
    try:
        estimator = cls(**params)
    except TypeError as exc:
        raise TrainingProblem(
            f"{spec.estimator_class} does not accept these parameters: {exc}. "
            f"Fix training.estimator.params in {spec.name}.yaml or the run's overrides."
        ) from None
    if "random_state" in estimator.get_params():
        estimator.set_params(random_state=spec.training.seed)
    tags = getattr(estimator, "__sklearn_tags__", None)
    allow_nan = bool(tags().input_tags.allow_nan) if callable(tags) else False
    return Pipeline([("preprocess", _preprocess(spec, allow_nan)), ("model", estimator)])


# --- the task: regression, binary or multiclass -------------------------------------------------------------


@dataclass(frozen=True)
class Task:
    """What the model predicts: ``kind`` (a metric registry task), and for a classifier its classes in the order
    the metrics read probabilities (binary: the positive class last) and the binary decision threshold."""

    kind: str
    classes: tuple[Any, ...] = ()
    threshold: float = 0.5

    @property
    def is_classifier(self) -> bool:
        return self.kind != "regression"


def _plain(value: Any) -> Any:
    item = getattr(value, "item", None)
    return item() if callable(item) else value


def classification_task(spec: ModelSpec, classes: list[Any]) -> Task:
    """Binary (two classes, the positive one last) or multiclass, from the classes a model was trained on."""
    labels = [_plain(c) for c in classes]
    if len(labels) == 2:
        wanted = spec.target.positive_class
        if wanted is not None:
            matches = [c for c in labels if c == wanted or str(c) == str(wanted)]
            if not matches:
                raise TrainingProblem(
                    f"target.positive_class {wanted!r} of {spec.name}.yaml is not one of the classes of "
                    f"`{spec.target.name}` seen in training: {labels!r}. Set it to one of them (or remove it)."
                )
            labels = [c for c in labels if c != matches[0]] + [matches[0]]
        return Task("binary", tuple(labels), spec.target.decision_threshold)
    return Task("multiclass", tuple(labels))


def training_task(spec: ModelSpec, y: pd.Series, window: Window | str) -> Task:
    """The task of the training rows: regression, or the classes seen (at least two) and so binary or multiclass.

    The gate's metric, its thresholds and the monitor's metric must fit the kind; errors say what fits.
    """
    if spec.target.task == "regression":
        return Task("regression")
    counts = y.value_counts(dropna=True)
    if len(counts) < 2:
        seen = f"one class, {counts.index[0]!r}, on all {int(counts.iloc[0]):,} rows" if len(counts) else "no label"
        raise TrainingProblem(
            f"Model {spec.name}: the training rows of window {window} hold {seen} of the target "
            f"`{spec.target.name}`; a classifier needs at least two classes. Widen the window (param "
            "window_start) so it holds examples of the other classes, check the labels at the source, or, if "
            f"`{spec.target.name}` is a number to predict, set target.task: regression in {spec.name}.yaml."
        )
    try:
        ordered = sorted(counts.index.tolist())
    except TypeError:
        ordered = sorted(counts.index.tolist(), key=str)
    task = classification_task(spec, ordered)
    check_metrics_fit(spec, task)
    return task


def check_metrics_fit(spec: ModelSpec, task: Task) -> None:
    """The gate's metric and thresholds and the monitor's metric must fit the task the training data makes."""
    from airloop.core import metrics

    named = [("gate.metric", spec.gate_metric)]
    named += [("gate.thresholds", m) for m in spec.gate.thresholds]
    named.append(("monitoring.performance_metric", spec.performance_metric))
    wrong = [f"{where} `{name}`" for where, name in named if not metrics.get(name).fits(task.kind)]
    if wrong:
        fitting = ", ".join(m.name for m in metrics.metrics_for(task.kind))
        raise TrainingProblem(
            f"Model {spec.name}: the training rows hold {len(task.classes)} classes of `{spec.target.name}` "
            f"({', '.join(map(repr, task.classes[:10]))}), so it is a {task.kind} model, and "
            f"{'; '.join(wrong)} does not fit a {task.kind} model. Metrics that fit {task.kind}: {fitting}. "
            f"Change them in {spec.name}.yaml (or leave gate.metric out for the default, log_loss)."
        )


def model_task(spec: ModelSpec, model: Any) -> Task:
    """The task of a fitted model: regression, or its classes (``classes_``) as binary or multiclass."""
    if spec.target.task == "regression":
        return Task("regression")
    classes = getattr(model, "classes_", None)
    if classes is None or not hasattr(model, "predict_proba"):
        raise TrainingProblem(
            f"The model of {spec.name} has no classes_ or predict_proba, but the target's task is classification: "
            f"train it with a scikit-learn classifier (e.g. {spec.estimator_class})."
        )
    return classification_task(spec, list(classes))


@dataclass(frozen=True)
class Predictions:
    """A model's predictions on some rows: values (regression) or classes, and the classes' probabilities."""

    values: Any
    proba: Any = None

    def subset(self, mask: Any) -> Predictions:
        return Predictions(self.values[mask], None if self.proba is None else self.proba[mask])


def predict_with(model: Any, x: pd.DataFrame, task: Task) -> Predictions:
    """Predictions for ``task``; a classifier's probabilities get one column per class of ``task.classes``
    (a class the model never saw, e.g. in a search fold, has probability 0), classes picked as the metrics do."""
    import numpy as np

    from airloop.stages.train.threads import few_rows

    with few_rows(len(x)):
        if not task.is_classifier:
            raw = model.predict(x) if hasattr(model, "predict") else model(x)
            return Predictions(np.asarray(raw, dtype=float).reshape(-1))
        raw_proba = np.asarray(model.predict_proba(x), dtype=float)
    own = [_plain(c) for c in model.classes_]
    proba = np.zeros((len(x), len(task.classes)))
    for j, label in enumerate(task.classes):
        if label in own:
            proba[:, j] = raw_proba[:, own.index(label)]
    labels = np.asarray(task.classes, dtype=object)
    if task.kind == "binary":
        picked = (proba[:, 1] >= task.threshold).astype(int)
    else:
        picked = np.nan_to_num(proba, nan=-1.0).argmax(axis=1)
    return Predictions(labels[picked], proba)


def task_scores(task: Task, y: Any, predictions: Predictions, names: list[str] | None = None) -> Any:
    """Every metric of the task (or ``names``) from :func:`airloop.core.metrics.compute`; NaN with a note when
    undefined."""
    from airloop.core import metrics

    if not task.is_classifier:
        return metrics.compute(task.kind, y, y_pred=predictions.values, names=names)
    return metrics.compute(
        task.kind, y, proba=predictions.proba, classes=list(task.classes), threshold=task.threshold, names=names
    )


def scorer(spec: ModelSpec, task: Task) -> Any:
    """A scikit-learn scorer for the gate's metric (greater is better: a lower-is-better metric is negated)."""
    from airloop.core import metrics

    name = spec.gate_metric
    sign = -1.0 if metrics.get(name, task.kind).lower_is_better else 1.0

    def score(estimator: Any, x: pd.DataFrame, y: Any) -> float:
        values = task_scores(task, _target_values(task, y), predict_with(estimator, x, task), names=[name])
        return sign * float(values[name])

    return score


def _target_values(task: Task, y: Any) -> Any:
    import numpy as np

    return np.asarray(y, dtype=float) if not task.is_classifier else np.asarray(y, dtype=object)


@dataclass(frozen=True)
class FitResult:
    pipeline: Pipeline
    params: dict[str, Any]
    trials: list[dict[str, Any]]
    task: Task = Task("regression")


def fit_params(spec: ModelSpec, task: Task, y: pd.Series) -> dict[str, Any]:
    """What ``fit`` is given beside the rows: balanced sample weights when the spec asks for them."""
    if not task.is_classifier or spec.target.class_weight != "balanced":
        return {}
    from sklearn.utils.class_weight import compute_sample_weight

    return {"model__sample_weight": compute_sample_weight("balanced", y.to_numpy())}


def fit(
    spec: ModelSpec,
    train: pd.DataFrame,
    overrides: dict[str, Any] | None = None,
    window: Window | str = "?",
    task: Task | None = None,
) -> FitResult:
    """Fit the pipeline; with a ``training.search``, first pick parameters by a bounded search on time folds,
    scored by the gate's metric. ``task``: :func:`training_task` of these rows, when the caller has it already."""
    params = estimator_params(spec, overrides)
    x, y = train[spec.feature_names], train[spec.target.name]
    task = task or training_task(spec, y, window)
    weights = fit_params(spec, task, y)
    trials: list[dict[str, Any]] = []
    if spec.training.search is not None:
        params, trials = _search(spec, task, params, x, y, weights)
    pipeline = build_pipeline(spec, params)
    pipeline.fit(x, y, **weights)
    return FitResult(pipeline=pipeline, params=params, trials=trials, task=task)


def _search(
    spec: ModelSpec, task: Task, params: dict[str, Any], x: pd.DataFrame, y: pd.Series, weights: dict[str, Any]
) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """A bounded random search on time-ordered folds; returns the best parameters and every trial."""
    from sklearn.model_selection import ParameterGrid, RandomizedSearchCV, TimeSeriesSplit

    from airloop.core import metrics

    search = spec.training.search
    assert search is not None
    name = spec.gate_metric
    sign = -1.0 if metrics.get(name).lower_is_better else 1.0
    space = {f"model__{k}": v for k, v in search.space.items()}
    searcher = RandomizedSearchCV(
        build_pipeline(spec, params),
        space,
        n_iter=min(search.max_trials, len(ParameterGrid(space))),
        cv=TimeSeriesSplit(n_splits=search.folds),
        scoring=scorer(spec, task),
        random_state=spec.training.seed,
        refit=False,
        n_jobs=1,
    )
    searcher.fit(x, y, **weights)
    results = searcher.cv_results_
    trials = [
        {
            "params": {k.removeprefix("model__"): v for k, v in candidate.items()},
            name: float(sign * results["mean_test_score"][i]),
            "rank": int(results["rank_test_score"][i]),
        }
        for i, candidate in enumerate(results["params"])
    ]
    best = {k.removeprefix("model__"): v for k, v in searcher.best_params_.items()}
    log.info("Search: %d trials on %d time folds, by %s; best %s", len(trials), search.folds, name, best)
    return {**params, **best}, trials


def slice_labels(spec: ModelSpec, frame: pd.DataFrame) -> dict[str, pd.Series]:
    """For each declared slice, the label of every row (``band=night``, ``region=3``, ...)."""
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
    """Score ``predict`` (a fitted pipeline, a loaded model or, for a regression, a callable) on the holdout:
    every metric of its task overall and per slice, and what the gate's sanity checks read."""
    model = getattr(predict, "pipeline", predict)
    task = model_task(spec, model)
    y = _target_values(task, holdout[spec.target.name])
    predictions = predict_with(model, holdout[spec.feature_names], task)
    overall = task_scores(task, y, predictions)
    slices: dict[str, dict[str, float]] = {}
    for labels in slice_labels(spec, holdout).values():
        for label in sorted(labels.unique()):
            mask = (labels == label).to_numpy()
            slices[label] = {**task_scores(task, y[mask], predictions.subset(mask)), "rows": int(mask.sum())}
    return Evaluation(
        metrics=dict(overall),
        slices=slices,
        predictions=len(predictions.values),
        signature=signature,
        version=version,
        task=task.kind,
        notes=dict(overall.notes),
        **_prediction_stats(task, predictions),
    )


def _prediction_stats(task: Task, predictions: Predictions) -> dict[str, Any]:
    """The sanity fields of an :class:`Evaluation`: NaN count and range (regression); classes, predicted
    shares, the probabilities' range and what is wrong with them (classification)."""
    import numpy as np

    from airloop.core.metrics import check_probabilities

    if not task.is_classifier:
        values = predictions.values
        finite = np.isfinite(values)
        return {
            "nan_predictions": int((~finite).sum()),
            "min_prediction": float(values[finite].min()) if finite.any() else math.nan,
            "max_prediction": float(values[finite].max()) if finite.any() else math.nan,
        }
    proba, picked = predictions.proba, predictions.values
    finite_rows = np.isfinite(proba).all(axis=1)
    finite = proba[np.isfinite(proba)]
    shares: dict[str, float] = {}
    for label in task.classes:
        share = float(np.mean(picked[finite_rows] == label)) if finite_rows.any() else math.nan
        shares[str(label)] = share
    return {
        "nan_predictions": int((~finite_rows).sum()),
        "classes": list(task.classes),
        "predicted_shares": shares,
        "proba_min": float(finite.min()) if finite.size else math.nan,
        "proba_max": float(finite.max()) if finite.size else math.nan,
        "proba_problem": check_probabilities(proba, list(task.classes)) if len(proba) else None,
    }


#: Rows of the holdout (its newest) and shuffles per feature that permutation importance uses.
IMPORTANCE_ROWS = 1000
IMPORTANCE_REPEATS = 2


def feature_importance(spec: ModelSpec, pipeline: Pipeline, holdout: pd.DataFrame) -> dict[str, float]:
    """Permutation importance on (at most 1,000 rows of) the holdout, per input feature: how much the gate's
    metric worsens when the feature is shuffled (in the metric's units).

    The numbers of ``sklearn.inspection.permutation_importance`` (same shuffles from ``training.seed``, same
    scorer), with one prediction instead of one per feature and repeat: the baseline rows and every shuffled copy
    are stacked and predicted at once, then scored block by block. Written out here because each of scikit-learn's
    27 predictions on the demo's 1,000 rows costs mostly its fixed overhead (about 0.2 s of a run, issue 16); the
    pipeline predicts row by row, so the predictions are the same.
    """
    import numpy as np
    import pandas as pd
    from sklearn.utils import check_random_state

    from airloop.core import metrics

    sample = holdout.iloc[-IMPORTANCE_ROWS:]
    x = sample[spec.feature_names].reset_index(drop=True)
    y = sample[spec.target.name]
    task = model_task(spec, pipeline)
    # As permutation_importance draws them: one seed from training.seed, then a generator per feature from it.
    seed = check_random_state(spec.training.seed).randint(np.iinfo(np.int32).max + 1)
    blocks = [x]
    for name in spec.feature_names:
        rng, order, column, permuted = check_random_state(seed), np.arange(len(x)), x[name], x.copy()
        for _ in range(IMPORTANCE_REPEATS):
            rng.shuffle(order)  # shuffled again each repeat, and applied to the already shuffled column
            column = column.iloc[order].set_axis(x.index)
            permuted = permuted.assign(**{name: column})
            blocks.append(permuted)
    predictions = predict_with(pipeline, pd.concat(blocks, ignore_index=True), task)
    target = _target_values(task, y)
    sign = -1.0 if metrics.get(spec.gate_metric, task.kind).lower_is_better else 1.0

    def score(block: int) -> float:
        rows = slice(block * len(x), (block + 1) * len(x))
        values = task_scores(task, target, predictions.subset(rows), names=[spec.gate_metric])
        return sign * float(values[spec.gate_metric])

    baseline = score(0)
    return {
        name: float(np.mean([baseline - score(1 + i * IMPORTANCE_REPEATS + r) for r in range(IMPORTANCE_REPEATS)]))
        for i, name in enumerate(spec.feature_names)
    }


def evaluation_plots(spec: ModelSpec, pipeline: Pipeline, holdout: pd.DataFrame) -> dict[str, Any]:
    """The holdout's figures by task (regression: predicted against actual, residuals; a classifier: its curves)."""
    from airloop.stages.train import figures

    _headless()
    task = model_task(spec, pipeline)
    y = _target_values(task, holdout[spec.target.name])
    predictions = predict_with(pipeline, holdout[spec.feature_names], task)
    if task.is_classifier:
        return figures.classification(
            spec.target.name, task.kind, list(task.classes), y, predictions.proba, predictions.values
        )
    groups = next(iter(slice_labels(spec, holdout).items()), None)
    return figures.regression(spec.target.name, y, predictions.values, groups)


def importance_plot(spec: ModelSpec, importance: dict[str, float]) -> dict[str, Any]:
    """The permutation importance as a bar chart (``feature_importance.png``)."""
    from airloop.stages.train import figures

    plt = _headless()
    fig, ax = plt.subplots(figsize=(6, 4), layout=figures.LAYOUT)
    ranked = sorted(importance.items(), key=lambda kv: kv[1])
    ax.barh([k for k, _ in ranked], [v for _, v in ranked])
    ax.set(xlabel=f"{spec.gate_metric} worse by, when permuted", title="Permutation importance")
    return {"feature_importance.png": fig}


def _headless() -> Any:
    """``matplotlib.pyplot`` on the Agg backend (no display in a task)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt

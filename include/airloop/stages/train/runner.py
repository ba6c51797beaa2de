"""The train stage's runner: check a train request, then train a challenger and register it.

Each function is one task's work, callable without Airflow (tests and the benchmark call them directly);
:mod:`airloop.orchestration.tasks` passes in what the running task knows (run ids, who triggered, XCom values)
and converts the typed contracts (:class:`TrainRequest`, :class:`TrainedVersion`) to and from XCom's dicts.
The runners compose pure steps (:mod:`.request`, :mod:`.steps`, :mod:`.record`) and the registry adapter.
"""

from __future__ import annotations

import gc
import logging
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from airloop.adapters import registry
from airloop.adapters.lake import default_lake
from airloop.core.contracts import Evaluation, RunInfo, TrainedVersion, TrainRequest
from airloop.core.params import refuse_unknown
from airloop.core.spec import ModelSpec, spec_digest
from airloop.stages.train import record, threads
from airloop.stages.train.request import checked_overrides, describe_window, request_reason, requested_window

if TYPE_CHECKING:
    import pandas as pd

    from airloop.stages.train.steps import FitResult, Task, TrainingData, Window

log = logging.getLogger(__name__)

#: Keys a manual or API run of the train DAG may pass in ``conf``.
TRAIN_PARAMS = ("reason", "window_start", "window_end", "overrides")


def train_request(
    spec: ModelSpec, conf: dict[str, Any], params: dict[str, Any], run: RunInfo, asset_extras: list[dict[str, Any]]
) -> TrainRequest:
    """Check a train run's parameters up front, so a bad request fails in seconds, not after training.

    Manual and API runs must give a ``reason``; scheduled runs and retrain requests carry their own. A retrain
    request (an Asset event from the monitor) also carries its window's end: without a ``window_end`` param
    the run trains on data up to there (data time: a replay of old data retrains as it would have then).
    """
    refuse_unknown(conf, TRAIN_PARAMS, spec.dag_id("train"))
    reason = request_reason(spec, params, run, asset_extras)
    start, end = requested_window(params, asset_extras)
    overrides = checked_overrides(spec, params.get("overrides"))
    log.info(
        "Request to train %s accepted (%s run): reason %r; window %s; estimator overrides %s.",
        spec.name,
        run.run_type or "unknown",
        reason,
        describe_window(start, end, spec.training.window_days),
        overrides or "none (the spec's parameters)",
    )
    return TrainRequest(reason=reason, window_start=start, window_end=end, overrides=overrides)


@contextmanager
def _timed(timings: dict[str, float], key: str) -> Iterator[None]:
    started = time.perf_counter()
    _frozen_heap()
    yield
    timings[key] = time.perf_counter() - started


def _frozen_heap() -> None:
    """Leave the objects that exist now out of the garbage collector's full collections until the run ends.

    A task process holds its libraries' objects (Airflow, pandas, scikit-learn, matplotlib, MLflow: about half a
    million), and every full collection walks all of them: four per run, 0.1-0.4 s each on the demo data (issue 16),
    paid by whichever call happens to allocate then. The run's own objects are few and short-lived, so collections
    need only look at what is allocated after each phase starts. ``gc.freeze`` (Python's documented way, which
    Airflow's executors use before forking) moves the existing objects to a permanent generation; reference counting
    still frees them, only cycles among them wait for :func:`_heap_thawed`.
    """
    gc.freeze()


@contextmanager
def _heap_thawed() -> Iterator[None]:
    """Undo :func:`_frozen_heap` when the run ends, unless the process had frozen objects of its own already (an
    executor's forked worker, which froze them to keep its memory shared: left as it chose)."""
    frozen_before = gc.get_freeze_count()
    try:
        yield
    finally:
        if not frozen_before:
            gc.unfreeze()


def train(spec: ModelSpec, request: TrainRequest, run: RunInfo) -> TrainedVersion:
    """Assemble the window, fit, evaluate, log to MLflow, register and set ``@challenger``.

    A retry of the same Airflow run (the train task has ``retries``) first looks for the version an earlier try
    registered (:func:`airloop.adapters.registry.registered_by`); found, it is reused as it was trained (its run
    keeps the summary, :data:`record.SUMMARY_ARTIFACT`), so a retry never trains, logs and registers a second
    version beside the first.
    """
    reused = _reused(spec, run)
    if reused is not None:
        return reused
    with _heap_thawed():
        return _train(spec, request, run)


def _train(spec: ModelSpec, request: TrainRequest, run: RunInfo) -> TrainedVersion:
    """Fit and evaluate on this thread while :class:`registry.TrainingRunLog` logs the MLflow run on another.

    The run opens (experiment, run, dataset input, lineage) during the fit, the model and the holdout's figures
    are logged during the evaluation, and what is left after it (the importance figure, files, metrics, the version
    and ``@challenger``) is ``log_s``: on the demo data the tracking server's round trips were most of a run when
    made one after another (issue 16).
    """
    from airloop.stages.train import steps

    timings: dict[str, float] = {}
    with _timed(timings, "data_s"):
        lake = default_lake()
        window = steps.resolve_window(spec, lake, end=request.window_end, start=request.window_start)
        data = steps.assemble(spec, lake, window)
        train_rows, holdout = steps.split(spec, data)
        task = steps.training_task(spec, train_rows[spec.target.name], window)
    commit = registry.git_commit()  # before the run opens, timed in no phase
    opened = _opened(spec, request, run, lake.stage_url(spec.name, "validated"), data, task, commit)
    with registry.TrainingRunLog(opened) as run_log:
        with _timed(timings, "fit_s"):
            fitted = steps.fit(spec, train_rows, request.overrides, window, task)
        with _timed(timings, "evaluate_s"), threads.few_rows(max(len(holdout), registry.SIGNATURE_ROWS)):
            params = record.run_params(spec, fitted.params, window, len(fitted.trials), fitted.task)
            signature = registry.signature_sample(fitted.pipeline, train_rows[spec.feature_names])
            run_log.fitted(registry.FittedForLog(fitted.pipeline, params, *signature))
            outputs = _evaluated(spec, request, data, fitted, train_rows, holdout, run_log)
            run_log.evaluated(outputs.for_log)
        with _timed(timings, "log_s"):
            logged = run_log.result()
    trained = record.registered_summary(
        outputs.kept,
        model=spec.name,
        logged=logged,
        version_url=registry.version_url(spec.name, logged.version),
        timings=timings,
    )
    _log_trained(spec, trained, window, outputs.evaluation)
    log.info("Labels of the training window: %s (digest of the table labels: %s).", *_labels_line(data))
    return trained


def _labels_line(data: TrainingData) -> tuple[str, str]:
    return data.labels.describe(), data.labels.digest or "none taken"


def _reused(spec: ModelSpec, run: RunInfo) -> TrainedVersion | None:
    """The version an earlier try of this Airflow run registered, as that try trained it; None when none did."""
    logged = registry.registered_by(spec.name, run.dag_id, run.run_id)
    if logged is None:
        return None
    kept = registry.run_dict(logged.run_id, record.SUMMARY_ARTIFACT)
    if kept is None:  # a run logged before runs kept their summary: train again (a new version)
        log.warning(
            "An earlier try of %s registered %s v%s (MLflow run %s), but that run keeps no %s: training again.",
            run.run_id,
            spec.name,
            logged.version,
            logged.run_id,
            record.SUMMARY_ARTIFACT,
        )
        return None
    trained = record.registered_summary(
        kept, model=spec.name, logged=logged, version_url=registry.version_url(spec.name, logged.version), timings={}
    )
    log.info(
        "An earlier try of Airflow run %s already trained and registered %s v%s (MLflow run %s%s): reused as it "
        "was trained, not trained or registered again. Now @challenger; holdout %s.",
        run.run_id,
        spec.name,
        trained.version,
        trained.mlflow_run_id,
        f", {trained.run_url}" if trained.run_url else "",
        ", ".join(f"{k} {v}" for k, v in list(trained.metrics.items())[:3]) or "no metrics",
    )
    return trained


@dataclass(frozen=True)
class _Outputs:
    """What evaluating produced: the evaluation, the summary the run keeps, and what the MLflow run logs of them."""

    evaluation: Evaluation
    kept: dict[str, Any]
    for_log: registry.EvaluatedForLog


def _evaluated(
    spec: ModelSpec,
    request: TrainRequest,
    data: TrainingData,
    fitted: FitResult,
    train_rows: pd.DataFrame,
    holdout: pd.DataFrame,
    run_log: registry.TrainingRunLog,
) -> _Outputs:
    """Holdout metrics, figures, permutation importance, the kept summary and the holdout scores (a classifier's,
    for performance estimates without labels). The holdout's figures go to ``run_log`` as soon as they are drawn:
    it writes and uploads them while the importance is computed."""
    from airloop.stages.train import calibration, steps

    evaluation = steps.evaluate(spec, fitted.pipeline, holdout)
    run_log.drawn(steps.evaluation_plots(spec, fitted.pipeline, holdout))
    importance = steps.feature_importance(spec, fitted.pipeline, holdout)
    figures = steps.importance_plot(spec, importance)
    kept = record.kept_summary(
        window=data.window,
        partitions=len(data.partitions),
        gaps=data.gaps,
        rows=(len(train_rows), len(holdout)),
        evaluation=evaluation,
        params=fitted.params,
        reason=request.reason,
    )
    files = {
        **record.artifacts(evaluation, importance, fitted.trials),
        **calibration.holdout_artifact(spec, fitted.pipeline, holdout),
        record.SUMMARY_ARTIFACT: kept,  # last: a retry reuses a version only once its run keeps this
    }
    metrics = record.run_metrics(evaluation, len(train_rows), len(holdout), data.labels)
    return _Outputs(evaluation, kept, registry.EvaluatedForLog(metrics, figures, files))


def _opened(
    spec: ModelSpec, request: TrainRequest, run: RunInfo, source: str, data: TrainingData, task: Task, commit: str
) -> registry.TrainingRun:
    """What the MLflow run is opened with, before the fit: its name, tags, training data and lineage."""
    window, suites = data.window, record.suite_digests(data.partitions)
    tags = record.run_tags(
        run=run,
        model=spec.name,
        reason=request.reason,
        window=window,
        partitions=len(data.partitions),
        suites=suites,
        spec_digest=spec_digest(spec),
        git_commit=commit,
        task=task,
        labels=data.labels,
    )
    lineage = record.lineage(
        spec.name,
        window,
        rows=len(data.frame),
        content_digest=data.content_digest,
        partitions=data.partitions,
        gaps=data.gaps,
        suites=suites,
        labels=data.labels,
    )
    return registry.TrainingRun(
        model=spec.name,
        description=spec.description,
        owner=spec.owner,
        run_name=record.run_name(spec.name, window, run.run_id),
        tags=tags,
        train_frame=data.frame,
        target=spec.target.name,
        dataset_digest=data.content_digest,
        dataset_source=source,
        lineage=lineage,
    )


def _log_trained(spec: ModelSpec, trained: TrainedVersion, window: Window, evaluation: Evaluation) -> None:
    classes = f" ({len(trained.classes)} classes)" if trained.classes else ""
    log.info(
        "Trained %s v%s, %s%s, on %d rows (%d partitions, %s); holdout %d rows: %s. MLflow run %s%s. Now @challenger.",
        trained.model,
        trained.version,
        trained.task,
        classes,
        trained.train_rows,
        trained.partitions,
        window,
        trained.holdout_rows,
        record.headline(evaluation, spec.gate_metric),
        trained.mlflow_run_id,
        f" ({trained.run_url})" if trained.run_url else "",
    )
    for line in evaluation.notes.items():
        log.info("  holdout %s: NaN: %s", *line)

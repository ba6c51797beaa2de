"""What a training run records, as pure steps: its name, params, metrics, tags, lineage and summary.

No I/O: the train runner computes these from the window, the data, the fit and the evaluation, and hands them
to :func:`airloop.adapters.registry.log_training_run`; each one is unit-tested on plain values.
"""

from __future__ import annotations

from typing import Any

from airloop.core.contracts import Evaluation, RunInfo, TrainedVersion
from airloop.core.numbers import num
from airloop.core.spec import ModelSpec
from airloop.stages.train.labels import LabelsUsed
from airloop.stages.train.steps import PartitionRef, Task, Window

#: The run tag holding the digest of the labels a run took from the warehouse's ``labels`` table.
LABELS_DIGEST_TAG = "airloop.labels_digest"
#: Its value when no label came from the warehouse (every label was the partition's own).
NO_TABLE_LABELS = "none"
#: MLflow's limit on a run name's length (and the tag it becomes).
RUN_NAME_MAX = 250
#: How much of the reason the ``airloop.reason`` tag keeps (the note keeps all of it).
REASON_TAG_MAX = 500
#: How much of the class list a param or tag keeps (MLflow caps params at 6,000 characters, tags at 8,000).
CLASSES_MAX = 5000
#: The metrics a log line or a summary names after the gate's metric, by task (the others are in the run).
HEADLINE_METRICS = {
    "regression": ("rmse", "mae", "r2"),
    "binary": ("roc_auc", "log_loss", "f1", "accuracy"),
    "multiclass": ("log_loss", "accuracy", "balanced_accuracy", "f1_macro"),
}


def headline_names(task: str, gate_metric: str) -> list[str]:
    """The gate's metric first, then the task's headline metrics."""
    return list(dict.fromkeys([gate_metric, *HEADLINE_METRICS.get(task, ())]))


def headline(evaluation: Evaluation, gate_metric: str) -> str:
    """``rmse 52.1, mae 33.4, r2 0.871``: the gate's metric and the task's headline metrics that were computed."""
    names = [n for n in headline_names(evaluation.task, gate_metric) if n in evaluation.metrics]
    return ", ".join(f"{n} {num(evaluation.metric(n))}" for n in names) or "no metrics"


def classes_text(classes: list[Any]) -> str:
    """The classes as JSON, cut to :data:`CLASSES_MAX` characters."""
    import json

    return json.dumps(classes, default=str)[:CLASSES_MAX]


def run_name(model: str, window: Window, airflow_run_id: str | None) -> str:
    """``<model>-<window end day>-<Airflow run id>`` (``local`` outside Airflow), cut to MLflow's limit."""
    return f"{model}-{window.end:%Y%m%d}-{airflow_run_id or 'local'}"[:RUN_NAME_MAX]


def run_metrics(
    evaluation: Evaluation, train_rows: int, holdout_rows: int, labels: LabelsUsed | None = None
) -> dict[str, float]:
    """Holdout metrics as ``holdout_<name>``, each slice's metrics as ``slice_<slice>_<name>`` (not its rows),
    the row counts, and with ``labels`` where the labels came from: ``labelled_from_table`` (rows labelled by
    the warehouse's ``labels`` table, ``labels_corrected`` of them by a correction) and ``unlabelled_rows``
    (left out: no label yet)."""
    metrics = {f"holdout_{k}": v for k, v in evaluation.metrics.items()}
    for key, scores in evaluation.slices.items():
        for name, value in scores.items():
            if name != "rows":
                metrics[f"slice_{key.replace('=', '_')}_{name}"] = value
    metrics.update({"train_rows": float(train_rows), "holdout_rows": float(holdout_rows)})
    if labels is not None:
        metrics.update(
            {
                "labelled_from_table": float(labels.from_table),
                "labels_corrected": float(labels.corrected),
                "unlabelled_rows": float(labels.unlabelled),
            }
        )
    return metrics


def run_params(
    spec: ModelSpec, estimator: dict[str, Any], window: Window, trials: int, task: Task | None = None
) -> dict[str, Any]:
    """The estimator's parameters (``estimator.<name>``), the window, the seed, features, target, search, the
    task and (a classifier) the classes seen in training."""
    task = task or Task("regression")
    classes = {"classes": classes_text(list(task.classes))} if task.is_classifier else {}
    return {
        **{f"estimator.{k}": v for k, v in estimator.items()},
        "estimator.class": spec.estimator_class,
        "task": task.kind,
        **classes,
        "gate.metric": spec.gate_metric,
        "window.start": window.start.isoformat(),
        "window.end": window.end.isoformat(),
        "window.holdout_start": window.holdout_start.isoformat(),
        "seed": spec.training.seed,
        "features": spec.feature_names,
        "target": spec.target.name,
        "search": "none" if spec.training.search is None else f"{trials} trials",
    }


def suite_digests(partitions: list[PartitionRef]) -> list[str]:
    """Every ``suite:digest`` the partitions were validated with, each once, sorted."""
    return sorted({f"{name}:{digest}" for p in partitions for name, digest in p.suite_digests.items()})


def run_tags(
    *,
    run: RunInfo,
    model: str,
    reason: str,
    window: Window,
    partitions: int,
    suites: list[str],
    spec_digest: str,
    git_commit: str,
    task: Task | None = None,
    labels: LabelsUsed | None = None,
) -> dict[str, str]:
    """The run's tags: the Airflow link, the model, why, which spec, suites and window, the task and classes,
    the code's commit, and (with ``labels``) ``airloop.labels_digest``: the digest of the labels taken from the
    warehouse's ``labels`` table (``none`` when no row's label came from there)."""
    kind = task or Task("regression")
    digest = {} if labels is None else {LABELS_DIGEST_TAG: labels.digest or NO_TABLE_LABELS}
    return {
        **digest,
        "airloop.task": kind.kind,
        **({"airloop.classes": classes_text(list(kind.classes))} if kind.is_classifier else {}),
        **run.tags(),
        "airloop.model": model,
        "airloop.reason": reason[:REASON_TAG_MAX],
        "airloop.spec_digest": spec_digest,
        "airloop.suite_digests": ",".join(suites),
        "airloop.window": str(window),
        "mlflow.source.git.commit": git_commit,
        "mlflow.note.content": f"{reason}\n\nWindow {window}; {partitions} partitions.",
    }


def lineage(
    model: str,
    window: Window,
    *,
    rows: int,
    content_digest: str,
    partitions: list[PartitionRef],
    gaps: list[str],
    suites: list[str],
    labels: LabelsUsed | None = None,
) -> dict[str, Any]:
    """The training data's lineage (``lineage/training_data.json``): window, rows, digests, partitions, gaps, and
    with ``labels`` where the labels came from (counts and the digest of those taken from table ``labels``)."""
    return {
        **({"labels": labels.to_dict()} if labels is not None else {}),
        "model": model,
        "window": window.to_dict(),
        "rows": rows,
        "content_digest": content_digest,
        "partitions": [p.__dict__ for p in partitions],
        "gaps": gaps,
        "suite_digests": suites,
    }


def artifacts(evaluation: Evaluation, importance: dict[str, float], trials: list[dict[str, Any]]) -> dict[str, Any]:
    """The JSON files a run keeps beside its model: the holdout evaluation, importances, search trials."""
    files: dict[str, Any] = {"evaluation/holdout.json": evaluation.to_dict(), "evaluation/importance.json": importance}
    if trials:
        files["search/trials.json"] = trials
    return files


#: The artifact in which a training run keeps its summary (all but what the registry knows), so that a retry of
#: the same Airflow run that finds the version it registered reuses it instead of training and registering again.
SUMMARY_ARTIFACT = "airloop/trained.json"


def kept_summary(
    *,
    window: Window,
    partitions: int,
    gaps: list[str],
    rows: tuple[int, int],
    evaluation: Evaluation,
    params: dict[str, Any],
    reason: str,
) -> dict[str, Any]:
    """The summary's fields that the run knows before it is registered (JSON-safe, as :data:`SUMMARY_ARTIFACT`)."""
    draft = TrainedVersion(
        model="",
        version="",
        mlflow_run_id="",
        window=window.to_dict(),
        partitions=partitions,
        gaps=list(gaps),
        train_rows=rows[0],
        holdout_rows=rows[1],
        metrics=evaluation.to_dict()["metrics"],
        params=dict(params),
        reason=reason,
        task=evaluation.task,
        classes=list(evaluation.classes),
    ).to_dict()
    return {k: v for k, v in draft.items() if k not in _REGISTRY_FIELDS}


#: What :func:`kept_summary` leaves out: it comes from the registry (or the clock) when the summary is made.
_REGISTRY_FIELDS = ("model", "version", "mlflow_run_id", "run_url", "version_url", "timings")


def registered_summary(
    kept: dict[str, Any], *, model: str, logged: Any, version_url: str | None, timings: dict[str, float]
) -> TrainedVersion:
    """The summary of a registered run: what the run kept (:func:`kept_summary`) and what the registry says."""
    return TrainedVersion.from_dict(
        {
            **kept,
            "model": model,
            "version": logged.version,
            "mlflow_run_id": logged.run_id,
            "run_url": logged.run_url,
            "version_url": version_url,
            "timings": {k: round(v, 3) for k, v in timings.items()},
        }
    )


def summary(
    *,
    model: str,
    logged: Any,
    version_url: str | None,
    window: Window,
    partitions: int,
    gaps: list[str],
    rows: tuple[int, int],
    evaluation: Evaluation,
    params: dict[str, Any],
    reason: str,
    timings: dict[str, float],
) -> TrainedVersion:
    """What train hands the gate: the registered version and its run, window, rows, metrics and timings."""
    kept = kept_summary(
        window=window, partitions=partitions, gaps=gaps, rows=rows, evaluation=evaluation, params=params, reason=reason
    )
    return registered_summary(kept, model=model, logged=logged, version_url=version_url, timings=timings)

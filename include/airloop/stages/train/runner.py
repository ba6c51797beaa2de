"""The train stage's runner: check a train request, then train a challenger and register it.

Each function is one task's work, callable without Airflow (tests and the benchmark call them directly);
:mod:`airloop.orchestration.tasks` passes in what the running task knows (run ids, who triggered, XCom values).
"""

from __future__ import annotations

import logging
import time
from datetime import datetime
from typing import Any

from airloop.adapters import registry
from airloop.adapters.lake import default_lake
from airloop.core.contracts import RunInfo
from airloop.core.params import RequestProblem, day, refuse_unknown
from airloop.core.spec import ModelSpec, spec_digest
from airloop.stages.train.steps import TrainingProblem

log = logging.getLogger(__name__)

#: Keys a manual or API run of the train DAG may pass in ``conf``.
TRAIN_PARAMS = ("reason", "window_start", "window_end", "overrides")


def train_request(
    spec: ModelSpec, conf: dict[str, Any], params: dict[str, Any], run: RunInfo, asset_extras: list[dict[str, Any]]
) -> dict[str, Any]:
    """Check a train run's parameters up front, so a bad request fails in seconds, not after training.

    Manual and API runs must give a ``reason``; scheduled runs and retrain requests carry their own. A retrain
    request (an Asset event from the monitor) also carries its window's end: without a ``window_end`` param
    the run trains on data up to there (data time: a replay of old data retrains as it would have then).
    """
    from airloop.stages.train.steps import build_pipeline, estimator_params

    refuse_unknown(conf, TRAIN_PARAMS, spec.dag_id("train"))
    reason = (params.get("reason") or "").strip()
    if not reason:
        if run.run_type == "manual":
            raise RequestProblem(
                f"param `reason` is required when {spec.dag_id('train')} is triggered by hand or through the API: "
                'say why (e.g. {"reason": "new holiday features"}); it is recorded in MLflow and the ledger.'
            )
        if asset_extras:
            reasons = [str(extra.get("reason") or f"asset event {extra or ''}".strip()) for extra in asset_extras]
            reason = "retrain requested: " + "; ".join(reasons)
        else:
            reason = f"scheduled retraining ({spec.training.cron or run.run_type})"
    start, end = day("window_start", params.get("window_start")), day("window_end", params.get("window_end"))
    requested_ends = [day("window_end", e["window_end"]) for e in asset_extras if e.get("window_end")]
    if end is None and requested_ends:
        end = max(requested_ends)  # merged events: the latest window asked for
    if start and end and start >= end:
        raise RequestProblem(f"param `window_start` ({start:%Y-%m-%d}) must be before `window_end` ({end:%Y-%m-%d}).")
    overrides = params.get("overrides") or {}
    if not isinstance(overrides, dict):
        raise RequestProblem(f"param `overrides` must be an object of estimator parameters, got {overrides!r}.")
    try:
        estimator = build_pipeline(spec, estimator_params(spec, overrides)).named_steps["model"]
    except TrainingProblem as exc:
        raise RequestProblem(f"param `overrides`: {exc}") from None
    # scikit-learn checks parameter values only when fitting; its own constraint check (private, but the one
    # fit() calls) refuses a bad value now instead of minutes later. Estimators without it are checked by fit.
    validate = getattr(estimator, "_validate_params", None)
    if callable(validate):
        try:
            validate()
        except (TypeError, ValueError) as exc:
            raise RequestProblem(f"param `overrides`: {exc}") from None
    until = f"{end:%Y-%m-%d}" if end else "the newest validated data"
    window = f"from {start:%Y-%m-%d} up to {until}" if start else f"the {spec.training.window_days} days up to {until}"
    log.info(
        "Request to train %s accepted (%s run): reason %r; window %s; estimator overrides %s.",
        spec.name,
        run.run_type or "unknown",
        reason,
        window,
        overrides or "none (the spec's parameters)",
    )
    return {
        "reason": reason,
        "window_start": start.isoformat() if start else None,
        "window_end": end.isoformat() if end else None,
        "overrides": overrides,
    }


def train(spec: ModelSpec, request: dict[str, Any], run: RunInfo) -> dict[str, Any]:
    """Assemble the window, fit, evaluate, log to MLflow, register and set ``@challenger``."""
    from airloop.stages.train import steps

    timings: dict[str, float] = {}
    t0 = time.perf_counter()
    lake = default_lake()
    window = steps.resolve_window(
        spec,
        lake,
        end=datetime.fromisoformat(request["window_end"]) if request.get("window_end") else None,
        start=datetime.fromisoformat(request["window_start"]) if request.get("window_start") else None,
    )
    data = steps.assemble(spec, lake, window)
    train_rows, holdout = steps.split(spec, data)
    timings["data_s"] = time.perf_counter() - t0

    t = time.perf_counter()
    fitted = steps.fit(spec, train_rows, request.get("overrides"))
    timings["fit_s"] = time.perf_counter() - t

    t = time.perf_counter()
    evaluation = steps.evaluate(spec, fitted.pipeline, holdout)
    importance = steps.feature_importance(spec, fitted.pipeline, holdout)
    figures = steps.plots(spec, fitted.pipeline, holdout, importance)
    timings["evaluate_s"] = time.perf_counter() - t

    metrics = {f"holdout_{k}": v for k, v in evaluation.metrics.items()}
    for key, scores in evaluation.slices.items():
        for name in ("rmse", "mae"):
            metrics[f"slice_{key.replace('=', '_')}_{name}"] = scores[name]
    metrics.update({"train_rows": float(len(train_rows)), "holdout_rows": float(len(holdout))})
    params = {
        **{f"estimator.{k}": v for k, v in fitted.params.items()},
        "estimator.class": spec.training.estimator.class_path,
        "window.start": window.start.isoformat(),
        "window.end": window.end.isoformat(),
        "window.holdout_start": window.holdout_start.isoformat(),
        "seed": spec.training.seed,
        "features": spec.feature_names,
        "target": spec.target.name,
        "search": "none" if spec.training.search is None else f"{len(fitted.trials)} trials",
    }
    suites = sorted({f"{name}:{digest}" for p in data.partitions for name, digest in p.suite_digests.items()})
    tags = {
        **run.tags(),
        "airloop.model": spec.name,
        "airloop.reason": request["reason"][:500],
        "airloop.spec_digest": spec_digest(spec),
        "airloop.suite_digests": ",".join(suites),
        "airloop.window": str(window),
        "mlflow.source.git.commit": registry.git_commit(),
        "mlflow.note.content": f"{request['reason']}\n\nWindow {window}; {len(data.partitions)} partitions.",
    }
    lineage = {
        "model": spec.name,
        "window": window.to_dict(),
        "rows": len(data.frame),
        "content_digest": data.content_digest,
        "partitions": [p.__dict__ for p in data.partitions],
        "gaps": data.gaps,
        "suite_digests": suites,
    }
    t = time.perf_counter()
    logged = registry.log_training_run(
        model=spec.name,
        description=spec.description,
        owner=spec.owner,
        run_name=f"{spec.name}-{window.end:%Y%m%d}-{run.run_id or 'local'}"[:250],
        params=params,
        metrics=metrics,
        tags=tags,
        pipeline=fitted.pipeline,
        train_frame=data.frame,
        feature_names=spec.feature_names,
        target=spec.target.name,
        dataset_digest=data.content_digest,
        dataset_source=lake.stage_url(spec.name, "validated"),
        lineage=lineage,
        figures=figures,
        extra_json={
            "evaluation/holdout.json": evaluation.to_dict(),
            "evaluation/importance.json": importance,
            **({"search/trials.json": fitted.trials} if fitted.trials else {}),
        },
    )
    timings["log_s"] = time.perf_counter() - t
    summary = {
        "model": spec.name,
        "version": logged.version,
        "mlflow_run_id": logged.run_id,
        "run_url": logged.run_url,
        "version_url": registry.version_url(spec.name, logged.version),
        "window": window.to_dict(),
        "partitions": len(data.partitions),
        "gaps": data.gaps,
        "train_rows": len(train_rows),
        "holdout_rows": len(holdout),
        "metrics": evaluation.to_dict()["metrics"],
        "params": dict(fitted.params),
        "reason": request["reason"],
        "timings": {k: round(v, 3) for k, v in timings.items()},
    }
    log.info(
        "Trained %s v%s on %d rows (%d partitions, %s); holdout %d rows: rmse %.1f, mae %.1f, r2 %.3f. "
        "MLflow run %s%s. Now @challenger.",
        spec.name,
        logged.version,
        len(train_rows),
        len(data.partitions),
        window,
        len(holdout),
        evaluation.metrics["rmse"],
        evaluation.metrics["mae"],
        evaluation.metrics["r2"],
        logged.run_id,
        f" ({logged.run_url})" if logged.run_url else "",
    )
    return summary

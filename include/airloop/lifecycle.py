"""The model lifecycle as the DAGs run it: train a challenger, gate it, and record what was decided.

Each function is one task's work, callable without Airflow (tests and the benchmark call them directly);
``airloop.tasks`` passes in what the running task knows (run ids, who triggered, XCom values).
Results are plain JSON-safe dicts because they travel through XCom.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from airloop import tracking
from airloop.config import WAREHOUSE_CONN_ID
from airloop.gate import Evaluation, Verdict, evaluate_gate
from airloop.lake import default_lake
from airloop.params import ParamProblem, day, refuse_unknown
from airloop.spec import ModelSpec, spec_digest
from airloop.training import TrainingProblem

log = logging.getLogger(__name__)

#: Keys a manual or API run of the train DAG may pass in ``conf``.
TRAIN_PARAMS = ("reason", "window_start", "window_end", "overrides")
#: Keys of the promote DAG.
PROMOTE_PARAMS = ("action", "version", "reason", "override")


#: What the train and promote DAGs' check tasks raise (kept as the name callers know).
RequestProblem = ParamProblem


@dataclass(frozen=True)
class RunInfo:
    """Who and what started a task: the Airflow link every MLflow run and ledger row carries."""

    dag_id: str | None = None
    run_id: str | None = None
    try_number: int | None = None
    run_type: str | None = None
    triggered_by: str | None = None

    def tags(self) -> dict[str, str]:
        values = {
            "airflow.dag_id": self.dag_id,
            "airflow.run_id": self.run_id,
            "airflow.try_number": self.try_number,
            "airflow.run_type": self.run_type,
            "airflow.triggered_by": self.triggered_by,
        }
        return {k: str(v) for k, v in values.items() if v is not None}


def train_request(
    spec: ModelSpec, conf: dict[str, Any], params: dict[str, Any], run: RunInfo, asset_extras: list[dict[str, Any]]
) -> dict[str, Any]:
    """Check a train run's parameters up front, so a bad request fails in seconds, not after training.

    Manual and API runs must give a ``reason``; scheduled runs and retrain requests carry their own. A retrain
    request (an Asset event from the monitor) also carries its window's end: without a ``window_end`` param
    the run trains on data up to there (data time: a replay of old data retrains as it would have then).
    """
    from airloop.training import build_pipeline, estimator_params

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
    from airloop import training

    timings: dict[str, float] = {}
    t0 = time.perf_counter()
    lake = default_lake()
    window = training.resolve_window(
        spec,
        lake,
        end=datetime.fromisoformat(request["window_end"]) if request.get("window_end") else None,
        start=datetime.fromisoformat(request["window_start"]) if request.get("window_start") else None,
    )
    data = training.assemble(spec, lake, window)
    train_rows, holdout = training.split(spec, data)
    timings["data_s"] = time.perf_counter() - t0

    t = time.perf_counter()
    fitted = training.fit(spec, train_rows, request.get("overrides"))
    timings["fit_s"] = time.perf_counter() - t

    t = time.perf_counter()
    evaluation = training.evaluate(spec, fitted.pipeline, holdout)
    importance = training.feature_importance(spec, fitted.pipeline, holdout)
    figures = training.plots(spec, fitted.pipeline, holdout, importance)
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
        "mlflow.source.git.commit": tracking.git_commit(),
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
    logged = tracking.log_training_run(
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
        "version_url": tracking.version_url(spec.name, logged.version),
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


def _holdout(spec: ModelSpec, window: dict[str, str] | None) -> tuple[Any, Any]:
    from airloop import training

    lake = default_lake()
    if window is None:
        resolved = training.resolve_window(spec, lake)
    else:
        resolved = training.Window(**{k: datetime.fromisoformat(v) for k, v in window.items()})
    data = training.assemble(spec, lake, resolved)
    _, holdout = training.split(spec, data)
    return holdout, resolved


def _overlap_notes(models: list[tracking.LoadedModel], holdout_start: datetime) -> list[str]:
    """Models that were trained on rows of this holdout score better on it than they deserve: say so."""
    notes = []
    for m in models:
        if m.run_id is None:
            continue
        # A model is fitted on its window up to its own holdout's start; that is where its data ends.
        end = tracking.client().get_run(m.run_id).data.params.get("window.holdout_start")
        if end and datetime.fromisoformat(end) > holdout_start:
            notes.append(
                f"v{m.version} was trained on data up to {end[:10]}, which overlaps this holdout "
                f"(from {holdout_start:%Y-%m-%d}): its numbers here are optimistic."
            )
    return notes


def gate(
    spec: ModelSpec,
    *,
    action: str,
    candidate: str,
    window: dict[str, str] | None,
    reason: str,
    run: RunInfo,
    override: bool = False,
    mlflow_run_id: str | None = None,
) -> dict[str, Any]:
    """Score candidate and champion on the same holdout, apply the spec's gate, write the verdict on the version.

    ``action="rollback"`` judges the candidate on absolute thresholds, sanity and signature only (going back
    is the point, so it need not beat the champion it replaces).
    """
    from airloop import training

    holdout, resolved = _holdout(spec, window)
    holdout_range = f"[{resolved.holdout_start:%Y-%m-%d}, {resolved.end:%Y-%m-%d})"
    champion_version = tracking.version_for_alias(spec.name, tracking.CHAMPION)
    loaded = tracking.load_version(spec.name, candidate)
    challenger_eval = training.evaluate(spec, loaded, holdout, signature=loaded.signature, version=f"v{loaded.version}")
    champion_eval: Evaluation | None = None
    evaluated = [loaded]
    if champion_version is not None and champion_version != loaded.version:
        champion = tracking.load_version(spec.name, champion_version)
        evaluated.append(champion)
        champion_eval = training.evaluate(
            spec, champion, holdout, signature=champion.signature, version=f"v{champion.version}"
        )
    compared = None if action == "rollback" else champion_eval
    verdict: Verdict = evaluate_gate(spec.gate, challenger_eval, compared)
    if champion_version == loaded.version:
        verdict_summary = f"v{loaded.version} is already @champion; nothing to do."
        promote = False
    else:
        verdict_summary = verdict.summary()
        promote = verdict.promote or override
    if override and not verdict.promote:
        verdict_summary = f"OVERRIDE: {verdict_summary}"
    notes = _overlap_notes(evaluated, resolved.holdout_start)
    markdown = "\n\n".join(
        [
            f"**{action.title()} {spec.name} v{loaded.version}** on holdout {holdout_range} "
            f"({len(holdout)} rows). Reason: {reason}",
            verdict.markdown(),
            *[f"Note: {n}" for n in notes],
            *([f"[MLflow version]({tracking.version_url(spec.name, loaded.version)})"] if tracking.ui_base() else []),
        ]
    )
    tracking.record_verdict(
        spec.name,
        loaded.version,
        tags={
            "gate.passed": str(verdict.passed).lower(),
            "gate.promote": str(promote).lower(),
            "gate.mode": spec.gate.mode,
            "gate.summary": verdict_summary[:500],
            "gate.champion": champion_version or "none",
            "gate.airflow_run_id": run.run_id or "",
        },
        description=markdown,
    )
    log.info(
        "Gate for %s v%s (%s) on holdout %s (%d rows), @champion %s: %s",
        spec.name,
        loaded.version,
        action,
        holdout_range,
        len(holdout),
        f"v{champion_version}" if champion_version else "unset",
        verdict_summary,
    )
    for line in verdict.reasons:
        log.info("  - %s", line)
    for note in notes:
        log.warning("Note: %s", note)
    if not promote and champion_version != loaded.version:
        by_hand = (
            f'trigger {spec.dag_id("promote")} with {{"action": "promote", "version": "{loaded.version}", '
            '"override": true, "reason": "..."}'
        )
        if verdict.passed:  # dry run: it would have gone through
            advice = f"the gate is in dry-run mode (gate.mode in the spec); to promote it now, {by_hand}."
        else:
            advice = (
                f"to go ahead anyway, {by_hand} (recorded as an override); to do better, train again with other "
                "overrides or another window."
            )
        log.info(
            "What to do: nothing moves and @champion stays %s; the verdict is on v%s in MLflow and goes to the "
            "ledger. %s",
            f"v{champion_version}" if champion_version else "unset",
            loaded.version,
            advice[0].upper() + advice[1:],
        )
    return {
        "model": spec.name,
        "action": action,
        "candidate": loaded.version,
        "expected_champion": champion_version,
        "mlflow_run_id": mlflow_run_id or loaded.run_id,
        "reason": reason,
        "override": override,
        "promote": promote,
        "summary": verdict_summary,
        "markdown": markdown,
        "verdict": verdict.to_dict(),
        "holdout": holdout_range,
        "notes": notes,
    }


def decided_by(gate_result: dict[str, Any], approval: dict[str, Any] | None, run: RunInfo) -> str:
    parts = [f"override by {run.triggered_by or 'unknown user'}" if gate_result.get("override") else "gate"]
    if approval and approval.get("responded_by_user"):
        user = approval["responded_by_user"]
        parts.append(f"approval by {user.get('name') or user.get('id') if isinstance(user, dict) else user}")
    return " + ".join(parts)


def _decision(gate_result: dict[str, Any], approval: dict[str, Any] | None, run: RunInfo, extra: str = ""):
    from airloop.promotion import Decision

    return Decision(
        model=gate_result["model"],
        action=gate_result["action"],
        candidate=gate_result["candidate"],
        reason=f"{gate_result['reason']} | {gate_result['summary']}{extra}",
        decided_by=decided_by(gate_result, approval, run),
        evidence={
            "verdict": gate_result["verdict"],
            "holdout": gate_result["holdout"],
            "notes": gate_result.get("notes", []),
            "approval": approval,
            "airflow": run.tags(),
        },
        dag_id=run.dag_id,
        dag_run_id=run.run_id,
        mlflow_run_id=gate_result.get("mlflow_run_id"),
    )


def promote(gate_result: dict[str, Any], approval: dict[str, Any] | None, run: RunInfo) -> dict[str, Any]:
    """Move ``@champion`` (serialised; refuses if the champion changed since the gate) and record it."""
    from airloop.db import engine_for
    from airloop.promotion import apply

    row = apply(
        engine_for(WAREHOUSE_CONN_ID),
        _decision(gate_result, approval, run),
        expected_champion=gate_result["expected_champion"],
    )
    return _jsonable(row)


def record_outcome(
    gate_result: dict[str, Any] | None,
    approval: dict[str, Any] | None,
    promoted: dict[str, Any] | None,
    approval_required: bool,
    run: RunInfo,
) -> dict[str, Any] | None:
    """After the decision tasks: write the ledger row for any outcome in which nothing moved.

    Returns the ledger row written (or the promotion's row), or None when the run never reached a verdict.
    """
    from airloop.db import engine_for
    from airloop.promotion import ledger, record

    if gate_result is None:
        log.info("No verdict in this run (an earlier task failed): nothing to record.")
        return None
    if promoted is not None:
        log.info("Promoted: %s", gate_result["summary"])
        return promoted
    engine = engine_for(WAREHOUSE_CONN_ID)
    earlier = [r for r in ledger(engine, gate_result["model"], limit=20) if r["dag_run_id"] == run.run_id]
    if run.run_id and earlier:  # a conflict recorded by promote, or this task's own earlier try
        log.info(
            "The ledger already has row #%d for this run (%s): nothing more to record.",
            earlier[0]["seq"],
            earlier[0]["outcome"],
        )
        return _jsonable(earlier[0])
    if not gate_result["promote"]:
        outcome = "dry_run" if gate_result["verdict"].get("mode") == "dry_run" else "refused"
        if gate_result["candidate"] == gate_result["expected_champion"]:
            outcome = "no_change"
        extra = ""
    elif approval_required and approval is not None and "Reject" in (approval.get("chosen_options") or []):
        outcome, extra = "rejected", " | rejected in review"
    elif approval_required and approval is None:
        outcome, extra = "timed_out", " | approval timed out or failed; nothing moved"
    else:
        outcome, extra = "failed", " | promotion did not complete (see the promote task's log)"
    row = record(engine, _decision(gate_result, approval, run, extra), outcome)
    log.info("Nothing moved (%s): %s", outcome, gate_result["summary"])
    return _jsonable(row)


def _jsonable(row: dict[str, Any]) -> dict[str, Any]:
    return {k: (v.isoformat() if isinstance(v, datetime) else v) for k, v in row.items()}


def promote_request(spec: ModelSpec, conf: dict[str, Any], params: dict[str, Any]) -> dict[str, Any]:
    """Check a promote run's parameters and resolve the version a rollback restores."""
    from airloop.db import engine_for
    from airloop.promotion import NothingToRollBack, previous_champion

    refuse_unknown(conf, PROMOTE_PARAMS, spec.dag_id("promote"))
    reason = (params.get("reason") or "").strip()
    if not reason:
        raise RequestProblem('param `reason` is required: say why (e.g. {"reason": "v7 over-predicts weekends"}).')
    action = params.get("action") or "promote"
    if action not in ("promote", "rollback"):
        raise RequestProblem(f"param `action` is {action!r}; expected promote or rollback.")
    version = params.get("version")
    if action == "promote":
        if version in (None, ""):
            raise RequestProblem("param `version` is required to promote: the registry version number, e.g. 7.")
        candidate = str(version).removeprefix("v")
        if not candidate.isdigit():
            raise RequestProblem(f"param `version` is {version!r}; expected a registry version number such as 7.")
    else:
        if version not in (None, ""):
            raise RequestProblem("param `version` is not used for a rollback (it restores the previous champion).")
        try:
            candidate = previous_champion(engine_for(WAREHOUSE_CONN_ID), spec.name)
        except NothingToRollBack as exc:
            raise RequestProblem(str(exc)) from None
    override = params.get("override", False)
    if not isinstance(override, bool):
        raise RequestProblem(f"param `override` must be true or false, got {override!r}.")
    if action == "rollback":
        what = f"roll {spec.name} back to v{candidate}, its previous champion"
    else:
        what = f"promote {spec.name} v{candidate}"
    log.info(
        "Request accepted: %s%s; reason %r. The gate judges it next.",
        what,
        ", with override (the gate's verdict will not stop it; recorded as such)" if override else "",
        reason,
    )
    return {"action": action, "candidate": candidate, "reason": reason, "override": override}

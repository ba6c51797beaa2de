"""The promote stage's runner: gate a version on the holdout, promote it (or not), and record the decision.

Each function is one task's work, callable without Airflow (tests and the benchmark call them directly);
``airloop.orchestration.tasks`` passes in what the running task knows (run ids, who triggered, XCom values)
and converts the typed contracts (:class:`PromoteRequest`, :class:`GateResult`, :class:`PromotionOutcome`) to
and from XCom's dicts. The runners compose the pure steps of :mod:`.steps` and :mod:`.rules` with the registry
and the ledger.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, replace
from datetime import datetime
from typing import TYPE_CHECKING, Any

from airloop.adapters import registry
from airloop.adapters.lake import default_lake
from airloop.core.contracts import Evaluation, GateResult, PromoteRequest, PromotionOutcome, RunInfo, TrainedVersion
from airloop.core.params import RequestProblem, refuse_unknown
from airloop.core.settings import WAREHOUSE_CONN_ID
from airloop.core.spec import ModelSpec
from airloop.stages.promote import steps
from airloop.stages.promote.rules import Verdict, evaluate_gate

if TYPE_CHECKING:
    from airloop.stages.train.steps import Window

log = logging.getLogger(__name__)

#: Keys of the promote DAG.
PROMOTE_PARAMS = ("action", "version", "reason", "override")
#: The keys of a training window (``TrainedVersion.window``).
_WINDOW_KEYS = ("start", "end", "holdout_start")


def _holdout(spec: ModelSpec, window: dict[str, str] | None) -> tuple[Any, Window]:
    from airloop.stages.train import steps as training

    lake = default_lake()
    if window is None:
        resolved = training.resolve_window(spec, lake)
    else:
        resolved = training.Window(**{k: datetime.fromisoformat(window[k]) for k in _WINDOW_KEYS})
    data = training.assemble(spec, lake, resolved)
    _, holdout = training.split(spec, data)
    return holdout, resolved


@dataclass(frozen=True)
class _Judged:
    """The candidate and the champion, loaded and scored on the same holdout, and the gate's verdict."""

    candidate: registry.LoadedModel
    champion_version: str | None
    verdict: Verdict
    evaluated: list[registry.LoadedModel]


def _judge(spec: ModelSpec, action: str, candidate: str, holdout: Any, champion_version: str | None) -> _Judged:
    """Load and score the candidate and (when another version) the champion; apply the spec's gate."""
    from airloop.stages.train import steps as training

    loaded = registry.load_version(spec.name, candidate)
    challenger_eval = training.evaluate(spec, loaded, holdout, signature=loaded.signature, version=f"v{loaded.version}")
    champion_eval: Evaluation | None = None
    evaluated = [loaded]
    if champion_version is not None and champion_version != loaded.version:
        champion = registry.load_version(spec.name, champion_version)
        evaluated.append(champion)
        champion_eval = training.evaluate(
            spec, champion, holdout, signature=champion.signature, version=f"v{champion.version}"
        )
    compared = None if action == "rollback" else champion_eval
    return _Judged(
        loaded,
        champion_version,
        evaluate_gate(spec.gate, challenger_eval, compared, metric=spec.gate_metric),
        evaluated,
    )


def _trained_until(models: list[registry.LoadedModel]) -> list[tuple[str, str | None]]:
    """Each model's version and where its training data ended (its run's ``window.holdout_start`` param)."""
    return [
        (m.version, registry.client().get_run(m.run_id).data.params.get("window.holdout_start"))
        for m in models
        if m.run_id is not None
    ]


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
) -> GateResult:
    """Score candidate and champion on the same holdout, apply the spec's gate, write the verdict on the version.

    ``action="rollback"`` judges the candidate on absolute thresholds, sanity and signature only (going back
    is the point, so it need not beat the champion it replaces).
    """
    holdout, resolved = _holdout(spec, window)
    judged = _judge(spec, action, candidate, holdout, _ledger_champion(spec, run))
    version, champion = judged.candidate.version, judged.champion_version
    verdict, live = _live(spec, judged, action=action, override=override)
    summary, promote = steps.gate_outcome(verdict, version, champion, override)
    if live is not None and live["status"] == "waiting" and verdict.passed and not override:
        summary, promote = steps.shadow_summary(version, champion, live), False
        registry.set_alias(spec.name, registry.CHALLENGER, version)  # what the score DAG shadows
    notes = steps.overlap_notes(_trained_until(judged.evaluated), resolved.holdout_start)
    holdout_range = steps.holdout_range(resolved.holdout_start, resolved.end)
    markdown = steps.gate_markdown(
        action=action,
        model=spec.name,
        candidate=version,
        holdout=holdout_range,
        rows=len(holdout),
        reason=reason,
        verdict_markdown=verdict.markdown(),
        notes=notes,
        version_url=registry.version_url(spec.name, version) if registry.ui_base() else None,
    )
    tags = steps.verdict_tags(verdict, promote=promote, summary=summary, champion=champion, airflow_run_id=run.run_id)
    registry.record_verdict(spec.name, version, tags=tags, description=markdown)
    result = GateResult(
        model=spec.name,
        action=action,
        candidate=version,
        expected_champion=champion,
        mlflow_run_id=mlflow_run_id or judged.candidate.run_id,
        reason=reason,
        override=override,
        promote=promote,
        summary=summary,
        markdown=markdown,
        verdict=verdict.to_dict(),
        holdout=holdout_range,
        notes=notes,
        live=live,
    )
    _log_gate(spec, result, verdict, len(holdout))
    return result


def _live(spec: ModelSpec, judged: _Judged, *, action: str, override: bool) -> tuple[Verdict, dict[str, Any] | None]:
    """The verdict with the live half of the gate (``gate.shadow``), and the live comparison (None: not asked).

    Asked for a promotion (not a rollback, not an override) over an existing champion. Until enough shadow
    intervals have labels, the comparison says how many there are (the challenger then waits); after, it is shown
    in the verdict and, with ``require_better``, judged there.
    """
    from airloop.stages.promote.live import live_comparison
    from airloop.stages.promote.rules import with_live

    shadow, verdict = spec.gate.shadow, judged.verdict
    candidate, champion = judged.candidate.version, judged.champion_version
    if shadow is None or action != "promote" or override or champion is None or candidate == champion:
        return verdict, None
    pipeline = judged.candidate.pipeline
    classes = [str(c) for c in pipeline.classes_] if spec.target.task == "classification" else None
    live = live_comparison(spec, candidate, classes).to_dict()
    if live["status"] == "waiting":
        return replace(verdict, live=live), live
    return with_live(verdict, live, judged=shadow.require_better), live


def _ledger_champion(spec: ModelSpec, run: RunInfo) -> str | None:
    """The champion the gate compares against and the promotion starts from: the ledger's, after checking
    ``@champion`` for a move made outside airloop (recorded once, never adopted; see the ledger's
    :func:`~airloop.stages.promote.ledger.check_alias`)."""
    from airloop.adapters.db import engine_for
    from airloop.stages.promote.ledger import check_alias

    engine = engine_for(WAREHOUSE_CONN_ID)
    return check_alias(engine, spec.name, "promotion", dag_id=run.dag_id, dag_run_id=run.run_id).ledger_champion


def _log_gate(spec: ModelSpec, result: GateResult, verdict: Verdict, rows: int) -> None:
    champion = f"v{result.expected_champion}" if result.expected_champion else "unset"
    log.info(
        "Gate for %s v%s (%s) on holdout %s (%d rows), @champion %s: %s",
        spec.name,
        result.candidate,
        result.action,
        result.holdout,
        rows,
        champion,
        result.summary,
    )
    for line in verdict.reasons:
        log.info("  - %s", line)
    for note in result.notes:
        log.warning("Note: %s", note)
    advice = steps.what_to_do(result, passed=verdict.passed, promote_dag_id=spec.dag_id("promote"))
    if advice:
        log.info("%s", advice)


def gate_trained(spec: ModelSpec, trained: TrainedVersion, run: RunInfo) -> GateResult:
    """Gate a freshly trained challenger on its own holdout."""
    return gate(
        spec,
        action="promote",
        candidate=trained.version,
        window=trained.window,
        reason=trained.reason,
        run=run,
        mlflow_run_id=trained.mlflow_run_id,
    )


def gate_requested(spec: ModelSpec, request: PromoteRequest, run: RunInfo) -> GateResult:
    """Gate a named version (or the rollback target) on the newest holdout."""
    return gate(
        spec,
        action=request.action,
        candidate=request.candidate,
        window=None,
        reason=request.reason,
        run=run,
        override=request.override,
    )


def promote(gate_result: GateResult, approval: dict[str, Any] | None, run: RunInfo) -> PromotionOutcome:
    """Move ``@champion`` (serialised; refuses if the champion changed since the gate) and record it."""
    from airloop.adapters.db import engine_for
    from airloop.stages.promote.ledger import apply

    decision = steps.decision(gate_result, approval, run)
    row = apply(engine_for(WAREHOUSE_CONN_ID), decision, expected_champion=gate_result.expected_champion)
    return PromotionOutcome.from_dict(row)


def record_outcome(
    gate_result: GateResult | None,
    approval: dict[str, Any] | None,
    promoted: PromotionOutcome | None,
    approval_required: bool,
    run: RunInfo,
) -> PromotionOutcome | None:
    """After the decision tasks: write the ledger row for any outcome in which nothing moved.

    Returns the ledger row written (or the promotion's row), or None when the run never reached a verdict.
    """
    from airloop.adapters.db import engine_for
    from airloop.stages.promote.ledger import PENDING, ledger, reconcile, record

    if gate_result is None:
        log.info("No verdict in this run (an earlier task failed): nothing to record.")
        return None
    if promoted is not None:
        log.info("Promoted: %s", gate_result.summary)
        return promoted
    engine = engine_for(WAREHOUSE_CONN_ID)
    if run.run_id:  # promote has ended: an intent it left open is completed (the alias moved) or closed as failed
        reconcile(engine, gate_result.model, run.run_id, ended_run=run.run_id)
    earlier = [
        r
        for r in ledger(engine, gate_result.model, limit=20)
        if r["dag_run_id"] == run.run_id and r["outcome"] != PENDING
    ]
    if run.run_id and earlier:  # a conflict or a reconciled intent of promote, or this task's own earlier try
        log.info(
            "The ledger already has row #%d for this run (%s): nothing more to record.",
            earlier[0]["seq"],
            earlier[0]["outcome"],
        )
        return PromotionOutcome.from_dict(earlier[0])
    outcome, note = steps.nothing_moved(gate_result, approval, approval_required)
    row = record(engine, steps.decision(gate_result, approval, run, note), outcome)
    log.info("Nothing moved (%s): %s", outcome, gate_result.summary)
    return PromotionOutcome.from_dict(row)


def promote_request(spec: ModelSpec, conf: dict[str, Any], params: dict[str, Any]) -> PromoteRequest:
    """Check a promote run's parameters and resolve the version a rollback restores."""
    refuse_unknown(conf, PROMOTE_PARAMS, spec.dag_id("promote"))
    reason = steps.request_reason(params)
    action = steps.request_action(params)
    candidate = steps.requested_version(action, params.get("version"))
    if candidate is None:
        candidate = _rollback_target(spec)
    override = steps.request_override(params)
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
    return PromoteRequest(action=action, candidate=candidate, reason=reason, override=override)


def _rollback_target(spec: ModelSpec) -> str:
    """The champion before the current one, from the ledger."""
    from airloop.adapters.db import engine_for
    from airloop.stages.promote.ledger import NothingToRollBack, previous_champion, reconcile

    engine = engine_for(WAREHOUSE_CONN_ID)
    reconcile(engine, spec.name, "rollback request")  # a half-done promotion is completed (or closed) first
    try:
        return previous_champion(engine, spec.name)
    except NothingToRollBack as exc:
        raise RequestProblem(str(exc)) from None

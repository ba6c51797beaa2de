"""The promote stage's runner: gate a version on the holdout, promote it (or not), and record the decision.

Each function is one task's work, callable without Airflow (tests and the benchmark call them directly);
``airloop.orchestration.tasks`` passes in what the running task knows (run ids, who triggered, XCom values).
Results are plain JSON-safe dicts because they travel through XCom.
"""

from __future__ import annotations

import logging
from datetime import datetime
from typing import Any

from airloop.adapters import registry
from airloop.adapters.lake import default_lake
from airloop.core.contracts import Evaluation, RunInfo
from airloop.core.jsonable import jsonable
from airloop.core.params import RequestProblem, refuse_unknown
from airloop.core.settings import WAREHOUSE_CONN_ID
from airloop.core.spec import ModelSpec
from airloop.stages.promote.rules import Verdict, evaluate_gate

log = logging.getLogger(__name__)

#: Keys of the promote DAG.
PROMOTE_PARAMS = ("action", "version", "reason", "override")


def _holdout(spec: ModelSpec, window: dict[str, str] | None) -> tuple[Any, Any]:
    from airloop.stages.train import steps

    lake = default_lake()
    if window is None:
        resolved = steps.resolve_window(spec, lake)
    else:
        resolved = steps.Window(**{k: datetime.fromisoformat(v) for k, v in window.items()})
    data = steps.assemble(spec, lake, resolved)
    _, holdout = steps.split(spec, data)
    return holdout, resolved


def _overlap_notes(models: list[registry.LoadedModel], holdout_start: datetime) -> list[str]:
    """Models that were trained on rows of this holdout score better on it than they deserve: say so."""
    notes = []
    for m in models:
        if m.run_id is None:
            continue
        # A model is fitted on its window up to its own holdout's start; that is where its data ends.
        end = registry.client().get_run(m.run_id).data.params.get("window.holdout_start")
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
    from airloop.stages.train import steps

    holdout, resolved = _holdout(spec, window)
    holdout_range = f"[{resolved.holdout_start:%Y-%m-%d}, {resolved.end:%Y-%m-%d})"
    champion_version = registry.version_for_alias(spec.name, registry.CHAMPION)
    loaded = registry.load_version(spec.name, candidate)
    challenger_eval = steps.evaluate(spec, loaded, holdout, signature=loaded.signature, version=f"v{loaded.version}")
    champion_eval: Evaluation | None = None
    evaluated = [loaded]
    if champion_version is not None and champion_version != loaded.version:
        champion = registry.load_version(spec.name, champion_version)
        evaluated.append(champion)
        champion_eval = steps.evaluate(
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
            *([f"[MLflow version]({registry.version_url(spec.name, loaded.version)})"] if registry.ui_base() else []),
        ]
    )
    registry.record_verdict(
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
    from airloop.stages.promote.ledger import Decision

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
    from airloop.adapters.db import engine_for
    from airloop.stages.promote.ledger import apply

    row = apply(
        engine_for(WAREHOUSE_CONN_ID),
        _decision(gate_result, approval, run),
        expected_champion=gate_result["expected_champion"],
    )
    return jsonable(row)


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
    from airloop.adapters.db import engine_for
    from airloop.stages.promote.ledger import ledger, record

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
        return jsonable(earlier[0])
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
    return jsonable(row)


def promote_request(spec: ModelSpec, conf: dict[str, Any], params: dict[str, Any]) -> dict[str, Any]:
    """Check a promote run's parameters and resolve the version a rollback restores."""
    from airloop.adapters.db import engine_for
    from airloop.stages.promote.ledger import NothingToRollBack, previous_champion

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

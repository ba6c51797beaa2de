"""The promote stage's pure steps: request checks, the gate's outcome and its record, the ledger decision.

No I/O: :mod:`airloop.stages.promote.runner` reads the registry and the warehouse and composes these; each one is
unit-tested on plain values. The gate's rules themselves are :mod:`airloop.stages.promote.rules`.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from airloop.core.contracts import ACTIONS, GateResult, RunInfo
from airloop.core.params import RequestProblem
from airloop.core.shadow import SHADOWING
from airloop.stages.promote.ledger import Decision
from airloop.stages.promote.rules import Verdict

# --- the promote request ------------------------------------------------------------------------------------


def request_reason(params: dict[str, Any]) -> str:
    """The ``reason`` param, required (it goes to the ledger)."""
    reason = (params.get("reason") or "").strip()
    if not reason:
        raise RequestProblem('param `reason` is required: say why (e.g. {"reason": "v7 over-predicts weekends"}).')
    return reason


def request_action(params: dict[str, Any]) -> str:
    """The ``action`` param: promote (the default) or rollback."""
    action = params.get("action") or "promote"
    if action not in ACTIONS:
        raise RequestProblem(f"param `action` is {action!r}; expected promote or rollback.")
    return str(action)


def requested_version(action: str, version: Any) -> str | None:
    """The version to promote (``7`` or ``v7`` -> ``"7"``); None for a rollback, which must not name one."""
    if action == "rollback":
        if version not in (None, ""):
            raise RequestProblem("param `version` is not used for a rollback (it restores the previous champion).")
        return None
    if version in (None, ""):
        raise RequestProblem("param `version` is required to promote: the registry version number, e.g. 7.")
    candidate = str(version).removeprefix("v")
    if not candidate.isdigit():
        raise RequestProblem(f"param `version` is {version!r}; expected a registry version number such as 7.")
    return candidate


def request_override(params: dict[str, Any]) -> bool:
    """The ``override`` param: true or false, nothing else."""
    override = params.get("override", False)
    if not isinstance(override, bool):
        raise RequestProblem(f"param `override` must be true or false, got {override!r}.")
    return override


# --- the gate -----------------------------------------------------------------------------------------------


def holdout_range(holdout_start: datetime, end: datetime) -> str:
    """The holdout as the half-open range of days the verdict, the log and the ledger show."""
    return f"[{holdout_start:%Y-%m-%d}, {end:%Y-%m-%d})"


def overlap_notes(trained_until: list[tuple[str, str | None]], holdout_start: datetime) -> list[str]:
    """Notes on models trained on rows of this holdout (they score better on it than they deserve).

    ``trained_until`` pairs each judged version with where its training data ended (its own holdout's start,
    the run param ``window.holdout_start``; None when unknown).
    """
    notes = []
    for version, end in trained_until:
        if end and datetime.fromisoformat(end) > holdout_start:
            notes.append(
                f"v{version} was trained on data up to {end[:10]}, which overlaps this holdout "
                f"(from {holdout_start:%Y-%m-%d}): its numbers here are optimistic."
            )
    return notes


def gate_outcome(verdict: Verdict, candidate: str, champion: str | None, override: bool) -> tuple[str, bool]:
    """``(summary, promote)``: the verdict's summary and whether the candidate moves.

    A candidate that is already ``@champion`` never moves; an override moves it despite a refusal (and says so).
    """
    if champion == candidate:
        summary, promote = f"v{candidate} is already @champion; nothing to do.", False
    else:
        summary, promote = verdict.summary(), verdict.promote or override
    if override and not verdict.promote:
        summary = f"OVERRIDE: {summary}"
    return summary, promote


def shadow_summary(candidate: str, champion: str | None, live: dict[str, Any]) -> str:
    """The gate's summary while the challenger waits for labelled shadow intervals (``gate.shadow``)."""
    intervals, needed = len(live.get("intervals") or {}), live.get("needed")
    return (
        f"SHADOW v{candidate}: passed the offline gate; stays @challenger and is shadow-scored beside "
        f"@champion {f'v{champion}' if champion else 'unset'} until {needed} shadow-scored intervals have labels "
        f"({intervals} so far), then judged on them (gate.shadow); nothing moves"
    )


def gate_markdown(
    *,
    action: str,
    model: str,
    candidate: str,
    holdout: str,
    rows: int,
    reason: str,
    verdict_markdown: str,
    notes: list[str],
    version_url: str | None,
) -> str:
    """The verdict for people: the version's MLflow description and the approval request's body."""
    return "\n\n".join(
        [
            f"**{action.title()} {model} v{candidate}** on holdout {holdout} ({rows} rows). Reason: {reason}",
            verdict_markdown,
            *[f"Note: {n}" for n in notes],
            *([f"[MLflow version]({version_url})"] if version_url else []),
        ]
    )


def verdict_tags(
    verdict: Verdict, *, promote: bool, summary: str, champion: str | None, airflow_run_id: str | None
) -> dict[str, str]:
    """The ``gate.*`` tags written on the judged version, for filtering in MLflow."""
    return {
        "gate.passed": str(verdict.passed).lower(),
        "gate.promote": str(promote).lower(),
        "gate.mode": verdict.mode,
        "gate.summary": summary[:500],
        "gate.champion": champion or "none",
        "gate.airflow_run_id": airflow_run_id or "",
    }


def what_to_do(result: GateResult, *, passed: bool, promote_dag_id: str) -> str | None:
    """What on-call can do when nothing moves (None when the candidate moves or already is ``@champion``)."""
    if result.promote or result.candidate == result.expected_champion:
        return None
    if result.shadowing and passed:
        return (
            f"What to do: nothing yet. v{result.candidate} stays @challenger; {result.model}_score "
            "shadow-scores each new interval with it, and once enough of those intervals have labels it triggers "
            f"{promote_dag_id}, which judges it on them. To skip the live gate, trigger {promote_dag_id} with "
            f'{{"action": "promote", "version": "{result.candidate}", "override": true, "reason": "..."}}.'
        )
    by_hand = (
        f'trigger {promote_dag_id} with {{"action": "promote", "version": "{result.candidate}", '
        '"override": true, "reason": "..."}'
    )
    if passed:  # dry run: it would have gone through
        advice = f"the gate is in dry-run mode (gate.mode in the spec); to promote it now, {by_hand}."
    else:
        advice = (
            f"to go ahead anyway, {by_hand} (recorded as an override); to do better, train again with other "
            "overrides or another window."
        )
    champion = f"v{result.expected_champion}" if result.expected_champion else "unset"
    return (
        f"What to do: nothing moves and @champion stays {champion}; the verdict is on v{result.candidate} in MLflow "
        f"and goes to the ledger. {advice[0].upper() + advice[1:]}"
    )


# --- the decision and its ledger row ------------------------------------------------------------------------


def decided_by(override: bool, approval: dict[str, Any] | None, run: RunInfo) -> str:
    """Who decided: the gate or an override (by whom), and the approver when there was one."""
    parts = [f"override by {run.triggered_by or 'unknown user'}" if override else "gate"]
    if approval and approval.get("responded_by_user"):
        user = approval["responded_by_user"]
        parts.append(f"approval by {user.get('name') or user.get('id') if isinstance(user, dict) else user}")
    return " + ".join(parts)


def decision(result: GateResult, approval: dict[str, Any] | None, run: RunInfo, extra: str = "") -> Decision:
    """The ledger's record of a decision on the gate's result, with the verdict and approval as evidence."""
    return Decision(
        model=result.model,
        action="rollback" if result.action == "rollback" else "promote",
        candidate=result.candidate,
        reason=f"{result.reason} | {result.summary}{extra}",
        decided_by=decided_by(result.override, approval, run),
        evidence={
            "verdict": result.verdict,
            "holdout": result.holdout,
            "notes": result.notes,
            "live": result.live,
            "approval": approval,
            "airflow": run.tags(),
        },
        dag_id=run.dag_id,
        dag_run_id=run.run_id,
        mlflow_run_id=result.mlflow_run_id,
    )


def nothing_moved(result: GateResult, approval: dict[str, Any] | None, approval_required: bool) -> tuple[str, str]:
    """``(outcome, note)`` of a run in which ``@champion`` did not move, for its ledger row.

    Refused (or a dry run, or already champion) by the gate; ``rejected`` in review; ``timed_out`` only when the
    approval's deadline passed without an answer (the trigger said ``timeout``); ``approval_failed`` when the
    approval step ended another way (an error, or the task failed or was stopped before any answer: see
    :mod:`airloop.orchestration.approval`); ``failed`` when the promotion itself did not complete.
    """
    if not result.promote:
        if result.candidate == result.expected_champion:
            return "no_change", ""
        if result.shadowing and result.verdict.get("passed") and not result.override:
            return SHADOWING, ""
        return ("dry_run" if result.mode == "dry_run" else "refused"), ""
    if approval_required:
        if approval is None:
            return "approval_failed", (
                " | the approval task ended without an answer or a timeout (it failed, or was stopped or marked "
                "failed, before anyone answered: see its log); nothing moved"
            )
        error_type = approval.get("error_type")
        if error_type == "timeout":
            return "timed_out", " | no answer before the approval deadline; nothing moved"
        if error_type is not None:
            detail = approval.get("error") or "no detail"
            return "approval_failed", f" | the approval failed ({error_type}: {detail}); nothing moved"
        if "Reject" in (approval.get("chosen_options") or []):
            return "rejected", " | rejected in review"
    return "failed", " | promotion did not complete (see the promote task's log)"

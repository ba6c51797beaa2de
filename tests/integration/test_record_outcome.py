"""What the `record` task writes when nothing moved: one ledger row per run, naming the outcome and who decided.

Real warehouse and MLflow store (the session's); the gate results are built by hand, as the gate task pushes them.
"""

from __future__ import annotations

import pytest

from airloop.core.contracts import GateResult, RunInfo
from airloop.stages.promote.runner import record_outcome

MODEL = "outcomes"


def _gate(promote: bool, mode: str = "enabled", candidate: str = "2") -> GateResult:
    return GateResult.from_dict(
        {
            "model": MODEL,
            "action": "promote",
            "candidate": candidate,
            "expected_champion": None,
            "mlflow_run_id": None,
            "reason": "test",
            "override": False,
            "promote": promote,
            "summary": "PROMOTE v2" if promote else "REFUSE v2: rmse too high",
            "markdown": "",
            "verdict": {"mode": mode, "passed": promote, "checks": []},
            "holdout": "[2012-11-03, 2012-12-29)",
            "notes": [],
        }
    )


REJECT = {"chosen_options": ["Reject"], "responded_by_user": {"id": "op", "name": "operator"}}
TIMEOUT = {"error_type": "timeout", "error": "The timeout has passed, and the response has not yet been received."}
APPROVE = {"chosen_options": ["Approve"], "responded_by_user": {"id": "op", "name": "operator"}}


@pytest.mark.parametrize(
    ("gate", "approval", "required", "outcome", "decided_by"),
    [
        (_gate(False), None, False, "refused", "gate"),
        (_gate(False, mode="dry_run"), None, False, "dry_run", "gate"),
        (_gate(True), REJECT, True, "rejected", "gate + approval by operator"),
        (_gate(True), TIMEOUT, True, "timed_out", "gate"),
        (_gate(True), None, True, "approval_failed", "gate"),
        (_gate(True), {"error_type": "unknown", "error": "boom"}, True, "approval_failed", "gate"),
        (_gate(True), APPROVE, True, "failed", "gate + approval by operator"),
        (_gate(True), None, False, "failed", "gate"),
    ],
    ids=[
        "refused",
        "dry-run",
        "rejected",
        "approval-timed-out",
        "approval-task-failed",
        "approval-error",
        "approved-then-promote-failed",
        "promote-failed",
    ],
)
def test_outcome_when_nothing_moved(gate, approval, required, outcome, decided_by, request):
    run = RunInfo(dag_id="outcomes_train", run_id=f"run-{request.node.callspec.id}")
    row = record_outcome(gate, approval, None, required, run)
    assert (row.outcome, row.moved, row.decided_by) == (outcome, False, decided_by)
    assert row.dag_run_id == run.run_id and row.evidence["verdict"]["mode"] == gate.verdict["mode"]
    assert row.evidence["approval"] == approval  # what the approval step said (or that it said nothing)
    if outcome in ("timed_out", "approval_failed"):
        assert ("deadline" in row.reason) is (outcome == "timed_out"), row.reason


def test_a_retried_record_task_writes_no_second_row():
    from airloop.adapters.db import engine_for
    from airloop.core.settings import WAREHOUSE_CONN_ID
    from airloop.stages.promote.ledger import ledger

    run = RunInfo(dag_id="outcomes_train", run_id="run-retried")
    first = record_outcome(_gate(False), None, None, False, run)
    again = record_outcome(_gate(False), None, None, False, run)
    assert again.seq == first.seq
    assert [r["dag_run_id"] for r in ledger(engine_for(WAREHOUSE_CONN_ID), MODEL)].count("run-retried") == 1


def test_no_verdict_records_nothing():
    assert record_outcome(None, None, None, False, RunInfo(run_id="run-none")) is None


@pytest.mark.parametrize("moved", [True, False], ids=["alias-moved", "alias-not-moved"])
def test_record_completes_or_closes_the_intent_its_promote_task_left_open(moved, tmp_path, monkeypatch):
    """promote wrote its intent and then died (after moving @champion, or before): record says what happened."""
    from airloop.adapters import registry
    from airloop.adapters.db import engine_for
    from airloop.core.settings import WAREHOUSE_CONN_ID
    from airloop.stages.promote.ledger import Decision, apply, ledger, open_intents

    name = f"outcomes-intent-{'moved' if moved else 'not-moved'}"
    registry.ensure_registered_model(name, "record tests", "tests")
    version = str(registry.client().create_model_version(name, source=tmp_path.as_uri()).version)
    engine = engine_for(WAREHOUSE_CONN_ID)
    run = RunInfo(dag_id=f"{name}_train", run_id=f"run-intent-{moved}")

    def dies(model: str, alias: str, to: str) -> None:
        if moved:
            registry.client().set_registered_model_alias(model, alias, to)
        raise SystemExit("the worker was killed")

    monkeypatch.setattr(registry, "set_alias", dies)
    with pytest.raises(SystemExit):
        apply(engine, Decision(name, "promote", version, "test", "gate", dag_run_id=run.run_id), None)
    monkeypatch.undo()
    assert [r["dag_run_id"] for r in open_intents(ledger(engine, name))] == [run.run_id]

    gate = GateResult.from_dict({**_gate(True, candidate=version).to_dict(), "model": name})
    row = record_outcome(gate, None, None, False, run)
    assert (row.outcome, row.moved, row.dag_run_id) == (("promoted", True) if moved else ("failed", False)) + (
        run.run_id,
    )
    assert open_intents(ledger(engine, name)) == []
    assert registry.version_for_alias(name, registry.CHAMPION) == (version if moved else None)
    assert [r["outcome"] for r in ledger(engine, name)] == [row.outcome, "pending"]  # the intent, its one outcome

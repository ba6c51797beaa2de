"""The promote stage's pure steps, as tables: request checks, the gate's outcome and record, the ledger decision."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest

from airloop.core.contracts import Evaluation, GateResult, RunInfo
from airloop.core.params import RequestProblem
from airloop.core.spec import Gate
from airloop.stages.promote import steps
from airloop.stages.promote.rules import Verdict, evaluate_gate

RUN = RunInfo(dag_id="m_promote", run_id="manual__1", run_type="manual", triggered_by="alice")
HOLDOUT_START = datetime(2012, 11, 3, tzinfo=UTC)


def _ev(rmse: float, version: str) -> Evaluation:
    return Evaluation(
        metrics={"rmse": rmse, "mae": rmse * 0.7, "r2": 0.85},
        slices={},
        predictions=1000,
        nan_predictions=0,
        min_prediction=0.0,
        max_prediction=900.0,
        version=version,
    )


def _verdict(passes: bool, mode: str = "enabled") -> Verdict:
    """A verdict on v4 against v3: passes when v4 is clearly better."""
    gate = Gate(mode=mode, metric="rmse", thresholds={"rmse": 90}, min_improvement=0.01)
    return evaluate_gate(gate, _ev(50.0 if passes else 70.0, "v4"), _ev(60.0, "v3"))


def _result(**overrides: Any) -> GateResult:
    values: dict[str, Any] = {
        "model": "m",
        "action": "promote",
        "candidate": "4",
        "expected_champion": "3",
        "reason": "new data",
        "promote": False,
        "summary": "REFUSE v4",
        "verdict": {"mode": "enabled", "passed": False},
        "holdout": "[2012-11-03, 2012-12-29)",
        "notes": ["a note"],
        "mlflow_run_id": "run4",
    }
    return GateResult(**{**values, **overrides})


# --- the promote request ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("action", "version", "expected"),
    [
        ("promote", "7", "7"),
        ("promote", "v7", "7"),
        ("promote", 7, "7"),
        ("rollback", None, None),
        ("rollback", "", None),
    ],
)
def test_requested_version(action, version, expected):
    assert steps.requested_version(action, version) == expected


@pytest.mark.parametrize(
    ("action", "version", "message"),
    [
        ("promote", None, "param `version` is required to promote"),
        ("promote", "", "param `version` is required to promote"),
        ("promote", "latest", "param `version` is 'latest'; expected a registry version number"),
        ("rollback", "7", "param `version` is not used for a rollback"),
    ],
)
def test_a_bad_version_is_refused(action, version, message):
    with pytest.raises(RequestProblem, match=message):
        steps.requested_version(action, version)


@pytest.mark.parametrize(
    ("step", "params", "expected"),
    [
        (steps.request_reason, {"reason": "  v7 misbehaves "}, "v7 misbehaves"),
        (steps.request_action, {}, "promote"),
        (steps.request_action, {"action": "rollback"}, "rollback"),
        (steps.request_override, {}, False),
        (steps.request_override, {"override": True}, True),
    ],
)
def test_request_params(step, params, expected):
    assert step(params) == expected


@pytest.mark.parametrize(
    ("step", "params", "message"),
    [
        (steps.request_reason, {"reason": "  "}, "param `reason` is required"),
        (steps.request_action, {"action": "demote"}, "param `action` is 'demote'; expected promote or rollback"),
        (steps.request_override, {"override": "yes"}, "param `override` must be true or false, got 'yes'"),
    ],
)
def test_bad_request_params_are_named(step, params, message):
    with pytest.raises(RequestProblem, match=message):
        step(params)


# --- the gate -----------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("passes", "mode", "champion", "override", "prefix", "promote"),
    [
        (True, "enabled", "3", False, "PROMOTE", True),
        (False, "enabled", "3", False, "REFUSE", False),
        (False, "enabled", "3", True, "OVERRIDE: REFUSE", True),
        (True, "dry_run", "3", False, "DRY RUN", False),
        (True, "dry_run", "3", True, "OVERRIDE: DRY RUN", True),
        (True, "enabled", "4", False, "v4 is already @champion", False),
        (True, "enabled", "4", True, "v4 is already @champion", False),
    ],
    ids=["passes", "refused", "override", "dry-run", "dry-run-override", "already-champion", "already-override"],
)
def test_gate_outcome(passes, mode, champion, override, prefix, promote):
    summary, moves = steps.gate_outcome(_verdict(passes, mode), "4", champion, override)
    assert summary.startswith(prefix) and moves is promote


@pytest.mark.parametrize(
    ("trained_until", "notes"),
    [
        ([("4", "2012-10-01T00:00:00+00:00")], 0),  # trained before the holdout: fair
        ([("4", "2012-11-03T00:00:00+00:00")], 0),  # up to its start: fair
        ([("3", "2012-12-01T00:00:00+00:00"), ("4", None)], 1),
    ],
    ids=["before", "up-to-start", "overlaps"],
)
def test_overlap_notes(trained_until, notes):
    found = steps.overlap_notes(trained_until, HOLDOUT_START)
    assert len(found) == notes
    if notes:
        assert found[0].startswith("v3 was trained on data up to 2012-12-01, which overlaps this holdout")


def test_holdout_range_and_markdown():
    holdout = steps.holdout_range(HOLDOUT_START, datetime(2012, 12, 29, tzinfo=UTC))
    assert holdout == "[2012-11-03, 2012-12-29)"
    fields = dict(action="rollback", model="m", candidate="3", holdout=holdout, rows=1300, reason="why")
    text = steps.gate_markdown(**fields, verdict_markdown="TABLE", notes=["n1"], version_url="http://ui/v/3")
    assert text.split("\n\n") == [
        "**Rollback m v3** on holdout [2012-11-03, 2012-12-29) (1300 rows). Reason: why",
        "TABLE",
        "Note: n1",
        "[MLflow version](http://ui/v/3)",
    ]
    assert "MLflow version" not in steps.gate_markdown(**fields, verdict_markdown="T", notes=[], version_url=None)


def test_verdict_tags():
    tags = steps.verdict_tags(_verdict(False), promote=True, summary="S" * 600, champion=None, airflow_run_id=None)
    assert tags == {
        "gate.passed": "false",
        "gate.promote": "true",
        "gate.mode": "enabled",
        "gate.summary": "S" * 500,
        "gate.champion": "none",
        "gate.airflow_run_id": "",
    }


@pytest.mark.parametrize(
    ("result", "passed", "says"),
    [
        (_result(promote=True), True, None),
        (_result(candidate="3"), True, None),  # already champion
        (_result(), True, "The gate is in dry-run mode"),
        (_result(), False, "To go ahead anyway, trigger m_promote"),
        (_result(expected_champion=None), False, "@champion stays unset"),
    ],
    ids=["moves", "already-champion", "dry-run", "refused", "no-champion"],
)
def test_what_to_do(result, passed, says):
    advice = steps.what_to_do(result, passed=passed, promote_dag_id="m_promote")
    if says is None:
        assert advice is None
    else:
        assert says in advice and '"version": "4"' in advice


# --- the decision -------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("override", "approval", "expected"),
    [
        (False, None, "gate"),
        (True, None, "override by alice"),
        (False, {"responded_by_user": {"id": "op", "name": "Operator"}}, "gate + approval by Operator"),
        (False, {"responded_by_user": {"id": "op"}}, "gate + approval by op"),
        (True, {"responded_by_user": "bob"}, "override by alice + approval by bob"),
        (False, {"chosen_options": ["Approve"]}, "gate"),
    ],
)
def test_decided_by(override, approval, expected):
    assert steps.decided_by(override, approval, RUN) == expected


def test_decision_carries_the_evidence():
    approval = {"chosen_options": ["Approve"], "responded_by_user": {"name": "op"}}
    d = steps.decision(_result(action="rollback"), approval, RUN, " | extra")
    assert (d.model, d.action, d.candidate, d.reason) == ("m", "rollback", "4", "new data | REFUSE v4 | extra")
    assert d.evidence == {
        "verdict": {"mode": "enabled", "passed": False},
        "holdout": "[2012-11-03, 2012-12-29)",
        "notes": ["a note"],
        "live": None,
        "approval": approval,
        "airflow": RUN.tags(),
    }
    assert (d.dag_id, d.dag_run_id, d.mlflow_run_id, d.decided_by) == (
        "m_promote",
        "manual__1",
        "run4",
        "gate + approval by op",
    )


REJECT = {"chosen_options": ["Reject"]}


@pytest.mark.parametrize(
    ("result", "approval", "required", "outcome"),
    [
        (_result(), None, False, "refused"),
        (_result(verdict={"mode": "dry_run"}), None, False, "dry_run"),
        (_result(candidate="3"), None, False, "no_change"),
        (_result(promote=True), REJECT, True, "rejected"),
        (_result(promote=True), {"error_type": "timeout", "error": "The timeout has passed"}, True, "timed_out"),
        (_result(promote=True), None, True, "approval_failed"),
        (_result(promote=True), {"error_type": "validation", "error": "bad answer"}, True, "approval_failed"),
        (_result(promote=True), None, False, "failed"),
        (_result(promote=True), {"chosen_options": ["Approve"]}, True, "failed"),
    ],
    ids=[
        "refused",
        "dry-run",
        "no-change",
        "rejected",
        "timed-out",
        "approval-task-failed",
        "approval-error",
        "failed",
        "approved-then-failed",
    ],
)
def test_nothing_moved(result, approval, required, outcome):
    found, note = steps.nothing_moved(result, approval, required)
    assert found == outcome
    assert (note == "") is (outcome in ("refused", "dry_run", "no_change"))

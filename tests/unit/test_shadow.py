"""Shadow scoring's decisions on plain values: who waits, the live comparison, the live check and its text."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import pytest
import yaml

from airloop.core.contracts import Evaluation, GateResult
from airloop.core.shadow import APPROVAL, GATE_SHADOW, SHADOWING, Waiting, live_gate_due, waiting_challenger
from airloop.core.spec import Gate, SpecError, load_spec
from airloop.stages.promote.live import compare, label_text, metric_classes
from airloop.stages.promote.rules import evaluate_gate, live_check, with_live
from airloop.stages.promote.steps import gate_markdown, nothing_moved

# --- who waits ------------------------------------------------------------------------------------------------


def _waiting(**kw: Any) -> Waiting | str:
    values: dict[str, Any] = {"champion": "3", "challenger": "4", "tags": {}, "decisions": []}
    return waiting_challenger(**{**values, **kw})


def test_a_challenger_passed_and_awaiting_approval_waits():
    tags = {"gate.promote": "true", "gate.airflow_run_id": "run-7"}
    found = _waiting(tags=tags, decisions=[{"outcome": "refused", "dag_run_id": "run-1"}])
    assert isinstance(found, Waiting) and (found.version, found.why) == ("4", APPROVAL)
    assert "run-7" in found.detail


def test_a_challenger_whose_newest_decision_is_shadowing_waits_for_gate_shadow():
    found = _waiting(tags={"gate.promote": "false"}, decisions=[{"outcome": SHADOWING, "dag_run_id": "r"}])
    assert isinstance(found, Waiting) and found.why == GATE_SHADOW
    assert live_gate_due(found, labelled=2, needed=2) and not live_gate_due(found, labelled=1, needed=2)


@pytest.mark.parametrize(
    ("kw", "why"),
    [
        ({"challenger": None}, "no @challenger"),
        ({"challenger": "3"}, "is @champion"),  # promoted: the alias was cleared, or it is the champion
        ({"champion": None}, "no @champion"),
        ({"decisions": [{"outcome": "refused", "dag_run_id": "r"}, {"outcome": SHADOWING}]}, "(refused)"),
        (
            {
                "tags": {"gate.promote": "true", "gate.airflow_run_id": "r"},
                "decisions": [{"outcome": "rejected", "dag_run_id": "r"}],
            },
            "(rejected)",
        ),
        ({}, "no gate decision"),
    ],
    ids=["absent", "promoted", "no-champion", "refused-after-shadowing", "rejected", "never-gated"],
)
def test_a_challenger_that_was_decided_on_or_is_absent_does_not_wait(kw, why):
    found = _waiting(**kw)
    assert isinstance(found, str) and why in found


def test_approval_waiting_never_triggers_the_live_gate():
    assert not live_gate_due(Waiting("4", APPROVAL, "x"), labelled=5, needed=2)


# --- the live comparison --------------------------------------------------------------------------------------


def _row(label: Any, shadow: dict[str, Any], served: dict[str, Any], partition: str = "p1") -> dict[str, Any]:
    outputs = ("prediction", "predicted_class", "probability", "probabilities")
    return {
        "partition": partition,
        "row_key": "k",
        "label": label,
        "served_version": "3",
        **{f"shadow_{o}": shadow.get(o) for o in outputs},
        **{f"served_{o}": served.get(o) for o in outputs},
    }


def test_a_regression_is_compared_on_the_same_labelled_rows():
    rows = [
        _row("10.0", {"prediction": 11.0}, {"prediction": 14.0}),
        _row("20.0", {"prediction": 19.0}, {"prediction": 16.0}, "p2"),
    ]
    live = compare(rows, version="4", metric="rmse", needed=2, intervals={"p1": 1, "p2": 1}, classes=None)
    assert (live.status, live.rows, live.served_versions) == ("compared", 2, ["3"])
    assert live.challenger == pytest.approx(1.0) and live.served == pytest.approx(4.0)


def test_too_few_labelled_intervals_are_not_compared():
    live = compare([], version="4", metric="rmse", needed=3, intervals={"p1": 10}, classes=None)
    assert live.status == "waiting" and math.isnan(live.challenger)
    assert "1 of the 3 labelled shadow intervals" in live.describe()


def test_a_binary_classifier_is_compared_on_its_probabilities_with_labels_matched_by_value():
    rows = [
        _row("1.0", {"predicted_class": "1", "probability": 0.9}, {"predicted_class": "0", "probability": 0.4}),
        _row("0", {"predicted_class": "0", "probability": 0.2}, {"predicted_class": "1", "probability": 0.6}),
    ]
    live = compare(rows, version="4", metric="log_loss", needed=1, intervals={"p1": 2}, classes=["0", "1"])
    assert live.challenger == pytest.approx(-(math.log(0.9) + math.log(0.8)) / 2)
    assert live.served == pytest.approx(-(math.log(0.4) + math.log(0.4)) / 2)
    assert label_text("1.0", ["0", "1"]) == "1" and label_text("yes", ["no", "yes"]) == "yes"
    assert metric_classes(["no", "yes"], "no") == ["yes", "no"]


def test_a_multiclass_classifier_reads_each_class_probability():
    def out(best: str, p: dict[str, float]) -> dict[str, Any]:
        return {"predicted_class": best, "probability": max(p.values()), "probabilities": json.dumps(p)}

    rows = [
        _row("a", out("a", {"a": 0.8, "b": 0.1, "c": 0.1}), out("b", {"a": 0.2, "b": 0.7, "c": 0.1})),
        _row("c", out("c", {"a": 0.1, "b": 0.1, "c": 0.8}), out("c", {"a": 0.1, "b": 0.3, "c": 0.6})),
    ]
    live = compare(rows, version="4", metric="accuracy", needed=1, intervals={"p1": 2}, classes=["a", "b", "c"])
    assert (live.challenger, live.served) == (1.0, 0.5)


# --- the live check, the verdict and the approval text ----------------------------------------------------------


def _ev(rmse: float, version: str) -> Evaluation:
    return Evaluation(
        metrics={"rmse": rmse, "mae": rmse * 0.7, "r2": 0.8},
        slices={},
        predictions=100,
        nan_predictions=0,
        min_prediction=0.0,
        max_prediction=500.0,
        version=version,
    )


def _live(challenger: float, served: float) -> dict[str, Any]:
    return {
        "status": "compared",
        "metric": "rmse",
        "intervals": {"2012-09-08T000000Z": 600, "2012-10-06T000000Z": 620},
        "challenger": challenger,
        "served": served,
        "served_versions": ["3"],
        "rows": 1220,
        "notes": [],
    }


GATE = Gate(metric="rmse", thresholds={"rmse": 90}, min_improvement=0.05, shadow={"intervals": 2})


@pytest.mark.parametrize(
    ("challenger", "served", "passed", "words"),
    [
        (40.0, 50.0, True, "improvement 20 %"),
        (49.0, 50.0, False, "below the 5 % needed"),
        (60.0, 50.0, False, "20 % worse, no improvement"),
        (math.nan, 50.0, False, "cannot be compared"),
    ],
    ids=["better", "not-enough", "worse", "nan"],
)
def test_the_live_check_needs_min_improvement_in_the_metric_direction(challenger, served, passed, words):
    check = live_check(GATE, "rmse", _live(challenger, served))
    assert check.passed is passed and words in check.detail
    assert "served (v3)" in check.detail or "cannot be compared" in check.detail


def test_a_live_refusal_refuses_an_offline_pass_and_says_why():
    offline = evaluate_gate(GATE, _ev(50.0, "v4"), _ev(60.0, "v3"))
    assert offline.promote
    judged = with_live(offline, _live(60.0, 50.0), judged=True)
    assert not judged.passed and not judged.promote and [c.name for c in judged.failed] == ["live"]
    assert judged.summary().startswith("REFUSE v4: live rmse 60 vs served (v3) 50")
    assert judged.to_dict()["live"]["served"] == 50.0
    shown = with_live(offline, _live(60.0, 50.0), judged=False)  # require_better: false shows, never refuses
    assert shown.promote and "Live (shadow) comparison" in shown.markdown()


def test_the_approval_text_shows_the_live_comparison():
    verdict = with_live(evaluate_gate(GATE, _ev(50.0, "v4"), _ev(60.0, "v3")), _live(40.0, 50.0), judged=True)
    body = gate_markdown(
        action="promote",
        model="m",
        candidate="4",
        holdout="[2012-11-03, 2012-12-29)",
        rows=1000,
        reason="live gate",
        verdict_markdown=verdict.markdown(),
        notes=[],
        version_url=None,
    )
    assert "Live (shadow) comparison on 2 labelled interval(s) (2012-09-08T000000Z to 2012-10-06T000000Z)" in body
    assert "1,220 labelled rows" in body
    assert "| rmse (live; served by v3) | 50 | 40 | 20 % better |" in body


def test_the_approval_notification_names_the_live_comparison():
    from datetime import UTC, datetime

    from airloop.orchestration import events

    live = {**_live(40.0, 50.0), "summary": "live on 2 labelled shadow interval(s), 1,220 rows: rmse v4 40 vs served"}
    now = datetime(2026, 1, 1, tzinfo=UTC)
    event = events.approval(_result(live=live), "http://x/answer", now, now, None, "m_promote", "r1")
    assert ("Live (shadow)", live["summary"]) in event.facts and event.data["live"] == live
    plain = events.approval(_result(live=None), "http://x/answer", now, now, None, "m_promote", "r1")
    assert all(name != "Live (shadow)" for name, _ in plain.facts)


def test_the_approval_text_without_shadow_data_has_no_live_section():
    verdict = evaluate_gate(GATE, _ev(50.0, "v4"), _ev(60.0, "v3"))
    assert "Live (shadow)" not in verdict.markdown()


# --- the ledger's outcome, the contract and the spec ---------------------------------------------------------


def _result(**overrides: Any) -> GateResult:
    values: dict[str, Any] = {
        "model": "m",
        "action": "promote",
        "candidate": "4",
        "expected_champion": "3",
        "reason": "new data",
        "promote": False,
        "summary": "SHADOW v4",
        "verdict": {"mode": "enabled", "passed": True},
        "holdout": "[2012-11-03, 2012-12-29)",
        "live": {"status": "waiting", "intervals": {"p1": 10}, "needed": 2},
    }
    return GateResult(**{**values, **overrides})


def test_a_challenger_waiting_for_labelled_intervals_is_recorded_as_shadowing():
    assert nothing_moved(_result(), None, approval_required=False) == (SHADOWING, "")
    assert nothing_moved(_result(verdict={"mode": "enabled", "passed": False}), None, False)[0] == "refused"
    compared = _result(live={"status": "compared"})
    assert nothing_moved(compared, None, False)[0] == "refused"
    assert GateResult.from_dict(_result().to_dict()) == _result()


MODELS = Path(__file__).resolve().parents[2] / "include" / "models"


def _spec(tmp_path: Path, shadow: Any) -> Any:
    raw = yaml.safe_load((MODELS / "bikes.yaml").read_text())
    raw["gate"]["shadow"] = shadow
    path = tmp_path / "bikes.yaml"
    path.write_text(yaml.safe_dump(raw))
    return load_spec(path)


def test_the_spec_declares_gate_shadow(tmp_path):
    spec = _spec(tmp_path, {"intervals": 3})
    assert spec.gate.shadow is not None
    assert (spec.gate.shadow.intervals, spec.gate.shadow.require_better) == (3, True)
    assert _spec(tmp_path, None).gate.shadow is None
    with pytest.raises(SpecError, match="intervals"):
        _spec(tmp_path, {"intervals": 0})

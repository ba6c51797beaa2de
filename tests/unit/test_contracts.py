"""The train and promote contracts: what one task hands the next through XCom, strict about every field."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

import pytest

from airloop.core.contracts import (
    ContractError,
    GateResult,
    PromoteRequest,
    PromotionOutcome,
    TrainedVersion,
    TrainRequest,
)
from airloop.core.errors import ExpectedFailure

WINDOW = {
    "start": "2011-12-30T00:00:00+00:00",
    "end": "2012-12-29T00:00:00+00:00",
    "holdout_start": "2012-11-03T00:00:00+00:00",
}

EXAMPLES: dict[type, Any] = {
    TrainRequest: TrainRequest(
        reason="new data",
        window_start=datetime(2012, 1, 1, tzinfo=UTC),
        window_end=datetime(2012, 10, 1, tzinfo=UTC),
        overrides={"max_iter": 20},
    ),
    TrainedVersion: TrainedVersion(
        model="m",
        version="3",
        mlflow_run_id="abc123",
        window=WINDOW,
        reason="new data",
        run_url="http://mlflow/#/experiments/1/runs/abc123",
        version_url=None,
        partitions=14,
        gaps=["2012-06-02 quarantined"],
        train_rows=8000,
        holdout_rows=1300,
        metrics={"rmse": 41.5, "r2": None},
        params={"max_iter": 20, "learning_rate": 0.1},
        timings={"fit_s": 1.25},
    ),
    PromoteRequest: PromoteRequest(action="rollback", candidate="2", reason="v3 misbehaves", override=True),
    GateResult: GateResult(
        model="m",
        action="promote",
        candidate="3",
        expected_champion=None,
        reason="new data",
        promote=True,
        summary="PROMOTE v3",
        verdict={"mode": "enabled", "passed": True, "checks": []},
        holdout="[2012-11-03, 2012-12-29)",
        override=False,
        mlflow_run_id="abc123",
        markdown="**Promote m v3**",
        notes=["v2 was trained on data up to 2012-12-01"],
        live={"status": "waiting", "intervals": {"2012-11-03T000000Z": 600}, "needed": 2},
    ),
    PromotionOutcome: PromotionOutcome(
        model="m",
        seq=4,
        action="promote",
        outcome="promoted",
        moved=True,
        candidate_version="3",
        from_version="2",
        champion_after="3",
        decided_by="gate",
        reason="new data | PROMOTE v3",
        evidence={"verdict": {"passed": True}},
        dag_id="m_train",
        dag_run_id="manual__1",
        mlflow_run_id="abc123",
        recorded_at=datetime(2012, 12, 29, 1, 2, 3, tzinfo=UTC),
    ),
}

#: The keys each contract travels with (today's XCom keys: running DAG runs and the view read them).
KEYS = {
    TrainRequest: {"reason", "window_start", "window_end", "overrides"},
    TrainedVersion: {
        "model",
        "version",
        "mlflow_run_id",
        "run_url",
        "version_url",
        "window",
        "partitions",
        "gaps",
        "train_rows",
        "holdout_rows",
        "metrics",
        "params",
        "reason",
        "timings",
        "task",
        "classes",
    },
    PromoteRequest: {"action", "candidate", "reason", "override"},
    GateResult: {
        "model",
        "action",
        "candidate",
        "expected_champion",
        "mlflow_run_id",
        "reason",
        "override",
        "promote",
        "summary",
        "markdown",
        "verdict",
        "holdout",
        "notes",
        "live",
    },
    PromotionOutcome: {
        "model",
        "seq",
        "action",
        "outcome",
        "moved",
        "candidate_version",
        "from_version",
        "champion_after",
        "decided_by",
        "reason",
        "evidence",
        "dag_id",
        "dag_run_id",
        "mlflow_run_id",
        "recorded_at",
    },
}

#: (contract, a required field, a value of the wrong type for it)
MISTYPED = [
    (TrainRequest, "reason", 42),
    (TrainRequest, "window_end", "next tuesday"),
    (TrainRequest, "overrides", ["max_iter"]),
    (TrainedVersion, "version", 3),
    (TrainedVersion, "train_rows", "8000"),
    (TrainedVersion, "train_rows", True),
    (TrainedVersion, "window", {"start": "2012-01-01"}),
    (TrainedVersion, "metrics", {"rmse": "low"}),
    (TrainedVersion, "gaps", "2012-06-02"),
    (PromoteRequest, "action", "demote"),
    (PromoteRequest, "override", "yes"),
    (GateResult, "promote", "true"),
    (GateResult, "expected_champion", 2),
    (GateResult, "verdict", "PROMOTE"),
    (GateResult, "notes", [1, 2]),
    (GateResult, "live", "waiting"),
    (PromotionOutcome, "seq", 4.0),
    (PromotionOutcome, "moved", 1),
    (PromotionOutcome, "recorded_at", "yesterday"),
]

#: (contract, a field that must be there)
REQUIRED = [
    (TrainRequest, "reason"),
    (TrainedVersion, "version"),
    (TrainedVersion, "window"),
    (PromoteRequest, "candidate"),
    (GateResult, "expected_champion"),
    (GateResult, "promote"),
    (GateResult, "candidate"),
    (PromotionOutcome, "seq"),
]


@pytest.mark.parametrize("contract", list(EXAMPLES), ids=lambda c: c.__name__)
def test_round_trip_through_json(contract):
    value = EXAMPLES[contract]
    d = value.to_dict()
    assert set(d) == KEYS[contract]
    assert contract.from_dict(json.loads(json.dumps(d, allow_nan=False))) == value


@pytest.mark.parametrize(("contract", "name"), REQUIRED, ids=lambda v: getattr(v, "__name__", v))
def test_a_missing_field_is_named(contract, name):
    d = EXAMPLES[contract].to_dict()
    del d[name]
    with pytest.raises(ContractError, match=rf"^{contract.__name__}: field `{name}` is missing") as err:
        contract.from_dict(d)
    assert isinstance(err.value, ExpectedFailure)  # fails the task at once: a retry would read the same XCom


@pytest.mark.parametrize(("contract", "name", "value"), MISTYPED, ids=lambda v: getattr(v, "__name__", repr(v)))
def test_a_mistyped_field_is_named_with_what_it_got(contract, name, value):
    d = {**EXAMPLES[contract].to_dict(), name: value}
    with pytest.raises(ContractError, match=rf"^{contract.__name__}: field `{name}[`\[]") as err:
        contract.from_dict(d)
    assert "got " in str(err.value) and "clear the upstream task" in str(err.value)


def test_not_a_dict_at_all_is_named():
    with pytest.raises(ContractError, match=r"GateResult: expected an object of fields, got NoneType"):
        GateResult.from_dict(None)


def test_optional_fields_may_be_absent_or_null():
    assert TrainRequest.from_dict({"reason": "r"}) == TrainRequest(reason="r")
    assert TrainRequest.from_dict({"reason": "r", "window_start": None, "window_end": None}).overrides == {}
    assert TrainRequest.from_dict({"reason": "r", "window_start": None, "window_end": None, "overrides": None})
    gate = EXAMPLES[GateResult].to_dict()
    for key in ("notes", "markdown", "mlflow_run_id", "override"):
        del gate[key]
    assert GateResult.from_dict(gate).notes == [] and GateResult.from_dict(gate).override is False


def test_a_ledger_row_from_the_warehouse_becomes_an_outcome():
    row = {**EXAMPLES[PromotionOutcome].to_dict(), "id": 7, "recorded_at": datetime(2012, 12, 29, tzinfo=UTC)}
    outcome = PromotionOutcome.from_dict(row)
    assert outcome.recorded_at == datetime(2012, 12, 29, tzinfo=UTC)
    assert outcome.to_dict()["recorded_at"] == "2012-12-29T00:00:00+00:00"


def test_trained_metrics_keep_nan_as_null():
    trained = TrainedVersion.from_dict({**EXAMPLES[TrainedVersion].to_dict(), "metrics": {"rmse": float("nan")}})
    assert trained.to_dict()["metrics"] == {"rmse": None}


def test_the_gate_mode_comes_from_the_verdict():
    assert EXAMPLES[GateResult].mode == "enabled"
    gate = GateResult.from_dict({**EXAMPLES[GateResult].to_dict(), "verdict": {}})
    assert gate.mode is None

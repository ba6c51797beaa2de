"""The promotion ledger on a real SQLite warehouse and the session's MLflow store: rows only ever appended, one
decision at a time under the model's lock, conflicts recorded, and the champion history a rollback walks back."""

from __future__ import annotations

import itertools
from datetime import UTC, datetime

import pytest
import sqlalchemy as sa

from airloop.adapters import registry
from airloop.adapters.warehouse import promotion_ledger, promotion_locks
from airloop.stages.promote.ledger import (
    Decision,
    NothingToRollBack,
    PromotionConflict,
    _lock,
    apply,
    champion_history,
    history_of,
    ledger,
    ledger_row,
    previous_champion,
    record,
)

_models = itertools.count(1)


@pytest.fixture
def warehouse(tmp_path) -> sa.Engine:
    return sa.create_engine(f"sqlite:///{tmp_path / 'warehouse.db'}", connect_args={"timeout": 5})


@pytest.fixture
def model(tmp_path) -> tuple[str, list[str]]:
    """A registered model of its own with four versions (no artifacts: the ledger never loads them)."""
    name = f"ledger-{next(_models)}-{tmp_path.name}"[:64]
    registry.ensure_registered_model(name, "ledger tests", "tests")
    c = registry.client()
    return name, [str(c.create_model_version(name, source=tmp_path.as_uri()).version) for _ in range(4)]


def _decide(model: str, candidate: str | None, action: str = "promote", run: str = "run", **kw) -> Decision:
    return Decision(model, action, candidate, f"{action} {candidate}", "gate", dag_run_id=run, **kw)  # type: ignore[arg-type]


def _champion(model: str) -> str | None:
    return registry.version_for_alias(model, registry.CHAMPION)


# --- pure steps ---------------------------------------------------------------------------------------------


def test_ledger_row():
    at = datetime(2012, 12, 29, tzinfo=UTC)
    decision = Decision("m", "rollback", "2", "why", "gate", {"e": 1}, "m_promote", "manual__1", "run2")
    assert ledger_row(decision, seq=5, outcome="rolled_back", moved=True, before="3", after="2", at=at) == {
        "model": "m",
        "seq": 5,
        "action": "rollback",
        "outcome": "rolled_back",
        "moved": True,
        "candidate_version": "2",
        "from_version": "3",
        "champion_after": "2",
        "decided_by": "gate",
        "reason": "why",
        "evidence": {"e": 1},
        "dag_id": "m_promote",
        "dag_run_id": "manual__1",
        "mlflow_run_id": "run2",
        "recorded_at": at,
    }


@pytest.mark.parametrize(
    ("moves", "stack"),
    [
        ([], []),
        ([("promote", "1"), ("promote", "2")], ["1", "2"]),
        ([("promote", "1"), ("promote", "2"), ("rollback", "1")], ["1"]),
        ([("promote", "1"), ("promote", "2"), ("promote", "3"), ("rollback", "2"), ("rollback", "1")], ["1"]),
        ([("promote", "1"), ("promote", "2"), ("rollback", "1"), ("promote", "3")], ["1", "3"]),
        ([("promote", "1"), ("rollback", "7")], ["7"]),  # restored a version the ledger never pushed
    ],
    ids=["empty", "promotions-push", "rollback-pops", "twice-walks-back-two", "then-promote", "unknown-target"],
)
def test_history_of(moves, stack):
    assert history_of(moves) == stack


# --- on a real warehouse ------------------------------------------------------------------------------------


def test_record_appends_numbered_rows_and_moves_nothing(warehouse, model):
    name, _ = model
    first = record(warehouse, _decide(name, "1"), "refused")
    second = record(warehouse, _decide(name, "2"), "dry_run")
    assert (first["seq"], second["seq"]) == (1, 2)
    assert [(r["outcome"], r["moved"], r["champion_after"]) for r in ledger(warehouse, name)] == [
        ("dry_run", False, None),
        ("refused", False, None),
    ]
    assert _champion(name) is None


def test_apply_moves_champion_clears_challenger_and_records(warehouse, model):
    name, versions = model
    registry.set_alias(name, registry.CHALLENGER, versions[0])
    row = apply(warehouse, _decide(name, versions[0]), expected_champion=None)
    assert (row["outcome"], row["moved"], row["from_version"], row["champion_after"]) == (
        "promoted",
        True,
        None,
        versions[0],
    )
    assert _champion(name) == versions[0]
    assert registry.version_for_alias(name, registry.CHALLENGER) is None
    rolled = apply(warehouse, _decide(name, versions[1], "rollback"), expected_champion=versions[0])
    assert (rolled["outcome"], rolled["seq"]) == ("rolled_back", 2)


def test_a_stale_champion_is_a_recorded_conflict_and_nothing_moves(warehouse, model):
    name, versions = model
    apply(warehouse, _decide(name, versions[0]), expected_champion=None)
    with pytest.raises(PromotionConflict, match=rf"@champion is now {versions[0]}, not unset.*Re-run the gate"):
        apply(warehouse, _decide(name, versions[1], run="late"), expected_champion=None)
    assert _champion(name) == versions[0]
    newest = ledger(warehouse, name)[0]
    assert (newest["outcome"], newest["moved"], newest["candidate_version"], newest["dag_run_id"]) == (
        "conflict",
        False,
        versions[1],
        "late",
    )
    assert "refused: @champion is now" in newest["reason"]


def test_a_failed_insert_puts_the_champion_back(warehouse, model):
    name, versions = model
    apply(warehouse, _decide(name, versions[0]), expected_champion=None)
    unstorable = _decide(name, versions[1], evidence={"not json": {1, 2}})
    with pytest.raises(sa.exc.StatementError):
        apply(warehouse, unstorable, expected_champion=versions[0])
    assert _champion(name) == versions[0]
    assert len(ledger(warehouse, name)) == 1


def test_rows_are_append_only(warehouse, model):
    name, _ = model
    record(warehouse, _decide(name, "1"), "refused")
    for statement in (promotion_ledger.update().values(outcome="promoted"), promotion_ledger.delete()):
        with pytest.raises(sa.exc.DatabaseError, match="append-only"), warehouse.begin() as conn:
            conn.execute(statement.where(promotion_ledger.c.model == name))
    assert [r["outcome"] for r in ledger(warehouse, name)] == ["refused"]


def test_the_lock_names_its_holder_and_keeps_a_second_decision_waiting(warehouse, model, tmp_path):
    name, versions = model
    record(warehouse, _decide(name, "1", run="first"), "refused")
    with warehouse.connect() as conn:
        holder = conn.execute(sa.select(promotion_locks.c.holder).where(promotion_locks.c.model == name)).scalar()
    assert holder == "first"
    impatient = sa.create_engine(warehouse.url, connect_args={"timeout": 0.2})
    with warehouse.begin() as conn:
        _lock(conn, name, "holding")
        with pytest.raises(sa.exc.OperationalError, match="database is locked"):
            apply(impatient, _decide(name, versions[0]), expected_champion=None)
    assert _champion(name) is None  # the waiting decision moved nothing
    assert apply(impatient, _decide(name, versions[0]), expected_champion=None)["seq"] == 2


def test_previous_champion_walks_back_the_promotions(warehouse, model):
    name, versions = model
    with pytest.raises(NothingToRollBack, match="no earlier champion in the ledger"):
        previous_champion(warehouse, name)
    for before, version in zip([None, *versions[:2]], versions[:3], strict=True):
        apply(warehouse, _decide(name, version), expected_champion=before)
    assert previous_champion(warehouse, name) == versions[1]
    apply(warehouse, _decide(name, versions[1], "rollback"), expected_champion=versions[2])
    assert champion_history(warehouse, name) == versions[:2]
    assert previous_champion(warehouse, name) == versions[0]


def test_a_champion_moved_outside_airloop_is_named(warehouse, model):
    name, versions = model
    apply(warehouse, _decide(name, versions[0]), expected_champion=None)
    apply(warehouse, _decide(name, versions[1]), expected_champion=versions[0])
    registry.set_alias(name, registry.CHAMPION, versions[3])
    with pytest.raises(NothingToRollBack, match=rf"@champion of {name} is {versions[3]}, but the ledger's last"):
        previous_champion(warehouse, name)

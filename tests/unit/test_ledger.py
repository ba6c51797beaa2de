"""The promotion ledger on a real SQLite warehouse and the session's MLflow store: rows only ever appended, one
decision at a time under the model's lock, conflicts recorded, and the champion history a rollback walks back."""

from __future__ import annotations

import contextlib
import itertools
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

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
    from airloop.stages.promote.ledger import INTENT_KEY, PENDING

    rolled = apply(warehouse, _decide(name, versions[1], "rollback"), expected_champion=versions[0])
    assert (rolled["outcome"], rolled["seq"]) == ("rolled_back", 4)
    # each decision: its intent first, then the outcome naming it
    assert [(r["seq"], r["outcome"], r["evidence"].get(INTENT_KEY)) for r in reversed(ledger(warehouse, name))] == [
        (1, PENDING, None),
        (2, "promoted", 1),
        (3, PENDING, None),
        (4, "rolled_back", 3),
    ]


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


def test_an_intent_that_cannot_be_recorded_moves_nothing(warehouse, model):
    from airloop.stages.promote.ledger import PENDING

    name, versions = model
    apply(warehouse, _decide(name, versions[0]), expected_champion=None)
    unstorable = _decide(name, versions[1], evidence={"not json": {1, 2}})
    with pytest.raises(sa.exc.StatementError):
        apply(warehouse, unstorable, expected_champion=versions[0])
    assert _champion(name) == versions[0]
    assert [r["outcome"] for r in ledger(warehouse, name)] == ["promoted", PENDING]


@contextlib.contextmanager
def _commit_after_the_move_fails(warehouse: sa.Engine, monkeypatch, *, kill: bool) -> Iterator[dict[str, int]]:
    """The first commit on ``warehouse`` after ``@champion`` moved fails (or the process is killed right before it).

    A kill is ``SystemExit`` (what a terminated task process raises): nothing after it runs, and the database
    rolls the open transaction back. Yields how many commits failed.
    """
    moved, failed = {"yes": False}, {"n": 0}
    set_alias = registry.set_alias

    def moving(model: str, alias: str, version: str) -> None:
        set_alias(model, alias, version)
        moved["yes"] = alias == registry.CHAMPION

    def commit(conn):
        if moved["yes"] and not failed["n"]:
            failed["n"] += 1
            if kill:
                raise SystemExit("worker killed between moving @champion and committing the ledger row")
            raise sa.exc.OperationalError("COMMIT", {}, Exception("disk I/O error at commit"))

    monkeypatch.setattr(registry, "set_alias", moving)
    sa.event.listen(warehouse, "commit", commit)
    try:
        yield failed
    finally:
        sa.event.remove(warehouse, "commit", commit)
        monkeypatch.setattr(registry, "set_alias", set_alias)


@pytest.mark.parametrize("kill", [False, True], ids=["failing-commit", "killed-between-the-writes"])
def test_a_promotion_cut_between_the_alias_and_the_ledger_is_reconciled_by_the_next_decision(
    warehouse, model, monkeypatch, kill
):
    name, versions = model
    apply(warehouse, _decide(name, versions[0], run="first"), expected_champion=None)
    failing = pytest.raises(SystemExit if kill else sa.exc.OperationalError)
    with _commit_after_the_move_fails(warehouse, monkeypatch, kill=kill) as failed, failing:
        apply(warehouse, _decide(name, versions[1], run="cut"), expected_champion=versions[0])
    assert failed["n"] == 1
    assert _champion(name) == versions[1]  # the alias moved: the commit point

    # The next decision (here a refusal: it moves nothing) reconciles first: the cut promotion is completed ...
    record(warehouse, _decide(name, versions[2], run="next"), "refused")
    rows = list(reversed(ledger(warehouse, name)))
    assert [(r["outcome"], r["dag_run_id"]) for r in rows if r["moved"]] == [("promoted", "first"), ("promoted", "cut")]
    # ... so rollback works again: it goes back to the champion before the interrupted promotion.
    assert champion_history(warehouse, name) == versions[:2]
    assert previous_champion(warehouse, name) == versions[0]
    rolled = apply(warehouse, _decide(name, versions[0], "rollback", run="back"), expected_champion=versions[1])
    assert rolled["outcome"] == "rolled_back" and _champion(name) == versions[0]

    from airloop.stages.promote.ledger import INTENT_KEY, PENDING, open_intents

    intent = next(r for r in rows if r["dag_run_id"] == "cut" and r["outcome"] == PENDING)
    completed = next(r for r in rows if r["dag_run_id"] == "cut" and r["moved"])
    assert completed["seq"] > intent["seq"] and completed["evidence"][INTENT_KEY] == intent["seq"]
    assert (completed["from_version"], completed["champion_after"]) == (versions[0], versions[1])
    assert "completed by reconciliation (next)" in completed["reason"]
    assert open_intents(ledger(warehouse, name)) == []


def test_an_intent_whose_run_ended_before_moving_is_closed_as_failed(warehouse, model, monkeypatch):
    from airloop.stages.promote.ledger import open_intents, reconcile

    name, versions = model
    apply(warehouse, _decide(name, versions[0], run="first"), expected_champion=None)

    def unreachable(*args):
        raise ConnectionError("MLflow went away before the alias moved")

    monkeypatch.setattr(registry, "set_alias", unreachable)
    with pytest.raises(ConnectionError):
        apply(warehouse, _decide(name, versions[1], run="gone"), expected_champion=versions[0])
    monkeypatch.undo()
    assert _champion(name) == versions[0]
    # Another decision leaves a young intent alone (its run may be waiting for the lock) ...
    record(warehouse, _decide(name, versions[2], run="other"), "refused")
    assert [r["dag_run_id"] for r in open_intents(ledger(warehouse, name))] == ["gone"]
    # ... the run's own record task (promote has ended) closes it, as does any decision once it is stale.
    assert reconcile(warehouse, name, "gone", ended_run="gone")
    closing = ledger(warehouse, name)[0]
    assert (closing["outcome"], closing["moved"], closing["dag_run_id"]) == ("failed", False, "gone")
    assert "nothing moved" in closing["reason"] and open_intents(ledger(warehouse, name)) == []
    assert _champion(name) == versions[0] and champion_history(warehouse, name) == [versions[0]]


@pytest.mark.parametrize(
    ("alias", "ledger_champion", "ended", "age_hours", "how"),
    [
        ("2", "1", False, 0, "completed"),  # the alias moved, the ledger did not
        ("1", "1", False, 0, None),  # not moved yet: its run may be waiting for the lock
        ("1", "1", True, 0, "failed"),  # not moved, and its run has ended
        ("1", "1", False, 2, "failed"),  # not moved, and stale
        ("2", "2", False, 0, None),  # the ledger already has 2 (another decision recorded it): leave it
        ("3", "1", True, 0, "failed"),  # moved elsewhere (outside airloop): this intent never happened
    ],
)
def test_resolution(alias, ledger_champion, ended, age_hours, how):
    from airloop.stages.promote.ledger import resolution

    now = datetime(2026, 12, 7, 12, tzinfo=UTC)
    intent = {"candidate_version": "2", "from_version": "1", "recorded_at": now - timedelta(hours=age_hours)}
    assert resolution(intent, alias=alias, ledger_champion=ledger_champion, run_ended=ended, now=now) == how


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
    assert apply(impatient, _decide(name, versions[0]), expected_champion=None)["seq"] == 3  # after its intent


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


def test_what_a_person_reads_is_the_decisions_and_only_the_open_intents() -> None:
    from airloop.stages.promote.ledger import INTENT_KEY, PENDING, shown

    rows = [  # newest first, as ledger() reads them
        {"seq": 5, "outcome": PENDING, "evidence": {}},  # open: no row names it
        {"seq": 4, "outcome": "promoted", "evidence": {INTENT_KEY: 3}},
        {"seq": 3, "outcome": PENDING, "evidence": {}},  # closed by #4
        {"seq": 2, "outcome": "refused", "evidence": {}},
        {"seq": 1, "outcome": PENDING, "evidence": None},  # open (a row from before intents had evidence)
    ]
    assert [r["seq"] for r in shown(rows)] == [5, 4, 2, 1]
    assert shown([]) == []

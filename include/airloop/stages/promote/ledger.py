"""Promotion: moving ``@champion``, one decision at a time, each one written to the append-only ledger.

Setting an MLflow alias simply overwrites it, so "compare, then promote" is only safe when serialised.
Every decision for a model therefore runs inside one warehouse transaction that first takes the model's
row in ``promotion_locks`` (a write lock on SQLite, a row lock on Postgres). Inside it the champion is read
again: if it is no longer the one the gate compared against, nothing moves and the conflict is recorded.
Otherwise ``@champion`` moves, ``@challenger`` is cleared, and the ledger row is inserted in the same
transaction; if the insert fails, the alias is put back.

The ledger is the history of champions: rollback restores the champion that preceded the current one
(promotions push a version, rollbacks pop one), so rolling back twice walks back two promotions.
"""

from __future__ import annotations

import contextlib
import logging
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Literal

import sqlalchemy as sa

from airloop.adapters import registry
from airloop.adapters.warehouse import ensure_schema, promotion_ledger, promotion_locks
from airloop.core.errors import ExpectedFailure

if TYPE_CHECKING:
    from sqlalchemy.engine import Connection, Engine

log = logging.getLogger(__name__)

Action = Literal["promote", "rollback"]


class PromotionConflict(ExpectedFailure, RuntimeError):
    """``@champion`` changed between the gate's comparison and the move; nothing moved."""


class NothingToRollBack(ExpectedFailure, RuntimeError):
    """The ledger holds no earlier champion to go back to."""


@dataclass(frozen=True)
class Decision:
    """What is being decided, by whom and why; the ledger row is built from it."""

    model: str
    action: Action
    candidate: str | None
    reason: str
    decided_by: str
    evidence: dict[str, Any] = field(default_factory=dict)
    dag_id: str | None = None
    dag_run_id: str | None = None
    mlflow_run_id: str | None = None


def _lock(conn: Connection, model: str, holder: str) -> None:
    """Take the model's promotion lock for the rest of this transaction."""
    values = {"holder": holder, "acquired_at": datetime.now(UTC)}
    updated = conn.execute(promotion_locks.update().where(promotion_locks.c.model == model).values(**values))
    if updated.rowcount == 0:
        conn.execute(promotion_locks.insert().values(model=model, **values))


def ledger_row(
    decision: Decision,
    *,
    seq: int,
    outcome: str,
    moved: bool,
    before: str | None,
    after: str | None,
    at: datetime,
) -> dict[str, Any]:
    """The ledger row of a decision: number ``seq`` of its model, what it did to ``@champion`` and why."""
    return {
        "model": decision.model,
        "seq": seq,
        "action": decision.action,
        "outcome": outcome,
        "moved": moved,
        "candidate_version": decision.candidate,
        "from_version": before,
        "champion_after": after,
        "decided_by": decision.decided_by,
        "reason": decision.reason,
        "evidence": decision.evidence,
        "dag_id": decision.dag_id,
        "dag_run_id": decision.dag_run_id,
        "mlflow_run_id": decision.mlflow_run_id,
        "recorded_at": at,
    }


def _append(
    conn: Connection, decision: Decision, *, outcome: str, moved: bool, before: str | None, after: str | None
) -> dict[str, Any]:
    seq = conn.execute(
        sa.select(sa.func.coalesce(sa.func.max(promotion_ledger.c.seq), 0)).where(
            promotion_ledger.c.model == decision.model
        )
    ).scalar_one()
    row = ledger_row(
        decision, seq=int(seq) + 1, outcome=outcome, moved=moved, before=before, after=after, at=datetime.now(UTC)
    )
    conn.execute(promotion_ledger.insert().values(**row))
    return row


def _ensure_lock_row(engine: Engine, model: str) -> None:
    ensure_schema(engine)
    with engine.begin() as conn:
        exists = conn.execute(sa.select(promotion_locks.c.model).where(promotion_locks.c.model == model)).first()
        if exists is None:
            with contextlib.suppress(sa.exc.IntegrityError):  # created concurrently
                conn.execute(promotion_locks.insert().values(model=model, holder=None, acquired_at=None))


def record(engine: Engine, decision: Decision, outcome: str) -> dict[str, Any]:
    """Append a decision that moves nothing (refused, dry run, rejected, timed out) to the ledger."""
    _ensure_lock_row(engine, decision.model)
    with engine.begin() as conn:
        _lock(conn, decision.model, decision.dag_run_id or decision.decided_by)
        champion = registry.version_for_alias(decision.model, registry.CHAMPION)
        row = _append(conn, decision, outcome=outcome, moved=False, before=champion, after=champion)
    log.info(
        "Ledger %s #%d: %s %s, %s; @champion stays %s.",
        decision.model,
        row["seq"],
        decision.action,
        decision.candidate,
        outcome,
        champion or "unset",
    )
    return row


def apply(engine: Engine, decision: Decision, expected_champion: str | None) -> dict[str, Any]:
    """Move ``@champion`` to ``decision.candidate`` if it is still ``expected_champion``; record either way.

    Raises :class:`PromotionConflict` (after recording it) when another decision moved the champion first.
    """
    if decision.candidate is None:
        raise ValueError("a promotion needs a candidate version")
    model, candidate = decision.model, str(decision.candidate)
    _ensure_lock_row(engine, model)
    with engine.begin() as conn:
        _lock(conn, model, decision.dag_run_id or decision.decided_by)
        current = registry.version_for_alias(model, registry.CHAMPION)
        if current != expected_champion:
            conflict = (
                f"@champion is now {current or 'unset'}, not {expected_champion or 'unset'} as when the gate "
                f"compared; another decision moved it first. Re-run the gate for version {candidate}."
            )
            _append(
                conn,
                replace(decision, reason=f"{decision.reason} | refused: {conflict}"),
                outcome="conflict",
                moved=False,
                before=current,
                after=current,
            )
        else:
            registry.set_alias(model, registry.CHAMPION, candidate)
            try:
                outcome = "rolled_back" if decision.action == "rollback" else "promoted"
                row = _append(conn, decision, outcome=outcome, moved=True, before=current, after=candidate)
            except Exception:
                if current is None:
                    registry.clear_alias(model, registry.CHAMPION)
                else:
                    registry.set_alias(model, registry.CHAMPION, current)
                raise
            conflict = None
    if conflict is not None:
        raise PromotionConflict(conflict)
    if registry.version_for_alias(model, registry.CHALLENGER) == candidate:
        registry.clear_alias(model, registry.CHALLENGER)
    log.info(
        "Ledger %s #%d: @champion %s -> %s (%s, decided by %s).",
        model,
        row["seq"],
        current or "unset",
        candidate,
        decision.action,
        decision.decided_by,
    )
    return row


def ledger(engine: Engine, model: str, limit: int = 50) -> list[dict[str, Any]]:
    """The newest ledger rows of a model, newest first."""
    ensure_schema(engine)
    query = (
        sa.select(promotion_ledger)
        .where(promotion_ledger.c.model == model)
        .order_by(promotion_ledger.c.seq.desc())
        .limit(limit)
    )
    with engine.connect() as conn:
        return [dict(r._mapping) for r in conn.execute(query)]


def champion_history(engine: Engine, model: str) -> list[str]:
    """The stack of champions the ledger describes: promotions push, rollbacks pop; the last is current."""
    ensure_schema(engine)
    query = (
        sa.select(promotion_ledger.c.action, promotion_ledger.c.champion_after)
        .where(promotion_ledger.c.model == model, promotion_ledger.c.moved.is_(True))
        .order_by(promotion_ledger.c.seq)
    )
    with engine.connect() as conn:
        return history_of([(action, after) for action, after in conn.execute(query)])


def history_of(moves: list[tuple[str, str]]) -> list[str]:
    """The champion stack after ``moves`` (action and champion after, in ledger order; only rows that moved).

    A promotion pushes its version; a rollback pops back to the version it restored (or, when the stack does
    not hold it, e.g. after the alias was moved outside airloop, starts again from it).
    """
    stack: list[str] = []
    for action, after in moves:
        if action == "rollback":
            while stack and stack[-1] != after:
                stack.pop()
            if not stack:
                stack.append(after)
        else:
            stack.append(after)
    return stack


def previous_champion(engine: Engine, model: str) -> str:
    """The version a rollback restores: the champion before the current one."""
    history = champion_history(engine, model)
    current = registry.version_for_alias(model, registry.CHAMPION)
    if current is not None and history and history[-1] != current:
        raise NothingToRollBack(
            f"@champion of {model} is {current}, but the ledger's last champion is {history[-1]}: the alias was "
            "moved outside airloop. Promote the intended version with the promote DAG (override) to resync."
        )
    if len(history) < 2:
        raise NothingToRollBack(
            f"{model} has no earlier champion in the ledger to roll back to (champion history: {history or 'empty'})."
        )
    return history[-2]

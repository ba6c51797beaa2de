"""Promotion: moving ``@champion``, one decision at a time, each one written to the append-only ledger.

Two stores change in a promotion: the MLflow alias and the warehouse ledger. No transaction spans both, so the
writes are ordered and the alias is the commit point:

1. **intent**: a ``pending`` ledger row (what is about to move, from which champion, who decided and why) is
   committed on its own, before anything moves;
2. **move**: inside one warehouse transaction that first takes the model's row in ``promotion_locks`` (a write
   lock on SQLite, a row lock on Postgres), the champion is read again: if it is no longer the one the gate
   compared against, nothing moves and a ``conflict`` row closes the intent. Otherwise ``@champion`` moves (the
   commit point: from here on the promotion has happened) and
3. **outcome**: the ``promoted`` / ``rolled_back`` row that closes the intent is inserted in that transaction.

A run that stops between 2 and 3 (a failed commit, a killed worker) leaves the intent open and the alias moved.
Every later decision on the model reconciles first, under the lock (:func:`reconcile`): an open intent whose
candidate ``@champion`` now is, while the ledger's last champion is the one the intent started from, is
completed (its outcome row is appended, saying it was completed by reconciliation); an intent whose run is known
to have ended (the same run's ``record`` task) or that is older than :data:`STALE_INTENT`, and whose candidate is
not ``@champion``, is closed as ``failed`` (nothing moved). Younger open intents are left alone: their run may be
waiting for the lock. Rows are only ever appended: an intent is closed by a later row naming it
(``evidence.intent_seq``), never updated.

The ledger is the history of champions: rollback restores the champion that preceded the current one
(promotions push a version, rollbacks pop one), so rolling back twice walks back two promotions.
"""

from __future__ import annotations

import contextlib
import logging
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any, Literal

import sqlalchemy as sa

from airloop.adapters import registry
from airloop.adapters.warehouse import ensure_schema, promotion_ledger, promotion_locks
from airloop.core.errors import ExpectedFailure

if TYPE_CHECKING:
    from sqlalchemy.engine import Connection, Engine

log = logging.getLogger(__name__)

Action = Literal["promote", "rollback"]

#: The outcome of an intent row: a decision about to move ``@champion``, closed by a later row.
PENDING = "pending"
#: An open intent older than this, whose candidate is not ``@champion``, is closed as failed by the next decision
#: (far longer than any promotion waits for the lock; younger ones may belong to a run still waiting).
STALE_INTENT = timedelta(hours=1)
#: The evidence key of a row that closes an intent: the intent's ``seq``.
INTENT_KEY = "intent_seq"


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
    holder = decision.dag_run_id or decision.decided_by
    with engine.begin() as conn:
        _lock(conn, decision.model, holder)
        _reconcile(conn, decision.model, holder)
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


def _closing(decision: Decision, intent: dict[str, Any], note: str = "") -> Decision:
    """The decision of the row that closes ``intent``: the intent's own, naming it in the evidence."""
    return replace(
        decision, reason=f"{decision.reason}{note}", evidence={**decision.evidence, INTENT_KEY: intent["seq"]}
    )


def _record_intent(engine: Engine, decision: Decision, expected_champion: str | None, holder: str) -> dict[str, Any]:
    """Commit the ``pending`` intent row of ``decision`` (under the model's lock: concurrent intents must not take
    the same seq)."""
    _ensure_lock_row(engine, decision.model)
    with engine.begin() as conn:
        _lock(conn, decision.model, holder)
        intent = _append(
            conn, decision, outcome=PENDING, moved=False, before=expected_champion, after=expected_champion
        )
    log.info(
        "Ledger %s #%d: intent to move @champion to %s (pending).", decision.model, intent["seq"], decision.candidate
    )
    return intent


def _move_and_record(
    conn: Connection, decision: Decision, intent: dict[str, Any], current: str | None
) -> dict[str, Any]:
    """Move ``@champion`` (the commit point) and write the outcome row closing ``intent``, in ``conn``'s
    transaction. If the row cannot be written the alias stays moved and the intent open, for reconciliation."""
    model, candidate = decision.model, str(decision.candidate)
    registry.set_alias(model, registry.CHAMPION, candidate)  # the commit point
    outcome = "rolled_back" if decision.action == "rollback" else "promoted"
    try:
        return _append(conn, _closing(decision, intent), outcome=outcome, moved=True, before=current, after=candidate)
    except Exception as exc:
        log.error(
            "@champion of %s moved to %s, but its ledger row could not be written (%s): intent #%d stays "
            "open, and the next promote or rollback of %s (or this run's record task) completes it.",
            model,
            candidate,
            type(exc).__name__,
            intent["seq"],
            model,
        )
        raise


def apply(engine: Engine, decision: Decision, expected_champion: str | None) -> dict[str, Any]:
    """Move ``@champion`` to ``decision.candidate`` if it is still ``expected_champion``; record either way.

    The intent is committed first; then, under the model's lock, the alias moves and the outcome row is written
    (see the module's docstring). Raises :class:`PromotionConflict` (after recording it) when another decision
    moved the champion first. A failure after the alias moved does not move it back: the alias is the commit
    point, and the open intent is completed by the next decision (or this run's ``record`` task).
    """
    if decision.candidate is None:
        raise ValueError("a promotion needs a candidate version")
    model, candidate = decision.model, str(decision.candidate)
    holder = decision.dag_run_id or decision.decided_by
    intent = _record_intent(engine, decision, expected_champion, holder)
    conflict: str | None = None
    with engine.begin() as conn:
        _lock(conn, model, holder)
        closed = _reconcile(conn, model, holder, keep=intent["seq"])
        current = registry.version_for_alias(model, registry.CHAMPION)
        if intent["seq"] in closed:  # only when this run was presumed gone: it was not; re-judge
            conflict = f"intent #{intent['seq']} was closed meanwhile ({closed[intent['seq']]}); re-run the gate."
        elif current != expected_champion:
            conflict = (
                f"@champion is now {current or 'unset'}, not {expected_champion or 'unset'} as when the gate "
                f"compared; another decision moved it first. Re-run the gate for version {candidate}."
            )
            _append(
                conn,
                _closing(decision, intent, f" | refused: {conflict}"),
                outcome="conflict",
                moved=False,
                before=current,
                after=current,
            )
        else:
            row = _move_and_record(conn, decision, intent, current)
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


def open_intents(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The intents among ``rows`` (one model's ledger, any order) that no later row closes, oldest first."""
    closed = {r["evidence"].get(INTENT_KEY) for r in rows if isinstance(r.get("evidence"), dict)}
    return sorted((r for r in rows if r["outcome"] == PENDING and r["seq"] not in closed), key=lambda r: r["seq"])


def shown(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """What a person reads of ``rows`` (one model's ledger, in their order): every decision, and an intent only
    while it is open (a closed intent repeats what the row closing it says)."""
    still_open = {r["seq"] for r in open_intents(rows)}
    return [r for r in rows if r["outcome"] != PENDING or r["seq"] in still_open]


def resolution(
    intent: dict[str, Any],
    *,
    alias: str | None,
    ledger_champion: str | None,
    run_ended: bool,
    now: datetime,
) -> str | None:
    """What to do with an open intent: ``"completed"`` (its move happened), ``"failed"`` (it never will), or None.

    Completed: ``@champion`` is the intent's candidate while the ledger's last champion is still the one the
    intent started from (its run moved the alias and stopped before writing the outcome). Failed: the candidate
    is not ``@champion`` and the intent's run has ended (``run_ended``) or the intent is older than
    :data:`STALE_INTENT`. Otherwise None: its run may still be on its way.
    """
    candidate = intent["candidate_version"]
    if alias == candidate and ledger_champion == intent["from_version"] and ledger_champion != candidate:
        return "completed"
    recorded = intent["recorded_at"]
    if recorded.tzinfo is None:
        recorded = recorded.replace(tzinfo=UTC)
    if alias != candidate and (run_ended or now - recorded > STALE_INTENT):
        return "failed"
    return None


def _rows(conn: Connection, model: str) -> list[dict[str, Any]]:
    query = sa.select(promotion_ledger).where(promotion_ledger.c.model == model).order_by(promotion_ledger.c.seq)
    return [dict(r._mapping) for r in conn.execute(query)]


def _reconcile(
    conn: Connection, model: str, holder: str, *, keep: int | None = None, ended_run: str | None = None
) -> dict[int, str]:
    """Close the model's half-done intents (inside the locked transaction); ``{intent seq: how}`` of those closed.

    ``keep``: this decision's own intent, never judged here. ``ended_run``: an Airflow run known to have ended
    (the caller is its ``record`` task), whose intents are closed whatever their age.
    """
    rows = _rows(conn, model)
    intents = [i for i in open_intents(rows) if i["seq"] != keep]
    if not intents:
        return {}
    alias = registry.version_for_alias(model, registry.CHAMPION)
    moves = [(r["action"], r["champion_after"]) for r in rows if r["moved"]]
    history = history_of(moves)
    closed: dict[int, str] = {}
    now = datetime.now(UTC)
    for intent in intents:
        ledger_champion = history[-1] if history else None
        run_ended = ended_run is not None and intent["dag_run_id"] == ended_run
        how = resolution(intent, alias=alias, ledger_champion=ledger_champion, run_ended=run_ended, now=now)
        if how is None:
            continue
        decision = Decision(
            model=model,
            action="rollback" if intent["action"] == "rollback" else "promote",
            candidate=intent["candidate_version"],
            reason=intent["reason"],
            decided_by=intent["decided_by"],
            evidence=dict(intent["evidence"] or {}),
            dag_id=intent["dag_id"],
            dag_run_id=intent["dag_run_id"],
            mlflow_run_id=intent["mlflow_run_id"],
        )
        if how == "completed":
            note = (
                f" | completed by reconciliation ({holder}): @champion was found at {alias}, but the run that moved "
                f"it stopped before writing this row (intent #{intent['seq']})"
            )
            outcome = "rolled_back" if decision.action == "rollback" else "promoted"
            row = _append(
                conn, _closing(decision, intent, note), outcome=outcome, moved=True, before=ledger_champion, after=alias
            )
            moves.append((decision.action, str(alias)))
            history = history_of(moves)
        else:
            note = (
                f" | closed by reconciliation ({holder}): the run stopped before moving @champion, which is "
                f"{alias or 'unset'}; nothing moved (intent #{intent['seq']})"
            )
            row = _append(
                conn, _closing(decision, intent, note), outcome="failed", moved=False, before=alias, after=alias
            )
        closed[intent["seq"]] = row["outcome"]
        log.warning("Ledger %s #%d: intent #%d %s%s.", model, row["seq"], intent["seq"], how, note)
    return closed


def reconcile(engine: Engine, model: str, holder: str, *, ended_run: str | None = None) -> dict[int, str]:
    """Close the model's half-done promotions under its lock (see the module's docstring); what was closed."""
    _ensure_lock_row(engine, model)
    with engine.begin() as conn:
        _lock(conn, model, holder)
        return _reconcile(conn, model, holder, ended_run=ended_run)


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

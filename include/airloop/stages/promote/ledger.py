"""Promotion: moving ``@champion``, one decision at a time, each one written to the append-only ledger.

Two stores change in a promotion: the MLflow alias and the warehouse ledger. No transaction spans both, so the
writes are ordered and the alias is the commit point:

1. **intent**: a ``pending`` ledger row (what is about to move, from which champion, who decided and why) is
   committed on its own, before anything moves;
2. **move**: inside one warehouse transaction that first takes the model's row in ``promotion_locks`` (a write
   lock on SQLite, a row lock on Postgres), the ledger's champion is read again: if it is no longer the one the
   gate compared against, nothing moves and a ``conflict`` row closes the intent. Otherwise ``@champion`` moves (the
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

The ledger, not the alias, says which version serves (:func:`ledger_champion`, :func:`served_champion`): an
``@champion`` moved outside airloop (MLflow UI or API) is noticed by the next scoring or promotion
(:func:`check_alias`), recorded once as an ``observe`` / ``out_of_band`` row, and never adopted. "Who was champion
at T, and why" is :func:`champion_at`; from a prediction row, :func:`champion_of_prediction`.
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
from airloop.core.contracts import PinnedChampion
from airloop.core.errors import ExpectedFailure, NoChampion

if TYPE_CHECKING:
    from sqlalchemy.engine import Connection, Engine

log = logging.getLogger(__name__)

Action = Literal["promote", "rollback", "observe"]

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
        champion = ledger_champion(_rows(conn, decision.model))  # what serves; an alias moved outside is not it
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
        # The ledger's champion, read under the lock: the one that serves (an alias moved outside airloop is not).
        current = ledger_champion(_rows(conn, model))
        if intent["seq"] in closed:  # only when this run was presumed gone: it was not; re-judge
            conflict = f"intent #{intent['seq']} was closed meanwhile ({closed[intent['seq']]}); re-run the gate."
        elif current != expected_champion:
            conflict = (
                f"@champion is now {current or 'unset'}, not {expected_champion or 'unset'} as when the "
                f"gate compared; another decision moved it first. Re-run the gate for version {candidate}."
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


# --- who was champion when, and why ---------------------------------------------------------------------------

#: The action and outcome of a row that records ``@champion`` found moved outside airloop (nothing moved).
OBSERVE = "observe"
OUT_OF_BAND = "out_of_band"
#: Who "decided" an out-of-band move, as far as airloop can tell.
OUTSIDE_AIRLOOP = "MLflow, outside airloop"


def _utc(value: datetime) -> datetime:
    """A stored time as aware UTC (SQLite gives naive values back)."""
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def ledger_champion(rows: list[dict[str, Any]]) -> str | None:
    """The champion the ledger says serves, from ``rows`` (one model's ledger, in seq order): the
    ``champion_after`` of the last row that moved ``@champion``. Refusals, intents and out-of-band observations
    never change it."""
    moves = [(r["action"], r["champion_after"]) for r in rows if r["moved"]]
    history = history_of(moves)
    return history[-1] if history else None


@dataclass(frozen=True)
class ChampionAt:
    """Which version served a model at a moment, and the ledger decision that made it champion.

    ``version`` is None before the first promotion (``first_promotion`` then says when it came, if it did).
    ``out_of_band`` lists the moves of ``@champion`` outside airloop noticed while this version served (up to
    ``at``): none of them was adopted.
    """

    model: str
    at: datetime
    version: str | None
    since: datetime | None = None
    seq: int | None = None
    action: str | None = None
    outcome: str | None = None
    from_version: str | None = None
    decided_by: str | None = None
    reason: str | None = None
    evidence: dict[str, Any] = field(default_factory=dict)
    dag_id: str | None = None
    dag_run_id: str | None = None
    first_promotion: datetime | None = None
    out_of_band: list[dict[str, Any]] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready: times in ISO 8601 (UTC)."""

        def iso(value: datetime | None) -> str | None:
            return None if value is None else value.isoformat()

        return {
            "model": self.model,
            "at": iso(self.at),
            "champion": self.version,
            "since": iso(self.since),
            "seq": self.seq,
            "action": self.action,
            "outcome": self.outcome,
            "from_version": self.from_version,
            "decided_by": self.decided_by,
            "reason": self.reason,
            "evidence": self.evidence,
            "dag_id": self.dag_id,
            "dag_run_id": self.dag_run_id,
            "first_promotion": iso(self.first_promotion),
            "out_of_band": self.out_of_band,
        }

    def text(self) -> str:
        """What a person reads: the version, since when, who moved it and why."""
        at = f"{self.at:%Y-%m-%d %H:%M:%S} UTC"
        if self.version is None:
            first = (
                f"first promotion at {self.first_promotion:%Y-%m-%d %H:%M:%S} UTC"
                if self.first_promotion
                else "no promotion yet"
            )
            return f"{self.model}: no champion at {at} ({first})."
        assert self.since is not None
        lines = [
            f"{self.model} at {at}: v{self.version} was champion",
            f"  since:      {self.since:%Y-%m-%d %H:%M:%S} UTC (ledger #{self.seq}: {self.action}, {self.outcome}, "
            f"from {'v' + self.from_version if self.from_version else 'unset'})",
            f"  moved by:   {self.decided_by}",
            f"  reason:     {self.reason}",
        ]
        if self.dag_id or self.dag_run_id:
            lines.append(f"  run:        {self.dag_id or '?'} / {self.dag_run_id or '?'}")
        for key in ("verdict", "holdout", "approval"):
            value = self.evidence.get(key)
            if value:
                shown_value = value.get("summary", value) if isinstance(value, dict) and key == "verdict" else value
                lines.append(f"  {key + ':':<11} {shown_value}")
        for seen in self.out_of_band:
            lines.append(
                f"  note:       @champion was found at {seen['registry'] or 'unset'} in MLflow (moved outside "
                f"airloop), noticed {seen['noticed_at']} (ledger #{seen['seq']}); not adopted: v{self.version} "
                "kept serving"
            )
        return "\n".join(lines)


def champion_at(engine: Engine, model: str, at: datetime) -> ChampionAt:
    """Which version of ``model`` served at ``at`` (naive = UTC), since when, who moved it and why.

    Only rows that moved ``@champion`` count (promotions, rollbacks, reconciled completions): open or failed
    intents, refusals and out-of-band observations never made a version champion. "Since" is when the ledger
    recorded the move (the alias moved moments before, inside the same locked transaction; a move completed by
    reconciliation says so in its reason).
    """
    ensure_schema(engine)
    at = _utc(at)
    with engine.connect() as conn:
        rows = _rows(conn, model)
    moves = [r for r in rows if r["moved"]]
    before = [r for r in moves if _utc(r["recorded_at"]) <= at]
    if not before:
        first = _utc(moves[0]["recorded_at"]) if moves else None
        return ChampionAt(model=model, at=at, version=None, first_promotion=first)
    row = before[-1]
    version = ledger_champion(before)
    observed = [
        {
            "seq": r["seq"],
            "registry": (r["evidence"] or {}).get("registry_champion"),
            "noticed_at": _utc(r["recorded_at"]).isoformat(),
            "noticed_by": (r["evidence"] or {}).get("noticed_by"),
        }
        for r in rows
        if r["outcome"] == OUT_OF_BAND and row["seq"] < r["seq"] and _utc(r["recorded_at"]) <= at
    ]
    return ChampionAt(
        model=model,
        at=at,
        version=version,
        since=_utc(row["recorded_at"]),
        seq=row["seq"],
        action=row["action"],
        outcome=row["outcome"],
        from_version=row["from_version"],
        decided_by=row["decided_by"],
        reason=row["reason"],
        evidence=dict(row["evidence"] or {}),
        dag_id=row["dag_id"],
        dag_run_id=row["dag_run_id"],
        first_promotion=_utc(moves[0]["recorded_at"]),
        out_of_band=observed,
    )


def prediction_decision_query(model: str, partition: str, row_key: str) -> sa.Select[Any]:
    """The SQL from one prediction row to the ledger decision that made its version champion.

    ``predictions`` -> its ``model_version`` -> the newest ``promotion_ledger`` row of the same model that moved
    ``@champion`` to that version. Predictions do not store when they were scored, so when a version held the title
    more than once (promoted, replaced, rolled back to) this is its newest tenure. docs/lineage.md shows it as SQL.
    One row: ``model_version``, ``ts``, ``dag_run_id`` of the prediction and ``seq`` of the decision (None when
    no decision names the version, e.g. predictions older than the ledger).
    """
    from airloop.adapters.warehouse import predictions

    p, ledger_rows = predictions.alias("p"), promotion_ledger.alias("l")
    decision = (
        sa.select(sa.func.max(ledger_rows.c.seq))
        .where(
            ledger_rows.c.model == p.c.model,
            ledger_rows.c.champion_after == p.c.model_version,
            ledger_rows.c.moved.is_(True),
        )
        .scalar_subquery()
    )
    return (
        sa.select(
            p.c.model_version, p.c.ts, p.c.dag_id, p.c.dag_run_id, p.c.mlflow_run_id, decision.label("decision_seq")
        )
        .where(p.c.model == model, p.c.partition == partition, p.c.row_key == row_key)
        .limit(1)
    )


class NoSuchPrediction(ExpectedFailure, LookupError):
    """No prediction row with that partition and key."""


def champion_of_prediction(
    engine: Engine, model: str, partition: str, row_key: str
) -> tuple[dict[str, Any], ChampionAt]:
    """The prediction row (version, time, run) and :class:`ChampionAt` of the decision that made its version
    champion (:func:`prediction_decision_query`)."""
    ensure_schema(engine)
    with engine.connect() as conn:
        found = conn.execute(prediction_decision_query(model, partition, row_key)).first()
        if found is None:
            raise NoSuchPrediction(
                f"{model} has no prediction in partition {partition!r} with row key {row_key!r}: check both in the "
                "predictions table (the key is the canonical text of source.keys, as stored in row_key)."
            )
        prediction = dict(found._mapping)
        seq = prediction["decision_seq"]
        recorded = None
        if seq is not None:
            recorded = conn.execute(
                sa.select(promotion_ledger.c.recorded_at).where(
                    promotion_ledger.c.model == model, promotion_ledger.c.seq == seq
                )
            ).scalar_one()
    if recorded is None:
        answer = ChampionAt(model=model, at=datetime.now(UTC), version=None)
    else:
        answer = champion_at(engine, model, _utc(recorded))
    return prediction, answer


# --- @champion moved outside airloop ------------------------------------------------------------------------


@dataclass(frozen=True)
class AliasCheck:
    """The ledger's champion and MLflow's ``@champion`` of a model, compared; ``recorded`` is the ``out_of_band``
    row appended by this check (None when they agree, or when this move was already recorded)."""

    model: str
    ledger_champion: str | None
    registry_champion: str | None
    recorded: dict[str, Any] | None = None

    @property
    def out_of_band(self) -> bool:
        return self.ledger_champion != self.registry_champion


def _observed_already(rows: list[dict[str, Any]], alias: str | None) -> bool:
    """Whether an ``out_of_band`` row after the ledger's last move already records ``@champion`` at ``alias``."""
    last_move = max((r["seq"] for r in rows if r["moved"]), default=0)
    seen = [r for r in rows if r["outcome"] == OUT_OF_BAND and r["seq"] > last_move]
    return bool(seen) and (seen[-1]["evidence"] or {}).get("registry_champion") == alias


def check_alias(
    engine: Engine, model: str, noticed_by: str, *, dag_id: str | None = None, dag_run_id: str | None = None
) -> AliasCheck:
    """Compare MLflow's ``@champion`` with the ledger's champion; record a move made outside airloop, once.

    Called where scoring pins its version and where a promotion gates (``noticed_by`` says which). When they
    differ, the model's lock is taken, a half-done airloop promotion is completed first (:func:`reconcile`: that
    is not a move outside airloop), and if they still differ an ``observe`` / ``out_of_band`` row is appended
    (``decided_by`` :data:`OUTSIDE_AIRLOOP`, both versions in the evidence), unless the last such row since the
    ledger's last move already names the same alias value. Nothing is adopted: the ledger's champion stays the
    one that serves until a person promotes through airloop.
    """
    ensure_schema(engine)
    alias = registry.version_for_alias(model, registry.CHAMPION)
    with engine.connect() as conn:
        champion = ledger_champion(_rows(conn, model))
    if champion == alias:
        return AliasCheck(model, champion, alias)
    holder = dag_run_id or noticed_by
    _ensure_lock_row(engine, model)
    with engine.begin() as conn:
        _lock(conn, model, holder)
        _reconcile(conn, model, holder)
        rows = _rows(conn, model)
        champion = ledger_champion(rows)
        alias = registry.version_for_alias(model, registry.CHAMPION)
        if champion == alias:
            return AliasCheck(model, champion, alias)
        if _observed_already(rows, alias):
            log.warning(
                "@champion of %s is %s in MLflow but the ledger's champion is %s (moved outside airloop, already "
                "in the ledger): not adopted.",
                model,
                f"v{alias}" if alias else "unset",
                f"v{champion}" if champion else "none",
            )
            return AliasCheck(model, champion, alias)
        decision = _out_of_band_decision(model, alias, champion, noticed_by, dag_id, dag_run_id)
        row = _append(conn, decision, outcome=OUT_OF_BAND, moved=False, before=champion, after=champion)
    log.warning("Ledger %s #%d: %s", model, row["seq"], decision.reason)
    return AliasCheck(model, champion, alias, recorded=row)


def _out_of_band_decision(
    model: str,
    alias: str | None,
    champion: str | None,
    noticed_by: str,
    dag_id: str | None,
    dag_run_id: str | None,
) -> Decision:
    """The ``observe`` decision recording an ``@champion`` found moved outside airloop (nothing adopted)."""
    return Decision(
        model=model,
        action="observe",
        candidate=alias,
        reason=(
            f"@champion was found at {'v' + alias if alias else 'unset'} in MLflow while the ledger's champion is "
            f"{'v' + champion if champion else 'none'}: moved outside airloop (MLflow UI or API), noticed by "
            f"{noticed_by}. Not adopted: {'v' + champion if champion else 'nothing'} serves until a person "
            "promotes through airloop."
        ),
        decided_by=OUTSIDE_AIRLOOP,
        evidence={
            "registry_champion": alias,
            "ledger_champion": champion,
            "noticed_by": noticed_by,
            "noticed_at": datetime.now(UTC).isoformat(),
        },
        dag_id=dag_id,
        dag_run_id=dag_run_id,
    )


def served_champion(
    engine: Engine, model: str, noticed_by: str, *, dag_id: str | None = None, dag_run_id: str | None = None
) -> tuple[PinnedChampion, AliasCheck]:
    """The version that serves: the ledger's champion, checked against ``@champion`` (:func:`check_alias`).

    Raises :class:`NoChampion` when the ledger has none (even if ``@champion`` was set outside airloop).
    """
    check = check_alias(engine, model, noticed_by, dag_id=dag_id, dag_run_id=dag_run_id)
    version = check.ledger_champion
    if version is None:
        if check.registry_champion is None:
            raise NoChampion(
                f"{model} has no @champion yet, so nothing was scored. Train and promote one ({model}_train); "
                f"then re-score the range from {model}_score with params start and end."
            )
        raise NoChampion(
            f"@champion of {model} is v{check.registry_champion} in MLflow, set outside airloop, and the promotion "
            f"ledger has no champion: not adopted, so nothing was scored. Promote it through {model}_promote "
            f'(e.g. {{"version": "{check.registry_champion}", "reason": "..."}}; the gate judges it, or override).'
        )
    run_id = str(registry.client().get_model_version(model, version).run_id)
    if check.out_of_band:
        log.warning(
            "@champion of %s is %s in MLflow, moved outside airloop: not adopted. Serving the ledger's champion "
            "v%s by version number (MLflow run %s), pinned for this whole run; promote through %s_promote to "
            "change it.",
            model,
            f"v{check.registry_champion}" if check.registry_champion else "unset",
            version,
            run_id,
            model,
        )
    else:
        log.info(
            "@champion of %s is v%s (MLflow run %s), as the ledger says: pinned for this whole run.",
            model,
            version,
            run_id,
        )
    return PinnedChampion(version=version, run_id=run_id), check

"""The warehouse side of shadow scoring: the ledger's decisions on a challenger, and its labelled shadow rows.

A shadow row is labelled when ``labels`` holds a label for its (partition, row key): the current one is the
highest revision. The live comparison reads, for each such row, the challenger's shadow prediction and the
prediction that was served (``predictions``, whatever version served it) beside that label.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import sqlalchemy as sa

from airloop.adapters.warehouse import ensure_schema, labels, predictions, promotion_ledger, shadow_predictions

if TYPE_CHECKING:
    from sqlalchemy.engine import Engine

#: The per-row outputs read from both tables (a regression's value, a classifier's class and probabilities).
OUTPUTS = ("prediction", "predicted_class", "probability", "probabilities")


def decisions_on(engine: Engine, model: str, version: str) -> list[dict[str, Any]]:
    """The ledger's decisions (intents excluded) naming ``version`` as candidate, newest first."""
    ensure_schema(engine)
    t = promotion_ledger.c
    query = (
        sa.select(t.seq, t.outcome, t.dag_run_id, t.moved)
        .where(t.model == model, t.candidate_version == str(version), t.outcome != "pending")
        .order_by(t.seq.desc())
    )
    with engine.connect() as conn:
        return [dict(r._mapping) for r in conn.execute(query)]


def _current_labels() -> Any:
    """Each (model, partition, row key)'s current label: the row of its highest revision."""
    newest = (
        sa.select(labels.c.model, labels.c.partition, labels.c.row_key, sa.func.max(labels.c.revision).label("rev"))
        .group_by(labels.c.model, labels.c.partition, labels.c.row_key)
        .subquery("newest")
    )
    return (
        sa.select(labels.c.model, labels.c.partition, labels.c.row_key, labels.c.label)
        .join(
            newest,
            sa.and_(
                labels.c.model == newest.c.model,
                labels.c.partition == newest.c.partition,
                labels.c.row_key == newest.c.row_key,
                labels.c.revision == newest.c.rev,
            ),
        )
        .subquery("current")
    )


def _joined(model: str, version: str) -> tuple[Any, Any, Any, list[Any]]:
    """The shadow rows of ``version`` joined with their served prediction and current label (inner joins)."""
    s, p = shadow_predictions.alias("s"), predictions.alias("p")
    current = _current_labels()
    joined = s.join(
        p, sa.and_(p.c.model == s.c.model, p.c.partition == s.c.partition, p.c.row_key == s.c.row_key)
    ).join(
        current,
        sa.and_(current.c.model == s.c.model, current.c.partition == s.c.partition, current.c.row_key == s.c.row_key),
    )
    where = [s.c.model == model, s.c.model_version == str(version)]
    return s, p, current, [joined, *where]


def labelled_intervals(engine: Engine, model: str, version: str) -> dict[str, int]:
    """The partitions shadow-scored by ``version`` whose rows have labels (and a served prediction): partition ->
    labelled rows, oldest partition first."""
    ensure_schema(engine)
    s, _, _, (joined, *where) = _joined(model, version)
    query = (
        sa.select(s.c.partition, sa.func.count())
        .select_from(joined)
        .where(*where)
        .group_by(s.c.partition)
        .order_by(s.c.partition)
    )
    with engine.connect() as conn:
        return {str(partition): int(n) for partition, n in conn.execute(query)}


def live_rows(engine: Engine, model: str, version: str) -> list[dict[str, Any]]:
    """Every labelled shadow row of ``version``: partition, row key, label, the shadow outputs (``shadow_*``), the
    served outputs (``served_*``) and the served version, ordered by partition and row key."""
    ensure_schema(engine)
    s, p, current, (joined, *where) = _joined(model, version)
    columns = [
        s.c.partition,
        s.c.row_key,
        current.c.label,
        p.c.model_version.label("served_version"),
        *(s.c[name].label(f"shadow_{name}") for name in OUTPUTS),
        *(p.c[name].label(f"served_{name}") for name in OUTPUTS),
    ]
    query = sa.select(*columns).select_from(joined).where(*where).order_by(s.c.partition, s.c.row_key)
    with engine.connect() as conn:
        return [dict(r._mapping) for r in conn.execute(query)]


def shadow_rows(engine: Engine, model: str, partition: str | None = None) -> list[dict[str, Any]]:
    """The shadow rows of a model (one partition's, if given), by partition and row key."""
    ensure_schema(engine)
    t = shadow_predictions.c
    query = sa.select(shadow_predictions).where(t.model == model)
    if partition is not None:
        query = query.where(t.partition == partition)
    with engine.connect() as conn:
        return [dict(r._mapping) for r in conn.execute(query.order_by(t.partition, t.row_key))]

"""The warehouse: airloop's tables, defined once with SQLAlchemy Core (SQLite by default, Postgres at scale).

Tables are created on first use (``ensure_schema``); each writer keys its rows to the model and the data
interval, so re-running an interval replaces its rows instead of adding more.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa

if TYPE_CHECKING:
    from sqlalchemy.engine import Engine

metadata = sa.MetaData()

validation_results = sa.Table(
    "validation_results",
    metadata,
    sa.Column("model", sa.String(64), primary_key=True),
    sa.Column("partition", sa.String(32), primary_key=True),
    sa.Column("interval_start", sa.DateTime(timezone=True), nullable=False),
    sa.Column("interval_end", sa.DateTime(timezone=True), nullable=False),
    sa.Column("success", sa.Boolean, nullable=False),
    sa.Column("rows", sa.Integer, nullable=False),
    sa.Column("evaluated_expectations", sa.Integer, nullable=False),
    sa.Column("failed_expectations", sa.Integer, nullable=False),
    sa.Column("content_digest", sa.String(64), nullable=False),
    sa.Column("suite_digests", sa.JSON, nullable=False),
    sa.Column("failures", sa.JSON, nullable=False),
    sa.Column("report_path", sa.Text, nullable=False),
    sa.Column("docs_path", sa.Text),
    sa.Column("dag_run_id", sa.String(250)),
    sa.Column("validated_at", sa.DateTime(timezone=True), nullable=False),
)


predictions = sa.Table(
    "predictions",
    metadata,
    sa.Column("model", sa.String(64), nullable=False),
    sa.Column("partition", sa.String(32), nullable=False),
    sa.Column("interval_start", sa.DateTime(timezone=True), nullable=False),
    sa.Column("interval_end", sa.DateTime(timezone=True), nullable=False),
    sa.Column("ts", sa.DateTime(timezone=True), nullable=False, comment="the scored row's time column"),
    sa.Column("prediction", sa.Float, nullable=False),
    sa.Column("model_version", sa.String(32), nullable=False),
    sa.Column("mlflow_run_id", sa.String(64), nullable=False),
    sa.Column("input_digest", sa.String(64), nullable=False, comment="content digest of the validated partition"),
    sa.Column("dag_id", sa.String(250)),
    sa.Column("dag_run_id", sa.String(250)),
    sa.Index("ix_predictions_model_partition", "model", "partition"),
    sa.Index("ix_predictions_model_ts", "model", "ts"),
)

promotion_ledger = sa.Table(
    "promotion_ledger",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("model", sa.String(64), nullable=False),
    sa.Column("seq", sa.Integer, nullable=False, comment="1, 2, 3, ... per model, in decision order"),
    sa.Column("action", sa.String(16), nullable=False, comment="promote or rollback"),
    sa.Column("outcome", sa.String(32), nullable=False, comment="promoted, rolled_back, refused, dry_run, ..."),
    sa.Column("moved", sa.Boolean, nullable=False, comment="whether @champion moved"),
    sa.Column("candidate_version", sa.String(32)),
    sa.Column("from_version", sa.String(32), comment="@champion before the decision"),
    sa.Column("champion_after", sa.String(32), comment="@champion after the decision"),
    sa.Column("decided_by", sa.String(250), nullable=False),
    sa.Column("reason", sa.Text, nullable=False),
    sa.Column("evidence", sa.JSON, nullable=False),
    sa.Column("dag_id", sa.String(250)),
    sa.Column("dag_run_id", sa.String(250)),
    sa.Column("mlflow_run_id", sa.String(64)),
    sa.Column("recorded_at", sa.DateTime(timezone=True), nullable=False),
    sa.UniqueConstraint("model", "seq", name="uq_promotion_ledger_model_seq"),
)

#: One row per model; a promotion updates its row first thing in its transaction, which serialises
#: promotions of a model on SQLite (database write lock) and on Postgres (row lock) alike.
promotion_locks = sa.Table(
    "promotion_locks",
    metadata,
    sa.Column("model", sa.String(64), primary_key=True),
    sa.Column("holder", sa.String(250)),
    sa.Column("acquired_at", sa.DateTime(timezone=True)),
)

# The ledger is append-only in the database itself, not only by convention: updates and deletes abort.
for _op in ("UPDATE", "DELETE"):
    sa.event.listen(
        promotion_ledger,
        "after_create",
        sa.DDL(
            f"CREATE TRIGGER promotion_ledger_no_{_op.lower()} BEFORE {_op} ON promotion_ledger "
            "BEGIN SELECT RAISE(ABORT, 'promotion_ledger is append-only'); END"
        ).execute_if(dialect="sqlite"),
    )
sa.event.listen(
    promotion_ledger,
    "after_create",
    sa.DDL(
        "CREATE OR REPLACE FUNCTION promotion_ledger_append_only() RETURNS trigger AS $$ "
        "BEGIN RAISE EXCEPTION 'promotion_ledger is append-only'; END; $$ LANGUAGE plpgsql; "
        "CREATE TRIGGER promotion_ledger_append_only BEFORE UPDATE OR DELETE ON promotion_ledger "
        "FOR EACH ROW EXECUTE FUNCTION promotion_ledger_append_only()"
    ).execute_if(dialect="postgresql"),
)


def ensure_schema(engine: Engine) -> None:
    """Create missing tables (idempotent; never alters or drops)."""
    metadata.create_all(engine, checkfirst=True)


def upsert_validation_result(engine: Engine, row: dict[str, Any]) -> None:
    """Record the latest validation of one (model, partition), replacing an earlier one in one transaction."""
    row = {**row, "validated_at": row.get("validated_at") or datetime.now(UTC)}
    with engine.begin() as conn:
        conn.execute(
            validation_results.delete().where(
                validation_results.c.model == row["model"], validation_results.c.partition == row["partition"]
            )
        )
        conn.execute(validation_results.insert().values(**row))


def recent_validations(engine: Engine, model: str, limit: int = 20) -> list[dict[str, Any]]:
    """The latest validation rows of a model, newest interval first."""
    query = (
        sa.select(validation_results)
        .where(validation_results.c.model == model)
        .order_by(validation_results.c.interval_start.desc())
        .limit(limit)
    )
    with engine.connect() as conn:
        return [dict(r._mapping) for r in conn.execute(query)]

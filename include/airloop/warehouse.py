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

"""Predictions keyed by row, with classifier outputs.

``predictions`` gains ``row_key`` (the row's key values as canonical text, see ``airloop.stages.ingest.keys``),
``predicted_class``, ``probability`` and ``probabilities``; ``prediction`` becomes nullable (a classifier's rows
have none). Rows already there were scored when the time column was the only key, so their ``row_key`` is filled
from ``ts`` in SQL, in the canonical form (ISO 8601 UTC with ``Z``, to the second, or to the microsecond when the
time has a fraction), on SQLite and Postgres; then ``row_key`` becomes NOT NULL. The index on (model, partition)
becomes a unique index on (model, partition, row_key): re-scoring an interval deletes its rows by model and
partition and inserts them again, at most one per key. An existing warehouse holding two rows of one model and
partition with the same time (possible only if a source sent a time twice) stops this upgrade at that index.

Revision ID: 0002
Revises: 0001
Create Date: 2026-12-08
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | None = None
depends_on: str | None = None

#: ``ts`` as a canonical row key. SQLite holds SQLAlchemy's text ``YYYY-MM-DD HH:MM:SS.ffffff`` (naive UTC).
_SQLITE_ROW_KEY = (
    "CASE WHEN substr(ts, 21, 6) IN ('', '000000') "
    "THEN substr(ts, 1, 10) || 'T' || substr(ts, 12, 8) || 'Z' "
    "ELSE substr(ts, 1, 10) || 'T' || substr(ts, 12, 15) || 'Z' END"
)
_POSTGRES_ROW_KEY = (
    "CASE WHEN date_trunc('second', ts) = ts "
    """THEN to_char(ts AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS"Z"') """
    """ELSE to_char(ts AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"') END"""
)


def upgrade() -> None:
    """Add the row key and classifier columns, fill the row keys of existing rows, key the rows uniquely."""
    with op.batch_alter_table("predictions") as batch:
        batch.add_column(
            sa.Column("row_key", sa.Text(), nullable=True, comment="the row's key values (source.keys), canonical text")
        )
        batch.add_column(
            sa.Column("predicted_class", sa.Text(), comment="classification: the predicted class, as text")
        )
        batch.add_column(
            sa.Column("probability", sa.Float(), comment="binary: P(positive class); multiclass: P(predicted class)")
        )
        batch.add_column(sa.Column("probabilities", sa.Text(), comment="multiclass: JSON text of class -> probability"))
    dialect = op.get_bind().dialect.name
    if dialect in ("sqlite", "postgresql"):
        expression = _SQLITE_ROW_KEY if dialect == "sqlite" else _POSTGRES_ROW_KEY
        op.execute(f"UPDATE predictions SET row_key = {expression} WHERE row_key IS NULL")
    else:  # another database: the old rows cannot be keyed here; they are dropped (re-score to get them back)
        op.execute("DELETE FROM predictions WHERE row_key IS NULL")
    with op.batch_alter_table("predictions") as batch:
        batch.alter_column(
            "row_key",
            existing_type=sa.Text(),
            nullable=False,
            existing_comment="the row's key values (source.keys), canonical text",
        )
        batch.alter_column(
            "prediction",
            existing_type=sa.Float(),
            nullable=True,
            comment="regression: the predicted value (null for a classifier)",
        )
        batch.drop_index("ix_predictions_model_partition")
        batch.create_index("uq_predictions_model_partition_row_key", ["model", "partition", "row_key"], unique=True)


def downgrade() -> None:
    """Undo: classifier rows (no numeric prediction) are deleted, then the columns and the unique index dropped."""
    op.execute("DELETE FROM predictions WHERE prediction IS NULL")
    with op.batch_alter_table("predictions") as batch:
        batch.drop_index("uq_predictions_model_partition_row_key")
        batch.create_index("ix_predictions_model_partition", ["model", "partition"], unique=False)
        batch.alter_column("prediction", existing_type=sa.Float(), nullable=False, comment=None)
        batch.drop_column("probabilities")
        batch.drop_column("probability")
        batch.drop_column("predicted_class")
        batch.drop_column("row_key")

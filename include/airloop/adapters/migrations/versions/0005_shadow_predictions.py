"""Shadow predictions: the waiting challenger's predictions of each new interval, never served.

``shadow_predictions`` has the columns of ``predictions`` (the challenger's version in ``model_version``), one row
per model, partition and row key: re-scoring an interval replaces its rows. The table is new, so an existing
warehouse only gains it.

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-07
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | None = None
depends_on: str | None = None


def upgrade() -> None:
    """Create shadow_predictions."""
    op.create_table(
        "shadow_predictions",
        sa.Column("model", sa.String(length=64), nullable=False),
        sa.Column("partition", sa.String(length=32), nullable=False),
        sa.Column("interval_start", sa.DateTime(timezone=True), nullable=False),
        sa.Column("interval_end", sa.DateTime(timezone=True), nullable=False),
        sa.Column("ts", sa.DateTime(timezone=True), nullable=False, comment="the scored row's time column"),
        sa.Column("row_key", sa.Text(), nullable=False, comment="the row's key values (source.keys), canonical text"),
        sa.Column(
            "prediction", sa.Float(), nullable=True, comment="regression: the predicted value (null for a classifier)"
        ),
        sa.Column("predicted_class", sa.Text(), nullable=True, comment="classification: the predicted class, as text"),
        sa.Column(
            "probability",
            sa.Float(),
            nullable=True,
            comment="binary: P(positive class); multiclass: P(predicted class)",
        ),
        sa.Column("probabilities", sa.Text(), nullable=True, comment="multiclass: JSON text of class -> probability"),
        sa.Column("model_version", sa.String(length=32), nullable=False),
        sa.Column("mlflow_run_id", sa.String(length=64), nullable=False),
        sa.Column(
            "input_digest", sa.String(length=64), nullable=False, comment="content digest of the validated partition"
        ),
        sa.Column("dag_id", sa.String(length=250), nullable=True),
        sa.Column("dag_run_id", sa.String(length=250), nullable=True),
    )
    with op.batch_alter_table("shadow_predictions", schema=None) as batch_op:
        batch_op.create_index("ix_shadow_predictions_model_version", ["model", "model_version"], unique=False)
        batch_op.create_index(
            "uq_shadow_predictions_model_partition_row_key", ["model", "partition", "row_key"], unique=True
        )


def downgrade() -> None:
    """Drop shadow_predictions."""
    with op.batch_alter_table("shadow_predictions", schema=None) as batch_op:
        batch_op.drop_index("uq_shadow_predictions_model_partition_row_key")
        batch_op.drop_index("ix_shadow_predictions_model_version")

    op.drop_table("shadow_predictions")

"""Labels that arrive after their rows were scored, and the outcomes that join them with the served predictions.

``labels``: one row per row key and revision, append-only (a correction is a new revision, never an overwrite).
``outcomes``: one row per model, partition and row key: the served prediction, the version that served it and the
current label; realized performance is computed from it. Both tables are new, so an existing warehouse only gains
them.

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-07
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | None = None
depends_on: str | None = None


def upgrade() -> None:
    """Create labels and outcomes."""
    op.create_table(
        "labels",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("model", sa.String(length=64), nullable=False),
        sa.Column(
            "partition", sa.String(length=32), nullable=False, comment="the data interval the labelled row belongs to"
        ),
        sa.Column("row_key", sa.Text(), nullable=False, comment="the row's key values (source.keys), canonical text"),
        sa.Column("ts", sa.DateTime(timezone=True), nullable=False, comment="the row's time column"),
        sa.Column(
            "label", sa.Text(), nullable=False, comment="the label as canonical text (a class, or a number's repr)"
        ),
        sa.Column("revision", sa.Integer(), nullable=False, comment="1 when first seen; each correction adds one"),
        sa.Column(
            "arrived_at", sa.DateTime(timezone=True), nullable=False, comment="when airloop first saw this value"
        ),
        sa.Column("dag_run_id", sa.String(length=250), nullable=True),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("model", "partition", "row_key", "revision", name="uq_labels_model_partition_key_revision"),
    )
    with op.batch_alter_table("labels", schema=None) as batch_op:
        batch_op.create_index("ix_labels_model_partition", ["model", "partition"], unique=False)

    op.create_table(
        "outcomes",
        sa.Column("model", sa.String(length=64), nullable=False),
        sa.Column("partition", sa.String(length=32), nullable=False),
        sa.Column("row_key", sa.Text(), nullable=False),
        sa.Column("ts", sa.DateTime(timezone=True), nullable=False),
        sa.Column(
            "model_version", sa.String(length=32), nullable=False, comment="the version whose prediction was served"
        ),
        sa.Column("prediction", sa.Float(), nullable=True, comment="regression: the served prediction"),
        sa.Column("predicted_class", sa.Text(), nullable=True, comment="classification: the served class, as text"),
        sa.Column(
            "probability",
            sa.Float(),
            nullable=True,
            comment="binary: P(positive class); multiclass: P(predicted class)",
        ),
        sa.Column("probabilities", sa.Text(), nullable=True, comment="multiclass: JSON text of class -> probability"),
        sa.Column("label", sa.Text(), nullable=False, comment="the current label, canonical text"),
        sa.Column("label_revision", sa.Integer(), nullable=False),
        sa.Column("label_arrived_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("joined_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("model", "partition", "row_key"),
    )
    with op.batch_alter_table("outcomes", schema=None) as batch_op:
        batch_op.create_index("ix_outcomes_model_version_ts", ["model", "model_version", "ts"], unique=False)


def downgrade() -> None:
    """Undo: drop outcomes and labels."""
    with op.batch_alter_table("outcomes", schema=None) as batch_op:
        batch_op.drop_index("ix_outcomes_model_version_ts")

    op.drop_table("outcomes")
    with op.batch_alter_table("labels", schema=None) as batch_op:
        batch_op.drop_index("ix_labels_model_partition")

    op.drop_table("labels")

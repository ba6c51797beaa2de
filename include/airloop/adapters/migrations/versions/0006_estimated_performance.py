"""Realized performance per model version and estimated performance (CBPE) beside it; estimates against realized.

``drift_metrics`` gains ``realized`` (model version -> its performance from ``outcomes`` in the window) and
``estimated_performance`` (model version -> its estimate on the window's unlabelled rows, or why it was not
estimated); existing rows keep null there (they were judged by re-prediction). ``estimate_errors`` is new: an
estimate set against the realized figure once the labels of the rows it estimated arrived.

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-07
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | None = None
depends_on: str | None = None


def upgrade() -> None:
    """Add drift_metrics.realized and .estimated_performance; create estimate_errors."""
    op.create_table(
        "estimate_errors",
        sa.Column("model", sa.String(length=64), nullable=False),
        sa.Column("window_end", sa.DateTime(timezone=True), nullable=False),
        sa.Column("model_version", sa.String(length=32), nullable=False),
        sa.Column("metric", sa.String(length=64), nullable=False),
        sa.Column("window_start", sa.DateTime(timezone=True), nullable=False),
        sa.Column("estimated", sa.Float(), nullable=False),
        sa.Column("realized", sa.Float(), nullable=False),
        sa.Column("error", sa.Float(), nullable=False, comment="estimated - realized"),
        sa.Column("estimated_rows", sa.Integer(), nullable=False, comment="unlabelled rows the estimate covered"),
        sa.Column("labelled_rows", sa.Integer(), nullable=False, comment="of those, labelled now"),
        sa.Column("estimated_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("recorded_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("model", "window_end", "model_version", "metric"),
    )
    with op.batch_alter_table("drift_metrics", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column(
                "realized",
                sa.JSON(),
                nullable=True,
                comment="model version -> its realized performance from outcomes in the window",
            )
        )
        batch_op.add_column(
            sa.Column(
                "estimated_performance",
                sa.JSON(),
                nullable=True,
                comment="model version -> its estimate (CBPE) on unlabelled rows, or why not",
            )
        )


def downgrade() -> None:
    """Undo: drop estimate_errors and the two drift_metrics columns."""
    with op.batch_alter_table("drift_metrics", schema=None) as batch_op:
        batch_op.drop_column("estimated_performance")
        batch_op.drop_column("realized")

    op.drop_table("estimate_errors")

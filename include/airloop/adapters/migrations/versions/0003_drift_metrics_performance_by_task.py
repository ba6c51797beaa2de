"""drift_metrics: the monitor's performance by task (the judged metric, every metric of the task as JSON) and
the drift of each output column (a classifier has several: its class probabilities and its predicted classes).

Rows written before this revision judged degradation on MAE (regressions only): they get ``performance_metric``
``mae`` where they have an MAE, and no ``performance`` JSON (their figures stay in ``mae``, ``rmse``, ...) nor
``output_scores`` (their one output's score is ``prediction_score``).

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-07
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | None = None
depends_on: str | None = None


def upgrade() -> None:
    """Add drift_metrics.performance_metric, performance and output_scores; older rows were judged on MAE."""
    with op.batch_alter_table("drift_metrics", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column(
                "performance_metric", sa.String(length=64), nullable=True, comment="the metric degradation is judged on"
            )
        )
        batch_op.add_column(
            sa.Column(
                "performance",
                sa.JSON(),
                nullable=True,
                comment="the task's metrics, holdout figures, notes; null: no labels yet",
            )
        )
        batch_op.add_column(
            sa.Column(
                "output_scores",
                sa.JSON(),
                nullable=True,
                comment="output column (_prediction, _proba_*) -> method, threshold, score",
            )
        )
    op.execute("UPDATE drift_metrics SET performance_metric = 'mae' WHERE mae IS NOT NULL")


def downgrade() -> None:
    """Undo: drop drift_metrics.output_scores, performance and performance_metric."""
    with op.batch_alter_table("drift_metrics", schema=None) as batch_op:
        batch_op.drop_column("output_scores")
        batch_op.drop_column("performance")
        batch_op.drop_column("performance_metric")

"""Baseline: the warehouse as airloop created it before migrations (``metadata.create_all``).

Frozen: this is the schema of that code, never edited afterwards. ``baseline()`` is also what an existing
warehouse without a version table is checked against before it is stamped at this revision (adoption).

Revision ID: 0001
Revises:
Create Date: 2026-12-08
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision: str = "0001"
down_revision: str | None = None
branch_labels: str | None = None
depends_on: str | None = None


def baseline() -> sa.MetaData:
    """The tables, indexes, constraints and ledger triggers of the baseline (a fresh copy per call)."""
    metadata = sa.MetaData()
    _validation_results(metadata)
    _predictions(metadata)
    ledger = _promotion_ledger(metadata)
    _drift_metrics(metadata)
    _retrain_requests(metadata)
    sa.Table(
        "promotion_locks",
        metadata,
        sa.Column("model", sa.String(64), primary_key=True),
        sa.Column("holder", sa.String(250)),
        sa.Column("acquired_at", sa.DateTime(timezone=True)),
    )
    _append_only_triggers(ledger)
    return metadata


def upgrade() -> None:
    """Create the baseline tables (with the ledger's append-only triggers)."""
    baseline().create_all(op.get_bind())


def downgrade() -> None:
    """Drop the baseline tables (and, on Postgres, the ledger's trigger function)."""
    bind = op.get_bind()
    baseline().drop_all(bind)
    if bind.dialect.name == "postgresql":
        op.execute("DROP FUNCTION IF EXISTS promotion_ledger_append_only()")


def _validation_results(metadata: sa.MetaData) -> sa.Table:
    return sa.Table(
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


def _predictions(metadata: sa.MetaData) -> sa.Table:
    return sa.Table(
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


def _promotion_ledger(metadata: sa.MetaData) -> sa.Table:
    return sa.Table(
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


def _drift_metrics(metadata: sa.MetaData) -> sa.Table:
    return sa.Table(
        "drift_metrics",
        metadata,
        sa.Column("model", sa.String(64), primary_key=True),
        sa.Column("window_end", sa.DateTime(timezone=True), primary_key=True, comment="as_of: the window's end"),
        sa.Column("champion_version", sa.String(32), primary_key=True),
        sa.Column("window_start", sa.DateTime(timezone=True), nullable=False),
        sa.Column("reference", sa.String(16), nullable=False, comment="whole or same-weeks training data"),
        sa.Column("reference_rows", sa.Integer, nullable=False, comment="rows compared (after the sample cap)"),
        sa.Column("current_rows", sa.Integer, nullable=False, comment="rows compared (after the sample cap)"),
        sa.Column("drift_share", sa.Float, nullable=False, comment="share of monitored features that drifted"),
        sa.Column("drifted", sa.Boolean, nullable=False, comment="the window drifted (share or predictions)"),
        sa.Column("drifted_columns", sa.JSON, nullable=False),
        sa.Column("column_scores", sa.JSON, nullable=False, comment="column -> method, threshold, score, drifted"),
        sa.Column("prediction_score", sa.Float, nullable=False),
        sa.Column("prediction_drifted", sa.Boolean, nullable=False),
        sa.Column("labelled_rows", sa.Integer, nullable=False),
        sa.Column("mae", sa.Float),
        sa.Column("rmse", sa.Float),
        sa.Column("reference_mae", sa.Float, comment="the champion's holdout MAE at training"),
        sa.Column("degradation", sa.Float, comment="mae / reference_mae - 1"),
        sa.Column("degraded", sa.Boolean, comment="null: no labelled rows yet"),
        sa.Column("notes", sa.JSON, nullable=False),
        sa.Column("report_path", sa.Text, nullable=False),
        sa.Column("dag_id", sa.String(250)),
        sa.Column("dag_run_id", sa.String(250)),
        sa.Column("measured_at", sa.DateTime(timezone=True), nullable=False),
    )


def _retrain_requests(metadata: sa.MetaData) -> sa.Table:
    return sa.Table(
        "retrain_requests",
        metadata,
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("model", sa.String(64), nullable=False),
        sa.Column("window_start", sa.DateTime(timezone=True), nullable=False),
        sa.Column("window_end", sa.DateTime(timezone=True), nullable=False),
        sa.Column("champion_version", sa.String(32), nullable=False, comment="the champion judged"),
        sa.Column("reason", sa.Text, nullable=False),
        sa.Column("drifted_columns", sa.JSON, nullable=False),
        sa.Column("figures", sa.JSON, nullable=False),
        sa.Column("report_path", sa.Text, nullable=False),
        sa.Column("mlflow_run_id", sa.String(64), comment="the monitor's MLflow run (reports as artifacts)"),
        sa.Column("dag_id", sa.String(250)),
        sa.Column("dag_run_id", sa.String(250)),
        sa.Column("requested_at", sa.DateTime(timezone=True), nullable=False),
        sa.UniqueConstraint("model", "window_end", name="uq_retrain_requests_model_window"),
    )


def _append_only_triggers(ledger: sa.Table) -> None:
    """Updates and deletes of the ledger abort, in the database itself (SQLite and Postgres)."""
    for verb in ("UPDATE", "DELETE"):
        sa.event.listen(
            ledger,
            "after_create",
            sa.DDL(
                f"CREATE TRIGGER promotion_ledger_no_{verb.lower()} BEFORE {verb} ON promotion_ledger "
                "BEGIN SELECT RAISE(ABORT, 'promotion_ledger is append-only'); END"
            ).execute_if(dialect="sqlite"),
        )
    sa.event.listen(
        ledger,
        "after_create",
        sa.DDL(
            "CREATE OR REPLACE FUNCTION promotion_ledger_append_only() RETURNS trigger AS $$ "
            "BEGIN RAISE EXCEPTION 'promotion_ledger is append-only'; END; $$ LANGUAGE plpgsql; "
            "CREATE TRIGGER promotion_ledger_append_only BEFORE UPDATE OR DELETE ON promotion_ledger "
            "FOR EACH ROW EXECUTE FUNCTION promotion_ledger_append_only()"
        ).execute_if(dialect="postgresql"),
    )

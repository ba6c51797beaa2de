"""Predictions: provenance once per partition (``prediction_batches``), the rows slim (``prediction_rows``), and a
view ``predictions`` that joins them back into the rows the table ``predictions`` held.

The table ``predictions`` repeated a partition's provenance (model, interval, version, MLflow run, input digest,
DAG and run) on every row: about 650 bytes a row on SQLite with its indexes. Now each scored partition is one row
of ``prediction_batches`` (with a compact integer id, and ``role`` ``served`` for the champion's rows), and each
scored row one row of ``prediction_rows``: its batch id, its time as integer microseconds since 1970 UTC, its key
and its outputs, unique on (batch id, key). Re-scoring deletes one batch and its rows by batch id.

Existing rows are moved in SQL (SQLite and Postgres), one batch per model and partition, with that partition's
provenance and ``scored_at`` the upgrade's time (the old table did not record it); every row keeps its key, time,
outputs and version. A partition whose rows name two versions (the old scoring never wrote one) stops the upgrade
naming it. Then the table is dropped and the view ``predictions`` created with the old columns (plus ``batch_id``
and ``scored_at``), so queries reading ``predictions`` keep working; writes go to the two tables.

The table ``shadow_predictions`` (revision 0005: the waiting challenger's rows, the same columns) goes the same
way: its rows become batches of role ``shadow`` and their rows in ``prediction_rows``, the table is dropped and a
view ``shadow_predictions`` over the ``shadow`` batches takes its place. The view ``predictions`` shows role
``served`` only, so a shadow row never reads as served.

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-07
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision: str = "0007"
down_revision: str | None = "0006"
branch_labels: str | None = None
depends_on: str | None = None

#: The old ``ts`` (SQLite: SQLAlchemy's text ``YYYY-MM-DD HH:MM:SS[.ffffff]``, UTC) as microseconds since 1970.
_TS_TO_MICROS = {
    "sqlite": "CAST(strftime('%s', substr(p.ts, 1, 19)) AS INTEGER) * 1000000 "
    "+ CAST(substr(substr(p.ts, 21, 6) || '000000', 1, 6) AS INTEGER)",
    "postgresql": "CAST(EXTRACT(EPOCH FROM date_trunc('second', p.ts)) AS BIGINT) * 1000000 "
    "+ CAST(EXTRACT(MICROSECONDS FROM p.ts) AS BIGINT) % 1000000",
}
#: The new ``ts`` back as each dialect's ``DateTime`` (the same expressions as the view's; for the downgrade).
_MICROS_TO_TS = {
    "sqlite": "datetime((r.ts - ((r.ts % 1000000) + 1000000) % 1000000) / 1000000, 'unixepoch') || '.' || "
    "substr('000000' || (((r.ts % 1000000) + 1000000) % 1000000), -6)",
    "postgresql": "TIMESTAMP WITH TIME ZONE 'epoch' + r.ts * INTERVAL '1 microsecond'",
}
_NOW = {"sqlite": "strftime('%Y-%m-%d %H:%M:%f000', 'now')", "postgresql": "now()"}
_BATCH_COLUMNS = "model_version, mlflow_run_id, input_digest, dag_id, dag_run_id"
_OUTPUTS = "row_key, prediction, predicted_class, probability, probabilities"


#: Each old table, now a view, and the role of its rows' batches.
_ROLES = {"predictions": "served", "shadow_predictions": "shadow"}


def _view_sql(dialect: str, view: str) -> str:
    """The view as this revision made it (not imported from the code: a later revision may change the code's)."""
    return (
        f"CREATE VIEW {view} AS SELECT b.model AS model, b.partition AS partition, "
        "b.interval_start AS interval_start, b.interval_end AS interval_end, "
        f"{_MICROS_TO_TS[dialect]} AS ts, r.row_key AS row_key, r.prediction AS prediction, "
        "r.predicted_class AS predicted_class, r.probability AS probability, r.probabilities AS probabilities, "
        "b.model_version AS model_version, b.mlflow_run_id AS mlflow_run_id, b.input_digest AS input_digest, "
        "b.dag_id AS dag_id, b.dag_run_id AS dag_run_id, b.scored_at AS scored_at, r.batch_id AS batch_id "
        f"FROM prediction_rows r JOIN prediction_batches b ON b.id = r.batch_id WHERE b.role = '{_ROLES[view]}'"
    )


def upgrade() -> None:
    """Create the two tables, move the rows, drop the old tables, create the views."""
    dialect = op.get_bind().dialect.name
    if dialect not in _TS_TO_MICROS:
        raise NotImplementedError(f"revision 0007 moves predictions on SQLite and Postgres, not on {dialect}")
    for table in _ROLES:
        _refuse_mixed(table)
    _create_tables()
    for table, role in _ROLES.items():
        _move(dialect, table, role)
        # its indexes go with it
        op.drop_table(table)
        op.execute(_view_sql(dialect, table))


def _create_tables() -> None:
    """``prediction_batches`` and ``prediction_rows``, with their indexes."""
    op.create_table(
        "prediction_batches",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column(
            "role",
            sa.String(length=32),
            nullable=False,
            comment="served (prediction_rows), or another row table's role",
        ),
        sa.Column("model", sa.String(length=64), nullable=False),
        sa.Column("partition", sa.String(length=32), nullable=False),
        sa.Column("interval_start", sa.DateTime(timezone=True), nullable=False),
        sa.Column("interval_end", sa.DateTime(timezone=True), nullable=False),
        sa.Column("model_version", sa.String(length=32), nullable=False),
        sa.Column("mlflow_run_id", sa.String(length=64), nullable=False),
        sa.Column(
            "input_digest", sa.String(length=64), nullable=False, comment="content digest of the validated partition"
        ),
        sa.Column("dag_id", sa.String(length=250), nullable=True),
        sa.Column("dag_run_id", sa.String(length=250), nullable=True),
        sa.Column("scored_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("rows", sa.Integer(), nullable=False, comment="rows written with this batch"),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("model", "partition", "role", name="uq_prediction_batches_model_partition_role"),
    )
    with op.batch_alter_table("prediction_batches", schema=None) as batch_op:
        batch_op.create_index("ix_prediction_batches_model_interval_end", ["model", "interval_end"], unique=False)
    op.create_table(
        "prediction_rows",
        sa.Column(
            "batch_id", sa.Integer(), nullable=False, comment="prediction_batches.id: the partition's provenance"
        ),
        sa.Column(
            "ts", sa.BigInteger(), nullable=False, comment="the scored row's time column, microseconds since 1970 UTC"
        ),
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
    )
    with op.batch_alter_table("prediction_rows", schema=None) as batch_op:
        batch_op.create_index("uq_prediction_rows_batch_row_key", ["batch_id", "row_key"], unique=True)


def _refuse_mixed(table: str) -> None:
    """Stop (before anything moved) if a partition of ``table`` names two versions, runs or input digests."""
    mixed = (
        op.get_bind()
        .execute(
            sa.text(
                f"SELECT model, partition FROM {table} GROUP BY model, partition "
                "HAVING count(DISTINCT model_version) > 1 OR count(DISTINCT mlflow_run_id) > 1 "
                "OR count(DISTINCT input_digest) > 1"
            )
        )
        .all()
    )
    if mixed:
        raise RuntimeError(
            f"revision 0007: {table} of {[tuple(m) for m in mixed][:10]} name more than one model version, "
            "run or input digest in one partition, which airloop's scoring never wrote; nothing was changed. "
            f"Re-score those intervals (or delete their rows from {table}), then upgrade again."
        )


def _move(dialect: str, table: str, role: str) -> None:
    """The rows of the old ``table`` into batches of ``role`` (one per model and partition) and their rows."""
    op.execute(
        "INSERT INTO prediction_batches (role, model, partition, interval_start, interval_end, "
        f"{_BATCH_COLUMNS}, scored_at, rows) "
        f"SELECT '{role}', model, partition, min(interval_start), max(interval_end), max(model_version), "
        f"max(mlflow_run_id), max(input_digest), max(dag_id), max(dag_run_id), {_NOW[dialect]}, count(*) "
        f"FROM {table} GROUP BY model, partition"
    )
    op.execute(
        f"INSERT INTO prediction_rows (batch_id, ts, {_OUTPUTS}) "
        f"SELECT b.id, {_TS_TO_MICROS[dialect]}, p.row_key, p.prediction, p.predicted_class, p.probability, "
        f"p.probabilities FROM {table} p JOIN prediction_batches b "
        f"ON b.model = p.model AND b.partition = p.partition AND b.role = '{role}'"
    )


#: The indexes each old table had: name -> (columns, unique).
_OLD_INDEXES = {
    "predictions": {
        "uq_predictions_model_partition_row_key": (["model", "partition", "row_key"], True),
        "ix_predictions_model_ts": (["model", "ts"], False),
    },
    "shadow_predictions": {
        "uq_shadow_predictions_model_partition_row_key": (["model", "partition", "row_key"], True),
        "ix_shadow_predictions_model_version": (["model", "model_version"], False),
    },
}


def downgrade() -> None:
    """Undo: the views dropped, the tables ``predictions`` and ``shadow_predictions`` made again with every row of
    their role and its provenance."""
    dialect = op.get_bind().dialect.name
    for table, role in _ROLES.items():
        op.execute(f"DROP VIEW {table}")
        _create_old_table(table)
        op.execute(
            f"INSERT INTO {table} (model, partition, interval_start, interval_end, ts, "
            f"{_OUTPUTS}, {_BATCH_COLUMNS}) "
            f"SELECT b.model, b.partition, b.interval_start, b.interval_end, {_MICROS_TO_TS[dialect]}, r.row_key, "
            "r.prediction, r.predicted_class, r.probability, r.probabilities, "
            "b.model_version, b.mlflow_run_id, b.input_digest, b.dag_id, b.dag_run_id "
            f"FROM prediction_rows r JOIN prediction_batches b ON b.id = r.batch_id WHERE b.role = '{role}'"
        )
        with op.batch_alter_table(table, schema=None) as batch_op:
            for name, (columns, unique) in _OLD_INDEXES[table].items():
                batch_op.create_index(name, columns, unique=unique)
    op.drop_table("prediction_rows")
    op.drop_table("prediction_batches")


def _create_old_table(table: str) -> None:
    """The table ``predictions`` (or ``shadow_predictions``: the same columns) as revisions 0004 and 0005 had it."""
    op.create_table(
        table,
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

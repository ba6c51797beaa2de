"""The warehouse as airloop wrote it before migrations: a frozen copy of ``adapters/warehouse.py``'s tables then.

``write(engine)`` does what that code's ``ensure_schema`` did (``metadata.create_all``) and inserts a few rows in
every table; ``rows(engine)`` reads every table back, for before/after comparisons. Never edit the tables here:
they are the schema that existing warehouses have, which the migrations must adopt.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa

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

#: One row per judged window and champion version; a re-run of the monitor for the window replaces it.
drift_metrics = sa.Table(
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

#: One row per retraining request; at most one per model and window however often the monitor re-runs.
retrain_requests = sa.Table(
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


T0 = datetime(2024, 3, 1, tzinfo=UTC)
T1 = datetime(2024, 3, 29, tzinfo=UTC)
_RUN = {"dag_id": "m_score", "dag_run_id": "scheduled__2024-03-01"}


def sample_rows() -> dict[str, list[dict[str, Any]]]:
    """Two rows per table (the ledger's unique key and the retrain requests' window differ per row)."""
    return {
        "validation_results": [
            {
                "model": "m",
                "partition": p,
                "interval_start": T0,
                "interval_end": T1,
                "success": ok,
                "rows": 650,
                "evaluated_expectations": 12,
                "failed_expectations": 0 if ok else 1,
                "content_digest": "d" * 64,
                "suite_digests": {"schema": "s" * 8},
                "failures": [] if ok else [{"column": "x"}],
                "report_path": f"/reports/{p}.json",
                "docs_path": None,
                "dag_run_id": _RUN["dag_run_id"],
                "validated_at": T1,
            }
            for p, ok in (("2024-03-01", True), ("2024-03-29", False))
        ],
        "predictions": [
            {
                "model": "m",
                "partition": "2024-03-01",
                "interval_start": T0,
                "interval_end": T1,
                "ts": T0.replace(hour=h),
                "prediction": 1.5 * h,
                "model_version": "3",
                "mlflow_run_id": "r" * 32,
                "input_digest": "d" * 64,
                **_RUN,
            }
            for h in (1, 2)
        ],
        "promotion_ledger": [
            {
                "model": "m",
                "seq": seq,
                "action": "promote",
                "outcome": outcome,
                "moved": seq == 1,
                "candidate_version": str(seq),
                "from_version": None if seq == 1 else "1",
                "champion_after": "1",
                "decided_by": "gate",
                "reason": "first champion" if seq == 1 else "worse than the champion",
                "evidence": {"mae": [1.0, 2.0]},
                "mlflow_run_id": None,
                "recorded_at": T1,
                **_RUN,
            }
            for seq, outcome in ((1, "promoted"), (2, "refused"))
        ],
        "drift_metrics": [
            {
                "model": "m",
                "window_end": end,
                "champion_version": "1",
                "window_start": T0,
                "reference": "whole",
                "reference_rows": 1000,
                "current_rows": 600,
                "drift_share": 0.25,
                "drifted": False,
                "drifted_columns": ["x"],
                "column_scores": {"x": {"score": 0.01}},
                "prediction_score": 0.2,
                "prediction_drifted": False,
                "labelled_rows": 0,
                "mae": None,
                "rmse": None,
                "reference_mae": 30.0,
                "degradation": None,
                "degraded": None,
                "notes": [],
                "report_path": "/reports/drift.html",
                "measured_at": end,
                **_RUN,
            }
            for end in (T1, T1.replace(day=30))
        ],
        "retrain_requests": [
            {
                "model": "m",
                "window_start": T0,
                "window_end": end,
                "champion_version": "1",
                "reason": "2 of the last 3 windows drifted",
                "drifted_columns": ["x"],
                "figures": {"drift_share": 0.6},
                "report_path": "/reports/drift.html",
                "mlflow_run_id": None,
                "requested_at": end,
                **_RUN,
            }
            for end in (T1, T1.replace(day=30))
        ],
        "promotion_locks": [
            {"model": "m", "holder": "promote_m/run-1", "acquired_at": T1},
            {"model": "n", "holder": None, "acquired_at": None},
        ],
    }


def write(engine: sa.Engine, tables: list[str] | None = None) -> None:
    """Create the tables as the code before migrations did (``create_all``; only ``tables``) and fill them."""
    chosen = [metadata.tables[name] for name in tables] if tables is not None else None
    metadata.create_all(engine, tables=chosen)
    with engine.begin() as conn:
        for name, rows in sample_rows().items():
            if tables is None or name in tables:
                conn.execute(metadata.tables[name].insert(), rows)


def rows(engine: sa.Engine) -> dict[str, list[tuple[Any, ...]]]:
    """Every row of every table of the frozen schema that exists, ordered by its columns (JSON ones aside)."""
    present = set(sa.inspect(engine).get_table_names())
    found = {}
    with engine.connect() as conn:
        for name, table in metadata.tables.items():
            if name in present:
                query = sa.select(*table.columns).order_by(
                    *[c for c in table.columns if not isinstance(c.type, sa.JSON)]
                )
                found[name] = [tuple(r) for r in conn.execute(query)]
    return found

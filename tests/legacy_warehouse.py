"""The warehouse as airloop wrote it before migrations, with a few rows in every table.

The tables are the baseline revision's own (``adapters/migrations/versions/0001_baseline.py``, ``baseline()``):
that revision is frozen as the schema of the code before migrations (checked against that code's tables when it
was written), so a second frozen copy here would add nothing. ``write(engine)`` does what that code's
``ensure_schema`` did (``metadata.create_all``, the ledger's append-only triggers included) and inserts the sample
rows; ``rows(engine)`` reads every table back, for before/after comparisons.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa


def _baseline() -> sa.MetaData:
    """The baseline revision's tables (``0001_baseline.baseline()``): frozen there, so not copied here."""
    from airloop.adapters import migrations

    return migrations.script_directory().get_revision(migrations.BASELINE).module.baseline()


metadata = _baseline()
predictions = metadata.tables["predictions"]


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
    inspector = sa.inspect(engine)
    present = {*inspector.get_table_names(), *inspector.get_view_names()}  # predictions is a view since 0007
    found = {}
    with engine.connect() as conn:
        for name, table in metadata.tables.items():
            if name in present:
                query = sa.select(*table.columns).order_by(
                    *[c for c in table.columns if not isinstance(c.type, sa.JSON)]
                )
                found[name] = [tuple(r) for r in conn.execute(query)]
    return found

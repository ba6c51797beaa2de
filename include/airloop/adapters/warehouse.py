"""The warehouse: airloop's tables, defined once with SQLAlchemy Core (SQLite by default, Postgres at scale).

The ``MetaData`` here is the schema as the code uses it; the database gets it through the migrations in
``airloop.adapters.migrations`` (``ensure_schema`` upgrades to the newest revision on first use; changing a table
here needs a revision there: its docstring says how, and a test fails until it exists). Each writer keys its rows
to the model and the data interval, so re-running an interval replaces its rows instead of adding more.
"""

from __future__ import annotations

import threading
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa

from airloop.core.times import as_utc

if TYPE_CHECKING:
    import pandas as pd
    from sqlalchemy.engine import Connection, Engine

    from airloop.adapters.migrations import Upgrade

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


class UtcMicros(sa.types.TypeDecorator[datetime]):
    """A time stored as integer microseconds since 1970-01-01 UTC (8 bytes; SQLAlchemy's SQLite ``DateTime`` is
    26 bytes of text): compact, and written by the sinks straight from numpy's ``datetime64[us]``. Python values are
    time-zone aware UTC ``datetime`` objects (a naive one is read as UTC)."""

    impl = sa.BigInteger
    cache_ok = True

    def process_bind_param(self, value: datetime | int | None, dialect: sa.Dialect) -> int | None:
        if value is None or isinstance(value, int):  # microseconds already (what the sinks pass)
            return value
        value = as_utc(value)
        delta = value - _EPOCH
        return (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds

    def process_result_value(self, value: int | None, dialect: sa.Dialect) -> datetime | None:
        return None if value is None else _EPOCH + timedelta(microseconds=int(value))


_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)

#: The provenance of one scored partition, stored once for all its rows: which version made them, from which MLflow
#: run, on which input (the validated partition's digest), by which DAG run, when. One row per model, partition and
#: role (``served``: the rows in ``prediction_rows``, the champion's; another role names another row table's
#: rows, e.g. shadow scoring). Re-scoring an interval deletes its batch and the batch's rows, then writes new ones.
prediction_batches = sa.Table(
    "prediction_batches",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("role", sa.String(32), nullable=False, comment="served (prediction_rows), or another row table's role"),
    sa.Column("model", sa.String(64), nullable=False),
    sa.Column("partition", sa.String(32), nullable=False),
    sa.Column("interval_start", sa.DateTime(timezone=True), nullable=False),
    sa.Column("interval_end", sa.DateTime(timezone=True), nullable=False),
    sa.Column("model_version", sa.String(32), nullable=False),
    sa.Column("mlflow_run_id", sa.String(64), nullable=False),
    sa.Column("input_digest", sa.String(64), nullable=False, comment="content digest of the validated partition"),
    sa.Column("dag_id", sa.String(250)),
    sa.Column("dag_run_id", sa.String(250)),
    sa.Column("scored_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("rows", sa.Integer, nullable=False, comment="rows written with this batch"),
    sa.UniqueConstraint("model", "partition", "role", name="uq_prediction_batches_model_partition_role"),
    sa.Index("ix_prediction_batches_model_interval_end", "model", "interval_end"),
)

#: The served predictions, one row per scored row: the batch (its provenance), the row's key and time, the outputs.
#: Nothing per partition is repeated here; the view ``predictions`` joins each row with its batch. No foreign key
#: to the batch (it would cost a lookup per inserted row); only the sinks and ``delete_predictions`` write here,
#: and they write and delete a batch with its rows in one transaction.
prediction_rows = sa.Table(
    "prediction_rows",
    metadata,
    sa.Column("batch_id", sa.Integer, nullable=False, comment="prediction_batches.id: the partition's provenance"),
    sa.Column("ts", UtcMicros, nullable=False, comment="the scored row's time column, microseconds since 1970 UTC"),
    sa.Column("row_key", sa.Text, nullable=False, comment="the row's key values (source.keys), canonical text"),
    sa.Column("prediction", sa.Float, comment="regression: the predicted value (null for a classifier)"),
    sa.Column("predicted_class", sa.Text, comment="classification: the predicted class, as text"),
    sa.Column("probability", sa.Float, comment="binary: P(positive class); multiclass: P(predicted class)"),
    sa.Column("probabilities", sa.Text, comment="multiclass: JSON text of class -> probability"),
    # At most one row per key in a batch; re-scoring deletes a batch's rows through this index's batch_id prefix.
    sa.Index("uq_prediction_rows_batch_row_key", "batch_id", "row_key", unique=True),
)

#: The role of the champion's batches, whose rows are in ``prediction_rows``.
SERVED = "served"
#: The role of the waiting challenger's batches (shadow scoring): rows in ``prediction_rows`` too, never served.
SHADOW = "shadow"

#: Views (not in ``metadata``: the migrations and the DDL below create them).
views = sa.MetaData()

#: The columns of the views ``predictions`` and ``shadow_predictions``: those the tables of that name had before
#: revision 0007, plus ``scored_at`` and ``batch_id``.
_VIEW_COLUMNS = (
    ("model", sa.String(64)),
    ("partition", sa.String(32)),
    ("interval_start", sa.DateTime(timezone=True)),
    ("interval_end", sa.DateTime(timezone=True)),
    ("ts", sa.DateTime(timezone=True)),
    ("row_key", sa.Text()),
    ("prediction", sa.Float()),
    ("predicted_class", sa.Text()),
    ("probability", sa.Float()),
    ("probabilities", sa.Text()),
    ("model_version", sa.String(32)),
    ("mlflow_run_id", sa.String(64)),
    ("input_digest", sa.String(64)),
    ("dag_id", sa.String(250)),
    ("dag_run_id", sa.String(250)),
    ("scored_at", sa.DateTime(timezone=True)),
    ("batch_id", sa.Integer()),
)

#: The served predictions as one row each with its provenance (a view: ``prediction_rows`` joined with its batch,
#: role ``served`` only). Read it; write through the sinks (``airloop.adapters.prediction_sink``) or
#: :func:`insert_predictions`.
predictions = sa.Table("predictions", views, *(sa.Column(n, t) for n, t in _VIEW_COLUMNS))

#: The challenger's predictions while it waits (a pending approval, or ``gate.shadow``): the same view over the
#: batches of role ``shadow`` (its version in ``model_version``), never served and never read by what reads
#: ``predictions``. Written through the same sinks with ``role=SHADOW``.
shadow_predictions = sa.Table("shadow_predictions", views, *(sa.Column(n, t) for n, t in _VIEW_COLUMNS))

#: Each view and the role of the batches it shows.
VIEW_ROLES = {"predictions": SERVED, "shadow_predictions": SHADOW}

#: ``ts`` of ``prediction_rows`` (microseconds) as each dialect's ``DateTime`` presents it: on SQLite SQLAlchemy's
#: text ``YYYY-MM-DD HH:MM:SS.ffffff`` (floor division, so times before 1970 come out right), on Postgres a
#: ``timestamptz`` (exact: integer microseconds, no floating point).
_VIEW_TS = {
    "sqlite": "datetime((r.ts - ((r.ts % 1000000) + 1000000) % 1000000) / 1000000, 'unixepoch') || '.' || "
    "substr('000000' || (((r.ts % 1000000) + 1000000) % 1000000), -6)",
    "postgresql": "TIMESTAMP WITH TIME ZONE 'epoch' + r.ts * INTERVAL '1 microsecond'",
}


def predictions_view_sql(dialect: str, view: str = "predictions") -> str:
    """``CREATE VIEW`` of ``view`` (``predictions`` or ``shadow_predictions``): each row of its role's batches with
    the batch's provenance (SQLite and Postgres)."""
    if dialect not in _VIEW_TS:
        raise NotImplementedError(f"the predictions views are written for SQLite and Postgres, not {dialect}")
    return (
        f"CREATE VIEW {view} AS SELECT b.model AS model, b.partition AS partition, "
        "b.interval_start AS interval_start, b.interval_end AS interval_end, "
        f"{_VIEW_TS[dialect]} AS ts, r.row_key AS row_key, r.prediction AS prediction, "
        "r.predicted_class AS predicted_class, r.probability AS probability, r.probabilities AS probabilities, "
        "b.model_version AS model_version, b.mlflow_run_id AS mlflow_run_id, b.input_digest AS input_digest, "
        "b.dag_id AS dag_id, b.dag_run_id AS dag_run_id, b.scored_at AS scored_at, r.batch_id AS batch_id "
        f"FROM prediction_rows r JOIN prediction_batches b ON b.id = r.batch_id WHERE b.role = '{VIEW_ROLES[view]}'"
    )


for _dialect in _VIEW_TS:
    for _view in VIEW_ROLES:
        sa.event.listen(
            prediction_rows, "after_create", sa.DDL(predictions_view_sql(_dialect, _view)).execute_if(dialect=_dialect)
        )
        sa.event.listen(
            prediction_rows, "before_drop", sa.DDL(f"DROP VIEW IF EXISTS {_view}").execute_if(dialect=_dialect)
        )


#: Labels as they arrived, keyed by row; append-only by revision: a label that changes after it arrived (a
#: correction) is a new revision of its row, never an overwrite. The current label is the highest revision.
labels = sa.Table(
    "labels",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("model", sa.String(64), nullable=False),
    sa.Column("partition", sa.String(32), nullable=False, comment="the data interval the labelled row belongs to"),
    sa.Column("row_key", sa.Text, nullable=False, comment="the row's key values (source.keys), canonical text"),
    sa.Column("ts", sa.DateTime(timezone=True), nullable=False, comment="the row's time column"),
    sa.Column("label", sa.Text, nullable=False, comment="the label as canonical text (a class, or a number's repr)"),
    sa.Column("revision", sa.Integer, nullable=False, comment="1 when first seen; each correction adds one"),
    sa.Column("arrived_at", sa.DateTime(timezone=True), nullable=False, comment="when airloop first saw this value"),
    sa.Column("dag_run_id", sa.String(250)),
    sa.UniqueConstraint("model", "partition", "row_key", "revision", name="uq_labels_model_partition_key_revision"),
    sa.Index("ix_labels_model_partition", "model", "partition"),
)

#: The predictions that were served, joined by row key with their labels once those arrived: what realized
#: performance is computed from. One row per model, partition and row key; a label correction updates its row's
#: label (the old value stays in ``labels``), a re-scored interval re-joins its rows.
outcomes = sa.Table(
    "outcomes",
    metadata,
    sa.Column("model", sa.String(64), primary_key=True),
    sa.Column("partition", sa.String(32), primary_key=True),
    sa.Column("row_key", sa.Text, primary_key=True),
    sa.Column("ts", sa.DateTime(timezone=True), nullable=False),
    sa.Column("model_version", sa.String(32), nullable=False, comment="the version whose prediction was served"),
    sa.Column("prediction", sa.Float, comment="regression: the served prediction"),
    sa.Column("predicted_class", sa.Text, comment="classification: the served class, as text"),
    sa.Column("probability", sa.Float, comment="binary: P(positive class); multiclass: P(predicted class)"),
    sa.Column("probabilities", sa.Text, comment="multiclass: JSON text of class -> probability"),
    sa.Column("label", sa.Text, nullable=False, comment="the current label, canonical text"),
    sa.Column("label_revision", sa.Integer, nullable=False),
    sa.Column("label_arrived_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("joined_at", sa.DateTime(timezone=True), nullable=False),
    sa.Index("ix_outcomes_model_version_ts", "model", "model_version", "ts"),
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
    sa.Column("degradation", sa.Float, comment="mae / reference_mae - 1"),  # now: of performance_metric, any task
    sa.Column("degraded", sa.Boolean, comment="null: no labelled rows yet"),
    sa.Column("notes", sa.JSON, nullable=False),
    sa.Column("report_path", sa.Text, nullable=False),
    sa.Column("dag_id", sa.String(250)),
    sa.Column("dag_run_id", sa.String(250)),
    sa.Column("measured_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("performance_metric", sa.String(64), comment="the metric degradation is judged on"),
    sa.Column("performance", sa.JSON, comment="the task's metrics, holdout figures, notes; null: no labels yet"),
    sa.Column("output_scores", sa.JSON, comment="output column (_prediction, _proba_*) -> method, threshold, score"),
    sa.Column("realized", sa.JSON, comment="model version -> its realized performance from outcomes in the window"),
    sa.Column(
        "estimated_performance", sa.JSON, comment="model version -> its estimate (CBPE) on unlabelled rows, or why not"
    ),
)

#: An estimate set against the realized figure once the labels of the rows it estimated arrived: one row per model,
#: window, version and metric, updated while more of those labels arrive.
estimate_errors = sa.Table(
    "estimate_errors",
    metadata,
    sa.Column("model", sa.String(64), primary_key=True),
    sa.Column("window_end", sa.DateTime(timezone=True), primary_key=True),
    sa.Column("model_version", sa.String(32), primary_key=True),
    sa.Column("metric", sa.String(64), primary_key=True),
    sa.Column("window_start", sa.DateTime(timezone=True), nullable=False),
    sa.Column("estimated", sa.Float, nullable=False),
    sa.Column("realized", sa.Float, nullable=False),
    sa.Column("error", sa.Float, nullable=False, comment="estimated - realized"),
    sa.Column("estimated_rows", sa.Integer, nullable=False, comment="unlabelled rows the estimate covered"),
    sa.Column("labelled_rows", sa.Integer, nullable=False, comment="of those, labelled now"),
    sa.Column("estimated_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("recorded_at", sa.DateTime(timezone=True), nullable=False),
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

# The ledger is append-only in the database itself, not only by convention: updates and deletes abort. The
# revisions create these triggers; they are declared here too so that ``metadata.create_all`` makes the same schema.
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


#: Databases upgraded by this process (URL without password), so ``ensure_schema`` migrates each once.
_upgraded: set[str] = set()
_upgrade_lock = threading.Lock()


def ensure_schema(engine: Engine) -> None:
    """Upgrade the warehouse to the newest revision, once per process and database (see ``upgrade``)."""
    key = engine.url.render_as_string(hide_password=True)
    if key in _upgraded:
        return
    with _upgrade_lock:
        if key not in _upgraded:
            upgrade(engine)


def upgrade(engine: Engine) -> Upgrade:
    """Run the warehouse migrations now (idempotent, safe in parallel; adopts a warehouse made before them)."""
    from airloop.adapters import migrations

    done = migrations.upgrade(engine)
    if engine.url.database not in (None, "", ":memory:"):  # each in-memory engine is a database of its own
        _upgraded.add(engine.url.render_as_string(hide_password=True))
    return done


def current_revision(engine: Engine) -> str | None:
    """The warehouse's migration revision (None: new, or made before migrations and not upgraded yet)."""
    from airloop.adapters import migrations

    return migrations.current(engine)


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


def delete_predictions(
    conn: Connection, model: str, partition: str, *, role: str = SERVED, rows_table: sa.Table | None = None
) -> dict[str, int]:
    """Delete one interval's predictions (its batch of ``role`` and the batch's rows in ``rows_table``, by default
    the served ones in ``prediction_rows``) inside the caller's transaction; return how many rows each model version
    had there (empty when the interval had none)."""
    rows_table = prediction_rows if rows_table is None else rows_table
    b = prediction_batches.c
    found: dict[str, int] = {}
    batches = conn.execute(
        sa.select(b.id, b.model_version).where(b.model == model, b.partition == partition, b.role == role)
    )
    for batch_id, version in batches.all():
        # Counted, not read from the batch's ``rows``: exact even for rows written outside the sinks.
        n = conn.execute(sa.select(sa.func.count()).select_from(rows_table).where(rows_table.c.batch_id == batch_id))
        found[str(version)] = found.get(str(version), 0) + int(n.scalar_one())
        conn.execute(rows_table.delete().where(rows_table.c.batch_id == batch_id))
        conn.execute(prediction_batches.delete().where(b.id == batch_id))
    return found


def start_batch(
    conn: Connection, provenance: dict[str, Any], *, role: str = SERVED, rows_table: sa.Table | None = None
) -> int:
    """Replace the batch of ``provenance``'s model, partition and ``role`` (its old rows deleted) with a new one,
    inside the caller's transaction; return its id, which every row written with it carries.

    ``provenance``: model, partition, interval_start, interval_end, model_version, mlflow_run_id, input_digest,
    dag_id, dag_run_id (and optionally scored_at). The batch's ``rows`` is 0 until :func:`finish_batch`.
    """
    delete_predictions(conn, provenance["model"], provenance["partition"], role=role, rows_table=rows_table)
    names = {c.name for c in prediction_batches.columns} - {"id", "role", "rows", "scored_at"}
    row = {k: provenance.get(k) for k in names}
    row.update(role=role, rows=0, scored_at=provenance.get("scored_at") or datetime.now(UTC))
    inserted = conn.execute(prediction_batches.insert().values(**row)).inserted_primary_key
    assert inserted is not None
    return int(inserted[0])


def finish_batch(conn: Connection, batch_id: int, rows: int) -> None:
    """Record how many rows a batch has, once they are written."""
    conn.execute(prediction_batches.update().where(prediction_batches.c.id == batch_id).values(rows=rows))


#: Columns of a served row that vary per row (every other column of the view ``predictions`` is the batch's).
ROW_COLUMNS = ("ts", "row_key", "prediction", "predicted_class", "probability", "probabilities")


def insert_predictions(conn: Connection, rows: list[dict[str, Any]], *, role: str = SERVED) -> list[int]:
    """Write rows given as the view ``predictions`` shows them (provenance on every row), one batch per model and
    partition (each replacing the partition's earlier one), through SQLAlchemy Core: for a few rows (tests, repairs);
    scoring writes through the fast sinks. Returns the batches' ids."""
    groups: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for row in rows:
        groups.setdefault((row["model"], row["partition"]), []).append(row)
    ids = []
    for group in groups.values():
        batch_id = start_batch(conn, group[0], role=role)
        conn.execute(
            prediction_rows.insert(), [{"batch_id": batch_id, **{k: r.get(k) for k in ROW_COLUMNS}} for r in group]
        )
        finish_batch(conn, batch_id, len(group))
        ids.append(batch_id)
    return ids


def served_predictions(conn: Connection, model: str, partition: str) -> pd.DataFrame:
    """The predictions served for one interval, with the version that made them: columns row_key, ts (UTC),
    model_version, prediction, predicted_class, probability, probabilities, in time then key order.

    Read as the batch (one row) and its rows by the batch id (the unique index's prefix), then the version joined
    on in pandas: no per-row join in the database.
    """
    import pandas as pd

    b, r = prediction_batches.c, prediction_rows.c
    batch = conn.execute(
        sa.select(b.id, b.model_version).where(b.model == model, b.partition == partition, b.role == SERVED)
    ).first()
    columns = ["row_key", "ts", "model_version", "prediction", "predicted_class", "probability", "probabilities"]
    if batch is None:
        return pd.DataFrame({c: pd.Series(dtype="object") for c in columns}).astype({"ts": "datetime64[ns, UTC]"})
    query = sa.select(
        r.row_key,
        sa.type_coerce(r.ts, sa.BigInteger).label("ts"),
        r.prediction,
        r.predicted_class,
        r.probability,
        r.probabilities,
    )
    query = query.where(r.batch_id == batch.id).order_by(r.ts, r.row_key)
    found = conn.execute(query).all()
    frame = pd.DataFrame(
        found, columns=["row_key", "ts", "prediction", "predicted_class", "probability", "probabilities"]
    )
    frame["ts"] = pd.to_datetime(frame["ts"].astype("int64"), unit="us", utc=True)
    frame["model_version"] = str(batch.model_version)
    for name in ("prediction", "probability"):
        frame[name] = frame[name].astype("float64")
    return frame[columns]


def recent_validations(
    engine: Engine, model: str, limit: int = 20, *, failed_only: bool = False
) -> list[dict[str, Any]]:
    """The latest validation rows of a model (only the failed ones, with ``failed_only``), newest interval first."""
    query = sa.select(validation_results).where(validation_results.c.model == model)
    if failed_only:
        query = query.where(~validation_results.c.success)
    query = query.order_by(validation_results.c.interval_start.desc()).limit(limit)
    with engine.connect() as conn:
        return [dict(r._mapping) for r in conn.execute(query)]


def _row(mapping: Any) -> dict[str, Any]:
    """A row as a dict; SQLite hands timestamps back without their zone: they were written in UTC."""
    return {k: as_utc(v) if isinstance(v, datetime) else v for k, v in dict(mapping).items()}


def record_drift(engine: Engine, row: dict[str, Any]) -> list[dict[str, Any]]:
    """Replace the figures of one (model, window, champion version); return that version's windows so far.

    The history is every window judged against this champion up to this one, oldest first: the input of the
    retraining decision (a new champion starts a new history).
    """
    row = {**row, "measured_at": row.get("measured_at") or datetime.now(UTC)}
    t = drift_metrics.c
    key = (t.model == row["model"], t.champion_version == row["champion_version"])
    with engine.begin() as conn:
        conn.execute(drift_metrics.delete().where(*key, t.window_end == row["window_end"]))
        conn.execute(drift_metrics.insert().values(**row))
        query = sa.select(drift_metrics).where(*key, t.window_end <= row["window_end"]).order_by(t.window_end)
        return [_row(r._mapping) for r in conn.execute(query)]


def drift_history(engine: Engine, model: str, limit: int = 50) -> list[dict[str, Any]]:
    """The latest judged windows of a model (any champion), newest first."""
    t = drift_metrics.c
    query = sa.select(drift_metrics).where(t.model == model).order_by(t.window_end.desc(), t.measured_at.desc())
    with engine.connect() as conn:
        return [_row(r._mapping) for r in conn.execute(query.limit(limit))]


def retrain_request_for(engine: Engine, model: str, window_end: datetime) -> dict[str, Any] | None:
    """The request made for this window, if any."""
    t = retrain_requests.c
    query = sa.select(retrain_requests).where(t.model == model, t.window_end == window_end)
    with engine.connect() as conn:
        found = conn.execute(query).first()
    return _row(found._mapping) if found else None


def last_retrain_request(engine: Engine, model: str, until: datetime) -> dict[str, Any] | None:
    """The request with the latest window ending at or before ``until`` (data time), if any."""
    t = retrain_requests.c
    query = (
        sa.select(retrain_requests)
        .where(t.model == model, t.window_end <= until)
        .order_by(t.window_end.desc())
        .limit(1)
    )
    with engine.connect() as conn:
        found = conn.execute(query).first()
    return _row(found._mapping) if found else None


def retrain_requests_of(engine: Engine, model: str) -> list[dict[str, Any]]:
    """Every request of a model, oldest window first."""
    t = retrain_requests.c
    query = sa.select(retrain_requests).where(t.model == model).order_by(t.window_end)
    with engine.connect() as conn:
        return [_row(r._mapping) for r in conn.execute(query)]


def add_retrain_request(engine: Engine, row: dict[str, Any]) -> dict[str, Any]:
    """Insert a request unless its window has one; return the stored row (this one, or the earlier one)."""
    try:
        with engine.begin() as conn:
            conn.execute(retrain_requests.insert().values(**row))
    except sa.exc.IntegrityError:
        pass  # the window's request exists (a concurrent or earlier run): the unique constraint decides
    stored = retrain_request_for(engine, row["model"], row["window_end"])
    assert stored is not None  # inserted now or before
    return stored


# --- labels and outcomes (write side) ---------------------------------------------------------------------------


def current_labels(conn: Connection, model: str, partition: str) -> dict[str, dict[str, Any]]:
    """The current (highest) revision of every labelled row of one interval: row key -> its ``labels`` row."""
    t = labels.c
    query = sa.select(labels).where(t.model == model, t.partition == partition).order_by(t.row_key, t.revision)
    current: dict[str, dict[str, Any]] = {}
    for r in conn.execute(query):
        current[r.row_key] = _row(r._mapping)  # ordered by revision: the last one seen is the highest
    return current


def lock_labels(conn: Connection) -> None:
    """Make the caller's transaction the only writer of labels until it ends; call it first in the transaction.

    Recording labels reads an interval's current revisions and appends the next ones: two runs doing it at once
    (a labels catch-up runs several, and each reads its earlier intervals again) would both append the same
    revision, and one would fail on the unique constraint (then wait for its retry). With the lock the second reads
    what the first wrote. SQLite: ``BEGIN IMMEDIATE`` (the write lock from the start; the driver begins only at
    the first write, after the reads), waiting up to the connection's busy timeout. Postgres: a table lock that
    conflicts with itself and with writes, not with reads. Other databases: the unique constraint still refuses
    the second writer."""
    dialect = conn.dialect.name
    if dialect == "sqlite":
        conn.exec_driver_sql("BEGIN IMMEDIATE")
    elif dialect == "postgresql":
        conn.exec_driver_sql("LOCK TABLE labels IN SHARE ROW EXCLUSIVE MODE")


def append_labels(conn: Connection, rows: list[dict[str, Any]]) -> int:
    """Insert new label revisions inside the caller's transaction (``labels`` is append-only: never an update or
    a delete); a concurrent writer of the same revision fails the transaction on the unique constraint, unless the
    transaction took :func:`lock_labels` first."""
    if rows:
        conn.execute(labels.insert(), rows)
    return len(rows)


def outcomes_of(conn: Connection, model: str, partition: str) -> dict[str, dict[str, Any]]:
    """The stored outcomes of one interval: row key -> its ``outcomes`` row."""
    t = outcomes.c
    query = sa.select(outcomes).where(t.model == model, t.partition == partition)
    return {r.row_key: _row(r._mapping) for r in conn.execute(query)}


def write_outcomes(conn: Connection, inserts: list[dict[str, Any]], updates: list[dict[str, Any]]) -> None:
    """Insert new outcome rows and update changed ones (matched by model, partition and row key), inside the
    caller's transaction. Written portably (read, then insert or update) rather than with a dialect's upsert:
    the caller has already read the interval's rows to decide what changed."""
    if inserts:
        conn.execute(outcomes.insert(), inserts)
    t = outcomes.c
    for row in updates:
        key = (t.model == row["model"], t.partition == row["partition"], t.row_key == row["row_key"])
        values = {k: v for k, v in row.items() if k not in ("model", "partition", "row_key")}
        conn.execute(outcomes.update().where(*key).values(**values))


def outcomes_between(
    engine: Engine, model: str, start: datetime, end: datetime, *, arrived_after: datetime | None = None
) -> list[dict[str, Any]]:
    """The ``outcomes`` rows of a model whose ``ts`` is in ``[start, end)`` (labels that arrived after
    ``arrived_after`` only, when given), every version."""
    t = outcomes.c
    query = sa.select(outcomes).where(t.model == model, t.ts >= start, t.ts < end)
    if arrived_after is not None:
        query = query.where(t.label_arrived_at > arrived_after)
    with engine.connect() as conn:
        return [_row(r._mapping) for r in conn.execute(query.order_by(t.ts, t.row_key))]


def unlabelled_predictions(engine: Engine, model: str, start: datetime, end: datetime) -> list[dict[str, Any]]:
    """The served ``predictions`` in ``[start, end)`` that have no outcome (no label) yet, every version."""
    p, o = predictions.c, outcomes.c
    joined = predictions.outerjoin(
        outcomes, sa.and_(o.model == p.model, o.partition == p.partition, o.row_key == p.row_key)
    )
    query = (
        sa.select(p.partition, p.row_key, p.ts, p.model_version, p.prediction, p.predicted_class, p.probability)
        .select_from(joined)
        .where(p.model == model, p.ts >= start, p.ts < end, o.row_key.is_(None))
    )
    with engine.connect() as conn:
        return [_row(r._mapping) for r in conn.execute(query)]


def record_estimate_error(engine: Engine, row: dict[str, Any]) -> None:
    """Replace the comparison of one (model, window, version, metric) estimate with its realized figure."""
    row = {**row, "recorded_at": row.get("recorded_at") or datetime.now(UTC)}
    t = estimate_errors.c
    key = [t.model == row["model"], t.window_end == row["window_end"], t.model_version == row["model_version"]]
    with engine.begin() as conn:
        conn.execute(estimate_errors.delete().where(*key, t.metric == row["metric"]))
        conn.execute(estimate_errors.insert().values(**row))


def estimate_errors_of(engine: Engine, model: str, limit: int = 200) -> list[dict[str, Any]]:
    """A model's estimates set against their realized figures, newest window first."""
    t = estimate_errors.c
    query = sa.select(estimate_errors).where(t.model == model).order_by(t.window_end.desc(), t.metric)
    with engine.connect() as conn:
        return [_row(r._mapping) for r in conn.execute(query.limit(limit))]


# --- labels (read side) ---


def current_labels_of_partitions(engine: Engine, model: str, partitions: list[str]) -> pd.DataFrame:
    """The current label of every labelled row of these partitions of a model: columns ``partition``, ``row_key``,
    ``label`` (canonical text) and ``revision``, one row per (partition, row_key), sorted by them.

    The current label is the highest revision (a correction wins over what arrived first); no partitions, or
    none labelled yet, gives an empty frame with those columns. What training reads (the labels step reads one
    interval at a time with :func:`current_labels`).
    """
    import pandas as pd

    columns = ["partition", "row_key", "label", "revision"]
    t = labels.c
    frames = []
    for at in range(0, len(partitions), 500):  # bounded IN lists (SQLite's parameter limit)
        chunk = partitions[at : at + 500]
        newest = (
            sa.select(t.partition, t.row_key, sa.func.max(t.revision).label("revision"))
            .where(t.model == model, t.partition.in_(chunk))
            .group_by(t.partition, t.row_key)
            .subquery()
        )
        query = (
            sa.select(t.partition, t.row_key, t.label, t.revision)
            .join(
                newest,
                sa.and_(
                    t.partition == newest.c.partition,
                    t.row_key == newest.c.row_key,
                    t.revision == newest.c.revision,
                ),
            )
            .where(t.model == model)
        )
        with engine.connect() as conn:
            frames.append(pd.DataFrame([tuple(r) for r in conn.execute(query)], columns=columns))
    found = [f for f in frames if len(f)]
    if not found:
        return pd.DataFrame({c: pd.Series(dtype="int64" if c == "revision" else object) for c in columns})
    out = pd.concat(found, ignore_index=True)
    out["revision"] = out["revision"].astype("int64")
    return out.sort_values(["partition", "row_key"], kind="stable").reset_index(drop=True)

"""The warehouse: airloop's tables, defined once with SQLAlchemy Core (SQLite by default, Postgres at scale).

The ``MetaData`` here is the schema as the code uses it; the database gets it through the migrations in
``airloop.adapters.migrations`` (``ensure_schema`` upgrades to the newest revision on first use; changing a table
here needs a revision there: its docstring says how, and a test fails until it exists). Each writer keys its rows
to the model and the data interval, so re-running an interval replaces its rows instead of adding more.
"""

from __future__ import annotations

import threading
from datetime import UTC, datetime
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


predictions = sa.Table(
    "predictions",
    metadata,
    sa.Column("model", sa.String(64), nullable=False),
    sa.Column("partition", sa.String(32), nullable=False),
    sa.Column("interval_start", sa.DateTime(timezone=True), nullable=False),
    sa.Column("interval_end", sa.DateTime(timezone=True), nullable=False),
    sa.Column("ts", sa.DateTime(timezone=True), nullable=False, comment="the scored row's time column"),
    sa.Column("row_key", sa.Text, nullable=False, comment="the row's key values (source.keys), canonical text"),
    sa.Column("prediction", sa.Float, comment="regression: the predicted value (null for a classifier)"),
    sa.Column("predicted_class", sa.Text, comment="classification: the predicted class, as text"),
    sa.Column("probability", sa.Float, comment="binary: P(positive class); multiclass: P(predicted class)"),
    sa.Column("probabilities", sa.Text, comment="multiclass: JSON text of class -> probability"),
    sa.Column("model_version", sa.String(32), nullable=False),
    sa.Column("mlflow_run_id", sa.String(64), nullable=False),
    sa.Column("input_digest", sa.String(64), nullable=False, comment="content digest of the validated partition"),
    sa.Column("dag_id", sa.String(250)),
    sa.Column("dag_run_id", sa.String(250)),
    # A re-scored interval replaces its rows (delete by model and partition, then insert): at most one per key.
    sa.Index("uq_predictions_model_partition_row_key", "model", "partition", "row_key", unique=True),
    sa.Index("ix_predictions_model_ts", "model", "ts"),
)

#: The challenger's predictions while it waits (a pending approval, or ``gate.shadow``): the same columns as
#: ``predictions``, its version in ``model_version``, never served and never read by what reads predictions. A
#: re-scored interval replaces its rows (delete by model and partition, then insert), as for ``predictions``.
shadow_predictions = sa.Table(
    "shadow_predictions",
    metadata,
    *(column._copy() for column in predictions.columns),
    sa.Index("uq_shadow_predictions_model_partition_row_key", "model", "partition", "row_key", unique=True),
    sa.Index("ix_shadow_predictions_model_version", "model", "model_version"),
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


def delete_predictions(conn: Connection, model: str, partition: str) -> dict[str, int]:
    """Delete one interval's rows of ``predictions`` inside the caller's transaction; return how many rows each
    model version had there (empty when the interval had none)."""
    t = predictions.c
    where = (t.model == model, t.partition == partition)
    counts = conn.execute(sa.select(t.model_version, sa.func.count()).where(*where).group_by(t.model_version))
    found = {str(version): int(n) for version, n in counts}
    if found:
        conn.execute(predictions.delete().where(*where))
    return found


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

#: The columns of :func:`served_predictions`, in order (the labels step joins on ``row_key``).
SERVED_COLUMNS = ("row_key", "ts", "model_version", "prediction", "predicted_class", "probability", "probabilities")


def served_predictions(conn: Connection, model: str, partition: str) -> Any:
    """The predictions served for one interval, one row per row key, as a pandas ``DataFrame`` with the columns
    :data:`SERVED_COLUMNS` (``ts`` in UTC; an interval never scored gives an empty frame with those columns).

    The one place the labels step reads predictions from: a change to how predictions are stored changes this
    function only."""
    import pandas as pd

    t = predictions.c
    query = (
        sa.select(*(t[c] for c in SERVED_COLUMNS))
        .where(t.model == model, t.partition == partition)
        .order_by(t.ts, t.row_key)
    )
    rows = [_row(r._mapping) for r in conn.execute(query)]
    frame = pd.DataFrame(rows, columns=list(SERVED_COLUMNS))
    frame["ts"] = pd.to_datetime(frame["ts"], utc=True)
    return frame


def current_labels(conn: Connection, model: str, partition: str) -> dict[str, dict[str, Any]]:
    """The current (highest) revision of every labelled row of one interval: row key -> its ``labels`` row."""
    t = labels.c
    query = sa.select(labels).where(t.model == model, t.partition == partition).order_by(t.row_key, t.revision)
    current: dict[str, dict[str, Any]] = {}
    for r in conn.execute(query):
        current[r.row_key] = _row(r._mapping)  # ordered by revision: the last one seen is the highest
    return current


def append_labels(conn: Connection, rows: list[dict[str, Any]]) -> int:
    """Insert new label revisions inside the caller's transaction (``labels`` is append-only: never an update or
    a delete); a concurrent writer of the same revision fails the transaction on the unique constraint."""
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

"""The predictions sinks (airloop.adapters.prediction_sink): the SQLite fast path writes what SQLAlchemy would."""

from __future__ import annotations

import sqlite3
import threading
import time
from datetime import UTC, datetime

import numpy as np
import pandas as pd
import pytest
import sqlalchemy as sa
from sqlalchemy.dialects import sqlite as sqlite_dialect

from airloop.adapters import prediction_sink as sinks
from airloop.adapters import warehouse
from airloop.adapters.warehouse import ensure_schema, prediction_rows, predictions

CONSTANTS = {
    "model": "bikes",
    "partition": "2012-11-03T000000Z",
    "interval_start": datetime(2012, 11, 3, tzinfo=UTC),
    "interval_end": datetime(2012, 12, 1, tzinfo=UTC),
    "model_version": "7",
    "mlflow_run_id": "0123456789abcdef0123456789abcdef",
    "input_digest": "f" * 64,
    "dag_id": None,  # scoring outside Airflow
    "dag_run_id": "manual__2024-01-01T00:00:00+00:00 it's quoted",
}


def _chunk(rows: int) -> tuple[np.ndarray, np.ndarray]:
    """Naive UTC times with micro- and nanoseconds, and awkward floats."""
    ts = pd.date_range("2012-11-03", periods=rows, freq="37min").to_numpy()
    ts = ts + np.arange(rows).astype("timedelta64[ns]") * 1_234_567  # sub-second parts, some below a microsecond
    y = np.random.default_rng(0).gamma(2.0, 100.0, rows)
    y[:6] = [0.0, 1 / 3, 1e-300, 5e-324, 1.7976931348623157e308, -2.5]
    return ts, y


def _rows(ts: np.ndarray, y: np.ndarray, classifier: bool = False) -> sinks.ScoredRows:
    """Regression rows (``y`` the predictions), or classifier rows (``y`` the probabilities; awkward text too)."""
    keys = [f"key-{i}" for i in range(len(ts))]
    if not classifier:
        return sinks.ScoredRows(ts, keys, prediction=y)
    p = y / y.max()
    labels = np.where(p >= 0.5, 'it\'s "yes"', "nö").tolist()
    texts = [f'{{"a": {v!r}, "b": {1 - v!r}}}' for v in p.tolist()]
    return sinks.ScoredRows(ts, keys, predicted_class=labels, probability=p, probabilities=texts)


def _part(rows: sinks.ScoredRows, part: np.ndarray) -> sinks.ScoredRows:
    def cut(values):
        return (
            None if values is None else (values[part] if isinstance(values, np.ndarray) else [values[i] for i in part])
        )

    return sinks.ScoredRows(*(cut(getattr(rows, name)) for name in sinks.VARYING))


def _write(tmp_path, name: str, sink_class: type, rows: int, chunks: int = 1, classifier: bool = False) -> list[dict]:
    """Write ``chunks`` chunks through a sink into a fresh warehouse; its rows as SQLite stores them (raw values)."""
    db = tmp_path / f"{name}.db"
    engine = sa.create_engine(f"sqlite:///{db}")
    ensure_schema(engine)
    chunk = _rows(*_chunk(rows), classifier=classifier)
    with engine.begin() as conn:
        sink = sink_class(conn, warehouse.start_batch(conn, CONSTANTS), prediction_rows)
        for part in np.array_split(np.arange(rows), chunks):
            sink.write(_part(chunk, part))
        assert sink.rows == rows
    engine.dispose()
    with sqlite3.connect(db) as raw:
        raw.row_factory = sqlite3.Row
        return [dict(r) for r in raw.execute("SELECT * FROM prediction_rows ORDER BY rowid").fetchall()]


def test_epoch_micros_is_what_sqlalchemy_stores():
    dialect = sqlite_dialect.dialect()
    process = prediction_rows.c.ts.type.dialect_impl(dialect).bind_processor(dialect)
    values = pd.to_datetime(
        [
            "2012-11-03 00:00:00",
            "2012-11-03 23:59:59.999999",
            "2000-02-29 12:34:56.000001",
            "1970-01-01 00:00:00",
            "1969-12-31 23:59:59.5",
            "2262-04-11 23:47:16.854775",
            "1677-09-21 00:12:43.145225",
            "2030-06-01 01:02:03.123456789",  # nanoseconds: dropped, as datetime.microsecond drops them
            "1969-12-31 23:59:59.9999995",  # ... rounding down, also before 1970
        ],
        format="ISO8601",
    )
    expected = [process(t.to_pydatetime(warn=False)) for t in values]
    assert sinks.epoch_micros(values.to_numpy()) == expected
    assert sinks.epoch_micros(np.array([], dtype="datetime64[ns]")) == []


def test_the_view_shows_times_as_sqlalchemy_reads_them(tmp_path):
    """The view's SQLite text for ``ts`` (integer microseconds in the table) reads back as the same time."""
    engine = sa.create_engine(f"sqlite:///{tmp_path / 'w.db'}")
    ensure_schema(engine)
    values = pd.to_datetime(
        ["2012-11-03 00:00:00", "1969-12-31 23:59:59.5", "1677-09-21 00:12:43.145225", "2262-04-11 23:47:16.854775"],
        format="ISO8601",
    ).to_numpy()
    with engine.begin() as conn:
        sinks.SQLiteSink(conn, warehouse.start_batch(conn, CONSTANTS), prediction_rows).write(
            sinks.ScoredRows(values, ["a", "b", "c", "d"], prediction=np.zeros(4))
        )
    with engine.connect() as conn:
        got = conn.execute(sa.select(predictions.c.ts).order_by(predictions.c.row_key)).scalars().all()
    assert got == [pd.Timestamp(v).to_pydatetime() for v in values]


def test_sqlite_sink_writes_the_rows_sqlalchemy_core_writes(tmp_path, monkeypatch):
    # Statements of 64 rows: chunks split into several statements and a shorter last one.
    monkeypatch.setattr(sinks, "SQLITE_ROWS_PER_STATEMENT", 64)
    rows = 1_000
    core = _write(tmp_path, "core", sinks.CoreSink, rows)
    fast = _write(tmp_path, "fast", sinks.SQLiteSink, rows, chunks=3)
    assert len(fast) == rows
    assert fast == core  # same text for every time, same REAL for every prediction, same constants
    assert [r["prediction"] for r in fast] == _chunk(rows)[1].tolist()  # predictions stored exactly
    assert [r["row_key"] for r in fast] == [f"key-{i}" for i in range(rows)]
    assert {(r["predicted_class"], r["probability"], r["probabilities"]) for r in fast} == {(None, None, None)}
    assert {r["batch_id"] for r in fast} == {1}  # the provenance is the batch's, stored once


def test_sqlite_sink_writes_classifier_rows_as_sqlalchemy_core_does(tmp_path, monkeypatch):
    monkeypatch.setattr(sinks, "SQLITE_ROWS_PER_STATEMENT", 64)
    core = _write(tmp_path, "core", sinks.CoreSink, 300, classifier=True)
    fast = _write(tmp_path, "fast", sinks.SQLiteSink, 300, chunks=3, classifier=True)
    assert fast == core and len(fast) == 300
    expected = _rows(*_chunk(300), classifier=True)
    assert [r["probability"] for r in fast] == expected.probability.tolist()
    assert [r["predicted_class"] for r in fast] == expected.predicted_class  # quotes and accents intact
    assert [r["probabilities"] for r in fast] == expected.probabilities
    assert {r["prediction"] for r in fast} == {None}


def test_sqlite_sink_rows_read_back_through_sqlalchemy(tmp_path):
    db = tmp_path / "w.db"
    engine = sa.create_engine(f"sqlite:///{db}")
    ensure_schema(engine)
    ts, y = _chunk(10)
    with engine.begin() as conn:
        sinks.SQLiteSink(conn, warehouse.start_batch(conn, CONSTANTS), prediction_rows).write(_rows(ts, y))
    with engine.connect() as conn:
        got = conn.execute(sa.select(predictions.c.ts, predictions.c.prediction).order_by(predictions.c.ts)).all()
    assert [r.ts for r in got] == [t.to_pydatetime(warn=False) for t in pd.to_datetime(ts)]
    assert [r.prediction for r in got] == y.tolist()


def test_sqlite_engines_get_the_fast_sink(tmp_path):
    """Guards the fast path: a schema or SQLAlchemy change that makes it unusable must be noticed, not slow."""
    engine = sa.create_engine(f"sqlite:///{tmp_path / 'w.db'}")
    ensure_schema(engine)
    with engine.begin() as conn:
        assert sinks.SQLiteSink.unusable(conn, prediction_rows) is None
        assert isinstance(sinks.sink_for(conn, 1), sinks.SQLiteSink)


def test_sqlite_sink_respects_the_variable_limit(tmp_path, monkeypatch):
    """An old SQLite allows only 999 ``?NNN``: statements get fewer rows, never too many variables."""
    monkeypatch.setattr(sinks, "SQLITE_ROWS_PER_STATEMENT", 100_000)
    engine = sa.create_engine(f"sqlite:///{tmp_path / 'w.db'}")
    ensure_schema(engine)
    with engine.begin() as conn:
        conn.connection.driver_connection.setlimit(sqlite3.SQLITE_LIMIT_VARIABLE_NUMBER, 999)
        sink = sinks.SQLiteSink(conn, warehouse.start_batch(conn, CONSTANTS), prediction_rows)
        assert sink._rows_per_statement == (999 - 1) // 6  # room for every per-row column
        sink.write(_rows(*_chunk(2_000)))
        assert conn.execute(sa.select(sa.func.count()).select_from(predictions)).scalar_one() == 2_000


def test_background_writes_run_in_order_and_bound_what_waits():
    written: list[int] = []
    release = threading.Event()
    waiting_peak = 0
    submitted = 0

    def write(ts, prediction) -> None:
        release.wait(5)
        written.append(int(ts[0]))

    with sinks.BackgroundWrites(write, in_flight=2) as writes:
        blocker = threading.Thread(target=lambda: (time.sleep(0.2), release.set()))
        blocker.start()
        started = time.perf_counter()
        for i in range(5):
            writes.submit(np.array([i]), np.array([0.0]))
            submitted += 1
            waiting_peak = max(waiting_peak, len(writes._pending))
        writes.finish()
        blocker.join()
    assert written == [0, 1, 2, 3, 4]
    assert waiting_peak <= 2
    assert time.perf_counter() - started >= 0.2  # the third submit waited for the database


def test_background_write_failure_is_raised_in_the_caller_and_later_writes_are_skipped():
    written: list[int] = []

    def write(ts, prediction) -> None:
        if int(ts[0]) == 1:
            raise sqlite3.OperationalError("disk I/O error")
        written.append(int(ts[0]))

    with pytest.raises(sqlite3.OperationalError, match="disk I/O error"), sinks.BackgroundWrites(write, 8) as writes:
        for i in range(4):
            writes.submit(np.array([i]), np.array([0.0]))
        writes.finish()
    assert written == [0]  # chunks queued after the failed one never reached the database

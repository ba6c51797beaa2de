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


# --- Postgres COPY's binary payload, decoded here as the server reads it (PostgreSQL docs, "COPY: Binary Format") ---

AWKWARD = ["plain", "tab\there", "new\nline", "back\\slash", "\\N", "cr\rx", 'it\'s "q" é', "", "日本"]


def _decode_copy(columns: tuple[str, ...], payload: bytes) -> list[dict]:
    """Every row of a binary COPY payload as {column: value}: int4, int8 (ts), float8, UTF-8 text; None for -1."""
    import struct

    kinds = {"batch_id": ">i", "ts": ">q", "prediction": ">d", "probability": ">d"}
    assert payload[:19] == b"PGCOPY\n\xff\r\n\x00" + bytes(8)
    assert payload[-2:] == b"\xff\xff"
    at, rows = 19, []
    while at < len(payload) - 2:
        (count,) = struct.unpack_from(">h", payload, at)
        assert count == len(columns)
        at += 2
        row = {}
        for name in columns:
            (length,) = struct.unpack_from(">i", payload, at)
            at += 4
            if length == -1:
                row[name] = None
                continue
            raw = payload[at : at + length]
            at += length
            row[name] = struct.unpack(kinds[name], raw)[0] if name in kinds else raw.decode("utf-8")
        rows.append(row)
    assert at == len(payload) - 2  # nothing left over between the last row and the trailer
    return rows


def _expected(batch_id: int, rows: sinks.ScoredRows) -> list[dict]:
    columns = {"ts": sinks.epoch_micros(rows.ts)} | {n: sinks._values(rows, n) for n in rows.present() if n != "ts"}
    return [{"batch_id": batch_id, **dict(zip(columns, v, strict=True))} for v in zip(*columns.values(), strict=True)]


@pytest.mark.parametrize("layout", ["fixed-width time keys", "varying keys", "classifier with nulls", "non-ASCII"])
def test_copy_binary_round_trips_every_column_type(layout):
    n = 257
    ts = np.asarray(pd.date_range("1969-12-31 23:59:58.5", periods=n, freq="3701ms").to_numpy(), dtype="<M8[ns]")
    ts[3] += np.timedelta64(999, "ns")  # nanoseconds dropped, as the other sinks drop them
    p = np.random.default_rng(0).random(n) * 1e3
    p[:4] = [5e-324, 1 / 3, 1.7976931348623157e308, -0.0]
    if layout == "fixed-width time keys":
        keys = pd.Series(pd.to_datetime(ts)).dt.strftime("%Y-%m-%dT%H:%M:%SZ").tolist()
        rows = sinks.ScoredRows(ts, keys, prediction=p)
    elif layout == "varying keys":
        rows = sinks.ScoredRows(ts, [str(i * 37) for i in range(n)], prediction=p)
    elif layout == "classifier with nulls":
        classes = [AWKWARD[i % len(AWKWARD)] for i in range(n)]
        texts = [None if i % 3 else f'{{"a\\tb": {v!r}}}' for i, v in enumerate(p.tolist())]
        keys = [f'["{AWKWARD[i % len(AWKWARD)]}",{i}]' for i in range(n)]
        rows = sinks.ScoredRows(ts, keys, predicted_class=classes, probability=p, probabilities=texts)
    else:  # every key 6 bytes in UTF-8 but not 6 characters: must not be laid out by character count
        keys = ["kéé0" if i % 2 else f"k{i:05d}" for i in range(n)]
        rows = sinks.ScoredRows(ts, keys, predicted_class=["é"] * n, probability=p)
    columns, payload = sinks.copy_binary(12345, rows)
    assert columns[0] == "batch_id" and set(columns) == {"batch_id", *rows.present()}
    got = _decode_copy(columns, payload)
    expected = _expected(12345, rows)
    assert len(got) == n
    for g, e in zip(got, expected, strict=True):
        assert g == e
        for name in ("prediction", "probability"):  # bit for bit, -0.0 included
            if e.get(name) is not None:
                assert np.float64(g[name]).tobytes() == np.float64(e[name]).tobytes()


def test_copy_binary_of_one_row_and_of_empty_text():
    ts = np.array(["2030-01-01T00:00:00"], dtype="datetime64[us]")
    for keys, classes in ((["k"], [""]), ([""], ["x"])):
        rows = sinks.ScoredRows(ts, keys, predicted_class=classes, probability=np.array([0.5]))
        columns, payload = sinks.copy_binary(1, rows)
        assert _decode_copy(columns, payload) == _expected(1, rows)


def test_copy_binary_of_no_rows_is_header_and_trailer():
    ts = np.array([], dtype="datetime64[us]")
    for rows in (
        sinks.ScoredRows(ts, [], prediction=np.array([])),
        sinks.ScoredRows(ts, [], predicted_class=[], probability=np.array([]), probabilities=[]),
    ):
        columns, payload = sinks.copy_binary(1, rows)
        assert columns == ("batch_id", *rows.present()) and _decode_copy(columns, payload) == []

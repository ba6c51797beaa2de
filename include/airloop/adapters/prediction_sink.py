"""The warehouse side of batch scoring: sinks that insert prediction rows into ``predictions``, and the thread
that runs them while the model predicts the next chunk.

The warehouse insert decides how fast scoring is (SQLAlchemy's executemany of dicts is slower than the model),
so rows go to the database through a sink chosen by dialect (:func:`sink_for`): on SQLite, multi-row INSERT
statements on the driver's own cursor (:class:`SQLiteSink`); on any other database, SQLAlchemy Core's
``insert()`` (:class:`CoreSink`; Postgres ``COPY`` is the planned fast sink there). The sink runs in a background
thread (:class:`BackgroundWrites`), so the model predicts the next chunk while the database stores this one.
:func:`replacing` holds it together: one transaction that first deletes the partition's old rows.
"""

from __future__ import annotations

import logging
import threading
from collections import deque
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    import numpy as np
    from sqlalchemy.engine import Connection, Dialect, Engine

log = logging.getLogger(__name__)

#: Rows per INSERT statement of the SQLite sink (measured: 500 to 2,000 are fastest; 8,000 is a third slower).
SQLITE_ROWS_PER_STATEMENT = 1_000


@contextmanager
def replacing(engine: Engine, constants: dict[str, Any], in_flight: int) -> Iterator[tuple[BackgroundWrites, Sink]]:
    """Replace one partition's rows of ``predictions``: a transaction that deletes them, then the writes.

    ``constants`` are the values every row shares; their ``model`` and ``partition`` name the rows replaced. The
    block submits chunks to the yielded :class:`BackgroundWrites` (at most ``in_flight`` waiting) and calls its
    ``finish`` before it ends; the transaction commits when the block ends without an error, else rolls back
    (the old rows stay).
    """
    from airloop.adapters.warehouse import ensure_schema, predictions

    ensure_schema(engine)
    with engine.begin() as conn:
        t = predictions.c
        conn.execute(predictions.delete().where(t.model == constants["model"], t.partition == constants["partition"]))
        sink = sink_for(conn, constants)
        with BackgroundWrites(sink.write, in_flight) as writes:
            yield writes, sink


class Sink(Protocol):
    """Inserts chunks of prediction rows into ``predictions`` on one connection, inside its open transaction."""

    #: How the rows are written, for the log.
    describe: str

    def write(self, ts: np.ndarray, prediction: np.ndarray) -> None:
        """Insert one row per element: ``ts`` naive UTC ``datetime64``, ``prediction`` float64, same length."""
        ...


def sink_for(conn: Connection, constants: dict[str, Any]) -> Sink:
    """The fastest sink this connection's database supports; SQLAlchemy Core's insert for any database.

    ``constants`` are the values every row of the partition shares (model, partition, interval, provenance).
    """
    if conn.dialect.name == "sqlite":
        reason = SQLiteSink.unusable(conn)
        if reason is None:
            return SQLiteSink(conn, constants)
        log.warning("Writing predictions through SQLAlchemy's generic insert (slower): %s.", reason)
    return CoreSink(conn, constants)


class CoreSink:
    """Any database SQLAlchemy supports: ``conn.execute(predictions.insert(), rows)`` (an executemany).

    About 140k rows/s on SQLite (STACK.md), so several times slower than the model; Postgres will get a
    ``COPY`` sink of its own (323k rows/s measured against 58k for this path).
    """

    describe = "SQLAlchemy Core insert"

    def __init__(self, conn: Connection, constants: dict[str, Any]) -> None:
        from airloop.adapters.warehouse import predictions

        self._conn = conn
        self._statement = predictions.insert()
        self._constants = constants

    def write(self, ts: np.ndarray, prediction: np.ndarray) -> None:
        import pandas as pd

        # Time-zone aware values (Postgres would read a naive one in the session's time zone), to the microsecond
        # (what Python's datetime holds).
        times = pd.DatetimeIndex(ts.astype("datetime64[us]")).tz_localize("UTC")
        records = [
            {**self._constants, "ts": t, "prediction": p}
            for t, p in zip(times.to_pydatetime(), prediction.tolist(), strict=True)
        ]
        self._conn.execute(self._statement, records)


class SQLiteSink:
    """SQLite through the ``sqlite3`` connection underneath SQLAlchemy's: multi-row INSERTs, values as SQLAlchemy
    would store them.

    Written by hand because nothing in SQLAlchemy or pandas is fast enough here. Measured with 1M prediction rows
    (11 columns, two indexes) into a WAL-mode file, commit excluded: SQLAlchemy's executemany of dicts about 140k
    rows/s (per-row Python bind processing; pandas ``to_sql`` is the same path), ``sqlite3.executemany`` of tuples
    230k-290k rows/s (SQLite resets, binds and steps the statement once per row, and the driver takes the GIL back
    after every row, which stalls it behind a busy predicting thread), ``to_sql(method='multi')`` 10k rows/s
    (SQLAlchemy compiles every statement). One prepared ``INSERT ... VALUES (...), (...), ...`` of
    :data:`SQLITE_ROWS_PER_STATEMENT` rows: 470k-750k rows/s (1.1M in memory), one GIL hand-over per statement,
    and the values every row shares bound once per statement (``?1`` to ``?k`` in every row, then ``ts`` and
    ``prediction`` per row). The driver caches the prepared statement, so each statement is parsed once.
    SQLAlchemy's own multi-row form ("insertmanyvalues") is used for ``INSERT ... RETURNING`` only.

    SQLAlchemy stores a SQLite ``DateTime`` as text (``2012-11-03 00:00:00.000000``) through a Python function per
    value; here numpy formats a whole chunk at once. :meth:`unusable` checks that both give the same text, and the
    constants still go through SQLAlchemy's own bind processors, so the rows are the ones SQLAlchemy would write.
    """

    describe = "SQLite multi-row INSERT"

    #: The columns that vary per row; every other column of ``predictions`` is a per-partition constant.
    VARYING = ("ts", "prediction")

    def __init__(self, conn: Connection, constants: dict[str, Any]) -> None:
        import sqlite3

        from airloop.adapters.warehouse import predictions

        dialect = conn.dialect
        driver = conn.connection.driver_connection
        assert isinstance(driver, sqlite3.Connection)  # checked by unusable()
        fixed = [c for c in predictions.columns if c.name not in self.VARYING]
        values = []
        for column in fixed:  # SQLAlchemy's own conversion of each constant (the interval's times to text)
            process, value = _bind(column.type, dialect), constants[column.name]
            values.append(process(value) if process is not None and value is not None else value)
        self._constants = tuple(values)
        self._number = {c.name: f"?{i}" for i, c in enumerate(fixed, start=1)}
        self._columns = [c.name for c in predictions.columns]
        quote = dialect.identifier_preparer.quote
        self._prefix = f"INSERT INTO {quote(predictions.name)} ({', '.join(quote(c) for c in self._columns)}) VALUES "
        # ?NNN may not exceed the build's SQLITE_LIMIT_VARIABLE_NUMBER (999 before SQLite 3.32, 32766 after).
        limit = driver.getlimit(sqlite3.SQLITE_LIMIT_VARIABLE_NUMBER)
        self._rows_per_statement = max(1, min(SQLITE_ROWS_PER_STATEMENT, (limit - len(fixed)) // len(self.VARYING)))
        self._statements: dict[int, str] = {}
        self._cursor = driver.cursor()

    @classmethod
    def unusable(cls, conn: Connection) -> str | None:
        """Why this sink cannot write for ``conn`` (None when it can)."""
        import sqlite3
        from datetime import datetime as dt

        import numpy as np

        from airloop.adapters.warehouse import predictions

        dialect = conn.dialect
        if not isinstance(conn.connection.driver_connection, sqlite3.Connection):
            return f"the SQLite driver is {dialect.driver}, not the sqlite3 module"
        to_float = _bind(predictions.c.prediction.type, dialect)  # SQLAlchemy's float() per value, if anything
        samples = (0.0, -1.5, 123.456789, 5e-324, 1.7976931348623157e308)
        if to_float is not None and any(repr(to_float(v)) != repr(v) for v in samples):
            return "the prediction column's type changes float values before they are stored"
        process = _bind(predictions.c.ts.type, dialect)
        sample = dt(2001, 2, 3, 4, 5, 6, 789012)
        expected = process(sample) if process is not None else sample
        ours = sqlite_datetime_text(np.array([sample], dtype="datetime64[us]"))[0]
        if expected != ours:
            return f"the ts column stores {expected!r} where this sink would store {ours!r}"
        return None

    def _statement(self, rows: int) -> str:
        sql = self._statements.get(rows)
        if sql is None:
            first = len(self._constants) + 1

            def row(i: int) -> str:
                per_row = {"ts": f"?{first + 2 * i}", "prediction": f"?{first + 2 * i + 1}"}
                return "(" + ",".join(per_row.get(c) or self._number[c] for c in self._columns) + ")"

            sql = self._statements[rows] = self._prefix + ",".join(row(i) for i in range(rows))
        return sql

    def write(self, ts: np.ndarray, prediction: np.ndarray) -> None:
        times = sqlite_datetime_text(ts)
        values = prediction.tolist()
        step = self._rows_per_statement
        for start in range(0, len(times), step):
            stop = min(start + step, len(times))
            params: list[Any] = [None] * (2 * (stop - start))
            params[0::2] = times[start:stop]
            params[1::2] = values[start:stop]
            self._cursor.execute(self._statement(stop - start), (*self._constants, *params))


def _bind(type_: Any, dialect: Dialect) -> Callable[[Any], Any] | None:
    """SQLAlchemy's bind processor of a column type on a dialect (None when values go to the driver as they are)."""
    processor: Callable[[Any], Any] | None = type_.dialect_impl(dialect).bind_processor(dialect)
    return processor


def sqlite_datetime_text(ts: np.ndarray) -> list[str]:
    """Naive ``datetime64`` values as SQLAlchemy's SQLite ``DateTime`` stores them: ``YYYY-MM-DD HH:MM:SS.ffffff``.

    numpy's ISO text has a ``T`` between date and time; it is overwritten in place in the array's UCS-4 buffer
    (fixed width, so the separator is the 11th code point of every value), which is faster than ``str.replace``
    per value. Nanoseconds are dropped (rounding down), as ``datetime.microsecond`` drops them for SQLAlchemy.
    """
    import numpy as np

    if not len(ts):
        return []
    text = np.datetime_as_string(ts, unit="us")
    codes = text.view(np.uint32).reshape(len(text), -1)
    if not (codes[:, 10] == ord("T")).all():  # years outside 0001-9999 (Python's datetime refuses them)
        raise ValueError(f"time values outside the years 1 to 9999 cannot be stored: {ts.min()} .. {ts.max()}")
    codes[:, 10] = ord(" ")
    result: list[str] = text.tolist()
    return result


class BackgroundWrites:
    """A sink's writes, in order, in one background thread, at most ``in_flight`` chunks behind the caller.

    Database drivers release the GIL while the database works (``sqlite3`` while SQLite runs a statement, psycopg
    while it waits for the server), so the caller reads and predicts the next chunk meanwhile (about a tenth less
    wall time for a 1M-row partition on 2 cores, where the thread competes with the model's OpenMP threads for
    the CPU; more with more cores, or with a database server doing the work elsewhere). The caller's
    thread owns the connection's transaction and uses the connection only when no write is running: it calls
    :meth:`finish` (wait for every write; the first failure is raised here) before it commits, and leaving the
    ``with`` block waits for the running write and drops the queued ones before it rolls back. After a failed
    write, the queued ones are skipped; the failure is raised in the caller at its next :meth:`submit` or
    :meth:`finish`.
    """

    def __init__(self, write: Callable[[np.ndarray, np.ndarray], None], in_flight: int) -> None:
        self._write = write
        self._in_flight = max(1, in_flight)
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="airloop-predictions")
        self._pending: deque[Future[None]] = deque()
        self._failed = threading.Event()

    def __enter__(self) -> BackgroundWrites:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, *exc_info: object) -> None:
        try:
            if exc_type is None:
                self.finish()  # a write failure is never lost, even when the caller did not ask
        finally:
            self._pool.shutdown(wait=True, cancel_futures=True)

    def submit(self, ts: np.ndarray, prediction: np.ndarray) -> None:
        """Queue one chunk; wait first while ``in_flight`` chunks are queued or running (bounded memory)."""
        while self._pending and (self._pending[0].done() or len(self._pending) >= self._in_flight):
            self._pending.popleft().result()  # raises an earlier write's failure in the caller's thread
        self._pending.append(self._pool.submit(self._run, ts, prediction))

    def finish(self) -> None:
        """Wait until every queued chunk is written; raise the first failure."""
        while self._pending:
            self._pending.popleft().result()

    def _run(self, ts: np.ndarray, prediction: np.ndarray) -> None:
        if self._failed.is_set():
            return  # an earlier chunk failed: the transaction will be rolled back, writing more is wasted time
        try:
            self._write(ts, prediction)
        except BaseException:
            self._failed.set()
            raise

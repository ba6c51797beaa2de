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
from dataclasses import dataclass, fields
from typing import TYPE_CHECKING, Any, Protocol

from airloop.core.errors import ExpectedFailure

if TYPE_CHECKING:
    import numpy as np
    import sqlalchemy as sa
    from sqlalchemy.engine import Connection, Dialect, Engine

log = logging.getLogger(__name__)

#: Rows per INSERT statement of the SQLite sink (measured: 500 to 2,000 are fastest; 8,000 is a third slower).
SQLITE_ROWS_PER_STATEMENT = 1_000


@dataclass(frozen=True)
class ScoredRows:
    """One chunk of prediction rows: the values that vary per row, all of the same length.

    ``ts`` naive UTC ``datetime64``, ``row_key`` the rows' canonical key text; then a regression's ``prediction``
    (float64) or a classifier's ``predicted_class`` (text), ``probability`` (float64) and, for a multiclass one,
    ``probabilities`` (JSON text). A field left None is null in every row.
    """

    ts: np.ndarray
    row_key: list[str]
    prediction: np.ndarray | None = None
    predicted_class: list[str] | None = None
    probability: np.ndarray | None = None
    probabilities: list[str] | None = None

    def __len__(self) -> int:
        return len(self.ts)

    def present(self) -> tuple[str, ...]:
        """The varying columns this chunk has values for, in :data:`VARYING` order."""
        return tuple(name for name in VARYING if getattr(self, name) is not None)


#: The columns of ``predictions`` that vary per row; every other column is a per-partition constant.
VARYING = tuple(f.name for f in fields(ScoredRows))


class RowKeyConflict(ExpectedFailure, RuntimeError):
    """Two rows of one partition have the same row key: the unique index refused the insert (nothing written)."""


@contextmanager
def replacing(
    engine: Engine, constants: dict[str, Any], in_flight: int, table: sa.Table | None = None
) -> Iterator[tuple[BackgroundWrites, Sink]]:
    """Replace one partition's rows of ``predictions``: a transaction that deletes them, then the writes.

    ``table``: another table with the columns of ``predictions`` (``shadow_predictions``); default ``predictions``.

    ``constants`` are the values every row shares; their ``model`` and ``partition`` name the rows replaced. The
    block submits chunks to the yielded :class:`BackgroundWrites` (at most ``in_flight`` waiting) and calls its
    ``finish`` before it ends; the transaction commits when the block ends without an error, else rolls back
    (the old rows stay). Two rows with one key (the unique index on model, partition and row key) raise
    :class:`RowKeyConflict`.
    """
    import sqlalchemy as sa

    from airloop.adapters.warehouse import ensure_schema, predictions

    target = predictions if table is None else table
    ensure_schema(engine)
    try:
        with engine.begin() as conn:
            t = target.c
            conn.execute(target.delete().where(t.model == constants["model"], t.partition == constants["partition"]))
            sink = sink_for(conn, constants, target)
            with BackgroundWrites(sink.write, in_flight) as writes:
                yield writes, sink
    except sa.exc.IntegrityError as exc:
        raise RowKeyConflict(
            f"Partition {constants['partition']} of {constants['model']} has two rows with the same row key "
            f"(table {target.name} is unique on model, partition and row_key; {exc.orig}); nothing of this partition "
            "was written. It was validated before ingestion checked row keys: re-ingest the interval (its keys "
            "are then checked) or set `source.keys` in the model spec to columns that identify a row."
        ) from None


class Sink(Protocol):
    """Inserts chunks of prediction rows into ``predictions`` on one connection, inside its open transaction."""

    #: How the rows are written, for the log.
    describe: str

    def write(self, rows: ScoredRows) -> None:
        """Insert one row per element of ``rows``."""
        ...


def sink_for(conn: Connection, constants: dict[str, Any], table: sa.Table | None = None) -> Sink:
    """The fastest sink this connection's database supports; SQLAlchemy Core's insert for any database.

    ``constants`` are the values every row of the partition shares (model, partition, interval, provenance);
    ``table`` has the columns of ``predictions`` (default: ``predictions`` itself).
    """
    if conn.dialect.name == "sqlite":
        reason = SQLiteSink.unusable(conn)
        if reason is None:
            return SQLiteSink(conn, constants, table)
        log.warning("Writing predictions through SQLAlchemy's generic insert (slower): %s.", reason)
    return CoreSink(conn, constants, table)


class CoreSink:
    """Any database SQLAlchemy supports: ``conn.execute(predictions.insert(), rows)`` (an executemany).

    About 140k rows/s on SQLite (STACK.md), so several times slower than the model; Postgres will get a
    ``COPY`` sink of its own (323k rows/s measured against 58k for this path).
    """

    describe = "SQLAlchemy Core insert"

    def __init__(self, conn: Connection, constants: dict[str, Any], table: sa.Table | None = None) -> None:
        from airloop.adapters.warehouse import predictions

        self._conn = conn
        self._statement = (predictions if table is None else table).insert()
        self._constants = constants

    def write(self, rows: ScoredRows) -> None:
        import pandas as pd

        # Time-zone aware values (Postgres would read a naive one in the session's time zone), to the microsecond
        # (what Python's datetime holds).
        times = pd.DatetimeIndex(rows.ts.astype("datetime64[us]")).tz_localize("UTC").to_pydatetime().tolist()
        columns = [times if name == "ts" else _values(rows, name) for name in VARYING]
        records = [
            {**self._constants, **dict(zip(VARYING, values, strict=True))} for values in zip(*columns, strict=True)
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

    Of the per-row columns (:data:`VARYING`), those a chunk has no values for (a regression's class columns, a
    classifier's ``prediction``) are written as ``NULL`` in the statement's text, so they cost nothing per row.

    SQLAlchemy stores a SQLite ``DateTime`` as text (``2012-11-03 00:00:00.000000``) through a Python function per
    value; here numpy formats a whole chunk at once. :meth:`unusable` checks that both give the same text, and the
    constants still go through SQLAlchemy's own bind processors, so the rows are the ones SQLAlchemy would write.
    """

    describe = "SQLite multi-row INSERT"

    def __init__(self, conn: Connection, constants: dict[str, Any], table: sa.Table | None = None) -> None:
        import sqlite3

        from airloop.adapters.warehouse import predictions as default

        predictions = default if table is None else table
        dialect = conn.dialect
        driver = conn.connection.driver_connection
        assert isinstance(driver, sqlite3.Connection)  # checked by unusable()
        fixed = [c for c in predictions.columns if c.name not in VARYING]
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
        self._rows_per_statement = max(1, min(SQLITE_ROWS_PER_STATEMENT, (limit - len(fixed)) // len(VARYING)))
        self._statements: dict[tuple[int, tuple[str, ...]], str] = {}
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
        samples = (0.0, -1.5, 123.456789, 5e-324, 1.7976931348623157e308)
        for name in ("prediction", "probability"):
            to_float = _bind(predictions.c[name].type, dialect)  # SQLAlchemy's float() per value, if anything
            if to_float is not None and any(repr(to_float(v)) != repr(v) for v in samples):
                return f"the {name} column's type changes float values before they are stored"
        for name in ("row_key", "predicted_class", "probabilities"):
            to_text = _bind(predictions.c[name].type, dialect)
            if to_text is not None and to_text("é'x") != "é'x":
                return f"the {name} column's type changes text before it is stored"
        process = _bind(predictions.c.ts.type, dialect)
        sample = dt(2001, 2, 3, 4, 5, 6, 789012)
        expected = process(sample) if process is not None else sample
        ours = sqlite_datetime_text(np.array([sample], dtype="datetime64[us]"))[0]
        if expected != ours:
            return f"the ts column stores {expected!r} where this sink would store {ours!r}"
        return None

    def _statement(self, rows: int, present: tuple[str, ...]) -> str:
        sql = self._statements.get((rows, present))
        if sql is None:
            first, width = len(self._constants) + 1, len(present)

            def row(i: int) -> str:
                per_row = {name: f"?{first + width * i + j}" for j, name in enumerate(present)}
                values = (per_row.get(c) or self._number.get(c) or "NULL" for c in self._columns)
                return "(" + ",".join(values) + ")"

            sql = self._statements[(rows, present)] = self._prefix + ",".join(row(i) for i in range(rows))
        return sql

    def write(self, rows: ScoredRows) -> None:
        present = rows.present()
        columns = [sqlite_datetime_text(rows.ts) if name == "ts" else _values(rows, name) for name in present]
        width, step = len(present), self._rows_per_statement
        for start in range(0, len(rows), step):
            stop = min(start + step, len(rows))
            params: list[Any] = [None] * (width * (stop - start))
            for j, values in enumerate(columns):
                params[j::width] = values[start:stop]
            self._cursor.execute(self._statement(stop - start, present), (*self._constants, *params))


def _values(rows: ScoredRows, name: str) -> list[Any]:
    """One per-row column of a chunk as Python values (None for every row when the chunk has none)."""
    value = getattr(rows, name)
    if value is None:
        return [None] * len(rows)
    return value.tolist() if hasattr(value, "tolist") else list(value)


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

    def __init__(self, write: Callable[..., None], in_flight: int) -> None:
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

    def submit(self, *chunk: Any) -> None:
        """Queue one chunk (the write's arguments); wait first while ``in_flight`` chunks are queued or running."""
        while self._pending and (self._pending[0].done() or len(self._pending) >= self._in_flight):
            self._pending.popleft().result()  # raises an earlier write's failure in the caller's thread
        self._pending.append(self._pool.submit(self._run, *chunk))

    def finish(self) -> None:
        """Wait until every queued chunk is written; raise the first failure."""
        while self._pending:
            self._pending.popleft().result()

    def _run(self, *chunk: Any) -> None:
        if self._failed.is_set():
            return  # an earlier chunk failed: the transaction will be rolled back, writing more is wasted time
        try:
            self._write(*chunk)
        except BaseException:
            self._failed.set()
            raise

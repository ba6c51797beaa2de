"""The warehouse side of batch scoring: sinks that insert prediction rows (``prediction_rows``, each carrying its
partition's batch id; the provenance is the batch's, in ``prediction_batches``), and the thread that runs them
while the model predicts the next chunk.

The warehouse insert decides how fast scoring is (SQLAlchemy's executemany of dicts is slower than the model),
so rows go to the database through a sink chosen by dialect (:func:`sink_for`): on SQLite, multi-row INSERT
statements on the driver's own cursor (:class:`SQLiteSink`); on Postgres, ``COPY ... FROM STDIN`` through
psycopg2 (:class:`PostgresCopySink`); on any other database, SQLAlchemy Core's ``insert()`` (:class:`CoreSink`).
The sink runs in a background thread (:class:`BackgroundWrites`), so the model predicts the next chunk while the
database stores this one. :func:`replacing` holds it together: one transaction that first replaces the partition's
batch (its old rows deleted by batch id), then writes the rows.

The row table and the batch role are parameters, so another kind of prediction (e.g. a shadow model's, in a table
of the same per-row columns and a role of its own) is written by the same sinks.
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


#: The per-row columns of a row table, after ``batch_id`` (every other value is the batch's).
VARYING = tuple(f.name for f in fields(ScoredRows))


class RowKeyConflict(ExpectedFailure, RuntimeError):
    """Two rows of one partition have the same row key: the unique index refused the insert (nothing written)."""


@contextmanager
def replacing(
    engine: Engine,
    constants: dict[str, Any],
    in_flight: int,
    *,
    rows_table: sa.Table | None = None,
    role: str | None = None,
) -> Iterator[tuple[BackgroundWrites, Sink]]:
    """Replace one partition's predictions: a transaction that replaces its batch (deleting the old batch's rows by
    batch id), then the writes of its rows.

    ``constants`` are the partition's provenance (model, partition, interval, version, run, input digest, DAG run),
    stored once in ``prediction_batches``; ``rows_table`` (default ``prediction_rows``) gets the rows and ``role``
    (default ``served``; ``shadow`` for the waiting challenger's rows, the view ``shadow_predictions``) names the
    batch's kind. The block submits chunks to the yielded :class:`BackgroundWrites`
    (at most ``in_flight`` waiting); the transaction commits when the block ends without an error, else rolls back
    (the old rows stay). Two rows with one key (the unique index on batch and row key) raise
    :class:`RowKeyConflict`.
    """
    import sqlalchemy as sa

    from airloop.adapters import warehouse

    table = warehouse.prediction_rows if rows_table is None else rows_table
    role = warehouse.SERVED if role is None else role
    conflicts: tuple[type[BaseException], ...] = (sa.exc.IntegrityError, *_driver_integrity_errors(engine))
    warehouse.ensure_schema(engine)
    try:
        with engine.begin() as conn:
            batch_id = warehouse.start_batch(conn, constants, role=role, rows_table=table)
            sink = sink_for(conn, batch_id, table)
            with BackgroundWrites(sink.write, in_flight) as writes:
                yield writes, sink
            warehouse.finish_batch(conn, batch_id, sink.rows)
    except conflicts as exc:
        # The fast sinks write on the driver's own cursor, so its IntegrityError (PEP 249) arrives unwrapped.
        if not _unique_violation(exc):
            raise  # another constraint (e.g. a null where the table has NOT NULL): not two rows with one key
        raise RowKeyConflict(
            f"Partition {constants['partition']} of {constants['model']} has two rows with the same row key "
            f"(table {table.name} is unique on batch_id and row_key; {getattr(exc, 'orig', exc)}); nothing of this "
            "partition was written. It was validated before ingestion checked row keys: re-ingest the interval "
            "(its keys are then checked) or set `source.keys` in the model spec to columns that identify a row."
        ) from None


def _unique_violation(exc: BaseException) -> bool:
    """Whether an integrity error is a unique index refusing a key (SQLSTATE 23505; SQLite: "UNIQUE constraint")."""
    orig = getattr(exc, "orig", None) or exc
    code = getattr(orig, "pgcode", None) or getattr(orig, "sqlstate", None)
    if code:
        return str(code) == "23505"
    return "unique" in str(orig).lower()


def _driver_integrity_errors(engine: Engine) -> tuple[type[BaseException], ...]:
    """The database driver's own ``IntegrityError`` (PEP 249), if it has one."""
    error = getattr(engine.dialect.dbapi, "IntegrityError", None)
    return (error,) if isinstance(error, type) and issubclass(error, BaseException) else ()


class Sink(Protocol):
    """Inserts chunks of prediction rows of one batch on one connection, inside its open transaction."""

    #: How the rows are written, for the log.
    describe: str
    #: Rows written so far.
    rows: int

    def write(self, rows: ScoredRows) -> None:
        """Insert one row per element of ``rows``."""
        ...


def sink_for(conn: Connection, batch_id: int, rows_table: sa.Table | None = None) -> Sink:
    """The fastest sink this connection's database supports; SQLAlchemy Core's insert for any database.

    ``batch_id`` is the partition's batch (:func:`airloop.adapters.warehouse.start_batch`), carried by every row;
    ``rows_table`` the table written (default ``prediction_rows``).
    """
    from airloop.adapters.warehouse import prediction_rows

    table = prediction_rows if rows_table is None else rows_table
    if conn.dialect.name == "sqlite":
        reason = SQLiteSink.unusable(conn, table)
        if reason is None:
            return SQLiteSink(conn, batch_id, table)
        log.warning("Writing predictions through SQLAlchemy's generic insert (slower): %s.", reason)
    if conn.dialect.name == "postgresql":
        reason = PostgresCopySink.unusable(conn)
        if reason is None:
            return PostgresCopySink(conn, batch_id, table)
        log.warning("Writing predictions through SQLAlchemy's generic insert (slower): %s.", reason)
    return CoreSink(conn, batch_id, table)


def epoch_micros(ts: np.ndarray) -> list[int]:
    """Naive UTC ``datetime64`` values as integer microseconds since 1970 (what ``prediction_rows.ts`` holds);
    nanoseconds are dropped (rounding down, as ``datetime.microsecond`` drops them)."""
    result: list[int] = epoch_micros_array(ts).tolist()
    return result


class CoreSink:
    """Any database SQLAlchemy supports: ``conn.execute(rows_table.insert(), rows)`` (an executemany).

    About 140k rows/s on SQLite (STACK.md), so several times slower than the model; SQLite and Postgres have
    sinks of their own.
    """

    describe = "SQLAlchemy Core insert"

    def __init__(self, conn: Connection, batch_id: int, rows_table: sa.Table) -> None:
        self._conn = conn
        self._statement = rows_table.insert()
        self._batch_id = batch_id
        self.rows = 0

    def write(self, rows: ScoredRows) -> None:
        columns = [epoch_micros(rows.ts) if name == "ts" else _values(rows, name) for name in VARYING]
        records = [
            {"batch_id": self._batch_id, **dict(zip(VARYING, values, strict=True))}
            for values in zip(*columns, strict=True)
        ]
        self._conn.execute(self._statement, records)
        self.rows += len(rows)


class SQLiteSink:
    """SQLite through the ``sqlite3`` connection underneath SQLAlchemy's: multi-row INSERTs of the batch id (bound
    once per statement as ``?1``) and the columns the chunk has values for.

    Written by hand because nothing in SQLAlchemy or pandas is fast enough here. Measured with 1M prediction rows
    into a WAL-mode file, commit excluded (the layout before revision 0007, 11 columns and two indexes):
    SQLAlchemy's executemany of dicts about 140k rows/s (per-row Python bind processing; pandas ``to_sql`` is the
    same path), ``sqlite3.executemany`` of tuples 230k-290k rows/s (SQLite resets, binds and steps the statement
    once per row, and the driver takes the GIL back after every row, which stalls it behind a busy predicting
    thread), ``to_sql(method='multi')`` 10k rows/s (SQLAlchemy compiles every statement). One prepared ``INSERT ...
    VALUES (...), (...), ...`` of :data:`SQLITE_ROWS_PER_STATEMENT` rows: 470k-750k rows/s (1.1M in memory), one
    GIL hand-over per statement. On the slim ``prediction_rows`` (``python -m benchmarks.sink_paths``, 1M
    regression rows, one run on a busy 2-core machine, 2026-12-07): multi-row INSERT 314k rows/s, the driver's
    executemany 234k (``executemany=True`` selects it), SQLAlchemy Core 44k; so multi-row stays the default.
    The driver caches the prepared statement, so each statement is parsed once.

    Times are written as integer microseconds straight from numpy (:func:`epoch_micros`); :meth:`unusable` checks
    that the table's columns would store floats, text and times as given.
    """

    describe = "SQLite multi-row INSERT"

    def __init__(self, conn: Connection, batch_id: int, rows_table: sa.Table, *, executemany: bool = False) -> None:
        import sqlite3

        driver = conn.connection.driver_connection
        assert isinstance(driver, sqlite3.Connection)  # checked by unusable()
        self._batch_id = batch_id
        self._quote = conn.dialect.identifier_preparer.quote
        self._table = self._quote(rows_table.name)
        # ?NNN may not exceed the build's SQLITE_LIMIT_VARIABLE_NUMBER (999 before SQLite 3.32, 32766 after).
        limit = driver.getlimit(sqlite3.SQLITE_LIMIT_VARIABLE_NUMBER)
        self._rows_per_statement = max(1, min(SQLITE_ROWS_PER_STATEMENT, (limit - 1) // len(VARYING)))
        self._statements: dict[tuple[int, tuple[str, ...]], str] = {}
        self._cursor = driver.cursor()
        self._executemany = executemany
        if executemany:
            self.describe = "SQLite executemany"
        self.rows = 0

    @classmethod
    def unusable(cls, conn: Connection, rows_table: sa.Table) -> str | None:
        """Why this sink cannot write ``rows_table`` for ``conn`` (None when it can)."""
        import sqlite3
        from datetime import UTC, datetime

        dialect = conn.dialect
        if not isinstance(conn.connection.driver_connection, sqlite3.Connection):
            return f"the SQLite driver is {dialect.driver}, not the sqlite3 module"
        samples = (0.0, -1.5, 123.456789, 5e-324, 1.7976931348623157e308)
        for name in ("prediction", "probability"):
            to_float = _bind(rows_table.c[name].type, dialect)  # SQLAlchemy's float() per value, if anything
            if to_float is not None and any(repr(to_float(v)) != repr(v) for v in samples):
                return f"the {name} column's type changes float values before they are stored"
        for name in ("row_key", "predicted_class", "probabilities"):
            to_text = _bind(rows_table.c[name].type, dialect)
            if to_text is not None and to_text("é'x") != "é'x":
                return f"the {name} column's type changes text before it is stored"
        process = _bind(rows_table.c.ts.type, dialect)
        sample = datetime(2001, 2, 3, 4, 5, 6, 789012, tzinfo=UTC)
        expected = process(sample) if process is not None else sample
        if expected != 981173106789012:
            return f"the ts column stores {expected!r} where this sink would store integer microseconds"
        return None

    def _statement(self, rows: int, present: tuple[str, ...]) -> str:
        sql = self._statements.get((rows, present))
        if sql is None:
            width = len(present)
            names = ", ".join(self._quote(c) for c in ("batch_id", *present))

            def row(i: int) -> str:
                return "(?1," + ",".join(f"?{2 + width * i + j}" for j in range(width)) + ")"

            values = ",".join(row(i) for i in range(rows))
            sql = self._statements[(rows, present)] = f"INSERT INTO {self._table} ({names}) VALUES {values}"
        return sql

    def write(self, rows: ScoredRows) -> None:
        present = rows.present()
        columns = [epoch_micros(rows.ts) if name == "ts" else _values(rows, name) for name in present]
        if self._executemany:  # one statement, stepped once per row by the driver
            sql = self._statement_many(present)
            self._cursor.executemany(sql, zip(*columns, strict=True))
            self.rows += len(rows)
            return
        width, step = len(present), self._rows_per_statement
        for start in range(0, len(rows), step):
            stop = min(start + step, len(rows))
            params: list[Any] = [None] * (width * (stop - start))
            for j, values in enumerate(columns):
                params[j::width] = values[start:stop]
            self._cursor.execute(self._statement(stop - start, present), (self._batch_id, *params))
        self.rows += len(rows)

    def _statement_many(self, present: tuple[str, ...]) -> str:
        names = ", ".join(self._quote(c) for c in ("batch_id", *present))
        marks = ",".join("?" for _ in present)
        return f"INSERT INTO {self._table} ({names}) VALUES ({int(self._batch_id)},{marks})"


class PostgresCopySink:
    """Postgres through psycopg2's ``copy_expert``: each chunk one ``COPY <table> (...) FROM STDIN WITH (FORMAT
    binary)``, built in memory by numpy per chunk (:func:`copy_binary`; memory stays bounded by the chunk) and handed
    to the driver in one block.

    Written by hand because SQLAlchemy has no COPY. Binary saves what dominates COPY's text format on both sides:
    formatting floats (``repr``) here and parsing them on the server. Measured in one run on a busy 2-core machine
    (2026-12-07, ``python -m benchmarks.sink_paths``, 1M regression rows): binary 220k rows/s, text 125k, SQLAlchemy
    Core 15k. Until 2026-12-07 only rows of one width went binary (others, e.g. integer or multi-column keys, took
    the text format); :func:`copy_binary` now builds rows of any width, with nulls, vectorised.

    The whole chunk goes to ``copy_expert`` as one read (``size`` = the payload's length): with psycopg2's default of
    8 KB, a 100k-row chunk is several hundred ``read`` calls, each taking the GIL back from the predicting thread
    (no difference was measurable on the busy 2-core machine; it is never more work).
    """

    describe = "Postgres COPY (binary)"

    def __init__(self, conn: Connection, batch_id: int, rows_table: sa.Table) -> None:
        driver: Any = conn.connection.driver_connection  # psycopg2's connection (checked by unusable())
        self._cursor = driver.cursor()
        self._quote = conn.dialect.identifier_preparer.quote
        self._table = self._quote(rows_table.name)
        self._batch_id = int(batch_id)
        self.rows = 0

    @classmethod
    def unusable(cls, conn: Connection) -> str | None:
        """Why this sink cannot write for ``conn`` (None when it can)."""
        driver: Any = conn.connection.driver_connection
        if not hasattr(driver, "cursor") or not hasattr(driver.cursor(), "copy_expert"):
            return f"the Postgres driver is {conn.dialect.driver}, not psycopg2 (no copy_expert)"
        return None

    def write(self, rows: ScoredRows) -> None:
        import io

        if len(rows) == 0:
            return
        columns, payload = copy_binary(self._batch_id, rows)
        names = ", ".join(self._quote(c) for c in columns)
        sql = f"COPY {self._table} ({names}) FROM STDIN WITH (FORMAT binary)"
        self._cursor.copy_expert(sql, io.BytesIO(payload), size=len(payload))
        self.rows += len(rows)


#: COPY's binary format: the signature, flags and header extension length, then tuples, then -1 (PostgreSQL docs,
#: "COPY: Binary Format").
_COPY_BINARY_HEADER = b"PGCOPY\n\xff\r\n\x00" + b"\x00\x00\x00\x00" + b"\x00\x00\x00\x00"
_COPY_BINARY_TRAILER = b"\xff\xff"


@dataclass(frozen=True)
class _Field:
    """One column of a chunk in COPY's binary format: each row's value length (-1: null) and the value bytes.

    ``fixed``: every row's value as one row of an ``(n, width)`` uint8 array (no nulls); else ``data`` holds the
    non-null values' bytes one after the other, in row order.
    """

    name: str
    lengths: np.ndarray
    fixed: np.ndarray | None = None
    data: np.ndarray | None = None


def copy_binary(batch_id: int, rows: ScoredRows) -> tuple[tuple[str, ...], bytes]:
    """A chunk in COPY's binary format: the column list (for ``COPY t (...)``) and the payload, built by numpy.

    Per row (big-endian): the field count (int16), then per field its length (int32; -1 for null, no value) and its
    value: ``batch_id`` int4, ``ts`` int8 microseconds, floats float8, text UTF-8 bytes. The columns must be the
    row table's types: ``Integer``, ``BigInteger`` (``UtcMicros``), ``Float`` (double precision) and ``Text``. The
    columns a chunk has no values for are left out of the list (null in every row).

    Fields of one width in every row (numbers, and text whose values all have one byte length, as time keys do)
    come first in the column list and are laid out as fixed-width byte rows; text of varying width (or with nulls)
    follows, its bytes scattered into place with index arithmetic, so no Python code runs per row except the
    ``len``/``encode`` of each text value.
    """
    import numpy as np

    n = len(rows)
    if n == 0:
        return ("batch_id", *rows.present()), _COPY_BINARY_HEADER + _COPY_BINARY_TRAILER
    fields: list[_Field] = [_number("batch_id", np.full(n, batch_id, dtype=">i4"))]
    for name in rows.present():
        if name == "ts":
            fields.append(_number(name, np.asarray(epoch_micros_array(rows.ts), dtype=">i8")))
        elif name in ("prediction", "probability"):
            fields.append(_number(name, np.asarray(getattr(rows, name), dtype=">f8")))
        else:
            fields.append(_text_field(name, list(getattr(rows, name))))
    fields.sort(key=lambda f: f.fixed is None)  # fixed-width first (stable: otherwise in VARYING order)
    fixed = [f for f in fields if f.fixed is not None]
    varying = [f for f in fields if f.fixed is None]

    count = np.full(n, len(fields), dtype=">i2")
    blocks = [_big_endian_bytes(count, ">i2", n)]
    for f in fixed:
        assert f.fixed is not None
        blocks += [_big_endian_bytes(f.lengths, ">i4", n), f.fixed]
    prefix = np.hstack(blocks)  # (n, fixed width): every row's fixed-width part
    columns = tuple(f.name for f in fields)
    if not varying:
        return columns, _COPY_BINARY_HEADER + prefix.tobytes() + _COPY_BINARY_TRAILER

    return columns, _with_varying(prefix, varying)


def _with_varying(prefix: np.ndarray, varying: list[_Field]) -> bytes:
    """The whole payload: each row's fixed-width part (``prefix``, one row per row) followed by its varying-width
    text fields (length, then bytes), scattered into one buffer with index arithmetic."""
    import numpy as np

    n = prefix.shape[0]
    sizes = [np.maximum(f.lengths, 0).astype(np.int64) for f in varying]
    row_bytes = prefix.shape[1] + 4 * len(varying) + sum(sizes)
    ends = np.cumsum(row_bytes)
    starts = len(_COPY_BINARY_HEADER) + ends - row_bytes
    out = np.empty(len(_COPY_BINARY_HEADER) + int(ends[-1]) + len(_COPY_BINARY_TRAILER), dtype=np.uint8)
    out[: len(_COPY_BINARY_HEADER)] = np.frombuffer(_COPY_BINARY_HEADER, dtype=np.uint8)
    out[-len(_COPY_BINARY_TRAILER) :] = np.frombuffer(_COPY_BINARY_TRAILER, dtype=np.uint8)
    out[starts[:, None] + np.arange(prefix.shape[1])] = prefix
    at = starts + prefix.shape[1]  # where each row's next field starts
    for f, size in zip(varying, sizes, strict=True):
        out[at[:, None] + np.arange(4)] = _big_endian_bytes(f.lengths, ">i4", n)
        at += 4
        assert f.data is not None
        if len(f.data):
            # byte j of the values' concatenation goes to its row's value position plus its offset in the value
            offsets = np.cumsum(size) - size
            out[np.repeat(at - offsets, size) + np.arange(len(f.data))] = f.data
        at += size
    return bytes(out.tobytes())


def _big_endian_bytes(values: np.ndarray, dtype: str, n: int) -> np.ndarray:
    """``values`` as ``dtype`` (big-endian), one row of bytes per value."""
    import numpy as np

    return np.ascontiguousarray(values, dtype=dtype).view(np.uint8).reshape(n, -1)


def _number(name: str, values: np.ndarray) -> _Field:
    """A numeric column (already big-endian) as a fixed-width field."""
    import numpy as np

    n, width = len(values), values.dtype.itemsize
    raw = np.ascontiguousarray(values).view(np.uint8).reshape(n, width)
    return _Field(name, np.full(n, width, dtype=np.int32), fixed=raw)


def _text_field(name: str, values: list[str | None]) -> _Field:
    """A text column as UTF-8 bytes: fixed-width when every value has one byte length and none is null."""
    import numpy as np

    n = len(values)
    nulls = values.count(None)
    present: list[str] = values if not nulls else [v for v in values if v is not None]  # type: ignore[assignment]
    joined = "".join(present)
    if joined.isascii():  # one byte per character: the lengths are the strings' own (no encoding per value)
        data = np.frombuffer(joined.encode("ascii"), dtype=np.uint8)
        sizes = np.fromiter(map(len, present), dtype=np.int32, count=len(present))
    else:
        encoded = [v.encode() for v in present]
        data = np.frombuffer(b"".join(encoded), dtype=np.uint8)
        sizes = np.fromiter(map(len, encoded), dtype=np.int32, count=len(present))
    if nulls:
        lengths = np.full(n, -1, dtype=np.int32)
        lengths[np.fromiter((v is not None for v in values), dtype=bool, count=n)] = sizes
        return _Field(name, lengths, data=data)
    if n and sizes.min() == sizes.max():
        return _Field(name, sizes, fixed=data.reshape(n, int(sizes[0])))
    return _Field(name, sizes, data=data)


def epoch_micros_array(ts: np.ndarray) -> np.ndarray:
    """:func:`epoch_micros` as an int64 array."""
    import numpy as np

    if np.datetime_data(ts.dtype)[0] == "ns":  # numpy's own ns -> us cast overflows near 1677; floor division does not
        return ts.view(np.int64) // 1000
    return ts.astype("datetime64[us]").astype(np.int64)


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

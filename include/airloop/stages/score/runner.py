"""Batch scoring: each validated partition scored by one pinned champion version, with provenance on every row.

The ``champion`` alias is resolved once per DAG run (:func:`pin_champion`) and the concrete version is passed
to every partition's scoring, so a run never mixes two models even if ``@champion`` moves meanwhile.
A partition is read and scored in bounded chunks; its rows in ``predictions`` are replaced (delete, then
insert, in one transaction) and its ``predictions`` lake partition rewritten (atomic, manifest last), so
re-scoring an interval never duplicates a row.

The warehouse insert decides how fast scoring is (SQLAlchemy's executemany of dicts is slower than the model),
so rows go to the database through a sink chosen by dialect (:func:`_sink_for`): on SQLite, multi-row INSERT
statements on the driver's own cursor (:class:`_SQLiteSink`); on any other database, SQLAlchemy Core's
``insert()`` (:class:`_CoreSink`; Postgres ``COPY`` is the planned fast sink there). The sink runs in a background
thread (:class:`_BackgroundWrites`), so the model predicts the next chunk while the database stores this one.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from datetime import datetime
from functools import lru_cache
from typing import TYPE_CHECKING, Any, Protocol

from airloop.adapters import registry
from airloop.adapters.lake import default_lake
from airloop.core.intervals import parse_key
from airloop.core.params import ParamProblem, day
from airloop.core.settings import WAREHOUSE_CONN_ID

if TYPE_CHECKING:
    import numpy as np
    import pandas as pd
    from sqlalchemy.engine import Connection, Dialect

    from airloop.core.contracts import RunInfo
    from airloop.core.spec import ModelSpec

log = logging.getLogger(__name__)

#: Rows read, predicted and written at a time. Memory depends on this, never on the partition's size.
DEFAULT_CHUNK_ROWS = 100_000
#: Chunks handed to the database thread that may wait for it at once (each holds ``chunk_rows`` rows).
WRITES_IN_FLIGHT = 2
#: Rows per INSERT statement of the SQLite sink (measured: 500 to 2,000 are fastest; 8,000 is a third slower).
SQLITE_ROWS_PER_STATEMENT = 1_000
SCORE_PARAMS = ("start", "end")


class ScoringProblem(ParamProblem):
    """A scoring request or input that cannot be used; the message names it and the fix."""


def select_partitions(
    spec: ModelSpec, events: list[dict[str, Any]], params: dict[str, Any], conf: dict[str, Any]
) -> list[str]:
    """The validated partitions this run scores: those announced by Asset events, or those in [start, end)."""
    unknown = sorted(set(conf) - set(SCORE_PARAMS))
    if unknown:
        raise ScoringProblem(
            f"{spec.dag_id('score')} does not know the param(s) {unknown}; it takes {list(SCORE_PARAMS)}."
        )
    lake = default_lake()
    validated = lake.partitions(spec.name, "validated")
    if events and not (params.get("start") or params.get("end")):
        announced = sorted({e["partition"] for e in events if e.get("partition")})
        missing = [p for p in announced if p not in validated]
        if missing:
            log.warning("Announced partitions no longer validated (skipped): %s", missing)
        chosen = [p for p in announced if p in validated]
        log.info(
            "Selected %d partition(s) of %s announced by %d Asset event(s)%s.",
            len(chosen),
            spec.name,
            len(events),
            f": {chosen[0]} to {chosen[-1]}" if chosen else "",
        )
        return chosen
    if not params.get("start") or not params.get("end"):
        raise ScoringProblem(
            "To re-score by hand give params `start` and `end` (dates, UTC): every validated partition starting in "
            '[start, end) is scored with today\'s champion, e.g. {"start": "2012-01-01", "end": "2013-01-01"}.'
        )
    start, end = day("start", params["start"]), day("end", params["end"])
    assert start is not None and end is not None  # both checked above
    if start >= end:
        raise ScoringProblem(f"param `start` ({start:%Y-%m-%d}) must be before `end` ({end:%Y-%m-%d}).")
    chosen = [p for p in validated if start <= parse_key(p) < end]
    if not chosen:
        raise ScoringProblem(
            f"No validated partition of {spec.name} starts in [{start:%Y-%m-%d}, {end:%Y-%m-%d}); "
            f"validated ones: {f'{validated[0]} to {validated[-1]}' if validated else 'none'}."
        )
    log.info(
        "Selected %d validated partition(s) of %s starting in [%s, %s) to re-score: %s to %s.",
        len(chosen),
        spec.name,
        f"{start:%Y-%m-%d}",
        f"{end:%Y-%m-%d}",
        chosen[0],
        chosen[-1],
    )
    return chosen


@lru_cache(maxsize=2)
def _load(model: str, version: str) -> registry.LoadedModel:
    """A pinned version is immutable, so one load serves every partition of the run."""
    return registry.load_version(model, version)


def score_partition(
    spec: ModelSpec, partition: str, pinned: dict[str, str], run: RunInfo, chunk_rows: int = DEFAULT_CHUNK_ROWS
) -> dict[str, Any]:
    """Score one validated partition with the pinned version; replace its predictions in the warehouse and lake.

    Chunk by chunk: read, predict, refuse non-finite predictions, hand the rows to the warehouse sink (a
    background thread, at most :data:`WRITES_IN_FLIGHT` chunks behind) and append them to the lake partition's
    data file. All of it happens inside one transaction that first deletes the partition's old rows; the lake
    partition becomes visible only after every row is inserted, and the transaction commits last. A failure
    anywhere therefore leaves the previous predictions as they were, in the warehouse and in the lake.
    """
    import numpy as np
    import pandas as pd

    from airloop.adapters.db import engine_for
    from airloop.adapters.warehouse import ensure_schema, predictions

    started = time.perf_counter()
    lake = default_lake()
    manifest = lake.manifest(spec.name, "validated", partition)
    if manifest is None:
        raise ScoringProblem(
            f"Partition {partition} of {spec.name} is not validated (quarantined or never ingested); "
            f"nothing to score. Check {spec.dag_id('ingest')} for that interval."
        )
    model = _load(spec.name, pinned["version"])
    interval_start = datetime.fromisoformat(manifest.meta["interval_start"])
    interval_end = datetime.fromisoformat(manifest.meta["interval_end"])
    time_col = spec.source.time_column
    engine = engine_for(WAREHOUSE_CONN_ID)
    ensure_schema(engine)
    provenance = {
        "model_version": pinned["version"],
        "mlflow_run_id": pinned["run_id"],
        "input_digest": manifest.content_digest,
    }
    constants = {
        "model": spec.name,
        "partition": partition,
        "interval_start": interval_start,
        "interval_end": interval_end,
        **provenance,
        "dag_id": run.dag_id,
        "dag_run_id": run.run_id,
    }
    rows = 0

    def chunks(writes: _BackgroundWrites) -> Iterator[pd.DataFrame]:
        nonlocal rows
        for chunk in lake.iter_batches(spec.name, "validated", partition, [time_col, *spec.feature_names], chunk_rows):
            y = np.asarray(model.predict(chunk[spec.feature_names]), dtype=float)
            bad = ~np.isfinite(y)
            if bad.any():
                examples = chunk.loc[bad, time_col].head(5).tolist()
                raise ScoringProblem(
                    f"{spec.name} v{pinned['version']} gave {int(bad.sum())} non-finite predictions in partition "
                    f"{partition} (rows at {examples}); nothing of this partition was written. Check the model "
                    f"(roll back with {spec.name}_promote) and the partition's validation report."
                )
            # cache=False: pandas' cache pays off for repeated text; on unique datetime64 values it only costs
            # (it first turns thousands of them into Timestamp objects to decide whether to cache).
            ts = pd.to_datetime(chunk[time_col], utc=True, cache=False)
            if ts.isna().any():
                raise ScoringProblem(
                    f"Partition {partition} of {spec.name} has {int(ts.isna().sum())} rows without a time "
                    f"({time_col} is null); nothing of this partition was written. Its validation should have "
                    "refused them: check the suite and re-ingest the interval."
                )
            # The sink gets arrays of its own (naive UTC times, predictions), never the frame the lake is writing.
            writes.submit(ts.dt.tz_localize(None).to_numpy(), y.copy())
            rows += len(y)
            yield pd.DataFrame({"ts": ts, "prediction": y, **provenance})
        # The lake partition is committed when this generator ends: only once every row is in the transaction.
        writes.finish()

    with engine.begin() as conn:
        conn.execute(predictions.delete().where(predictions.c.model == spec.name, predictions.c.partition == partition))
        sink = _sink_for(conn, constants)
        with _BackgroundWrites(sink.write, WRITES_IN_FLIGHT) as writes:
            written = lake.write_batches(
                spec.name,
                "predictions",
                partition,
                chunks(writes),
                meta={
                    "interval_start": interval_start.isoformat(),
                    "interval_end": interval_end.isoformat(),
                    **provenance,
                },
            )
    seconds = time.perf_counter() - started
    log.info(
        "Scored %d rows of %s partition %s with v%s in %.1f s (%.0f rows/s): warehouse table predictions "
        "(replaced, %s) and %s (digest %s).",
        rows,
        spec.name,
        partition,
        pinned["version"],
        seconds,
        rows / seconds if seconds else 0,
        sink.describe,
        lake.partition_url(spec.name, "predictions", partition),
        written.content_digest[:12],
    )
    return {"partition": partition, "rows": rows, "version": pinned["version"], "digest": written.content_digest}


def score_partitions(
    spec: ModelSpec, partitions: list[str], pinned: dict[str, str], run: RunInfo
) -> list[dict[str, Any]]:
    """Score partitions one after another with the pinned version (loaded once); log the run's summary."""
    started = time.perf_counter()
    results = [score_partition(spec, p, pinned, run) for p in partitions]
    rows = sum(r["rows"] for r in results)
    if results:
        log.info(
            "Scored %d partition(s) of %s, %s to %s, with v%s (MLflow run %s): %d rows in %.1f s; each "
            "partition's predictions replaced in table predictions and the lake.",
            len(results),
            spec.name,
            results[0]["partition"],
            results[-1]["partition"],
            pinned["version"],
            pinned["run_id"],
            rows,
            time.perf_counter() - started,
        )
    else:
        log.info("Nothing to score for %s: no partition was selected.", spec.name)
    return results


# --- the warehouse side: sinks for the predictions table and the thread that runs them --------------------------


class _Sink(Protocol):
    """Inserts chunks of prediction rows into ``predictions`` on one connection, inside its open transaction."""

    #: How the rows are written, for the log.
    describe: str

    def write(self, ts: np.ndarray, prediction: np.ndarray) -> None:
        """Insert one row per element: ``ts`` naive UTC ``datetime64``, ``prediction`` float64, same length."""
        ...


def _sink_for(conn: Connection, constants: dict[str, Any]) -> _Sink:
    """The fastest sink this connection's database supports; SQLAlchemy Core's insert for any database.

    ``constants`` are the values every row of the partition shares (model, partition, interval, provenance).
    """
    if conn.dialect.name == "sqlite":
        reason = _SQLiteSink.unusable(conn)
        if reason is None:
            return _SQLiteSink(conn, constants)
        log.warning("Writing predictions through SQLAlchemy's generic insert (slower): %s.", reason)
    return _CoreSink(conn, constants)


class _CoreSink:
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


class _SQLiteSink:
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
        ours = _sqlite_datetime_text(np.array([sample], dtype="datetime64[us]"))[0]
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
        times = _sqlite_datetime_text(ts)
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


def _sqlite_datetime_text(ts: np.ndarray) -> list[str]:
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


class _BackgroundWrites:
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

    def __enter__(self) -> _BackgroundWrites:
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

"""The warehouse sinks alone, on the slim ``prediction_rows``: each bulk path writing the same 1M regression rows.

``python -m benchmarks.sink_paths [--rows N] [--postgres-url URL]``: SQLite (a new WAL-mode file per path) through
the multi-row INSERT (:class:`SQLiteSink`, the default), the driver's ``executemany`` (``SQLiteSink(...,
executemany=True)``) and SQLAlchemy Core's insert (:class:`CoreSink`); with ``--postgres-url`` (an empty
database), Postgres through ``COPY`` (:class:`PostgresCopySink`, binary: time keys of one width, and integer keys
of varying width, the same rows renumbered) and Core's insert. Each path in the same transaction shape as scoring
(batch, rows in chunks of 100k, commit), timed from the batch to the commit. Writes
``benchmarks/results/sink_paths.json``.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path
from typing import Any

from benchmarks.common import RESULTS_DIR, write_json

CHUNK = 100_000


def _chunks(rows: int) -> list[Any]:
    import numpy as np
    import pandas as pd

    from airloop.adapters.prediction_sink import ScoredRows

    ts = pd.date_range("2030-01-01", periods=rows, freq="min")
    keys = ts.strftime("%Y-%m-%dT%H:%M:%SZ").tolist()
    y = np.random.default_rng(0).gamma(2.0, 100.0, rows)
    t = ts.to_numpy()
    return [
        ScoredRows(t[i : i + CHUNK], keys[i : i + CHUNK], prediction=y[i : i + CHUNK]) for i in range(0, rows, CHUNK)
    ]


def _time(engine: Any, make_sink: Any, chunks: list[Any]) -> float:
    from datetime import UTC, datetime

    from airloop.adapters import warehouse

    constants = {
        "model": "bench",
        "partition": "p",
        "interval_start": datetime(2030, 1, 1, tzinfo=UTC),
        "interval_end": datetime(2031, 1, 1, tzinfo=UTC),
        "model_version": "1",
        "mlflow_run_id": "r" * 32,
        "input_digest": "d" * 64,
        "dag_id": None,
        "dag_run_id": "bench",
    }
    start = time.perf_counter()
    with engine.begin() as conn:
        batch = warehouse.start_batch(conn, constants)
        sink = make_sink(conn, batch, warehouse.prediction_rows)
        for chunk in chunks:
            sink.write(chunk)
    return time.perf_counter() - start


def run(rows: int, postgres_url: str | None) -> dict[str, Any]:
    import sqlalchemy as sa

    from airloop.adapters import prediction_sink as sinks
    from airloop.adapters import warehouse
    from airloop.adapters.db import _engine

    chunks = _chunks(rows)
    paths = {
        "sqlite multi-row INSERT": sinks.SQLiteSink,
        "sqlite executemany": lambda c, b, t: sinks.SQLiteSink(c, b, t, executemany=True),
        "sqlite SQLAlchemy Core insert": sinks.CoreSink,
    }
    results: dict[str, Any] = {"rows": rows, "rows_per_s": {}}
    with tempfile.TemporaryDirectory() as tmp:
        for name, make in paths.items():
            engine = _engine(f"sqlite:///{Path(tmp) / (name.replace(' ', '_') + '.db')}", "bench")  # WAL, as scoring
            warehouse.ensure_schema(engine)
            results["rows_per_s"][name] = rows / _time(engine, make, chunks)
            engine.dispose()
    if postgres_url:
        numbered = [  # keys of varying width (0, 1, ..., 999999): the variable-width layout
            sinks.ScoredRows(c.ts, [str(i * CHUNK + j) for j in range(len(c))], prediction=c.prediction)
            for i, c in enumerate(chunks)
        ]
        pg_paths = {
            "postgres COPY binary": (sinks.PostgresCopySink, chunks),
            "postgres COPY binary, keys of varying width": (sinks.PostgresCopySink, numbered),
            "postgres SQLAlchemy Core insert": (sinks.CoreSink, chunks),
        }
        for name, (make, pieces) in pg_paths.items():
            engine = sa.create_engine(postgres_url)
            warehouse.ensure_schema(engine)
            with engine.begin() as conn:
                conn.execute(warehouse.prediction_rows.delete())
                conn.execute(warehouse.prediction_batches.delete())
            results["rows_per_s"][name] = rows / _time(engine, make, pieces)
            engine.dispose()
    for name, value in results["rows_per_s"].items():
        print(f"  {name}: {value:,.0f} rows/s")
    return results


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--postgres-url")
    args = parser.parse_args()
    results = run(args.rows, args.postgres_url)
    write_json(RESULTS_DIR / "sink_paths.json", results)
    print(json.dumps(results["rows_per_s"]))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""The scoring step on one big validated partition, against raw ``model.predict`` of the same rows.

Targets (DESIGN.md "Speed targets"): "Scoring step (champion loaded through MLflow, predictions written to the
warehouse and the lake) at ≥ 0.8x the rows/s of raw ``model.predict`` on the same rows, peak memory ≤ 1 GB whatever
the partition size." The subject is airloop's real code path, ``airloop.stages.score.runner.score_partition`` end to
end: the pinned version loaded through MLflow (``scoring._load``, timed), then the partition read in chunks,
predicted, checked, inserted into the warehouse's ``predictions`` table and written as a ``predictions`` lake
partition, in one transaction. The baseline is ``model.predict`` of the same pipeline, loaded the same way, on the
same rows read from the same lake partition in chunks of the same size (only the ``predict`` calls are timed, so the
subject pays for reading, the warehouse and the lake out of the 0.25x of slack it has).

The data: ``include/data/bike_sharing/hour.csv`` without its sensor-fault rows (``hum == 0``), resampled with
replacement (seed 0) to 1M and 10M rows with ``ts`` one minute apart, each size written as one validated lake
partition through ``Lake.write_batches`` (so the manifest and content digest are the real ones). The model: the
bikes spec's estimator trained on the demo data by ``train_stage.train`` and given ``@champion`` (``--max-iter``
overrides its ``max_iter``; the spec's own settings by default, since the target is about the champion and a
cheaper model makes the same sink cost a larger share).

Child processes (``python -m benchmarks.scoring --child MODE``), all on one throw-away ``AIRLOOP_HOME``:

* ``setup``: seed the source, write the 14 newest validated intervals, train and promote the model, write the
  benchmark partitions (untimed);
* ``subject`` and ``baseline``, one fresh process each per repetition, alternating (the order reverses every
  repetition), what a task process pays once (imports, the warehouse engine, MLflow's client and SQL store, about
  10 s here) done before timing. Every ``subject`` scores into a new warehouse with no predictions (the first
  scoring of a partition: an insert, nothing to delete); one more ``subject`` re-scores into the last one
  (delete + insert, informative). The new warehouse's tables are created before timing (``ensure_schema``, what
  ``airloop warehouse upgrade`` or the first task does once per warehouse, about 0.2 s on an empty Postgres; until
  2026-12-07 it was inside the timed call, once per repetition). Peak memory is the child's peak RSS
  (``ru_maxrss``; imports included) and its peak above the RSS just before the timed call (the kernel's ``VmHWM``
  reset through ``/proc/self/clear_refs``).

A classifier case (``--model birds``, the binary classifier of the FAA bird strikes): the same subject and
baseline, the baseline being raw ``model.predict_proba`` of the same rows (the positive class's column, which the
subject writes as ``probability`` and checks bit for bit against). Its data: the bird strikes' validated rows
(the spec's query over every interval) resampled with replacement, ``date`` one minute apart and ``record_id``
renumbered (keys stay unique); its model: the birds spec's estimator trained on the newest training window.

The subject's time is broken down by thin timing wrappers installed in the child only (the library is not
changed): ``predict`` (the model, in the caller's thread), ``db_wait`` (the caller waiting for the background
database thread), ``sink_write`` (the database thread's own busy time, overlapping the rest), ``commit`` (from
SQLAlchemy's commit event to the end of the call: SQLite's WAL checkpoint of the partition's pages).
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import hashlib
import json
import math
import resource
import statistics
import sys
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

from benchmarks.common import (
    PROJECT_DIR,
    child_env,
    child_exit,
    emit,
    fmt_s,
    proc_status_kb,
    ratio,
    reset_peak_rss,
    run_child,
    summary,
    target,
)

if TYPE_CHECKING:
    import pandas as pd

DEMO_CSV = PROJECT_DIR / "include" / "data" / "bike_sharing" / "hour.csv"
#: The models this benchmark can score: the regression (default) and the classifier, with their data sets' folders.
DATA = {"bikes": DEMO_CSV.parent, "birds": PROJECT_DIR / "include" / "data" / "faa_birdstrikes"}
MODEL = "bikes"
#: Set by :func:`run` in the children's environment: the model they score.
MODEL_ENV = "AIRLOOP_BENCH_SCORING_MODEL"
SEED = 0
SIZES = (1_000_000, 10_000_000)
#: The warehouses scored into: a SQLite file and a local Postgres (the sinks differ: multi-row INSERT and COPY).
DATABASES = ("sqlite", "postgres")
#: Partitions at least this big get at most ``large_repeat`` repetitions (a 10M repetition takes minutes).
LARGE_ROWS = 5_000_000
#: Rows per piece while the benchmark partitions are built and written (bounds the setup's memory).
PIECE_ROWS = 1_000_000
TARGET_THROUGHPUT = 0.8
TARGET_SOURCE = "DESIGN.md: scoring step ≥ 0.8x the rows/s of raw model.predict on the same rows"
TARGET_MEMORY = (1024.0, "DESIGN.md: scoring peak memory ≤ 1 GB whatever the partition size")
#: What the children import before anything is timed (the task process's imports are not the subject here).
PRELOAD = (
    "numpy",
    "pandas",
    "pyarrow.parquet",
    "sqlalchemy",
    "sklearn.compose",
    "sklearn.ensemble",
    "sklearn.pipeline",
    "sklearn.preprocessing",
    "mlflow",
    "mlflow.sklearn",
    "mlflow.store.db.utils",
    "mlflow.store.tracking.sqlalchemy_store",
    "mlflow.store.model_registry.sqlalchemy_store",
    "airloop.stages.score.runner",
    "airloop.adapters.prediction_sink",
    "airloop.adapters.registry",
    "airloop.adapters.warehouse",
    "airloop.adapters.db",
    "airloop.adapters.lake",
)


# --- the data --------------------------------------------------------------------------------------------------


def partition_start(index: int) -> datetime:
    """Where the ``index``-th benchmark partition starts (after the demo data; keys never collide)."""
    return datetime(2030, 1, 1, tzinfo=UTC) + timedelta(days=index)


def _model() -> str:
    import os

    return os.environ.get(MODEL_ENV, MODEL)


def _classifier() -> bool:
    return _spec().target.task == "classification"


def _output_column() -> str:
    """The predictions' column compared with the baseline: a regression's value, a binary classifier's P(positive)."""
    return "probability" if _classifier() else "prediction"


def build_classifier_pieces(real: pd.DataFrame, rows: int, start: datetime, seed: int = SEED) -> Iterator[pd.DataFrame]:
    """``rows`` validated rows resampled with replacement, the time column one minute apart, key columns renumbered."""
    import numpy as np
    import pandas as pd

    spec = _spec()
    rng = np.random.default_rng(seed)
    for offset in range(0, rows, PIECE_ROWS):
        n = min(PIECE_ROWS, rows - offset)
        piece = real.iloc[rng.integers(0, len(real), n)].reset_index(drop=True)
        piece[spec.source.time_column] = pd.date_range(start + timedelta(minutes=offset), periods=n, freq="min")
        for key in (k for k in spec.keys if k != spec.source.time_column):
            piece[key] = np.arange(offset, offset + n, dtype="int64")
        yield piece


def build_pieces(rows: int, start: datetime, seed: int = SEED) -> Iterator[pd.DataFrame]:
    """``rows`` rows resampled with replacement from the real data, in pieces, ``ts`` one minute apart from ``start``.

    The columns are the source table's (as ingestion writes them); the sensor-fault rows (``hum == 0`` on
    2011-03-10), which validation refuses, are left out.
    """
    import numpy as np
    import pandas as pd

    from airloop.adapters.datasets import dataset_frame

    real = dataset_frame(DEMO_CSV.parent)
    real = real[real["hum"] > 0].reset_index(drop=True)
    real["ts"] = real["ts"].dt.tz_localize("UTC")
    rng = np.random.default_rng(seed)
    for offset in range(0, rows, PIECE_ROWS):
        n = min(PIECE_ROWS, rows - offset)
        piece = real.iloc[rng.integers(0, len(real), n)].reset_index(drop=True)
        piece["ts"] = pd.date_range(start + timedelta(minutes=offset), periods=n, freq="min")
        yield piece


def _spec() -> Any:
    from airloop.core.spec import get_spec

    return get_spec(_model())


# --- child processes -----------------------------------------------------------------------------------------------


def child_setup(sizes: Sequence[int], max_iter: int | None) -> dict[str, Any]:
    """Seed, validated intervals, a trained ``@champion``, one validated partition per size (all untimed)."""
    import pandas as pd

    from airloop.adapters import registry as tracking
    from airloop.adapters.datasets import seed
    from airloop.adapters.db import engine_for
    from airloop.adapters.lake import default_lake
    from airloop.adapters.source import extract_interval
    from airloop.core import settings as config
    from airloop.core.contracts import RunInfo, TrainRequest
    from airloop.core.intervals import Interval, expected_intervals
    from airloop.stages.train import runner as train_stage

    spec = _spec()
    config.paths().home.mkdir(parents=True, exist_ok=True)
    engine = engine_for(config.SOURCE_CONN_ID)
    seed(engine, DATA[spec.name])
    lake = default_lake()
    intervals = list(expected_intervals(spec, until=datetime.now(UTC)))
    window = timedelta(days=spec.training.window_days)
    newest = [i for i in intervals if i.end > intervals[-1].end - window]  # the training window's intervals
    frames = []
    for interval in intervals if _classifier() else intervals[-len(newest) - 1 :]:
        meta = {
            "interval_start": interval.start.isoformat(),
            "interval_end": interval.end.isoformat(),
            "suite_digests": {"schema": "bench"},
        }
        frame = extract_interval(engine, spec, interval).frame
        frames.append(frame)
        if interval in newest or not _classifier():
            lake.write(spec.name, "validated", interval.key, frame, meta=meta)

    t = time.perf_counter()
    overrides = {} if max_iter is None else {"max_iter": max_iter}
    request = TrainRequest(reason="scoring benchmark", overrides=overrides)
    trained = train_stage.train(spec, request, RunInfo()).to_dict()
    tracking.set_alias(spec.name, tracking.CHAMPION, trained["version"])
    train_s = time.perf_counter() - t
    mv = tracking.client().get_model_version(spec.name, trained["version"])

    partitions: dict[str, Any] = {}
    for index, rows in enumerate(sizes):
        t = time.perf_counter()
        start = partition_start(index)
        interval = Interval(start, start + timedelta(minutes=rows))
        written = lake.write_batches(
            spec.name,
            "validated",
            interval.key,
            build_classifier_pieces(pd.concat(frames, ignore_index=True), rows, start)
            if _classifier()
            else build_pieces(rows, start),
            meta={
                "interval_start": interval.start.isoformat(),
                "interval_end": interval.end.isoformat(),
                "suite_digests": {"schema": "bench"},
            },
        )
        partitions[str(rows)] = {
            "partition": interval.key,
            "rows": written.rows,
            "columns": len(written.columns),
            "file_mb": lake.fs.size(lake.data_url(written)) / 2**20,
            "write_s": time.perf_counter() - t,
        }
    return {
        "pinned": {"version": str(trained["version"]), "run_id": str(mv.run_id)},
        "model_params": trained["params"],
        "holdout": {spec.gate_metric: trained["metrics"][spec.gate_metric]},
        "train_s": train_s,
        "partitions": partitions,
    }


def _preload() -> dict[str, float]:
    """What a task process pays once, whatever it scores: imports, the warehouse engine, MLflow's client and store.

    Timed apart from the subject: the first MLflow client of a process imports and configures MLflow's SQL store
    (about a second, SQLAlchemy's ORM mappers of MLflow and Airflow), which does not depend on the partition.
    """
    import importlib

    start = time.perf_counter()
    for module in PRELOAD:
        importlib.import_module(module)
    from airloop.adapters import registry as tracking
    from airloop.adapters.db import engine_for
    from airloop.core.settings import WAREHOUSE_CONN_ID

    engine_for(WAREHOUSE_CONN_ID)  # the Airflow connection lookup and the engine
    imports_s = time.perf_counter() - start
    start = time.perf_counter()
    tracking.client().get_registered_model(_model())
    return {"imports_s": imports_s, "mlflow_client_s": time.perf_counter() - start}


class _Memory:
    """Peak RSS of the process and above the RSS at :meth:`start`."""

    def start(self) -> None:
        gc.collect()
        self.reset = reset_peak_rss()
        self.before_kb = proc_status_kb("VmRSS") or 0
        self.cpu_before = _cpu_s()

    def stop(self) -> dict[str, Any]:
        hwm_kb = proc_status_kb("VmHWM")
        maxrss_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        above = (hwm_kb - self.before_kb) if self.reset and hwm_kb is not None else (maxrss_kb - self.before_kb)
        return {
            "process_peak_mb": maxrss_kb / 1024,
            "rss_before_mb": self.before_kb / 1024,
            "peak_above_before_mb": above / 1024,
            "peak_reset": self.reset,
            "cpu_s": _cpu_s() - self.cpu_before,
        }


def _cpu_s() -> float:
    """CPU seconds of this process so far, every thread (user + system)."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


class _Timers:
    """Thin timing wrappers around class attributes (this process only; the library is not changed)."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}
        self.calls: dict[str, int] = {}

    def wrap(self, label: str, owner: Any, name: str) -> None:
        original = getattr(owner, name)

        def timed(*args: Any, **kwargs: Any) -> Any:
            start = time.perf_counter()
            try:
                return original(*args, **kwargs)
            finally:
                self.seconds[label] = self.seconds.get(label, 0.0) + time.perf_counter() - start
                self.calls[label] = self.calls.get(label, 0) + 1

        setattr(owner, name, timed)


def _threadpools() -> list[dict[str, Any]]:
    from threadpoolctl import threadpool_info

    return [{k: pool.get(k) for k in ("user_api", "internal_api", "num_threads")} for pool in threadpool_info()]


class _Digest:
    """Rows, sha256 of the float64 bytes in order, and exact sum (``math.fsum``) of predictions, chunk by chunk."""

    def __init__(self) -> None:
        self._sha = hashlib.sha256()
        self._sums: list[float] = []
        self.rows = 0

    def add(self, y: Any) -> None:
        import numpy as np

        y = np.ascontiguousarray(y, dtype=np.float64)
        self._sha.update(y.tobytes())
        self._sums.append(math.fsum(y.tolist()))
        self.rows += len(y)

    def result(self) -> dict[str, Any]:
        return {"rows": self.rows, "sha256": self._sha.hexdigest(), "fsum": math.fsum(self._sums)}


def child_subject(partition: str, pinned: dict[str, str], label: str) -> dict[str, Any]:
    """One ``score_partition`` in a fresh process (after its imports), timed, with its breakdown and memory."""
    preload = _preload()
    import sqlalchemy as sa

    from airloop.adapters import prediction_sink, warehouse
    from airloop.adapters import registry as tracking
    from airloop.adapters.db import engine_for
    from airloop.adapters.lake import default_lake
    from airloop.adapters.warehouse import prediction_rows, predictions
    from airloop.core.contracts import PinnedChampion, RunInfo
    from airloop.core.settings import WAREHOUSE_CONN_ID
    from airloop.stages.score import runner as scoring

    spec = _spec()
    engine = engine_for(WAREHOUSE_CONN_ID)
    timers = _Timers()
    timers.wrap("predict", tracking.LoadedModel, "predict")
    if _classifier():  # a classifier's chunks go to the pipeline's predict_proba (the LoadedModel has none)
        from sklearn.pipeline import Pipeline

        timers.wrap("predict", Pipeline, "predict_proba")
    timers.wrap("db_wait", prediction_sink.BackgroundWrites, "submit")
    timers.wrap("db_wait", prediction_sink.BackgroundWrites, "finish")
    timers.wrap("sink_write", prediction_sink.SQLiteSink, "write")
    timers.wrap("sink_write", prediction_sink.CoreSink, "write")
    timers.wrap("sink_write", prediction_sink.PostgresCopySink, "write")
    # Untimed: the new warehouse's tables. A warehouse is upgraded once (`airloop warehouse upgrade`, or its first
    # task); a task process finds it at head and ensure_schema only checks the revision.
    warehouse.ensure_schema(engine)
    marks: dict[str, float] = {}
    sa.event.listen(engine, "commit", lambda _conn: marks.__setitem__("commit", time.perf_counter()))

    memory = _Memory()
    memory.start()
    start = time.perf_counter()
    scoring._load(spec.name, pinned["version"])
    load_s = time.perf_counter() - start
    champion = PinnedChampion.from_dict(pinned)
    result = scoring.score_partition(spec, partition, champion, RunInfo(dag_id="bench_scoring", run_id=label)).to_dict()
    end = time.perf_counter()
    peak = memory.stop()

    # Untimed: what landed in the warehouse and the lake (compared with the baseline's predictions by the parent).
    with engine.connect() as conn:
        count = conn.execute(
            sa.select(sa.func.count()).where(predictions.c.model == spec.name, predictions.c.partition == partition)
        ).scalar_one()
        values = conn.execution_options(stream_results=True, yield_per=100_000).execute(
            sa.select(predictions.c[_output_column()]).where(
                predictions.c.model == spec.name, predictions.c.partition == partition
            )
        )
        warehouse_fsum = math.fsum(row[0] for row in values)
        total = conn.execute(sa.select(sa.func.count()).select_from(prediction_rows)).scalar_one()
        stored = _stored_bytes(conn)
    digest = _Digest()
    output = _output_column()
    for batch in default_lake().iter_batches(spec.name, "predictions", partition, [output]):
        digest.add(batch[output].to_numpy())
    return {
        "label": label,
        "warehouse_url": engine.url.render_as_string(hide_password=True),
        "preload": preload,
        "load_s": load_s,
        "score_s": end - start - load_s,
        "total_s": end - start,
        "rows": result["rows"],
        "breakdown_s": {
            "predict": timers.seconds.get("predict", 0.0),
            "db_wait": timers.seconds.get("db_wait", 0.0),
            "sink_write": timers.seconds.get("sink_write", 0.0),
            "commit": end - marks["commit"] if "commit" in marks else float("nan"),
        },
        "chunks": timers.calls.get("predict", 0),
        "memory": peak,
        "warehouse": {"rows": count, "fsum": warehouse_fsum, "table_rows": total, "stored_bytes": stored},
        "lake": {**digest.result(), "digest": result["digest"]},
        "threadpools": _threadpools(),
    }


def _stored_bytes(conn: Any) -> int | None:
    """Bytes the predictions take in the database: Postgres' two tables with their indexes and TOAST; on SQLite the
    file is measured by the parent (None here)."""
    if conn.dialect.name != "postgresql":
        return None
    size = conn.exec_driver_sql(
        "SELECT pg_total_relation_size('prediction_rows') + pg_total_relation_size('prediction_batches')"
    ).scalar_one()
    return int(size)


def child_baseline(partition: str, pinned: dict[str, str]) -> dict[str, Any]:
    """Raw ``predict`` (a classifier: ``predict_proba``, the positive class's column) of the same pipeline over the same
    rows read from the lake in the same chunks."""
    preload = _preload()

    from airloop.adapters import registry as tracking
    from airloop.adapters.lake import default_lake
    from airloop.stages.score import runner as scoring

    spec = _spec()
    start = time.perf_counter()
    model = tracking.load_version(spec.name, pinned["version"])
    load_s = time.perf_counter() - start
    lake = default_lake()
    columns = [spec.source.time_column, *spec.feature_names]
    pipeline = model.pipeline
    predict = pipeline.predict
    if _classifier():
        classes = list(pipeline.classes_)
        positive = classes.index(spec.target.positive_class if spec.target.positive_class is not None else classes[1])

        def predict(features: Any) -> Any:
            return pipeline.predict_proba(features)[:, positive]

    memory = _Memory()
    memory.start()
    predict_s = digest_s = 0.0
    digest = _Digest()
    start = time.perf_counter()
    for chunk in lake.iter_batches(spec.name, "validated", partition, columns, scoring.DEFAULT_CHUNK_ROWS):
        t = time.perf_counter()
        y = predict(chunk[spec.feature_names])
        t1 = time.perf_counter()
        predict_s += t1 - t
        digest.add(y)  # untimed: for the agreement check
        digest_s += time.perf_counter() - t1
    wall_s = time.perf_counter() - start - digest_s
    peak = memory.stop()
    predictions = digest.result()
    return {
        "preload": preload,
        "load_s": load_s,
        "predict_s": predict_s,
        "read_and_predict_s": wall_s,
        "rows": predictions["rows"],
        "chunk_rows": scoring.DEFAULT_CHUNK_ROWS,
        "memory": peak,
        "predictions": {"sha256": predictions["sha256"], "fsum": predictions["fsum"]},
        "threadpools": _threadpools(),
    }


# --- the orchestrating side ----------------------------------------------------------------------------------------


def _env(scratch: Path, model: str = MODEL) -> dict[str, str]:
    env = {**child_env(scratch / "scoring"), "PYTHONPYCACHEPREFIX": str(scratch / "pycache"), MODEL_ENV: model}
    for name in ("PYTHONDONTWRITEBYTECODE", "MLFLOW_TRACKING_URI", "MLFLOW_REGISTRY_URI"):
        env.pop(name, None)
    env.pop("AIRLOOP_MLFLOW_ARTIFACT_ROOT", None)
    home = scratch / "scoring" / "airloop"
    env["AIRFLOW_CONN_AIRLOOP_SOURCE"] = json.dumps({"conn_type": "sqlite", "host": str(home / "source.db")})
    env["AIRFLOW_CONN_AIRLOOP_WAREHOUSE"] = json.dumps({"conn_type": "sqlite", "host": str(home / "warehouse.db")})
    return env


def _child(mode: str, env: Mapping[str, str], *extra: str) -> dict[str, Any]:
    return run_child([sys.executable, "-m", "benchmarks.scoring", "--child", mode, *extra], env, timeout=3600)


def _warehouse_env(env: Mapping[str, str], db: Path) -> dict[str, str]:
    return {**env, "AIRFLOW_CONN_AIRLOOP_WAREHOUSE": json.dumps({"conn_type": "sqlite", "host": str(db)})}


class _Warehouses:
    """Empty warehouses of one kind, one per subject run: SQLite files, or databases on a throw-away Postgres."""

    def __init__(self, kind: str, scratch: Path, postgres: Any = None) -> None:
        self.kind, self.scratch, self.postgres = kind, scratch, postgres

    def new(self, name: str) -> tuple[dict[str, str], Any]:
        """An empty warehouse: the connection JSON for the child and a handle for :meth:`remove`."""
        if self.kind == "sqlite":
            db = self.scratch / "scoring" / f"warehouse-{name}.db"
            return {"conn_type": "sqlite", "host": str(db)}, db
        database = f"w_{name}".replace("-", "_")
        self._admin(f'CREATE DATABASE "{database}"')
        conn = {
            "conn_type": "postgres",
            "host": "127.0.0.1",
            "port": self.postgres.pg_port,
            "login": "airloop",
            "password": self.postgres.pg_password,
            "schema": database,
        }
        return conn, database

    def remove(self, handle: Any, stored_bytes: int | None) -> float:
        """Drop a warehouse; return the megabytes its predictions took (SQLite: the file with its WAL)."""
        if self.kind == "sqlite":
            return _remove_db(handle)
        self._admin(f'DROP DATABASE "{handle}"')
        return (stored_bytes or 0) / 2**20

    def _admin(self, sql: str) -> None:
        import psycopg2

        conn = psycopg2.connect(
            host="127.0.0.1",
            port=self.postgres.pg_port,
            user="airloop",
            password=self.postgres.pg_password,
            dbname="postgres",
        )
        conn.autocommit = True
        try:
            with conn.cursor() as cur:
                cur.execute(sql)
        finally:
            conn.close()


def _remove_db(db: Path) -> float:
    """Delete a SQLite database with its WAL files; return the megabytes it took on disk."""
    size = 0
    for path in (db, db.with_name(db.name + "-wal"), db.with_name(db.name + "-shm")):
        with contextlib.suppress(FileNotFoundError):
            size += path.stat().st_size
            path.unlink()
    return size / 2**20


def _inverse(r: Mapping[str, float]) -> dict[str, float]:
    """A time ratio (subject/baseline seconds) as a throughput ratio (subject/baseline rows per second)."""
    return {k: (1 / v if v else float("nan")) for k, v in r.items()}


def _measure_size(
    env: Mapping[str, str], warehouses: _Warehouses, setup: Mapping[str, Any], rows: int, repeat: int
) -> dict[str, Any]:
    part = setup["partitions"][str(rows)]
    pinned = json.dumps(setup["pinned"])
    common = ("--partition", part["partition"], "--pinned", pinned)
    subjects: list[dict[str, Any]] = []
    baselines: list[dict[str, Any]] = []
    db_mb: list[float] = []
    keep: Any = None
    keep_env: dict[str, str] = {}
    for rep in range(repeat):
        conn, handle = warehouses.new(f"{rows}-{rep}")
        wenv = {**env, "AIRFLOW_CONN_AIRLOOP_WAREHOUSE": json.dumps(conn)}

        def subject(rep: int = rep, wenv: dict[str, str] = wenv) -> None:
            subjects.append(_child("subject", wenv, *common, "--label", f"rep-{rep}"))

        def baseline() -> None:
            baselines.append(_child("baseline", env, *common))

        for step in (subject, baseline) if rep % 2 == 0 else (baseline, subject):
            step()
        if rep == repeat - 1:
            keep, keep_env = handle, wenv
        else:
            db_mb.append(warehouses.remove(handle, subjects[-1]["warehouse"]["stored_bytes"]))
    assert keep is not None
    rescore = _child("subject", keep_env, *common, "--label", "rescore")
    db_mb.append(warehouses.remove(keep, rescore["warehouse"]["stored_bytes"]))

    subject_s = [s["total_s"] for s in subjects]
    baseline_s = [b["predict_s"] for b in baselines]
    time_ratio = ratio(subject_s, baseline_s)
    throughput = _inverse(time_ratio)
    peaks = [s["memory"]["process_peak_mb"] for s in subjects]
    expected = baselines[0]["predictions"]
    agreement = {
        "baseline_runs_agree": all(b["predictions"] == expected for b in baselines),
        "lake_equals_predict": all(
            s["lake"]["sha256"] == expected["sha256"] and s["lake"]["rows"] == rows for s in subjects
        ),
        "warehouse_equals_predict": all(
            s["warehouse"]["rows"] == rows and s["warehouse"]["fsum"] == expected["fsum"] for s in subjects
        ),
        "rescore_replaced": rescore["warehouse"]["table_rows"] == rows and rescore["warehouse"]["rows"] == rows,
    }

    def breakdown(key: str) -> dict[str, Any]:
        return summary([s["breakdown_s"][key] for s in subjects])

    def series(values: Callable[[dict[str, Any]], float], runs: list[dict[str, Any]]) -> dict[str, Any]:
        return summary([float(values(r)) for r in runs])

    return {
        "rows": rows,
        "partition": part,
        "repeat": repeat,
        "subject_s": summary(subject_s),
        "subject_load_s": series(lambda s: s["load_s"], subjects),
        "subject_score_s": series(lambda s: s["score_s"], subjects),
        "baseline_predict_s": summary(baseline_s),
        "baseline_read_and_predict_s": series(lambda b: b["read_and_predict_s"], baselines),
        "baseline_load_s": series(lambda b: b["load_s"], baselines),
        "rows_per_s": {
            "subject": rows / statistics.median(subject_s),
            "baseline": rows / statistics.median(baseline_s),
        },
        "time_ratio": time_ratio,
        "throughput_ratio": throughput,
        "breakdown_s": {k: breakdown(k) for k in ("predict", "db_wait", "sink_write", "commit")},
        "chunks": subjects[0]["chunks"],
        "memory_mb": {
            "subject_process_peak": summary(peaks),
            "subject_above_before": series(lambda s: s["memory"]["peak_above_before_mb"], subjects),
            "subject_rss_before": series(lambda s: s["memory"]["rss_before_mb"], subjects),
            "baseline_process_peak": series(lambda b: b["memory"]["process_peak_mb"], baselines),
            "baseline_above_before": series(lambda b: b["memory"]["peak_above_before_mb"], baselines),
        },
        "warehouse_file_mb": statistics.median(db_mb),
        "warehouse_bytes_per_row": statistics.median(db_mb) * 2**20 / rows,
        "rescore": {
            "total_s": rescore["total_s"],
            "ratio_to_first_scoring": rescore["total_s"] / statistics.median(subject_s),
            "breakdown_s": rescore["breakdown_s"],
            "process_peak_mb": rescore["memory"]["process_peak_mb"],
        },
        "agreement": agreement,
        "threadpools": subjects[0]["threadpools"],
        "targets": {
            "throughput": {
                "limit": TARGET_THROUGHPUT,
                "source": TARGET_SOURCE,
                "met": throughput["of_medians"] >= TARGET_THROUGHPUT,
            },
            "memory": target(max(peaks), *TARGET_MEMORY),
        },
    }


@contextlib.contextmanager
def _warehouses_of(database: str, scratch: Path) -> Iterator[_Warehouses | str]:
    """The warehouses of one kind, or why they cannot be had (a string: the benchmark says SKIPPED)."""
    if database == "sqlite":
        yield _Warehouses("sqlite", scratch)
        return
    if database != "postgres":
        raise ValueError(f"scoring benchmark: unknown database {database!r}; choose sqlite or postgres")
    try:  # the distributed tests' own throw-away Postgres (initdb, pg_ctl on 127.0.0.1, a random port)
        import tempfile

        from tests.distributed.services import Services

        # A folder of its own under the system's temp (the scratch folder is private, and a root run starts the
        # server as the postgres user, who must reach it).
        services = Services(root=Path(tempfile.mkdtemp(prefix="airloop-bench-pg-")))
        services.start_postgres([])
    except Exception as exc:  # no binaries, or it does not start: say so instead of failing the run
        yield f"no local Postgres could be started ({type(exc).__name__}: {str(exc).splitlines()[0][:200]})"
        return
    try:
        yield _Warehouses("postgres", scratch, services)
    finally:
        services.stop()


def run(
    scratch: Path,
    *,
    repeat: int = 7,
    rows: Sequence[int] = SIZES,
    large_repeat: int = 3,
    max_iter: int | None = None,
    model: str = MODEL,
    databases: Sequence[str] = DATABASES,
) -> dict[str, Any]:
    """The setup child, then per database and size interleaved subject and baseline children; print a summary,
    return results.

    ``model``: ``bikes`` (a regression, against ``predict``) or ``birds`` (a classifier, against ``predict_proba``).
    ``databases``: ``sqlite`` (a file per run) and ``postgres`` (a throw-away local server started here, a database
    per run; SKIPPED with the reason when no server binary is found or it does not start).
    """
    if model not in DATA:
        raise ValueError(f"scoring benchmark: no data for model {model!r}; choose one of {sorted(DATA)}")
    env = _env(scratch, model)
    baseline = "predict_proba" if model == "birds" else "predict"
    sizes = sorted(set(rows))
    extra = ["--sizes", ",".join(map(str, sizes))] + (["--max-iter", str(max_iter)] if max_iter else [])
    setup = _child("setup", env, *extra)
    per_database: dict[str, Any] = {}
    for database in databases:
        with _warehouses_of(database, scratch) as warehouses:
            if isinstance(warehouses, str):
                per_database[database] = {"skipped": warehouses}
                continue
            measured: dict[str, Any] = {}
            for size in sizes:
                reps = min(repeat, large_repeat) if size >= LARGE_ROWS else repeat
                measured[str(size)] = _measure_size(env, warehouses, setup, size, reps)
                if not all(measured[str(size)]["agreement"].values()):
                    raise AssertionError(f"scoring wrote other values than the model predicts: {measured[str(size)]}")
            per_database[database] = {"sizes": measured}
    results: dict[str, Any] = {
        "benchmark": "scoring",
        "model": model,
        "method": {
            "repeat": repeat,
            "large_repeat": f"{large_repeat} for partitions of {LARGE_ROWS:,} rows or more",
            "subject": "scoring._load(model, version) (MLflow registry + artifact load) then "
            f"airloop.stages.score.runner.score_partition(get_spec({model!r}), partition, pinned, RunInfo(...)) "
            "into an "
            "empty warehouse (SQLite: a new file each repetition; Postgres: a new database on a local throw-away "
            "server, its memory not counted) and the lake",
            "baseline": f"tracking.load_version(...).pipeline.{baseline} on the same partition read with "
            "Lake.iter_batches in chunks of scoring.DEFAULT_CHUNK_ROWS; only the predict calls are timed",
            "processes": "one fresh child per measurement, subject and baseline alternating (order reversed every "
            "repetition); imports, the warehouse engine and the Airflow connection lookup before timing",
            "data": (
                "the validated rows of every interval, resampled with replacement (seed 0), the time column one "
                "minute apart, keys renumbered; "
                if model == "birds"
                else "hour.csv without hum == 0 rows, resampled with replacement (seed 0), ts one minute apart; "
            )
            + "one validated lake partition per size, written with Lake.write_batches",
            "model": f"{model}: train_stage.train on its data's newest training window, then @champion; "
            + (f"max_iter={max_iter}" if max_iter else "the spec's estimator settings"),
            "memory": "process_peak: the child's ru_maxrss (imports included; the target is checked on this); "
            "above_before: VmHWM (reset through /proc/self/clear_refs) minus VmRSS before the timed call",
            "breakdown": "timing wrappers in the subject child: predict (LoadedModel.predict, caller thread), "
            "db_wait (caller blocked in BackgroundWrites.submit/finish), sink_write (the database thread's busy "
            "time, overlapping the rest), commit (SQLAlchemy commit event to the end of the call)",
            "agreement": "the lake's predictions equal the baseline's bit for bit (sha256 of the float64 values "
            "in order); the warehouse's have the same count and exact sum (math.fsum); checked every repetition",
        },
        "setup": setup,
        "databases": per_database,
    }
    print_summary(results)
    return results


def print_summary(results: Mapping[str, Any]) -> None:
    """The headline numbers, per database and size, with MET or MISSED per target."""
    m, setup = results["method"], results["setup"]
    baseline = "predict_proba" if "predict_proba" in m["baseline"] else "predict"
    holdout = ", ".join(f"holdout {k} {v:.3g}" for k, v in setup["holdout"].items())
    print(
        f"\n== scoring: score_partition end to end vs raw model.{baseline} of the same rows "
        f"(medians; {m['model']}, {holdout})"
    )
    for database, found in results["databases"].items():
        if "skipped" in found:
            print(f"  {database}: SKIPPED ({found['skipped']})")
            continue
        for size, r in found["sizes"].items():
            tr, t = r["throughput_ratio"], r["targets"]
            b, mem = r["breakdown_s"], r["memory_mb"]
            print(
                f"  {database}, {int(size):,} rows ({r['repeat']} runs, {r['chunks']} chunks): "
                f"scoring {fmt_s(r['subject_s']['median'])} "
                f"({r['rows_per_s']['subject']:,.0f} rows/s), predict {fmt_s(r['baseline_predict_s']['median'])} "
                f"({r['rows_per_s']['baseline']:,.0f} rows/s) → {tr['of_medians']:.2f}x the rows/s of {baseline} "
                f"(paired {tr['paired_median']:.2f}x, best {tr['of_mins']:.2f}x; "
                f"≥{t['throughput']['limit']}x {'MET' if t['throughput']['met'] else 'MISSED'})"
            )
            print(
                f"    inside scoring: load {fmt_s(r['subject_load_s']['median'])}, "
                f"predict {fmt_s(b['predict']['median'])}, "
                f"waiting for the database {fmt_s(b['db_wait']['median'])}, commit {fmt_s(b['commit']['median'])}; "
                f"the database thread busy {fmt_s(b['sink_write']['median'])} (overlapping)"
            )
            print(
                f"    peak memory: scoring process {mem['subject_process_peak']['max']:.0f} MB (max of runs; "
                f"{mem['subject_above_before']['median']:.0f} MB above its "
                f"{mem['subject_rss_before']['median']:.0f} MB before the call; ≤{t['memory']['limit']:.0f} MB "
                f"{'MET' if t['memory']['met'] else 'MISSED'}), baseline process "
                f"{mem['baseline_process_peak']['median']:.0f} MB"
            )
            rs = r["rescore"]
            print(
                f"    re-scoring into the filled warehouse (delete the batch + insert, once): {fmt_s(rs['total_s'])} = "
                f"{rs['ratio_to_first_scoring']:.2f}x the first scoring; warehouse {r['warehouse_file_mb']:.0f} MB "
                f"= {r['warehouse_bytes_per_row']:.0f} bytes a row; values identical to {baseline}: "
                f"{all(r['agreement'].values())}"
            )


def main(argv: Sequence[str] | None = None) -> int:
    """Child entry point (the orchestrating side is :func:`run`, called by ``benchmarks.run``)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--child", required=True, choices=("setup", "subject", "baseline"))
    parser.add_argument("--sizes", help="setup: comma-separated partition sizes (rows)")
    parser.add_argument("--max-iter", type=int, help="setup: the estimator's max_iter (default: the spec's)")
    parser.add_argument("--partition", help="subject, baseline: the partition key")
    parser.add_argument("--pinned", help="subject, baseline: the pinned version as JSON")
    parser.add_argument("--label", default="bench", help="subject: the dag_run_id written on every row")
    args = parser.parse_args(argv)
    if args.child == "setup":
        emit(child_setup([int(s) for s in args.sizes.split(",")], args.max_iter))
    elif args.child == "subject":
        emit(child_subject(args.partition, json.loads(args.pinned), args.label))
    else:
        emit(child_baseline(args.partition, json.loads(args.pinned)))
    return 0


if __name__ == "__main__":
    child_exit(main())

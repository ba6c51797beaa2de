"""What the child processes of ``test_kill_writers.py`` run: the real ingest and scoring writes, nothing else.

Imported once by a fork server (``multiprocessing``'s ``forkserver``, with this module preloaded), so every child
is a fresh process forked from an interpreter that has already imported what the writers need: it starts writing
within milliseconds instead of paying two to three seconds of imports, and a kill at a random moment of the
write's duration lands in the write itself. Nothing here imports pytest.

Each function points airloop at the test's own folders through the environment (``AIRLOOP_HOME``, the lake's URL,
the Airflow connections as ``AIRFLOW_CONN_*``), as a task process is configured, then performs the write through
the stages' public functions. An exception is written to ``<home>/child-error.txt`` for the test's message.
"""

from __future__ import annotations

import json
import logging
import os
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

# The writers' heavy imports, here at module level so that the fork server pays for them once.
import pandas  # noqa: F401
import pyarrow.parquet  # noqa: F401
import sklearn.linear_model  # noqa: F401
import sqlalchemy  # noqa: F401
from airflow.providers.sqlite.hooks.sqlite import SqliteHook  # noqa: F401
from airflow.sdk import Connection  # noqa: F401  (engine_for looks the connections up through it)

import airloop.adapters.migrations  # noqa: F401  (ensure_schema upgrades the warehouse with alembic)
from airloop.adapters.lake import Lake
from airloop.adapters.registry import LoadedModel
from airloop.core.contracts import PinnedChampion, RunInfo, Validated
from airloop.core.intervals import Interval
from airloop.core.spec import ModelSpec
from airloop.stages.ingest import runner as ingest_stage
from airloop.stages.score import runner as score_stage

ERROR_FILE = "child-error.txt"


def _sqlite_conn(path: str) -> str:
    return json.dumps({"conn_type": "sqlite", "host": path})


def _run(home: str, env: dict[str, str], work: Callable[[], None]) -> None:
    os.environ.update({"AIRLOOP_HOME": home, **env})
    logging.disable(logging.WARNING)  # the writers' log lines are not what this test reads
    try:
        work()
    except BaseException:
        Path(home, ERROR_FILE).write_text(traceback.format_exc())
        raise


def ingest(home: str, source_db: str, spec: ModelSpec, intervals: list[Interval]) -> None:
    """Ingest each interval as the ingest DAG writes it: ``extract`` (the raw partition), then ``publish``
    (validated, and the interval's quarantine dropped).

    Validation writes no lake partition (its report file and one warehouse row in one transaction), so it is not
    run here: ``publish`` gets the raw partition's digest as validation would hand it over, and the report file
    the test wrote beforehand.
    """

    def work() -> None:
        ing = ingest_stage.Ingestion(
            spec=spec, lake=Lake(Path(home, "lake")), reports=Path(home, "reports"), expectations=Path(home)
        )
        for interval in intervals:
            extracted = ingest_stage.extract(ing, interval)
            validated = Validated(
                partition=interval.key,
                rows=extracted.rows,
                content_digest=extracted.content_digest,
                suite_digests={"kill": "0" * 16},
                report=str(ing.report_dir(interval) / ingest_stage.REPORT_FILE),
            )
            ingest_stage.publish(ing, interval, validated)

    _run(home, {"AIRFLOW_CONN_AIRLOOP_SOURCE": _sqlite_conn(source_db)}, work)


def score(
    home: str,
    warehouse_db: str,
    spec: ModelSpec,
    partitions: list[str],
    pinned: PinnedChampion,
    pipeline: Any,
    chunk_rows: int,
) -> None:
    """Score each partition with ``score_partition``, the scoring task's own function, with ``pipeline`` as the
    pinned version (loading it from MLflow is no part of the write, and would cost each child seconds)."""

    def work() -> None:
        loaded = LoadedModel(
            model=spec.name, version=pinned.version, run_id=pinned.run_id, pipeline=pipeline, signature=None
        )
        score_stage._load = lambda model, version: loaded  # type: ignore[assignment]
        run = RunInfo(dag_id=spec.dag_id("score"), run_id=f"kill__v{pinned.version}")
        for partition in partitions:
            score_stage.score_partition(spec, partition, pinned, run, chunk_rows)

    env = {"AIRLOOP_LAKE_URL": str(Path(home, "lake")), "AIRFLOW_CONN_AIRLOOP_WAREHOUSE": _sqlite_conn(warehouse_db)}
    _run(home, env, work)

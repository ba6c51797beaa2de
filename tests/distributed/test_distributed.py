"""The same DAGs on a distributed stack, without Docker: CeleryExecutor with two workers, Postgres, Redis, S3.

Started here, on 127.0.0.1: Postgres (Airflow's metadata, the warehouse, the source and MLflow's backend, as
separate databases) and Redis from Debian's packages, moto's S3 server for the lake and MLflow's artifacts, then
airloop's runtime with only settings changed: ``AIRFLOW__CORE__EXECUTOR=CeleryExecutor`` and two Celery workers,
connections pointing at Postgres, ``AIRLOOP_LAKE_URL=s3://...``, MLflow's server on Postgres with artifacts on S3.

The loop is driven through the REST API by the demo itself (ingest the whole range, train the first champion,
gate and promote, score every interval, monitor window by window until retraining is requested and the new
challenger is gated). Then: tasks ran on both workers; the lake and the predictions match an embedded run of the
same range (``dag.test()`` of the ingest DAG on SQLite and a local lake, in this process: the same validated and
quarantined partitions with the same content digests, and one prediction per validated row); and everything
started here is stopped. ``make test-distributed`` runs it (CI too).
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from tests.distributed.services import Services, free_port

pytestmark = [pytest.mark.distributed, pytest.mark.timeout(3600)]

ROOT = Path(__file__).resolve().parents[2]
LAKE_BUCKET = "airloop-lake"
ARTIFACT_BUCKET = "airloop-artifacts"


@pytest.fixture(scope="module")
def embedded(airflow_db: Path, seeded_source: Path, bikes_spec) -> dict[str, Any]:
    """The embedded run of the same range: ``dag.test()`` of bikes_ingest for every interval, local lake."""
    from airflow.dag_processing.dagbag import DagBag

    from airloop.adapters.lake import default_lake
    from airloop.core.intervals import expected_intervals

    dag = DagBag(dag_folder=str(ROOT / "dags" / "ingest.py")).dags["bikes_ingest"]
    # A manual run of a fixed-interval timetable has its interval's END as logical date, and the DAG's end_date
    # is the last interval's start: dag.test() of the last interval would create no task. The scheduler (the
    # distributed run) dates runs by their start, so the same range needs the limit lifted here.
    dag.end_date = None
    for task in dag.tasks:
        task.end_date = None
    for interval in expected_intervals(bikes_spec, until=datetime.now(UTC)):
        run = dag.test(logical_date=interval.end)
        assert run.data_interval_start == interval.start and run.get_task_instances(), interval
    return _lake_state(default_lake())


def _lake_state(lake: Any) -> dict[str, Any]:
    state: dict[str, Any] = {}
    for stage in ("validated", "quarantine"):
        state[stage] = {
            key: (m.content_digest, m.rows)
            for key in lake.partitions("bikes", stage)
            if (m := lake.manifest("bikes", stage, key)) is not None
        }
    return state


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory, embedded: dict[str, Any]) -> Iterator[Services]:
    """Postgres, Redis, S3 and the runtime on CeleryExecutor, all on 127.0.0.1; stopped afterwards."""
    from airloop.ops import runtime

    # Not under pytest's temporary folder: that is private to this user, and Postgres runs as its own user.
    services = Services(root=Path(tempfile.mkdtemp(prefix="airloop-services-")))
    home = tmp_path_factory.mktemp("distributed") / "home"
    mp = pytest.MonkeyPatch()
    try:
        services.start_postgres(["airflow", "warehouse", "source", "mlflow"])
        services.start_redis()
        services.start_s3([LAKE_BUCKET, ARTIFACT_BUCKET])

        def pg_conn(database: str) -> str:
            return json.dumps(
                {
                    "conn_type": "postgres",
                    "host": "127.0.0.1",
                    "port": services.pg_port,
                    "login": "airloop",
                    "password": services.pg_password,
                    "schema": database,
                }
            )

        settings = {
            "AIRLOOP_HOME": str(home),
            "AIRLOOP_AIRFLOW_PORT": str(free_port()),
            "AIRLOOP_MLFLOW_PORT": str(free_port()),
            "AIRFLOW__CORE__EXECUTOR": "CeleryExecutor",
            "AIRLOOP_CELERY_WORKERS": "2",
            "AIRLOOP_CELERY_CONCURRENCY": "2",
            "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": services.pg_url("airflow"),
            "AIRFLOW__CELERY__BROKER_URL": services.redis_url,
            "AIRFLOW__CELERY__RESULT_BACKEND": "db+" + services.pg_url("airflow"),
            "AIRFLOW_CONN_AIRLOOP_SOURCE": pg_conn("source"),
            "AIRFLOW_CONN_AIRLOOP_WAREHOUSE": pg_conn("warehouse"),
            "AIRLOOP_LAKE_URL": f"s3://{LAKE_BUCKET}/lake",
            "AIRLOOP_MLFLOW_BACKEND_STORE_URI": services.pg_url("mlflow"),
            "AIRLOOP_MLFLOW_ARTIFACTS_DESTINATION": f"s3://{ARTIFACT_BUCKET}/mlflow",
            "MLFLOW_TRACKING_URI": "",  # the demo points it at the runtime's MLflow server
            **services.s3_env(),
        }
        for key, value in settings.items():
            mp.setenv(key, value)
        for var in ("AIRLOOP_USERS", "AIRLOOP_MODELS_DIR", "AIRFLOW_HOME", "AIRFLOW__CORE__DAGS_FOLDER"):
            mp.delenv(var, raising=False)
        mp.delenv("AIRFLOW__CORE__PLUGINS_FOLDER", raising=False)
        runtime.up(wait_timeout=600)  # Postgres migrations and two workers take longer than SQLite
        yield services
    finally:
        try:
            runtime.down(timeout=60)
        finally:
            services.stop()
            mp.undo()


def test_the_loop_closes_on_celery_postgres_redis_and_s3(stack: Services, capsys: pytest.CaptureFixture[str]) -> None:
    from airloop.ops import demo, runtime

    status = runtime.status()
    assert {"worker-1", "worker-2"} <= set(status.components), status.components
    assert status.healthy, {n: c.healthy for n, c in status.components.items()}
    assert demo.run_demo(keep_running=True) == 0
    out = capsys.readouterr().out
    print(out)
    assert f"[{demo.STAGES}/{demo.STAGES}]" in out and "RETRAINING REQUESTED" in out


def test_tasks_ran_on_both_workers(stack: Services) -> None:
    import httpx

    from airloop.ops import runtime

    token = runtime.get_token("admin", runtime.read_credentials()["admin"])
    api = httpx.Client(
        base_url=runtime.status().urls["airflow"], headers={"Authorization": f"Bearer {token}"}, trust_env=False
    )
    hosts: dict[str, int] = {}
    offset = 0
    while True:
        page = api.get(
            "/api/v2/dags/~/dagRuns/~/taskInstances", params={"limit": 100, "offset": offset, "state": "success"}
        ).json()
        for ti in page["task_instances"]:
            host = (ti.get("hostname") or "").split("@")[0]
            hosts[host] = hosts.get(host, 0) + 1
        offset += 100
        if offset >= page["total_entries"]:
            break
    assert hosts.get("worker-1", 0) > 0 and hosts.get("worker-2", 0) > 0, hosts
    assert set(hosts) == {"worker-1", "worker-2"}, f"a task ran outside the Celery workers: {hosts}"


def test_the_results_match_the_embedded_run(stack: Services, embedded: dict[str, Any]) -> None:
    from airloop.adapters.lake import default_lake
    from airloop.adapters.warehouse import predictions, validation_results

    lake = default_lake()
    assert str(lake.root).startswith(f"s3://{LAKE_BUCKET}") or LAKE_BUCKET in str(lake.root)
    distributed = _lake_state(lake)
    assert distributed["validated"] == embedded["validated"]  # same partitions, digests and rows
    assert distributed["quarantine"] == embedded["quarantine"]
    assert len(embedded["validated"]) >= 20 and embedded["quarantine"], embedded

    engine = sa.create_engine(stack.pg_url("warehouse"))
    try:
        with engine.connect() as conn:
            scored = dict(
                conn.execute(
                    sa.select(predictions.c.partition, sa.func.count()).group_by(predictions.c.partition)
                ).all()
            )
            results = {
                r.partition: (r.success, r.content_digest)
                for r in conn.execute(sa.select(validation_results).where(validation_results.c.model == "bikes"))
            }
    finally:
        engine.dispose()
    # One prediction per validated row (re-scoring replaces an interval's rows: never twice, never none).
    assert scored == {key: rows for key, (_, rows) in embedded["validated"].items()}
    assert {k for k, (ok, _) in results.items() if ok} == set(embedded["validated"])
    assert {k: d for k, (ok, d) in results.items() if ok} == {k: d for k, (d, _) in embedded["validated"].items()}


def test_the_lake_and_artifacts_are_in_object_storage(stack: Services) -> None:
    s3 = stack.s3_client()
    lake_keys = [
        o["Key"]
        for page in s3.get_paginator("list_objects_v2").paginate(Bucket=LAKE_BUCKET)
        for o in page.get("Contents", [])
    ]
    assert any("/validated/" in k for k in lake_keys) and any("/predictions/" in k for k in lake_keys)
    artifacts = s3.list_objects_v2(Bucket=ARTIFACT_BUCKET).get("KeyCount", 0)
    assert artifacts > 0, "MLflow stored no artifact in the bucket"
    assert not (Path(os.environ["AIRLOOP_HOME"]) / "lake").exists(), "the lake must not fall back to local files"


def test_everything_started_is_stopped(stack: Services) -> None:
    import socket

    from airloop.ops import runtime

    stopped = runtime.down(timeout=60)
    assert {"scheduler", "api-server", "worker-1", "worker-2", "mlflow"} <= set(stopped), stopped
    assert runtime.status().running == []
    stack.stop()
    for port in (stack.pg_port, stack.redis_port, stack.s3_port):
        with socket.socket() as sock:
            assert sock.connect_ex(("127.0.0.1", port)) != 0, f"something still listens on {port}"

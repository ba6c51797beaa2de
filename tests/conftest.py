"""Test settings: every test session gets its own AIRLOOP_HOME and AIRFLOW_HOME in a temporary folder.

The environment is set here, before Airflow is imported anywhere, because Airflow reads its configuration
at import time. Nothing touches the developer's own ``./.airloop``.

The suite is offline: the network guard of ``tests/offline`` is installed here, before anything else runs,
and ``PYTHONPATH`` starts with its folder so that every Python subprocess the tests start installs it too
(through its ``sitecustomize``). A connection to anything but loopback or a Unix socket raises
``NetworkAccessBlocked`` naming the address.
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.offline import _airloop_offline as offline

offline.install()

ROOT = Path(__file__).resolve().parents[1]
OFFLINE_DIR = Path(offline.__file__).resolve().parent
_HOME = Path(tempfile.mkdtemp(prefix="airloop-tests-"))

os.environ.update(
    {
        "AIRLOOP_HOME": str(_HOME),
        "AIRLOOP_PROJECT_DIR": str(ROOT),
        "AIRFLOW_HOME": str(_HOME / "airflow"),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "AIRFLOW__CORE__DAGS_FOLDER": str(ROOT / "dags"),
        "AIRFLOW__CORE__PLUGINS_FOLDER": str(ROOT / "plugins"),
        "AIRFLOW__CORE__UNIT_TEST_MODE": "False",
        "AIRFLOW__LOGGING__LOGGING_LEVEL": "INFO",
        "AIRFLOW_CONN_AIRLOOP_SOURCE": json.dumps({"conn_type": "sqlite", "host": str(_HOME / "source.db")}),
        "AIRFLOW_CONN_AIRLOOP_WAREHOUSE": json.dumps({"conn_type": "sqlite", "host": str(_HOME / "warehouse.db")}),
        "GX_ANALYTICS_ENABLED": "False",
        "MLFLOW_DISABLE_TELEMETRY": "true",
        "DO_NOT_TRACK": "true",
        "PYTHONPATH": os.pathsep.join(p for p in [str(OFFLINE_DIR), os.environ.get("PYTHONPATH", "")] if p),
    }
)

DEMO_CSV = ROOT / "include" / "data" / "bike_sharing" / "hour.csv"


@pytest.fixture(scope="session", autouse=True)
def offline_guard():
    """The network guard for the whole session: (re)installed if something removed it, checked at the end."""
    offline.install()
    yield
    if os.environ.get(offline.ENV_SWITCH) != "1":
        assert offline.installed(), "a test or library removed the offline guard from the socket module"


@pytest.fixture(scope="session")
def home() -> Path:
    return _HOME


@pytest.fixture(scope="session")
def demo_frame():
    """The vendored bike-sharing data with its ``ts`` column (checksum verified)."""
    from airloop.adapters.datasets import dataset_frame

    return dataset_frame(DEMO_CSV.parent)


@pytest.fixture(scope="session")
def bikes_spec():
    """The bikes spec with its labels in its rows (its own label table, `labels.source`, is filled by the demo)."""
    from airloop.core.spec import Labels, get_spec

    return get_spec("bikes", ROOT / "include" / "models").model_copy(update={"labels": Labels()})


@pytest.fixture(scope="session")
def seeded_source(home: Path) -> Path:
    """The session's source database, seeded with the real demo data."""
    from airloop.adapters.datasets import seed
    from airloop.adapters.db import engine_for
    from airloop.core.settings import SOURCE_CONN_ID

    seed(engine_for(SOURCE_CONN_ID), DEMO_CSV.parent)
    return home / "source.db"


@pytest.fixture(scope="session")
def airflow_db(home: Path) -> Iterator[Path]:
    """A migrated Airflow metadata DB for this session (about 7 s, once), where ``dag.test()`` runs DAGs with
    deadline alerts (see :func:`_dag_test_reads_stored_deadlines`)."""
    subprocess.run(
        [str(Path(sys.executable).parent / "airflow"), "db", "migrate"],
        check=True,
        capture_output=True,
        env=os.environ.copy(),
    )
    with _dag_test_reads_stored_deadlines():
        yield home / "airflow" / "airflow.db"


@contextlib.contextmanager
def _dag_test_reads_stored_deadlines() -> Iterator[None]:
    """Work around ``dag.test()`` of Airflow 3.3.2 failing every successful run of a DAG with a deadline.

    ``dag.test()`` schedules an in-memory copy of the DAG whose ``deadline`` still holds the alert definitions,
    where the scheduler's copy (the serialized DAG in the metadata DB, which ``dag.test()`` itself has just
    written) holds their ids; ``DagRun.update_state`` looks the ids up and fails on a definition ("'dict' object
    has no attribute 'hex'"). The scheduler is not affected. Before each state update, a run whose DAG holds
    definitions is given the stored ids: what the scheduler would use.
    """
    from airflow.models.dagrun import DagRun
    from airflow.models.serialized_dag import SerializedDagModel
    from airflow.utils.session import create_session

    original = DagRun.update_state

    def update_state(self: DagRun, **kwargs: Any) -> Any:
        dag = getattr(self, "dag", None)
        if dag is not None and dag.deadline and not all(isinstance(d, str) for d in dag.deadline):
            session = kwargs.get("session")
            if session is None:
                with create_session() as own:
                    stored = SerializedDagModel.get_dag(dag.dag_id, session=own)
            else:
                stored = SerializedDagModel.get_dag(dag.dag_id, session=session)
            if stored is not None:
                dag.deadline = stored.deadline
        return original(self, **kwargs)

    DagRun.update_state = update_state  # type: ignore[method-assign]
    try:
        yield
    finally:
        DagRun.update_state = original  # type: ignore[method-assign]


@pytest.fixture(scope="session")
def validated_lake(seeded_source: Path, bikes_spec) -> list[str]:
    """Validated partitions of the newest 14 intervals (the 364-day training window), written without GX."""
    from airloop.adapters.db import engine_for
    from airloop.adapters.lake import default_lake
    from airloop.core.settings import SOURCE_CONN_ID
    from tests.support import write_validated_partitions

    return write_validated_partitions(engine_for(SOURCE_CONN_ID), default_lake(), bikes_spec)


@pytest.fixture(scope="session")
def s3_server():
    """An S3-compatible server (moto, in-process, on 127.0.0.1) for the whole session; see ``tests.support``."""
    from tests.support import S3Server

    server = S3Server().start()
    yield server
    server.stop()


@pytest.fixture
def s3_env(s3_server, monkeypatch):
    """The standard AWS variables pointing at the session's S3 server, for this test only."""
    for name, value in s3_server.env().items():
        monkeypatch.setenv(name, value)
    return s3_server

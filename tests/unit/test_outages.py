"""airloop.adapters.outages: what counts as an unreachable MLflow or database, and what on-call is told about it."""

from __future__ import annotations

import socket
import time
from pathlib import Path

import pytest
import sqlalchemy as sa

from airloop.adapters import outages
from airloop.adapters import registry as tracking


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def dead_mlflow(monkeypatch) -> str:
    """MLflow pointed at a port nobody listens on, with credentials in the URI that must never be shown."""
    uri = f"http://alice:s3cret@127.0.0.1:{_closed_port()}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    return uri


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("postgresql://airloop:pw@db:5432/warehouse", "postgresql://airloop:***@db:5432/warehouse"),
        ("http://token@mlflow:5000", "http://token:***@mlflow:5000"),
        ("https://mlflow.example.com/?token=abc", "https://mlflow.example.com/"),
        ("sqlite:////var/airloop/warehouse.db", "sqlite:////var/airloop/warehouse.db"),
    ],
)
def test_urls_are_shown_without_credentials(url, shown):
    assert outages.mask_url(url) == shown


def test_a_refused_mlflow_request_is_an_outage_named_by_its_uri_and_fails_in_seconds(dead_mlflow):
    """The airloop client defaults apply (2 retries, backoff 1): seconds, where MLflow's own take about 4 minutes."""
    started = time.perf_counter()
    with pytest.raises(Exception) as caught:
        tracking.version_for_alias("bikes", tracking.CHAMPION)  # used to return None: "no champion"
    seconds = time.perf_counter() - started
    assert seconds < 20, seconds
    outage = outages.find(caught.value)
    assert outage is not None and outage.service == "MLflow"
    port = dead_mlflow.rsplit(":", 1)[1]
    assert outage.where == f"tracking URI http://alice:***@127.0.0.1:{port}"
    assert "Connection refused" in outage.cause and "/api/2.0/mlflow/registered-models/alias" in outage.cause

    message = outages.explain(outage, "resolving @champion of bikes", try_number=1, retries_left=True)
    assert "s3cret" not in message
    assert message.startswith(f"MLflow is unreachable at tracking URI http://alice:***@127.0.0.1:{port}")
    assert "while resolving @champion of bikes" in message
    assert "airloop status" in message and "mlflow.log" in message and "MLFLOW_TRACKING_URI" in message
    assert "MLFLOW_HTTP_REQUEST_MAX_RETRIES=2" in message
    assert "This was try 1: Airflow retries the task with backoff; nothing else to do if MLflow is back." in message


def test_missing_alias_and_version_are_not_outages(tmp_path, monkeypatch):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
    assert tracking.version_for_alias("nosuchmodel", tracking.CHAMPION) is None
    tracking.ensure_registered_model("nosuchmodel", "tests", "tests")
    assert tracking.version_for_alias("nosuchmodel", tracking.CHAMPION) is None
    tracking.clear_alias("nosuchmodel", tracking.CHAMPION)  # already gone: fine
    with pytest.raises(tracking.RegistryProblem, match="has no version '3'"):
        tracking.load_version("nosuchmodel", "3")


def test_an_outage_is_never_a_registry_problem(dead_mlflow, monkeypatch):
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    with pytest.raises(Exception) as caught:
        tracking.load_version("bikes", "3")
    assert not isinstance(caught.value, tracking.RegistryProblem)
    assert outages.find(caught.value) is not None
    with pytest.raises(Exception) as caught:
        tracking.clear_alias("bikes", tracking.CHAMPION)
    assert outages.find(caught.value) is not None


def test_a_database_that_cannot_be_opened_is_an_outage_named_by_its_connection(tmp_path: Path):
    from airloop.adapters.db import _engine

    url = f"sqlite:///{tmp_path / 'missing-folder' / 'warehouse.db'}"
    engine = _engine(url, "airloop_warehouse")
    with pytest.raises(sa.exc.OperationalError) as caught, engine.connect():
        pass
    wrapped = RuntimeError("reading failed")
    wrapped.__cause__ = caught.value  # as a library error raised `from` it
    outage = outages.find(wrapped)
    assert outage is not None and outage.service == "database"
    assert outage.where == f"connection `airloop_warehouse` ({url})"
    assert outage.cause == "OperationalError: unable to open database file"

    message = outages.explain(outage, "scoring bikes", try_number=3, retries_left=False)
    assert message.startswith(f"The database of connection `airloop_warehouse` ({url}) is unreachable")
    assert "Admin > Connections > airloop_warehouse" in message and "AIRFLOW_CONN_AIRLOOP_WAREHOUSE" in message
    assert "This was the last try (3): clear the task once the database is back." in message


def test_other_database_errors_are_not_outages(tmp_path: Path):
    from airloop.adapters.db import _engine

    engine = _engine(f"sqlite:///{tmp_path / 'warehouse.db'}", "airloop_warehouse")
    with pytest.raises(sa.exc.OperationalError, match="no such table") as caught, engine.connect() as conn:
        conn.execute(sa.text("SELECT * FROM nowhere"))
    assert outages.find(caught.value) is None
    assert outages.find(ValueError("bad value")) is None


def test_a_refused_postgres_is_an_outage_without_its_password():
    from airloop.adapters.db import _engine

    port = _closed_port()
    engine = _engine(f"postgresql+psycopg2://airloop:hunter2@127.0.0.1:{port}/warehouse", "airloop_warehouse")
    with pytest.raises(sa.exc.OperationalError) as caught, engine.connect():
        pass
    outage = outages.find(caught.value)
    assert outage is not None and outage.conn_id == "airloop_warehouse"
    assert (
        outage.where == f"connection `airloop_warehouse` (postgresql+psycopg2://airloop:***@127.0.0.1:{port}/warehouse)"
    )
    assert outage.cause.startswith("OperationalError: connection to server at") and "refused" in outage.cause
    assert "hunter2" not in outages.explain(outage, "scoring bikes")

"""Engines for Airflow connections: the driver a Postgres connection gets, and masking in what is shown."""

from __future__ import annotations

import json

import pytest


def test_a_postgres_connection_gets_the_psycopg2_driver(monkeypatch: pytest.MonkeyPatch) -> None:
    from airloop.adapters.db import describe, engine_for

    conn = {
        "conn_type": "postgres",
        "host": "127.0.0.1",
        "port": 5999,
        "login": "airloop",
        "password": "s3cret-pass",
        "schema": "warehouse",
    }
    monkeypatch.setenv("AIRFLOW_CONN_AIRLOOP_PGTEST", json.dumps(conn))
    engine = engine_for("airloop_pgtest")
    # SQLAlchemy 2.1 maps a bare postgresql:// to psycopg 3, which airloop does not ship.
    assert engine.url.drivername == "postgresql+psycopg2"
    assert (engine.url.host, engine.url.port, engine.url.database) == ("127.0.0.1", 5999, "warehouse")
    shown = describe(engine)
    assert "s3cret-pass" not in shown and "***" in shown


def test_a_task_reads_each_connection_once_per_try(monkeypatch: pytest.MonkeyPatch, tmp_path) -> None:
    """Each read is an execution-API call: inside one try of a task the URL is read once; a new try, another task
    or a process outside any task reads it again."""
    from airflow.sdk import Connection

    from airloop.adapters.db import engine_for

    reads: list[str] = []
    real_get = Connection.get.__func__  # a classmethod: the real lookup still answers, it is only counted

    def counting_get(cls, conn_id: str, *args, **kwargs):
        reads.append(conn_id)
        return real_get(cls, conn_id, *args, **kwargs)

    monkeypatch.setattr(Connection, "get", classmethod(counting_get))
    monkeypatch.setenv(
        "AIRFLOW_CONN_AIRLOOP_TRYTEST", json.dumps({"conn_type": "sqlite", "host": str(tmp_path / "w.db")})
    )
    for var in ("AIRFLOW_CTX_DAG_ID", "AIRFLOW_CTX_DAG_RUN_ID", "AIRFLOW_CTX_TASK_ID", "AIRFLOW_CTX_TRY_NUMBER"):
        monkeypatch.delenv(var, raising=False)
    engine_for("airloop_trytest")
    once = len(reads)
    assert once > 0
    engine_for("airloop_trytest")
    assert len(reads) == 2 * once  # outside a task: every call reads

    monkeypatch.setenv("AIRFLOW_CTX_DAG_ID", "m_ingest")
    monkeypatch.setenv("AIRFLOW_CTX_DAG_RUN_ID", "scheduled__2011-01-01")
    monkeypatch.setenv("AIRFLOW_CTX_TASK_ID", "extract")
    monkeypatch.setenv("AIRFLOW_CTX_TRY_NUMBER", "1")
    first = engine_for("airloop_trytest")
    assert engine_for("airloop_trytest").url == first.url
    assert len(reads) == 3 * once  # one try: one read
    monkeypatch.setenv("AIRFLOW_CTX_TRY_NUMBER", "2")
    engine_for("airloop_trytest")
    assert len(reads) == 4 * once  # the retry reads the connection again (an edit in the UI is seen)
    moved = str(tmp_path / "moved.db")
    monkeypatch.setenv("AIRFLOW_CONN_AIRLOOP_TRYTEST", json.dumps({"conn_type": "sqlite", "host": moved}))
    assert engine_for("airloop_trytest").url.database == moved  # a changed variable is never served stale

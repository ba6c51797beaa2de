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

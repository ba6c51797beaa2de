"""The warehouse migrations on a real Postgres (started here on 127.0.0.1 by ``tests/distributed/services.py``).

A warehouse written by the code before migrations (``tests/legacy_warehouse.py``: ``create_all`` and a few rows in
every table) is upgraded by two processes at once: both succeed, one adopts it (the advisory lock makes the other
wait and find it done), every row is kept, the version is in airloop's own table (an ``alembic_version`` of
another application in the same database is untouched), the schema equals the code's ``MetaData`` and the ledger
is still append-only. Only Postgres is started (no Airflow): ``make test-distributed`` runs it.
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa

from airloop.adapters import migrations, warehouse
from tests import legacy_warehouse as legacy
from tests.distributed.services import Services

pytestmark = [pytest.mark.distributed, pytest.mark.timeout(600)]

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def pg_url() -> Iterator[str]:
    services = Services(root=Path(tempfile.mkdtemp(prefix="airloop-migrations-")))
    try:
        services.start_postgres(["warehouse"])
        yield services.pg_url("warehouse")
    finally:
        services.stop()


def _upgrade_in_processes(url: str, count: int) -> list[list[str | None]]:
    """``migrations.upgrade`` in ``count`` processes released together; each one's (before, after)."""
    code = (
        "import sys, json, sqlalchemy as sa\n"
        "from airloop.adapters import migrations\n"
        "engine = sa.create_engine(sys.argv[1])\n"
        "print('ready', flush=True)\n"
        "sys.stdin.read()\n"
        "done = migrations.upgrade(engine)\n"
        "print(json.dumps([done.before, done.after, done.adopted]))\n"
    )
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", code, url], cwd=ROOT, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
        )
        for _ in range(count)
    ]
    for p in procs:
        assert p.stdout is not None and p.stdout.readline() == "ready\n"
    for p in procs:
        assert p.stdin is not None
        p.stdin.close()
    outs = [p.stdout.read() for p in procs if p.stdout is not None]
    assert [p.wait(timeout=120) for p in procs] == [0] * count, outs
    return sorted((json.loads(out) for out in outs), key=lambda r: r[0] or "")


def test_a_postgres_warehouse_made_before_migrations_is_upgraded_with_its_rows(pg_url: str) -> None:
    engine = sa.create_engine(pg_url)
    try:
        legacy.write(engine)
        with engine.begin() as conn:  # another application's Alembic in the same database
            conn.exec_driver_sql("CREATE TABLE alembic_version (version_num VARCHAR(32) NOT NULL PRIMARY KEY)")
            conn.exec_driver_sql("INSERT INTO alembic_version VALUES ('29ce7909c52b')")
        before = legacy.rows(engine)
        assert all(len(rows) == 2 for rows in before.values()) and len(before) == len(legacy.metadata.tables)

        head = migrations.head()
        assert _upgrade_in_processes(pg_url, 2) == [[None, head, True], [head, head, False]]

        assert warehouse.current_revision(engine) == head
        assert legacy.rows(engine) == before
        with engine.connect() as conn:
            assert migrations.compare(conn, warehouse.metadata) == []
            assert conn.exec_driver_sql("SELECT version_num FROM alembic_version").scalar() == "29ce7909c52b"
        with pytest.raises(sa.exc.DatabaseError, match="append-only"), engine.begin() as conn:
            conn.exec_driver_sql("DELETE FROM promotion_ledger")
        assert migrations.upgrade(engine).changed is False
    finally:
        engine.dispose()

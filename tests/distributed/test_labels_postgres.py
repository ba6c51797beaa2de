"""Two runs recording the same labels at once on a real Postgres warehouse (started here on 127.0.0.1 by
``tests/distributed/services.py``; only Postgres, no Airflow): the table lock of ``warehouse.lock_labels`` makes
the second wait and append nothing. ``make test-distributed`` runs it; the SQLite case is in
``tests/integration/test_labels_concurrency.py``."""

from __future__ import annotations

import json
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.distributed.services import Services
from tests.integration.test_labels_concurrency import race_two_runs_recording_the_same_labels

pytestmark = [pytest.mark.distributed, pytest.mark.timeout(600)]


@pytest.fixture(scope="module")
def services() -> Iterator[Services]:
    found = Services(root=Path(tempfile.mkdtemp(prefix="airloop-pglabels-")))
    try:
        found.start_postgres(["warehouse"])
        yield found
    finally:
        found.stop()


def test_a_second_run_recording_the_same_labels_waits_on_postgres(services: Services, monkeypatch) -> None:
    connection = {
        "conn_type": "postgres",
        "host": "127.0.0.1",
        "port": services.pg_port,
        "login": "airloop",
        "password": services.pg_password,
        "schema": "warehouse",
    }
    race_two_runs_recording_the_same_labels(json.dumps(connection), monkeypatch)

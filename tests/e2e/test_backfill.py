"""A backfill through `POST /api/v2/backfills` against real servers (scheduler, LocalExecutor, api-server)."""

from __future__ import annotations

import pytest

from airloop.adapters.lake import Lake
from tests.e2e.helpers import backfill_runtime, wait_for

pytestmark = pytest.mark.e2e

INTERVALS = ["2011-01-01T000000Z", "2011-01-29T000000Z", "2011-02-26T000000Z"]


@pytest.fixture(scope="module")
def servers(tmp_path_factory, seeded_source):
    """The runtime on free ports, with a bikes spec that does not catch up (so only the backfill creates runs)."""
    with backfill_runtime(tmp_path_factory, "e2e-home") as (client, _base, home):
        yield client, home


def test_backfill_through_rest_api_completes(servers):
    client, home = servers
    dag_ids = ("bikes_ingest", "bikes_train", "bikes_promote", "bikes_score")
    wait_for("the DAGs to be parsed", lambda: all(client.get(f"/api/v2/dags/{d}").status_code == 200 for d in dag_ids))
    assert client.patch("/api/v2/dags/bikes_ingest", json={"is_paused": False}).status_code == 200

    body = {
        "dag_id": "bikes_ingest",
        "from_date": "2011-01-01T00:00:00Z",
        "to_date": "2011-02-26T00:00:00Z",
        "reprocess_behavior": "completed",
        "max_active_runs": 3,
    }
    dry = client.post("/api/v2/backfills/dry_run", json=body)
    assert dry.status_code == 200, dry.text
    planned = sorted(r["logical_date"][:10] for r in dry.json()["backfills"])
    assert planned == ["2011-01-01", "2011-01-29", "2011-02-26"]

    # Airflow refuses to create a backfill on SQLite while another writer holds the metadata DB (503 "Database is
    # locked"; the dag-processor writes each DAG file's DAGs as it parses them). What a user does: try again.
    def create():
        response = client.post("/api/v2/backfills", json=body)
        return response if response.status_code != 503 else None

    created = wait_for("the backfill to be created (SQLite busy)", create, timeout=60, every=3)
    assert created.status_code == 200, created.text

    def finished():
        runs = client.get("/api/v2/dags/bikes_ingest/dagRuns", params={"run_type": "backfill", "limit": 50}).json()
        states = [r["state"] for r in runs["dag_runs"]]
        return runs if len(states) == 3 and all(s in ("success", "failed") for s in states) else None

    runs = wait_for("the three backfill runs to finish", finished, timeout=420, every=2)
    states = {r["data_interval_start"][:10]: r["state"] for r in runs["dag_runs"]}
    # The third interval holds the real humidity-sensor fault of 2011-03-10: quarantined, its run failed.
    assert states == {"2011-01-01": "success", "2011-01-29": "success", "2011-02-26": "failed"}
    lake = Lake(home / "lake")
    assert set(INTERVALS[:2]) <= set(lake.partitions("bikes", "validated"))
    assert lake.partitions("bikes", "quarantine") == [INTERVALS[2]]

    # The publish task's log ends with the human summary.
    run_id = next(r["dag_run_id"] for r in runs["dag_runs"] if r["state"] == "success")
    log = client.get(f"/api/v2/dags/bikes_ingest/dagRuns/{run_id}/taskInstances/publish/logs/1")
    assert log.status_code == 200
    assert "Published" in log.text and "validated rows of bikes" in log.text

    # The quarantined interval's validate log names the rule, the rows and what to do.
    bad_run = next(r["dag_run_id"] for r in runs["dag_runs"] if r["state"] == "failed")
    log = client.get(f"/api/v2/dags/bikes_ingest/dagRuns/{bad_run}/taskInstances/validate/logs/1")
    assert "Batch QUARANTINED" in log.text
    assert "2011-03-10T00:00:00+00:00" in log.text and "airloop suites check bikes" in log.text

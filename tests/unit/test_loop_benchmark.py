"""The loop benchmark's set-up (benchmarks/loop.py): the baseline backfill runs on a no-op DAG that never ran, and a
backfill is created only once the runtime has settled (on SQLite, Airflow deletes a backfill's committed runs under
the scheduler when the database is locked part-way through its creation: docs/operations.md, Backfills)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import httpx
import pendulum

from benchmarks import loop


def test_the_baseline_is_an_identical_no_op_dag_under_its_own_id(tmp_path):
    from airflow.dag_processing.dagbag import DagBag

    project = loop._project(tmp_path, max_active_runs=3, every_days=28, start=pendulum.datetime(2011, 1, 1))
    bags = {
        name: DagBag(dag_folder=str(project / "dags" / name)) for name in ("bench_noop.py", "bench_noop_baseline.py")
    }
    assert all(bag.import_errors == {} for bag in bags.values())
    warm_up = bags["bench_noop.py"].dags[loop.NOOP_DAG_ID]
    baseline = bags["bench_noop_baseline.py"].dags[loop.BASELINE_DAG_ID]
    assert loop.BASELINE_DAG_ID != loop.NOOP_DAG_ID
    for dag in (warm_up, baseline):
        assert sorted(dag.task_ids) == ["extract", "publish", "validate"]
        assert dag.max_active_runs == 3 and dag.timetable == warm_up.timetable and dag.start_date == warm_up.start_date


def _api(due: dict[str, str | None], active: dict[str, int]) -> httpx.Client:
    """A client of an API that answers ``GET /api/v2/dags/{id}`` and its ``dagRuns`` as Airflow's does."""

    def answer(request: httpx.Request) -> httpx.Response:
        parts = request.url.path.split("/")
        dag_id = parts[4]
        if parts[-1] == "dagRuns":
            assert sorted(request.url.params.get_list("state")) == ["queued", "running"]
            return httpx.Response(200, json={"dag_runs": [], "total_entries": active[dag_id]})
        return httpx.Response(200, json={"dag_id": dag_id, "next_dagrun_run_after": due[dag_id]})

    return httpx.Client(base_url="http://airflow", transport=httpx.MockTransport(answer))


def test_a_backfill_waits_for_runs_due_queued_or_running():
    later = (datetime.now(UTC) + timedelta(days=20)).isoformat()
    past = (datetime.now(UTC) - timedelta(days=1)).isoformat().replace("+00:00", "Z")
    dags = ["a", "b"]
    # Just unpaused: the run of the latest interval is due, the scheduler has not created it yet.
    assert not loop._settled(_api({"a": later, "b": past}, {"a": 0, "b": 0}), dags)
    # Created and running.
    assert not loop._settled(_api({"a": later, "b": later}, {"a": 0, "b": 1}), dags)
    # Nothing due (or no next run at all), nothing queued or running.
    assert loop._settled(_api({"a": later, "b": None}, {"a": 0, "b": 0}), dags)

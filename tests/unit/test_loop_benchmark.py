"""The loop benchmark's no-op DAGs (benchmarks/loop.py): two identical DAGs under their own ids (the warm-up and the
baseline), caught up by the scheduler over the ingest's intervals, never created through ``POST /api/v2/backfills``
(on SQLite Airflow deletes a backfill's committed runs under the scheduler when the database is locked part-way
through its creation: docs/operations.md, Backfills)."""

from __future__ import annotations

from datetime import timedelta

import pendulum

from benchmarks import loop


def test_the_no_op_dags_catch_up_over_the_same_intervals_under_their_own_ids(tmp_path):
    from airflow.dag_processing.dagbag import DagBag
    from airflow.sdk import DeltaDataIntervalTimetable

    start, end = pendulum.datetime(2011, 1, 1), pendulum.datetime(2011, 3, 26)
    project = loop._project(tmp_path, max_active_runs=3, every_days=28, start=start, end=end)
    files = {"bench_noop.py": loop.NOOP_DAG_ID, "bench_noop_baseline.py": loop.BASELINE_DAG_ID}
    bags = {name: DagBag(dag_folder=str(project / "dags" / name)) for name in files}
    assert all(bag.import_errors == {} for bag in bags.values())
    dags = [bags[name].dags[dag_id] for name, dag_id in files.items()]
    assert loop.BASELINE_DAG_ID != loop.NOOP_DAG_ID
    for dag in dags:
        assert sorted(dag.task_ids) == ["extract", "publish", "validate"]
        assert dag.catchup and dag.max_active_runs == 3
        assert (dag.start_date, dag.end_date) == (start, end)
        assert dag.timetable == DeltaDataIntervalTimetable(timedelta(days=28))  # the ingest DAG's kind of timetable

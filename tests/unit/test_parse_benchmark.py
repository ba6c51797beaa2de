"""The parse benchmark's shape-matched baseline (benchmarks/parse_time.py): a bare airflow.sdk file with the same
DAGs, tasks per DAG, schedule kinds, params and Airflow operator imports as the DAG file it stands for."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from benchmarks import parse_time
from benchmarks.common import child_env, run_child

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("dag_file", ["score.py"])  # an asset schedule, params, a short circuit, a trigger operator
def test_the_shape_matched_bare_file_has_the_dag_files_shape_without_airloop(dag_file, tmp_path):
    env = child_env(tmp_path)
    bare, shape = parse_time.write_shape_matched(ROOT / "dags" / dag_file, env, tmp_path)
    assert shape["unmatched_timetables"] == []
    assert len(shape["dags"]) >= 2  # one DAG per demo spec
    text = bare.read_text(encoding="utf-8")
    assert "airloop" not in text.replace("benchmarks/parse_time.py", "")

    copy = run_child([sys.executable, "-c", parse_time.SHAPE_PROBE, str(bare)], env)
    # The same DAGs: schedule kind, params and task count; special tasks are the chain's @task stand-ins,
    # short circuits stay short circuits.
    assert [(d["timetable"], d["params"], len(d["tasks"])) for d in copy["dags"]] == [
        (d["timetable"], d["params"], len(d["tasks"])) for d in shape["dags"]
    ]
    assert [d["tasks"].count("short_circuit") for d in copy["dags"]] == [
        d["tasks"].count("short_circuit") for d in shape["dags"]
    ]
    # Each Airflow operator class the DAG file builds on is imported by the bare file, so it pays the same imports.
    for kind in {k for d in shape["dags"] for k in d["tasks"] if ":" in k}:
        module, name = kind.split(":")
        assert f"from {module} import {name}" in text


def test_every_known_schedule_kind_gives_that_timetable(tmp_path):
    from airflow.dag_processing.dagbag import DagBag

    kinds = sorted(parse_time.SCHEDULES)
    shape = {"dags": [{"timetable": kind, "params": True, "tasks": ["task", "short_circuit"]} for kind in kinds]}
    path = tmp_path / "bare_shape.py"
    path.write_text(parse_time.shape_matched_bare(shape), encoding="utf-8")
    bag = DagBag(dag_folder=str(path))
    assert bag.import_errors == {}
    dags = [bag.dags[f"bench_shape_{i}"] for i in range(len(kinds))]
    assert [type(d.timetable).__name__ for d in dags] == kinds
    assert all(len(d.tasks) == 2 and d.params for d in dags)


def test_a_timetable_without_a_known_schedule_is_reported():
    shape = {"dags": [{"timetable": "SomeCustomTimetable", "params": False, "tasks": ["task"]}]}
    text = parse_time.shape_matched_bare(shape)
    assert "schedule=None" in text and "from airflow.sdk import DAG, task" in text

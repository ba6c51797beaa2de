"""The bikes_ingest DAG run for real with dag.test(): real metadata DB, real SQLite source, real GX."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import sqlalchemy as sa
import yaml

from airloop.adapters.lake import default_lake

ROOT = Path(__file__).resolve().parents[2]
UTC = UTC
STEP = timedelta(days=28)
CLEAN = [datetime(2011, 1, 1, tzinfo=UTC), datetime(2011, 1, 29, tzinfo=UTC)]
BAD = datetime(2011, 3, 26, tzinfo=UTC)  # rows injected below make this interval fail
UNLABELLED = datetime(2011, 7, 16, tzinfo=UTC)  # a day of this interval has no label (cnt) in the source


@pytest.fixture(scope="module")
def ingest_dag(airflow_db, tmp_path_factory):
    """The DAG, reading from a copy of the real source with bad rows injected into one interval."""
    import os

    from airflow.dag_processing.dagbag import DagBag

    from airloop.adapters.datasets import seed
    from tests.conftest import DEMO_CSV

    source = tmp_path_factory.mktemp("source") / "source.db"
    engine = sa.create_engine(f"sqlite:///{source}")
    seed(engine, DEMO_CSV.parent)
    with engine.begin() as conn:
        conn.execute(
            sa.text("UPDATE bike_rentals SET temp = NULL WHERE ts >= :a AND ts < :b"),
            {"a": "2011-03-27 00:00:00", "b": "2011-03-27 03:00:00"},
        )
        conn.execute(sa.text("UPDATE bike_rentals SET hr = 30 WHERE ts = :a"), {"a": "2011-03-28 05:00:00.000000"})
        conn.execute(
            sa.text("UPDATE bike_rentals SET cnt = NULL WHERE ts >= :a AND ts < :b"),
            {"a": "2011-07-20 00:00:00", "b": "2011-07-21 00:00:00"},
        )
    engine.dispose()
    old = os.environ["AIRFLOW_CONN_AIRLOOP_SOURCE"]
    os.environ["AIRFLOW_CONN_AIRLOOP_SOURCE"] = json.dumps({"conn_type": "sqlite", "host": str(source)})
    # bikes with its labels in its rows (bikes.yaml's own label table is filled by the demo only)
    models = tmp_path_factory.mktemp("ingest-models")
    raw = yaml.safe_load((ROOT / "include" / "models" / "bikes.yaml").read_text())
    raw.pop("labels", None)
    (models / "bikes.yaml").write_text(yaml.safe_dump(raw))
    old_models = os.environ.get("AIRLOOP_MODELS_DIR")
    os.environ["AIRLOOP_MODELS_DIR"] = str(models)
    bag = DagBag(dag_folder=str(ROOT / "dags" / "ingest.py"))
    yield bag.dags["bikes_ingest"]
    os.environ["AIRFLOW_CONN_AIRLOOP_SOURCE"] = old
    if old_models is None:
        os.environ.pop("AIRLOOP_MODELS_DIR", None)
    else:
        os.environ["AIRLOOP_MODELS_DIR"] = old_models


def _run(dag, start: datetime):
    # A manual run's data interval ends at its logical date for a fixed-interval timetable.
    run = dag.test(logical_date=start + STEP)
    assert run.data_interval_start == start
    return run, {ti.task_id: ti.state for ti in run.get_task_instances()}


def _snapshot(home: Path) -> dict[str, bytes]:
    lake = home / "lake" / "bikes"
    return {str(p.relative_to(lake)): p.read_bytes() for p in sorted(lake.rglob("*")) if p.is_file()}


def test_clean_intervals_are_published_with_asset_events(ingest_dag, home):
    for start in CLEAN:
        _, states = _run(ingest_dag, start)
        assert states == {"extract": "success", "validate": "success", "publish": "success"}
    lake = default_lake()
    keys = [s.strftime("%Y-%m-%dT%H%M%SZ") for s in CLEAN]
    assert set(keys) <= set(lake.partitions("bikes", "validated"))
    manifest = lake.manifest("bikes", "validated", keys[1])
    assert manifest.rows == 650 and set(manifest.meta["suite_digests"]) == {"bikes_schema", "bikes_values"}

    from airflow.models.asset import AssetEvent, AssetModel
    from airflow.utils.session import create_session

    with create_session() as session:
        events = session.scalars(
            sa.select(AssetEvent)
            .join(AssetModel, AssetEvent.asset_id == AssetModel.id)
            .where(AssetModel.name == "bikes.validated")
        ).all()
        extras = [e.extra for e in events]
    assert any(
        x["partition"] == keys[1] and x["rows"] == 650 and x["content_digest"] == manifest.content_digest
        for x in extras
    )


def test_bad_interval_is_quarantined_and_explained(ingest_dag, home, capfd):
    _, states = _run(ingest_dag, BAD)
    # What on-call reads at the end of the failed task's log (dag.test logs to the console):
    out, err = capfd.readouterr()
    log = out + err
    assert "Batch QUARANTINED: bikes interval" in log
    assert "2011-03-28T05:00:00+00:00" in log
    assert "airloop suites check bikes --on 2011-03-26" in log
    assert states["extract"] == "success"
    assert states["validate"] == "failed"
    assert states["publish"] == "upstream_failed"
    lake = default_lake()
    key = "2011-03-26T000000Z"
    assert key in lake.partitions("bikes", "quarantine")
    assert key not in lake.partitions("bikes", "validated")
    report = json.loads((home / "reports" / "bikes" / "validation" / key / "validation.json").read_text())
    failed = {(f["expectation"], f["kwargs"].get("column")) for f in report["failures"]}
    assert failed == {("expect_column_values_to_not_be_null", "temp"), ("expect_column_values_to_be_between", "hr")}
    hr = next(f for f in report["failures"] if f["kwargs"].get("column") == "hr")
    assert hr["examples"] == [30] and hr["example_ids"] == ["2011-03-28T05:00:00+00:00"]
    assert (home / "reports" / "bikes" / "validation" / key / "data_docs" / "index.html").is_file()

    from airloop.adapters.db import engine_for
    from airloop.adapters.warehouse import recent_validations

    rows = {r["partition"]: r for r in recent_validations(engine_for("airloop_warehouse"), "bikes")}
    assert rows[key]["success"] is False and rows[key]["failed_expectations"] == 2


def test_rerun_is_byte_identical_with_no_duplicates(ingest_dag, home):
    before = _snapshot(home)
    for start in [*CLEAN, BAD]:
        _run(ingest_dag, start)
    assert _snapshot(home) == before

    from airloop.adapters.db import engine_for

    with engine_for("airloop_warehouse").connect() as conn:
        count, distinct = conn.execute(
            sa.text("SELECT count(*), count(DISTINCT partition) FROM validation_results WHERE model = 'bikes'")
        ).one()
    assert count == distinct == 3


def test_broken_suite_fails_validate_and_publishes_nothing(ingest_dag, home, capfd, tmp_path, monkeypatch):
    import shutil

    shutil.copytree(ROOT / "expectations", tmp_path / "expectations")
    (tmp_path / "expectations" / "bikes" / "values.json").write_text("{ broken")
    monkeypatch.setenv("AIRLOOP_EXPECTATIONS_DIR", str(tmp_path / "expectations"))
    _, states = _run(ingest_dag, datetime(2011, 4, 23, tzinfo=UTC))
    assert states == {"extract": "success", "validate": "failed", "publish": "upstream_failed"}
    out, err = capfd.readouterr()
    assert "The suites of bikes cannot be used" in out + err
    assert "values.json: not valid JSON at line 1" in out + err
    lake = default_lake()
    key = "2011-04-23T000000Z"
    assert key not in lake.partitions("bikes", "validated")
    assert key not in lake.partitions("bikes", "quarantine")


def test_off_grid_manual_run_is_refused_and_publishes_nothing(ingest_dag, home, capfd):
    # The Trigger button at logical date 2011-02-12, after 2011-01-01 and 2011-01-29 were ingested: the run's
    # interval [2011-01-15, 2011-02-12) overlaps both, so nothing may be extracted, validated or published.
    lake = default_lake()
    before = {stage: lake.partitions("bikes", stage) for stage in ("raw", "validated", "quarantine")}
    run = ingest_dag.test(logical_date=datetime(2011, 2, 12, tzinfo=UTC))
    assert run.data_interval_start == datetime(2011, 1, 15, tzinfo=UTC)
    states = {ti.task_id: ti.state for ti in run.get_task_instances()}
    assert states == {"extract": "failed", "validate": "upstream_failed", "publish": "upstream_failed"}
    out, err = capfd.readouterr()
    log = out + err
    assert "data interval [2011-01-15T00:00:00+00:00, 2011-02-12T00:00:00+00:00) is not an interval" in log
    assert "(partition 2011-01-01T000000Z)" in log and "(partition 2011-01-29T000000Z)" in log
    assert (
        "airflow backfill create --dag-id bikes_ingest --from-date 2011-01-01T00:00:00+00:00 "
        "--to-date 2011-01-29T00:00:00+00:00 --reprocess-behavior completed"
    ) in log
    assert {stage: lake.partitions("bikes", stage) for stage in before} == before
    assert "2011-01-15T000000Z" not in before["raw"]
    ti = next(ti for ti in run.get_task_instances() if ti.task_id == "extract")
    assert ti.try_number == 1  # failed at once: a retry would be refused the same way


def test_a_run_with_conf_fails_naming_the_unknown_keys_and_reads_nothing(ingest_dag, home, capfd):
    start = datetime(2011, 5, 21, tzinfo=UTC)
    run = ingest_dag.test(logical_date=start + STEP, run_conf={"limit": 5, "day": "2011-05-21"})
    states = {ti.task_id: ti.state for ti in run.get_task_instances()}
    assert states == {"extract": "failed", "validate": "upstream_failed", "publish": "upstream_failed"}
    log = "".join(capfd.readouterr())
    assert "bikes_ingest does not know the param(s) ['day', 'limit']; it takes no params" in log
    assert "trigger it without conf" in log
    key = "2011-05-21T000000Z"
    assert key not in default_lake().partitions("bikes", "raw")


def test_missing_labels_quarantine_when_due_and_publish_when_they_come_from_a_label_source(
    ingest_dag, home, capfd, caplog, tmp_path, monkeypatch
):
    from airflow.dag_processing.dagbag import DagBag

    # The bikes spec: labels come with the rows, so they are due and the day without `cnt` is a fault.
    _, states = _run(ingest_dag, UNLABELLED)
    assert states == {"extract": "success", "validate": "failed", "publish": "upstream_failed"}
    assert "expect_column_values_to_not_be_null(column='cnt')" in "".join(capfd.readouterr())
    key = UNLABELLED.strftime("%Y-%m-%dT%H%M%SZ")
    assert key in default_lake().partitions("bikes", "quarantine")

    # The same source for a model whose labels come from a label table of their own: its features are published.
    raw = yaml.safe_load((ROOT / "include" / "models" / "bikes.yaml").read_text())
    raw.update(name="bikeslate", labels={"source": {"table": "bike_labels"}})
    (tmp_path / "models").mkdir()
    (tmp_path / "models" / "bikeslate.yaml").write_text(yaml.safe_dump(raw))
    monkeypatch.setenv("AIRLOOP_MODELS_DIR", str(tmp_path / "models"))
    late = DagBag(dag_folder=str(ROOT / "dags" / "ingest.py")).dags["bikeslate_ingest"]
    with caplog.at_level("WARNING", logger="airloop.stages.ingest.runner"):
        _, states = _run(late, UNLABELLED)
    assert states == {"extract": "success", "validate": "success", "publish": "success"}
    log = "".join(capfd.readouterr()) + caplog.text
    assert "rule(s) on the target `cnt` set aside" in log and "cnt is not missing" in log
    lake = default_lake()
    assert key in lake.partitions("bikeslate", "validated") and key not in lake.partitions("bikeslate", "quarantine")
    assert "cnt" not in lake.manifest("bikeslate", "validated", key).columns
    report = json.loads((home / "reports" / "bikeslate" / "validation" / key / "validation.json").read_text())
    deferred = report["deferred_label_rules"]
    assert "labels.source" in deferred["reason"] and deferred["rows_without_label"] == report["rows"]
    assert {r["type"] for r in deferred["rules"]} >= {
        "expect_column_values_to_not_be_null",
        "expect_table_columns_to_match_set",
    }

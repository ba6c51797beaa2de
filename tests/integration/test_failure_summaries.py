"""What on-call reads when a task fails for an expected reason, from real dag.test() runs.

Cases checked elsewhere, not repeated here:

- bad data (quarantine): ``test_ingest_dag.py::test_bad_interval_is_quarantined_and_explained`` (and a broken
  suite: ``test_broken_suite_fails_validate_and_publishes_nothing``);
- no champion yet: ``test_champion_at.py::test_before_the_first_promotion_there_is_no_champion_and_scoring_skips``,
  ``test_monitor_dag.py::test_no_champion_yet_skips_with_a_clear_message``;
- bad params (unknown conf keys named, missing reason, bad override, missing version):
  ``test_lifecycle_dags.py::test_unknown_or_missing_params_fail_fast_naming_them``,
  ``test_score_dag.py::test_bad_rescoring_requests_fail_naming_the_param``,
  ``test_monitor_dag.py::test_bad_windows_and_params_fail_with_a_clear_message``.

Here: the gate's refusal as the log tells it, and the services a task needs being unreachable (MLflow, the
warehouse, the source). An outage must fail the try quickly and *retryably* (Airflow's retries ride it out), and
say which service, where (credentials masked), on which model and interval, and what to do. Each outage run gives
its tasks one immediate retry, so the test sees the retry happen and the last try's message.
"""

from __future__ import annotations

import json
import socket
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
MODEL = "bikesgate"  # an isolated copy of bikes: its registry starts empty, whatever ran before
WORSE = {"max_iter": 3, "learning_rate": 0.05}  # fails the spec's absolute thresholds


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def models_dir(tmp_path_factory, airflow_db, seeded_source):
    """A models folder holding bikes and bikesgate (with validated partitions), in force for this module."""
    from airloop.adapters.db import engine_for
    from airloop.adapters.lake import default_lake
    from airloop.core.settings import SOURCE_CONN_ID
    from airloop.core.spec import get_spec
    from tests.support import models_folder, write_validated_partitions

    folder = models_folder(tmp_path_factory.mktemp("models"), MODEL)
    mp = pytest.MonkeyPatch()
    mp.setenv("AIRLOOP_MODELS_DIR", str(folder))
    write_validated_partitions(engine_for(SOURCE_CONN_ID), default_lake(), get_spec(MODEL))
    yield folder
    mp.undo()


def _dag(stage: str, dag_id: str, *, retry_at_once: bool = False):
    """A freshly parsed DAG (dag.test() keeps a run's conf in the task objects it ran)."""
    from airflow.dag_processing.dagbag import DagBag

    bag = DagBag(dag_folder=str(ROOT / "dags" / f"{stage}.py"))
    assert bag.import_errors == {}
    dag = bag.dags[dag_id]
    if retry_at_once:  # one retry, straight away: the run shows a retryable failure without the 30 s backoff
        for task in dag.tasks:
            task.retries = 1
            task.retry_delay = timedelta(0)
            task.retry_exponential_backoff = False
    return dag


def _tries(run) -> dict[str, tuple[str, int]]:
    return {ti.task_id: (ti.state, ti.try_number) for ti in run.get_task_instances()}


def test_a_refused_challenger_says_why_with_figures_and_what_to_do(models_dir, capfd, caplog):
    from airloop.adapters import registry as tracking
    from airloop.core.spec import get_spec

    run = _dag("train", f"{MODEL}_train").test(run_conf={"reason": "deliberately weak", "overrides": WORSE})
    states = {ti.task_id: ti.state for ti in run.get_task_instances()}
    assert states["gate"] == "success" and states["promote"] == "skipped" and states["record"] == "success"
    assert run.state == "success"  # the gate refusing is the gate working
    log = "".join(capfd.readouterr()) + caplog.text
    version = tracking.version_for_alias(MODEL, tracking.CHALLENGER)
    assert version is not None and tracking.version_for_alias(MODEL, tracking.CHAMPION) is None

    # check and train: the request and the trained version, with window, rows and figures
    assert f"Request to train {MODEL} accepted (manual run): reason 'deliberately weak'" in log
    assert "estimator overrides {'max_iter': 3, 'learning_rate': 0.05}" in log
    assert f"Trained {MODEL} v{version}, regression, on " in log and "holdout" in log and "rmse" in log
    # gate: what, on which holdout, the verdict with the failing values, then what to do
    assert f"Gate for {MODEL} v{version} (promote) on holdout [" in log
    limit = get_spec(MODEL).gate.thresholds["rmse"]
    assert f"@champion unset: REFUSE v{version}: rmse " in log
    assert f" > {limit:g} (threshold: at most {limit:g})" in log
    assert "What to do: nothing moves and @champion stays unset" in log
    assert f'trigger {MODEL}_promote with {{"action": "promote", "version": "{version}", "override": true' in log
    # record: the ledger row
    assert "Nothing moved (refused): REFUSE" in log


def test_unreachable_mlflow_fails_fast_retries_and_names_the_server(models_dir, monkeypatch, capfd):
    port = _closed_port()
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"http://alice:s3cret@127.0.0.1:{port}")
    dag = _dag("score", "bikes_score", retry_at_once=True)
    started = time.perf_counter()
    run = dag.test(run_conf={"start": "2012-11-03", "end": "2012-12-29"})
    seconds = time.perf_counter() - started
    out = "".join(capfd.readouterr())

    tries = _tries(run)
    assert tries["pin"] == ("failed", 2), tries  # retried once, then failed: a retryable failure
    assert tries["score"][0] == "upstream_failed" and run.state == "failed"
    # Two tries of one refused request each: seconds (MLflow's default client retries took 252 s per request,
    # and then read as "no @champion", which skipped scoring instead of failing).
    assert seconds < 90, seconds
    assert "no @champion yet" not in out
    assert f"MLflow is unreachable at tracking URI http://alice:***@127.0.0.1:{port}" in out
    assert "Connection refused" in out and "while resolving @champion of bikes (run manual__" in out
    assert "airloop status" in out and "mlflow.log" in out and "MLFLOW_TRACKING_URI points at it" in out
    assert "This was try 1: Airflow retries the task with backoff; nothing else to do if MLflow is back" in out
    assert "This was the last try (2): clear the task once MLflow is back." in out
    assert "s3cret" not in out


@pytest.mark.parametrize("kind", ["sqlite-folder-missing", "postgres-refused"])
def test_unreachable_warehouse_names_the_connection_and_retries(models_dir, monkeypatch, tmp_path, capfd, kind):
    if kind == "postgres-refused":
        port = _closed_port()
        conn = {"conn_type": "postgres", "host": "127.0.0.1", "port": port, "login": "airloop"}
        conn |= {"password": "hunter2", "schema": "warehouse"}
        shown = f"postgresql+psycopg2://airloop:***@127.0.0.1:{port}/warehouse"
        cause = "OperationalError: connection to server at"
    else:
        missing = tmp_path / "not-mounted" / "warehouse.db"
        conn = {"conn_type": "sqlite", "host": str(missing)}
        shown, cause = f"sqlite:///{missing}", "OperationalError: unable to open database file"
    monkeypatch.setenv("AIRFLOW_CONN_AIRLOOP_WAREHOUSE", json.dumps(conn))
    dag = _dag("promote", "bikes_promote", retry_at_once=True)
    run = dag.test(run_conf={"action": "rollback", "reason": "warehouse outage drill"})
    out = "".join(capfd.readouterr())

    tries = _tries(run)
    assert tries["check"] == ("failed", 2), tries
    assert run.state == "failed"
    assert f"The database of connection `airloop_warehouse` ({shown}) is unreachable: {cause}" in out
    assert "while checking the request to promote bikes (run manual__" in out
    assert "Admin > Connections > airloop_warehouse" in out and "AIRFLOW_CONN_AIRLOOP_WAREHOUSE" in out
    assert "This was the last try (2): clear the task once the database is back." in out
    assert "hunter2" not in out


def test_unreachable_source_names_the_connection_and_the_interval(models_dir, monkeypatch, tmp_path, capfd):
    missing = tmp_path / "not-mounted" / "source.db"
    monkeypatch.setenv("AIRFLOW_CONN_AIRLOOP_SOURCE", json.dumps({"conn_type": "sqlite", "host": str(missing)}))
    start = datetime(2011, 5, 21, tzinfo=UTC)
    run = _dag("ingest", "bikes_ingest", retry_at_once=True).test(logical_date=start + timedelta(days=28))
    out = "".join(capfd.readouterr())

    tries = _tries(run)
    assert tries["extract"] == ("failed", 2), tries
    assert tries["validate"][0] == "upstream_failed"
    assert f"The database of connection `airloop_source` (sqlite:///{missing}) is unreachable" in out
    assert "while extracting bikes from its source (run manual__" in out
    assert "; data interval [2011-05-21T00:00:00+00:00, 2011-06-18T00:00:00+00:00))." in out
    assert "This was the last try (2)" in out

"""Secrets never leak (issue 14): the loop runs with a sentinel secret everywhere one can be configured.

ingest (one interval, real GX, failing validation so Data Docs are written) -> train -> gate -> promote ->
score, each a real ``dag.test()`` run, with the sentinel in an extra of the source and warehouse connections
(SQLite takes no password), in the MLflow tracking URI's userinfo (a real MLflow server started as ``airloop up``
starts it) and as the lake's S3 secret key (an S3 server in process). Then every place those runs write to is
searched for it: the task logs (dag.test() logs to the console, and any log files), Airflow's metadata DB (XCom
above all), the MLflow store (database and artifacts), the warehouse, the reports and Data Docs, and the view
(the board's HTML and data, and the MLflow-run link).
"""

from __future__ import annotations

import dataclasses
import json
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import sqlalchemy as sa

from tests.e2e.helpers import mlflow_server

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parents[2]
SENTINEL = f"s3ntinel{uuid.uuid4().hex[:12]}"
WEAK = {"max_iter": 20, "learning_rate": 0.1}
HOLDOUT = {"start": "2012-11-03", "end": "2012-12-29"}  # the two newest validated partitions
INGESTED = datetime(2011, 1, 1, tzinfo=UTC)  # an interval older than the pre-validated ones


def _dag(file: str, dag_id: str):
    from airflow.dag_processing.dagbag import DagBag

    bag = DagBag(dag_folder=str(ROOT / "dags" / file))
    assert bag.import_errors == {}
    return bag.dags[dag_id]


def _states(run) -> dict[str, str]:
    return {ti.task_id: ti.state for ti in run.get_task_instances()}


def _files_with_sentinel(folder: Path) -> list[str]:
    return [str(p) for p in sorted(folder.rglob("*")) if p.is_file() and SENTINEL.encode() in p.read_bytes()]


@pytest.fixture
def secret_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, s3_env, airflow_db):
    """The sentinel in every connection, the tracking URI and the lake credentials; a fresh warehouse and lake."""
    # A copy of the source with one impossible hour in the ingested interval: its validation fails, so the
    # run writes Data Docs too (a clean interval writes only the result JSON).
    from airloop.adapters.datasets import seed
    from tests.conftest import DEMO_CSV

    source = tmp_path / "source.db"
    engine = sa.create_engine(f"sqlite:///{source}")
    seed(engine, DEMO_CSV.parent)
    with engine.begin() as conn:
        conn.execute(sa.text("UPDATE bike_rentals SET hr = 30 WHERE ts = :a"), {"a": "2011-01-05 05:00:00.000000"})
    engine.dispose()
    for name, host in (("SOURCE", source), ("WAREHOUSE", tmp_path / "warehouse.db")):
        # SQLite has no password (its hook would put one into the file path), so the sentinel is in an extra,
        # which the hook passes on in the engine's URL as a query argument.
        conn = {"conn_type": "sqlite", "host": str(host), "extra": {"secret_token": SENTINEL}}
        monkeypatch.setenv(f"AIRFLOW_CONN_AIRLOOP_{name}", json.dumps(conn))
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", SENTINEL)  # moto accepts any key
    monkeypatch.setenv("AIRLOOP_LAKE_URL", f"s3://{s3_env.bucket('secrets')}/lake")
    monkeypatch.delenv("AIRLOOP_MLFLOW_ARTIFACT_ROOT", raising=False)
    monkeypatch.delenv("AIRLOOP_MLFLOW_UI_URL", raising=False)
    store = tmp_path / "mlflow"
    store.mkdir()
    with mlflow_server(store) as url:
        monkeypatch.setenv("MLFLOW_TRACKING_URI", url.replace("http://", f"http://airloop:{SENTINEL}@"))
        yield store


def test_no_sentinel_secret_in_logs_xcom_mlflow_reports_or_the_view(secret_env, bikes_spec, home, capfd, caplog):
    from airloop.adapters import registry
    from airloop.adapters.db import engine_for
    from airloop.adapters.lake import default_lake
    from airloop.core.settings import SOURCE_CONN_ID, WAREHOUSE_CONN_ID, paths
    from airloop.core.urls import MLFLOW_RUN
    from airloop.ui import app, board, links
    from tests.support import write_validated_partitions

    assert default_lake().url.startswith("s3://")
    write_validated_partitions(engine_for(SOURCE_CONN_ID), default_lake(), bikes_spec)

    ingest = _dag("ingest.py", "bikes_ingest").test(logical_date=INGESTED + timedelta(days=28))
    assert _states(ingest)["validate"] == "failed", _states(ingest)  # the impossible hour, as planned
    train = _dag("train.py", "bikes_train").test(run_conf={"reason": "secrets", "overrides": WEAK})
    assert train.state == "success", _states(train)
    score = _dag("score.py", "bikes_score").test(run_conf=HOLDOUT)
    assert score.state == "success", _states(score)
    assert registry.version_for_alias("bikes", registry.CHAMPION) is not None

    leaks: dict[str, object] = {}
    out, err = capfd.readouterr()
    if SENTINEL in out + err + caplog.text:
        leaks["task logs (console)"] = [line for line in (out + err + caplog.text).splitlines() if SENTINEL in line][:5]
    logs = Path(home) / "airflow" / "logs"
    if logs.exists() and (found := _files_with_sentinel(logs)):
        leaks["task log files"] = found
    from airflow.utils.session import create_session

    with create_session() as session:
        rows = session.execute(sa.text("SELECT dag_id, task_id, key, value FROM xcom")).all()
    xcom = [r[:3] for r in rows if SENTINEL in str(r[3])]
    assert rows, "no XCom was written: the search would prove nothing"
    if xcom:
        leaks["XCom"] = xcom
    airflow_db = Path(home) / "airflow"
    if found := [str(p) for p in airflow_db.glob("airflow.db*") if SENTINEL.encode() in p.read_bytes()]:
        leaks["Airflow metadata DB"] = found
    if found := _files_with_sentinel(secret_env):
        leaks["MLflow store"] = found
    reports = paths().reports / "bikes"
    assert any(reports.rglob("index.html")), "no Data Docs were written: the search would prove nothing"
    if found := _files_with_sentinel(paths().reports):
        leaks["reports and Data Docs"] = found
    warehouse = engine_for(WAREHOUSE_CONN_ID)
    with warehouse.connect() as conn:
        tables = sa.inspect(conn).get_table_names()
        for table in tables:
            for row in conn.execute(sa.text(f'SELECT * FROM "{table}"')):
                if SENTINEL in str(tuple(row)):
                    leaks.setdefault("warehouse", []).append(table)  # type: ignore[union-attr]
                    break

    state = app._board(bikes_spec)
    html = board.render_board(state, reports_root=paths().reports, airflow_ui="", models=["bikes"], user="t")
    assert state.champion is not None and state.champion.url, "the board links no MLflow run: nothing to check"
    if SENTINEL in html or SENTINEL in json.dumps(dataclasses.asdict(state), default=str):
        leaks["view (board)"] = True
    target = links.resolve(
        MLFLOW_RUN, bikes_spec, "bikes_train", train.run_id, reports_root=paths().reports, mlflow_ui=app._mlflow_ui()
    )
    assert target.url, target
    if SENTINEL in target.url:
        leaks["view (MLflow-run link)"] = target.url
    assert leaks == {}, f"the sentinel secret leaked into: {leaks}"

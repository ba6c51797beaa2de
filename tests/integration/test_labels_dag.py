"""Late labels end to end with dag.test(): an interval ingested and scored while its labels are missing, then the
labels DAG as the labels arrive, are corrected, and arrive broken.

The model (``bikeslate``) is bikes with a label source of its own: table ``late_counts`` of the source database,
empty at first (labels due 2 days after an interval, allowed to lag 1 day more). Everything is real: the SQLite
source and warehouse, GX in the ingest DAG, the MLflow store of this module's home, Airflow's metadata DB, and a
local webhook receiving the freshness notification. The tests run in order, each from the state the one before
left.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest
import sqlalchemy as sa
import yaml

from tests.integration.test_alerts import webhook_server  # noqa: F401
from tests.integration.test_event_notifications import BASE_URL, _webhook_conn

ROOT = Path(__file__).resolve().parents[2]
MODEL = "bikeslate"


@pytest.fixture(scope="module")
def world(airflow_db, tmp_path_factory) -> Any:
    """This module's home, spec and source (the bike data, plus an empty label table)."""
    from airloop.adapters.datasets import seed
    from airloop.adapters.db import engine_for
    from airloop.core.settings import SOURCE_CONN_ID
    from tests.conftest import DEMO_CSV

    home = tmp_path_factory.mktemp("labels-home")
    models = home / "models"
    models.mkdir()
    raw = yaml.safe_load((ROOT / "include" / "models" / "bikes.yaml").read_text())
    raw["name"] = MODEL
    raw.setdefault("validation", {})["suite_dir"] = "bikes"
    raw["labels"] = {"after": "2d", "max_lag": "1d", "source": {"table": "late_counts"}}
    (models / f"{MODEL}.yaml").write_text(yaml.safe_dump(raw))
    mp = pytest.MonkeyPatch()
    mp.setenv("AIRLOOP_HOME", str(home))
    mp.setenv("AIRLOOP_MODELS_DIR", str(models))
    mp.delenv("AIRLOOP_LAKE_URL", raising=False)
    mp.delenv("MLFLOW_TRACKING_URI", raising=False)
    for conn, db in (("SOURCE", "source.db"), ("WAREHOUSE", "warehouse.db")):
        mp.setenv(f"AIRFLOW_CONN_AIRLOOP_{conn}", json.dumps({"conn_type": "sqlite", "host": str(home / db)}))
    engine = engine_for(SOURCE_CONN_ID)
    seed(engine, DEMO_CSV.parent)
    with engine.begin() as conn:
        conn.execute(sa.text("CREATE TABLE late_counts (ts TIMESTAMP, cnt INTEGER)"))
    yield home
    mp.undo()


@pytest.fixture(scope="module")
def scored(world) -> dict[str, Any]:
    """A champion trained on the newest year, then an interval ingested (real DAG) and scored (real DAG)."""
    from airloop.adapters.db import engine_for
    from airloop.adapters.lake import default_lake
    from airloop.core.contracts import RunInfo, TrainRequest
    from airloop.core.settings import SOURCE_CONN_ID, WAREHOUSE_CONN_ID
    from airloop.core.spec import get_spec
    from airloop.stages.promote.ledger import Decision, apply
    from airloop.stages.train import runner as train_stage
    from tests.support import write_validated_partitions

    spec = get_spec(MODEL)
    lake = default_lake()
    keys = write_validated_partitions(engine_for(SOURCE_CONN_ID), lake, spec)
    trained = train_stage.train(spec, TrainRequest(reason="labels tests", overrides={"max_iter": 20}), RunInfo())
    apply(engine_for(WAREHOUSE_CONN_ID), Decision(MODEL, "promote", trained.version, "labels tests", "tests"), None)
    # The newest interval of the schedule (the one after it lies beyond `schedule.end`, so no DAG runs it).
    key = keys[-2]
    newest = lake.manifest(MODEL, "validated", key)
    start = datetime.fromisoformat(newest.meta["interval_start"])
    end = datetime.fromisoformat(newest.meta["interval_end"])
    lake.delete(MODEL, "validated", key)  # ingested for real below, while its labels are missing

    ingest = _dag("ingest").test(logical_date=end)
    assert _states(ingest) == {"extract": "success", "validate": "success", "publish": "success"}
    score = _dag("score").test(run_conf={"start": f"{start:%Y-%m-%d}", "end": f"{end:%Y-%m-%d}"})
    assert _states(score)["score"] == "success"
    served = _table("predictions")
    assert len(served) == newest.rows and {r["model_version"] for r in served} == {trained.version}
    return {"version": trained.version, "partition": key, "start": start, "end": end, "rows": newest.rows}


def _dag(kind: str) -> Any:
    from airflow.dag_processing.dagbag import DagBag

    bag = DagBag(dag_folder=str(ROOT / "dags" / f"{kind}.py"))
    assert bag.import_errors == {}
    return bag.dags[f"{MODEL}_{kind}"]


def _states(run: Any) -> dict[str, str]:
    return {ti.task_id: ti.state for ti in run.get_task_instances()}


def _table(name: str) -> list[dict[str, Any]]:
    from airloop.adapters import warehouse
    from airloop.adapters.db import engine_for
    from airloop.core.settings import WAREHOUSE_CONN_ID

    table = warehouse.metadata.tables.get(name)
    if table is None:  # a view (predictions): no primary key
        table = warehouse.views.tables[name]
    query = sa.select(table).where(table.c.model == MODEL).order_by(*table.primary_key.columns, table.c.row_key)
    with engine_for(WAREHOUSE_CONN_ID).connect() as conn:
        return [dict(r._mapping) for r in conn.execute(query)]


def _source(sql: str, **params: Any) -> None:
    from airloop.adapters.db import engine_for
    from airloop.core.settings import SOURCE_CONN_ID

    with engine_for(SOURCE_CONN_ID).begin() as conn:
        conn.execute(sa.text(sql), params)


def _labels_run(scored: dict[str, Any]) -> dict[str, str]:
    run = _dag("labels").test(logical_date=scored["end"])
    assert run.data_interval_start == scored["start"]
    return _states(run)


def _log(capfd: Any, caplog: Any) -> str:
    """What the tasks logged: dag.test() prints Airflow's lines, airloop's go through logging (caplog)."""
    text = "".join(capfd.readouterr()) + caplog.text
    caplog.clear()
    return text


def _freshness_notices(server: Any) -> list[dict]:
    return [b for b in (json.loads(r[2]) for r in server.received) if b.get("kind") == "freshness"]


@pytest.fixture
def notify(monkeypatch, webhook_server):  # noqa: F811
    monkeypatch.setenv("AIRFLOW__API__BASE_URL", BASE_URL)
    _webhook_conn(monkeypatch, webhook_server)
    monkeypatch.setenv("AIRLOOP_NOTIFY", "freshness")
    return webhook_server


def test_labels_not_arrived_join_nothing_and_lagging_labels_alert(scored, notify, capfd, caplog):
    states = _labels_run(scored)

    assert states == {"collect": "success"}
    assert _table("labels") == [] and _table("outcomes") == []
    log = _log(capfd, caplog)
    rows = scored["rows"]
    assert f"predicted rows still without a label: {rows} (first: " in log
    assert "outcomes of this interval per model version: none (0 written now)" in log
    assert f"LAGGING: {rows} label(s) still missing" in log
    (sent,) = _freshness_notices(notify)  # years past due (2012): far beyond labels.max_lag of 1d
    assert sent["model"] == MODEL and sent["data"]["what"] == "labels"
    assert sent["data"]["missing"] == rows and sent["data"]["partition"] == scored["partition"]
    assert sent["data"]["lag_seconds"] > 365 * 86400 and sent["data"]["max_lag"] == "1d"
    assert sent["link"] == f"{BASE_URL}/dags/{MODEL}_labels/runs/{quote(sent['run_id'])}"


@pytest.fixture
def task_runs(monkeypatch) -> dict[str, list]:
    """What dag.test() does with each task try: the try's state and message (a deferral's trigger and timeout), and
    each trigger it then runs inline, recorded as they happen. ``fire`` set to True stands in for the triggerer's
    wait: the trigger fires at once with the event it would send at its moment (a wait of days, here)."""
    from airflow.sdk.definitions import dag as dag_module
    from airflow.sdk.execution_time import supervisor
    from airflow.triggers.base import TriggerEvent

    from airloop.stages.labels import runner

    seen: dict[str, list] = {"tries": [], "triggers": [], "collects": []}
    run_in_process, collect = supervisor.run_task_in_process, runner.collect

    def recorded_try(ti: Any, task: Any, client: Any = None) -> Any:
        result = run_in_process(ti=ti, task=task, client=client)
        seen["tries"].append((ti.task_id, result.ti.state, result.msg))
        return result

    def fired_at_once(trigger: Any, task_sdk_ti: Any) -> Any:
        seen["triggers"].append((trigger, len(seen["collects"])))  # with how many collects were done by then
        return TriggerEvent(trigger.moment)

    def recorded_collect(*args: Any, **kwargs: Any) -> Any:
        seen["collects"].append(args[1])
        return collect(*args, **kwargs)

    monkeypatch.setattr(supervisor, "run_task_in_process", recorded_try)
    monkeypatch.setattr(dag_module, "_run_inline_trigger", fired_at_once)
    monkeypatch.setattr(runner, "collect", recorded_collect)
    return seen


def test_labels_already_due_are_collected_at_once_without_deferring(scored, task_runs, capfd, caplog):
    """A past interval (catch-up, backfill): one task instance, one try, no wait handed to the triggerer."""
    assert _labels_run(scored) == {"collect": "success"}

    assert [(task, state) for task, state, _ in task_runs["tries"]] == [("collect", "success")]
    assert task_runs["triggers"] == []
    # the earlier interval read again, then the run's own
    assert str(task_runs["collects"][-1]) == f"[{scored['start'].isoformat()}, {scored['end'].isoformat()})"
    due = scored["end"] + timedelta(days=2)  # labels.after of this module's spec
    log = _log(capfd, caplog)
    assert f"labels of [{scored['start'].isoformat()}, {scored['end'].isoformat()}) due at {due.isoformat()}" in log
    assert "(already due): collecting" in log and "waiting (deferred" not in log


def test_labels_not_yet_due_defer_until_due_then_collect(world, task_runs, capfd, caplog):
    """The first interval whose labels are not due yet (due 2 days after its end: labels.after): the task defers to
    the triggerer until that moment, holding no worker slot and collecting nothing, then collects once resumed.
    (The spec's schedule loses its `end` for this test, so today's intervals have runs; dag.test() runs one at
    once, where the scheduler would start it at its end: the wait until the labels are due is the same.)"""
    from airflow.providers.standard.triggers.temporal import DateTimeTrigger

    from airloop.core.spec import get_spec

    path = world / "models" / f"{MODEL}.yaml"
    original = path.read_text()
    raw = yaml.safe_load(original)
    del raw["schedule"]["end"]
    path.write_text(yaml.safe_dump(raw))
    try:
        spec = get_spec(MODEL)
        origin, step, now = spec.schedule.start_datetime, spec.schedule.interval, datetime.now(UTC)
        assert step is not None
        end = origin - ((origin - (now - spec.label_latency)) // step) * step  # the first end + labels.after > now
        start, due = end - step, end + spec.label_latency
        assert now < due

        run = _dag("labels").test(logical_date=end)
    finally:
        path.write_text(original)

    assert (run.data_interval_start, run.data_interval_end) == (start, end)
    states = _states(run)
    assert states == {"collect": "success"}
    deferred_try, resumed_try = task_runs["tries"]
    task, state, deferral = deferred_try
    assert (task, state) == ("collect", "deferred")
    assert deferral.classpath == "airflow.providers.standard.triggers.temporal.DateTimeTrigger"
    assert deferral.next_method == "execute_due"
    # the whole wait fits (it is at most labels.after from the interval's end), then a try's time
    assert deferral.trigger_timeout == spec.label_latency + spec.stage_timeouts("labels").task
    ((trigger, collects_before),) = task_runs["triggers"]
    assert isinstance(trigger, DateTimeTrigger) and trigger.moment == due
    assert collects_before == 0  # nothing collected (nor read again) before the wait
    assert resumed_try[:2] == ("collect", "success")
    assert str(task_runs["collects"][-1]) == f"[{start.isoformat()}, {end.isoformat()})"
    log = _log(capfd, caplog)
    assert (
        f"labels of [{start.isoformat()}, {end.isoformat()}) due at {due.isoformat()}; "
        "waiting (deferred, no worker slot held" in log
    )
    assert "are due now (the wait is over): collecting" in log


def test_labels_arriving_after_their_run_are_read_by_the_next_runs_which_tell_the_lag(scored):
    """The next interval's run reads this one again: half its labels arrived since, the rest lag past max_lag."""
    from airloop.core.contracts import RunInfo
    from airloop.core.intervals import Interval
    from airloop.core.spec import get_spec
    from airloop.stages.labels import runner

    _source(
        "INSERT INTO late_counts (ts, cnt) SELECT ts, cnt FROM bike_rentals WHERE ts >= :a AND ts < :b",
        a=f"{scored['start']:%Y-%m-%d %H:%M:%S}",
        b=f"{scored['start'] + (scored['end'] - scored['start']) / 2:%Y-%m-%d %H:%M:%S}",
    )
    arrived = len(_source_counts(scored))
    assert 0 < arrived < scored["rows"]
    following = Interval(scored["end"], scored["end"] + (scored["end"] - scored["start"]))

    (summary,) = runner.revisit(get_spec(MODEL), following, RunInfo(run_id="next"))

    assert summary.partition == scored["partition"] and (summary.new, summary.corrected) == (arrived, 0)
    assert len(_table("labels")) == len(_table("outcomes")) == arrived
    assert summary.missing == summary.counts["unlabelled"] == scored["rows"] - arrived
    assert len(summary.first["unlabelled"]) == 10 and summary.first["unlabelled"][0] > max(_source_counts(scored))
    # In data time the following interval's labels are due 28 days after this one's: beyond max_lag (1d).
    assert summary.lagging and summary.lag_seconds == (following.end - scored["end"]).total_seconds()


def test_arrived_labels_are_recorded_and_joined_with_the_serving_version(scored, notify):
    _source(  # the rest (those that arrived before are sent again: exact duplicates, collapsed)
        "INSERT INTO late_counts (ts, cnt) SELECT ts, cnt FROM bike_rentals WHERE ts >= :a AND ts < :b",
        a=f"{scored['start']:%Y-%m-%d %H:%M:%S}",
        b=f"{scored['end']:%Y-%m-%d %H:%M:%S}",
    )

    assert _labels_run(scored) == {"collect": "success"}

    labels, outcomes, served = _table("labels"), _table("outcomes"), _table("predictions")
    assert len(labels) == scored["rows"] and {r["revision"] for r in labels} == {1}
    assert len(outcomes) == scored["rows"]
    predicted = {r["row_key"]: r for r in served}
    truth = _source_counts(scored)
    for outcome in outcomes:
        key = outcome["row_key"]
        assert outcome["model_version"] == scored["version"] == predicted[key]["model_version"]
        assert outcome["prediction"] == predicted[key]["prediction"]
        assert outcome["label"] == repr(float(truth[key])) and outcome["label_revision"] == 1
    assert _freshness_notices(notify) == []  # nothing missing any more

    before = (_table("labels"), _table("outcomes"))
    assert _labels_run(scored) == {"collect": "success"}
    assert (_table("labels"), _table("outcomes")) == before  # idempotent: nothing new written


def _source_counts(scored: dict[str, Any]) -> dict[str, int]:
    from airloop.adapters.db import engine_for
    from airloop.core.settings import SOURCE_CONN_ID

    with engine_for(SOURCE_CONN_ID).connect() as conn:
        rows = conn.execute(
            sa.text("SELECT ts, cnt FROM late_counts WHERE ts >= :a AND ts < :b"),
            {"a": f"{scored['start']:%Y-%m-%d %H:%M:%S}", "b": f"{scored['end']:%Y-%m-%d %H:%M:%S}"},
        )
        return {f"{datetime.fromisoformat(str(ts)):%Y-%m-%dT%H:%M:%S}Z": int(cnt) for ts, cnt in rows}


def test_a_corrected_label_is_a_new_revision_and_updates_its_outcome(scored, capfd, caplog):
    key = sorted(_source_counts(scored))[5]
    ts = datetime.fromisoformat(key.rstrip("Z"))
    old = {r["row_key"]: r for r in _table("outcomes")}[key]
    _source("UPDATE late_counts SET cnt = cnt + 100 WHERE ts = :ts", ts=f"{ts:%Y-%m-%d %H:%M:%S.%f}")

    assert _labels_run(scored) == {"collect": "success"}

    revisions = [r for r in _table("labels") if r["row_key"] == key]
    assert [(r["revision"], r["label"]) for r in revisions] == [
        (1, old["label"]),
        (2, repr(float(old["label"]) + 100)),
    ]
    new = {r["row_key"]: r for r in _table("outcomes")}[key]
    assert (new["label"], new["label_revision"]) == (revisions[1]["label"], 2)
    assert new["label_arrived_at"] > old["label_arrived_at"]
    assert (new["prediction"], new["model_version"]) == (old["prediction"], old["model_version"])
    assert len(_table("labels")) == scored["rows"] + 1
    log = _log(capfd, caplog)
    assert "written to labels: 0 new, 1 corrected" in log
    assert f"Label correction: {MODEL} row {key} changed from {old['label']!r} (revision 1)" in log


def test_bad_labels_are_refused_and_named_the_rest_recorded(scored, capfd, caplog):
    keys = sorted(_source_counts(scored))
    clash = datetime.fromisoformat(keys[7].rstrip("Z"))
    start = scored["start"]
    _source(
        "INSERT INTO late_counts (ts, cnt) VALUES (:stray, 5), (:wrong, 'lots'), (:clash, 999999)",
        stray=f"{start:%Y-%m-%d} 00:30:00.000000",  # a row never predicted (no such hour row)
        wrong=f"{start:%Y-%m-%d} 00:45:00.000000",  # not a number
        clash=f"{clash:%Y-%m-%d %H:%M:%S.%f}",  # a second, different label for a predicted row
    )
    outcomes_before = _table("outcomes")

    states = _labels_run(scored)

    assert states == {"collect": "failed"}
    log = _log(capfd, caplog)
    stray, wrong = f"{start:%Y-%m-%d}T00:30:00Z", f"{start:%Y-%m-%d}T00:45:00Z"
    assert f"Labels REFUSED for {MODEL} interval" in log
    assert f"conflicting values for one row key: 1 (first: {keys[7]})" in log
    assert f"labels of the wrong type for the task (or not finite): 1 (first: {wrong})" in log
    assert f"labels for rows never predicted (kept in labels, not in outcomes): 1 (first: {stray})" in log
    labels = _table("labels")
    assert [(r["row_key"], r["label"], r["revision"]) for r in labels if r["row_key"] == stray] == [(stray, "5.0", 1)]
    assert [r["revision"] for r in labels if r["row_key"] == keys[7]] == [1]  # the clash wrote nothing
    assert not any(r["row_key"] == wrong for r in labels)
    assert _table("outcomes") == outcomes_before  # the stray label joins nothing


def test_the_airloop_view_links_the_labels_dag(scored, world):
    from airloop.adapters.db import engine_for
    from airloop.core.settings import WAREHOUSE_CONN_ID
    from airloop.core.spec import get_spec
    from airloop.ui.board import load_board, render_board

    board = load_board(get_spec(MODEL), engine_for(WAREHOUSE_CONN_ID))
    assert board.dag_ids["labels"] == f"{MODEL}_labels"
    page = render_board(board, reports_root=world / "reports", airflow_ui="http://ui", models=[MODEL], user="u")
    assert f'<a href="http://ui/dags/{MODEL}_labels" target="_top">labels</a>' in page

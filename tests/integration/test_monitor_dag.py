"""bikes_monitor run for real with dag.test() on the real data: Evidently, MLflow lineage, the warehouse, Assets.

The model here is ``bikesmon``, a copy of the bikes spec in a models folder of this module's own, so its
champion (trained on early 2011), lake partitions, drift rows and requests never meet the other tests' bikes.
Its performance comes from the ``outcomes`` table (the predictions served, joined with their labels), never from
re-predicting the window: until the labels stage fills it, :func:`served_outcomes` stores what it would, the
champion's predictions of mid-2012 hour by hour with the true rentals as labels, all of them up to 14 July and only
the first 60 hours after (labels still arriving). Performance never degrades it (``max_degradation`` huge): every
decision below is made by drift, hysteresis and cooldown alone.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import sqlalchemy as sa

from tests.integration.test_alerts import webhook_server  # noqa: F401

ROOT = Path(__file__).resolve().parents[2]
MODEL = "bikesmon"


@pytest.fixture(scope="module")
def models_dir(tmp_path_factory, airflow_db, seeded_source):
    """A models folder holding bikes and bikesmon, in force for this module; bikesmon's validated lake."""
    from airloop.adapters.db import engine_for
    from airloop.adapters.lake import default_lake
    from airloop.core.settings import SOURCE_CONN_ID
    from airloop.core.spec import get_spec
    from tests.support import models_folder, write_validated_partitions

    folder = models_folder(
        tmp_path_factory.mktemp("models"),
        MODEL,
        monitoring=dict(max_degradation=100.0, cooldown_days=84),
    )
    mp = pytest.MonkeyPatch()
    mp.setenv("AIRLOOP_MODELS_DIR", str(folder))
    spec = get_spec(MODEL)
    write_validated_partitions(engine_for(SOURCE_CONN_ID), default_lake(), spec, last=26)
    yield folder
    mp.undo()


@pytest.fixture(scope="module")
def champion(models_dir):
    """bikesmon v1, trained on the first half of 2011 (fast: 20 boosting rounds) and promoted."""
    from airloop.adapters.db import engine_for
    from airloop.core.contracts import RunInfo, TrainRequest
    from airloop.core.settings import WAREHOUSE_CONN_ID
    from airloop.core.spec import get_spec
    from airloop.stages.promote.ledger import Decision, apply
    from airloop.stages.train import runner as train_stage

    request = TrainRequest.from_dict(
        {"reason": "monitor tests", "window_end": "2011-07-16", "overrides": {"max_iter": 20}}
    )
    trained = train_stage.train(get_spec(MODEL), request, RunInfo())
    apply(engine_for(WAREHOUSE_CONN_ID), Decision(MODEL, "promote", trained.version, "tests", "tests"), None)
    return trained


@pytest.fixture(scope="module")
def served_outcomes(champion):
    """``outcomes`` of bikesmon's champion: every hour of [2012-05-19, 2012-07-14), the first 60 hours after."""
    from datetime import UTC, datetime

    from airloop.adapters import registry, warehouse
    from airloop.adapters.db import engine_for
    from airloop.core.settings import WAREHOUSE_CONN_ID
    from airloop.core.spec import get_spec
    from airloop.stages.monitor import runner as monitoring

    spec = get_spec(MODEL)
    model = registry.load_version(MODEL, champion.version).pipeline
    frame, _ = monitoring._current(spec, datetime(2012, 5, 19, tzinfo=UTC), datetime(2012, 8, 11, tzinfo=UTC))
    frame = frame.sort_values("ts").reset_index(drop=True)
    late = frame["ts"] >= datetime(2012, 7, 14, tzinfo=UTC)
    frame = frame[~late | (late.cumsum() <= 60)]
    predicted = model.predict(frame[spec.feature_names])
    arrived = datetime.now(UTC)
    rows = [
        {
            "model": MODEL,
            "partition": f"{ts:%Y-%m-%d}",
            "row_key": ts.isoformat(),
            "ts": ts.to_pydatetime(),
            "model_version": champion.version,
            "prediction": float(p),
            "label": str(label),
            "label_revision": 1,
            "label_arrived_at": arrived,
            "joined_at": arrived,
        }
        for ts, p, label in zip(frame["ts"], predicted, frame["cnt"], strict=True)
    ]
    engine = engine_for(WAREHOUSE_CONN_ID)
    warehouse.ensure_schema(engine)
    with engine.begin() as conn:
        conn.execute(warehouse.outcomes.insert(), rows)
    return rows


def _run(conf: dict):
    from airflow.dag_processing.dagbag import DagBag

    bag = DagBag(dag_folder=str(ROOT / "dags" / "monitor.py"))  # parsed afresh: dag.test() keeps conf in params
    assert bag.import_errors == {}
    run = bag.dags[f"{MODEL}_monitor"].test(run_conf=conf)
    return {ti.task_id: ti.state for ti in run.get_task_instances()}


def _table(name: str) -> list[dict]:
    from airloop.adapters import warehouse
    from airloop.adapters.db import engine_for
    from airloop.core.settings import WAREHOUSE_CONN_ID

    table = getattr(warehouse, name)
    query = sa.select(table).where(table.c.model == MODEL).order_by(table.c.window_end)
    with engine_for(WAREHOUSE_CONN_ID).connect() as conn:
        return [dict(r._mapping) for r in conn.execute(query)]


def _asset_events() -> list[dict]:
    from airflow.models.asset import AssetEvent, AssetModel
    from airflow.utils.session import create_session

    with create_session() as session:
        rows = session.execute(
            sa.select(AssetEvent.extra)
            .join(AssetModel, AssetEvent.asset_id == AssetModel.id)
            .where(AssetModel.name == f"{MODEL}.retrain_requested")
        ).all()
    return [dict(r.extra or {}) for r in rows]


def test_no_champion_yet_skips_with_a_clear_message(models_dir, capfd):
    states = _run({"as_of": "2012-06-16"})
    # freshness is its own check: bikesmon's validated partitions run to the end of its schedule.
    assert states == {"check": "success", "judge": "skipped", "request": "skipped", "freshness": "success"}
    assert "bikesmon has no @champion yet, so there is nothing to monitor" in "".join(capfd.readouterr())


def test_drift_asks_once_through_hysteresis_and_cooldown_however_often_it_runs(
    champion,
    served_outcomes,
    capfd,
    caplog,
    monkeypatch,
    webhook_server,  # noqa: F811
):
    """Three mid-2012 windows (and one re-run) against a champion of early 2011: exactly one request, and one
    ``retrain`` notification (AIRLOOP_NOTIFY=retrain, to a local webhook)."""
    hook = {"conn_type": "http", "host": f"http://127.0.0.1:{webhook_server.server_port}/hook"}
    monkeypatch.setenv("AIRFLOW_CONN_EVENTS_HOOK", json.dumps(hook))
    monkeypatch.setenv("AIRLOOP_ALERTS_CONN_ID", "events_hook")
    monkeypatch.setenv("AIRLOOP_NOTIFY", "retrain")
    outcomes = {}
    for as_of in ("2012-06-16", "2012-07-14", "2012-07-14", "2012-08-11"):
        states = _run({"as_of": as_of})
        assert states["check"] == states["judge"] == "success", states
        outcomes.setdefault(as_of, []).append(states["request"])
    log = "".join(capfd.readouterr()) + caplog.text  # task messages (stdout) and the verdicts (logging)
    # 06-16: drift in 1 of 1 window (2 needed); 07-14: 2 of 2, requested; its re-run: already requested;
    # 08-11: within 84 days of the request.
    assert outcomes == {"2012-06-16": ["skipped"], "2012-07-14": ["success", "skipped"], "2012-08-11": ["skipped"]}
    assert "drift in 1 of the last 1 windows; 2 of 3 are needed" in log
    assert "retraining was already requested for the window ending 2012-07-14" in log
    assert "cooling down until 2012-10-06 (84 days after 2012-07-14)" in log
    assert "decision: REQUEST RETRAINING: drift in 2 of the last 2 windows, including the latest (yr" in log

    requests = _table("retrain_requests")
    assert len(requests) == 1
    request = requests[0]
    assert request["window_end"].date().isoformat() == "2012-07-14"
    assert request["champion_version"] == champion.version
    assert "yr" in request["drifted_columns"] and "drift in 2 of the last 2 windows" in request["reason"]
    assert Path(request["report_path"]).is_file()

    events = _asset_events()
    assert len(events) == 1, events  # the re-run raised nothing, announced nothing
    assert events[0]["request_id"] == request["id"]
    assert events[0]["window_end"].startswith("2012-07-14") and events[0]["reason"].startswith("bikesmon monitor")

    posted = [json.loads(body) for _, _, body in webhook_server.received]
    (notice,) = [p for p in posted if p.get("kind") == "retrain"]  # the re-run notified nothing either
    assert notice["model"] == MODEL and notice["data"]["request_id"] == request["id"]
    assert notice["data"]["window_end"].startswith("2012-07-14") and "yr" in notice["data"]["drifted_columns"]
    assert "drift in 2 of the last 2 windows" in notice["text"] and "/airloop/go/training-run?" in notice["link"]

    metrics = _table("drift_metrics")
    assert [m["window_end"].date().isoformat() for m in metrics] == ["2012-06-16", "2012-07-14", "2012-08-11"]
    for row in metrics:
        assert row["drifted"] and "yr" in row["drifted_columns"]
        assert row["reference"] == "same-weeks" and row["current_rows"] == 672
        assert set(row["realized"]) == {champion.version}  # the version that served, from outcomes
        estimated = row["estimated_performance"][champion.version]
        assert estimated["status"] == "not estimated" and "regressor" in estimated["reason"]
        assert set(row["column_scores"]) == set(champion_spec_monitored())
        report = Path(row["report_path"])
        assert report.is_file() and (report.parent / "report.json").is_file()
        verdict = json.loads((report.parent / "verdict.json").read_text())
        assert verdict["window_end"].startswith(row["window_end"].date().isoformat())
    for row in metrics[:2]:  # every hour labelled: realized on the served predictions, 2012 worse than training
        assert row["labelled_rows"] == 672 and row["mae"] > row["reference_mae"] > 0
        assert row["degradation"] is not None and row["performance"]["kind"] == "realized"
    last = metrics[2]  # 60 hours labelled so far: shown, not judged
    assert last["labelled_rows"] == 60 and last["degradation"] is None and last["degraded"] is False
    assert last["performance"]["unjudged"].startswith("only 60 labelled outcomes, fewer than monitoring.min_labels")
    assert "realized performance on 60 labelled outcomes (regression)" in log
    assert "only 60 labelled outcomes, fewer than monitoring.min_labels (100)" in log


def champion_spec_monitored() -> list[str]:
    from airloop.core.spec import get_spec

    return get_spec(MODEL).monitored_features


def test_each_window_is_an_mlflow_run_with_its_reports(champion):
    from airloop.adapters import registry as tracking

    client = tracking.client()
    experiment = client.get_experiment_by_name(f"{MODEL}-monitoring")
    assert experiment is not None
    runs = client.search_runs([experiment.experiment_id], "tags.`airloop.window_end` LIKE '2012-07-14%'")
    assert len(runs) == 2  # the run and its re-run
    run = runs[0]
    assert run.data.tags["airloop.champion_version"] == champion.version
    assert run.data.tags["airflow.dag_id"] == f"{MODEL}_monitor"
    assert run.data.metrics["drift.yr"] > 0.45 and "mae" in run.data.metrics
    artifacts = {a.path for a in client.list_artifacts(run.info.run_id, "drift")}
    assert {"drift/report.html", "drift/report.json", "drift/verdict.json"} <= artifacts


@pytest.mark.parametrize(
    ("conf", "task", "message"),
    [
        ({"as_of": "2013-06-01"}, "judge", "No validated data of bikesmon in the window [2013-05-04, 2013-06-01)"),
        ({"as_of": "2012-06-16", "window": 7}, "check", "does not know the param(s) ['window']"),
    ],
)
def test_bad_windows_and_params_fail_with_a_clear_message(champion, capfd, conf, task, message):
    states = _run(conf)
    assert states[task] == "failed", states
    assert message in "".join(capfd.readouterr())


def test_a_date_that_is_not_a_date_is_refused_before_the_run_starts(champion):
    """Airflow checks the param's format when the run is created (a 400 through the REST API)."""
    from airflow.sdk.exceptions import ParamValidationError

    with pytest.raises(ParamValidationError, match="as_of"):
        _run({"as_of": "soon"})


def test_a_retried_judge_continues_its_windows_mlflow_run(champion):
    """The same Airflow run judging the same window again (a retry) writes into the run its first try started."""
    from datetime import UTC, datetime

    from airloop.adapters import registry as tracking
    from airloop.core.contracts import MonitorRequest, RunInfo
    from airloop.core.spec import get_spec
    from airloop.stages.monitor import runner as monitoring

    request = MonitorRequest(as_of=datetime(2012, 6, 16, tzinfo=UTC), explicit=True)
    tries = [RunInfo(dag_id=f"{MODEL}_monitor", run_id="manual__monitor-retry", try_number=n) for n in (1, 2)]
    first, again = (monitoring.monitor(get_spec(MODEL), request, run) for run in tries)
    client = tracking.client()
    experiment = client.get_experiment_by_name(f"{MODEL}-monitoring")
    runs = client.search_runs([experiment.experiment_id], "tags.`airflow.run_id` = 'manual__monitor-retry'")
    assert [r.info.run_id for r in runs] == [first.mlflow_run_id] == [again.mlflow_run_id]
    assert runs[0].data.tags["airflow.try_number"] == "2" and runs[0].info.status == "FINISHED"
    assert runs[0].data.metrics["drift_share"] == first.drift_share


def test_judging_outside_an_airflow_run_starts_its_own_mlflow_runs(champion):
    """A call without an Airflow run (a shell, a notebook: no DAG or run id) judges the window and logs a new
    MLflow run each time; it has no earlier try to continue (it once failed with a KeyError on the run's tags)."""
    from datetime import UTC, datetime

    from airloop.adapters import registry as tracking
    from airloop.core.contracts import MonitorRequest, RunInfo
    from airloop.core.spec import get_spec
    from airloop.stages.monitor import runner as monitoring

    request = MonitorRequest(as_of=datetime(2012, 6, 16, tzinfo=UTC), explicit=True)
    first, again = (monitoring.monitor(get_spec(MODEL), request, RunInfo()) for _ in range(2))
    assert first.mlflow_run_id and again.mlflow_run_id and first.mlflow_run_id != again.mlflow_run_id
    run = tracking.client().get_run(again.mlflow_run_id)
    assert "airflow.run_id" not in run.data.tags and run.data.metrics["drift_share"] == again.drift_share

"""Shadow scoring and the live gate, run for real with dag.test(): real data, MLflow store, warehouse and lake.

A model of its own (``bikeshadow``, the bikes spec with ``gate.shadow: {intervals: 2}``), in file order as its
life goes: a challenger that passes the offline gate waits (ledger ``shadowing``), the score DAG scores each
interval with it into ``shadow_predictions`` (never ``predictions``), too few labelled intervals keep it waiting,
and once two are labelled the score DAG triggers the promote DAG, whose live gate refuses a challenger worse than
what was served and promotes one that is better. Labels are written into ``labels`` as the labels step would.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import sqlalchemy as sa

ROOT = Path(__file__).resolve().parents[2]
MODEL = "bikeshadow"
WEAK = {"max_iter": 20, "learning_rate": 0.1}


@pytest.fixture(scope="module")
def partitions(tmp_path_factory, airflow_db, seeded_source) -> list[str]:
    """A models folder with bikes and bikeshadow (gate.shadow: 2 intervals) in force; bikeshadow's validated lake."""
    import yaml

    from airloop.adapters.db import engine_for
    from airloop.adapters.lake import default_lake
    from airloop.core.settings import SOURCE_CONN_ID
    from airloop.core.spec import get_spec
    from tests.support import models_folder, write_validated_partitions

    folder = models_folder(tmp_path_factory.mktemp("models"), MODEL)
    raw = yaml.safe_load((folder / f"{MODEL}.yaml").read_text())
    raw["gate"]["shadow"] = {"intervals": 2, "require_better": True}
    (folder / f"{MODEL}.yaml").write_text(yaml.safe_dump(raw))
    mp = pytest.MonkeyPatch()
    mp.setenv("AIRLOOP_MODELS_DIR", str(folder))
    keys = write_validated_partitions(engine_for(SOURCE_CONN_ID), default_lake(), get_spec(MODEL))
    yield keys
    mp.undo()


@pytest.fixture(scope="module")
def champion(partitions) -> str:
    """bikeshadow v1: weak (20 boosting rounds), promoted without the DAG."""
    from airloop.adapters.db import engine_for
    from airloop.core.contracts import RunInfo, TrainRequest
    from airloop.core.settings import WAREHOUSE_CONN_ID
    from airloop.core.spec import get_spec
    from airloop.stages.promote.ledger import Decision, apply
    from airloop.stages.train import runner as train_stage

    trained = train_stage.train(get_spec(MODEL), TrainRequest(reason="shadow tests", overrides=WEAK), RunInfo())
    apply(engine_for(WAREHOUSE_CONN_ID), Decision(MODEL, "promote", trained.version, "tests", "tests"), None)
    return trained.version


def _dag(stage: str):
    """Parsed afresh for each run, as the scheduler's runs are (dag.test() keeps a run's conf in the params)."""
    from airflow.dag_processing.dagbag import DagBag

    bag = DagBag(dag_folder=str(ROOT / "dags" / f"{stage}.py"))
    assert bag.import_errors == {}
    return bag.dags[f"{MODEL}_{stage}"]


def _run(stage: str, conf: dict):
    run = _dag(stage).test(run_conf=conf)
    return run, {ti.task_id: ti.state for ti in run.get_task_instances()}


def _span(first: str, last: str) -> dict:
    """The score DAG's params re-scoring the validated partitions from ``first`` to ``last``."""
    from airloop.core.intervals import parse_key

    return {"start": f"{parse_key(first):%Y-%m-%d}", "end": f"{parse_key(last) + timedelta(days=1):%Y-%m-%d}"}


def _engine():
    from airloop.adapters.db import engine_for
    from airloop.core.settings import WAREHOUSE_CONN_ID

    return engine_for(WAREHOUSE_CONN_ID)


def _rows(table_name: str, partition: str) -> list[dict]:
    from airloop.adapters import warehouse

    table = getattr(warehouse, table_name)
    query = sa.select(table).where(table.c.model == MODEL, table.c.partition == partition).order_by(table.c.row_key)
    with _engine().connect() as conn:
        return [dict(r._mapping) for r in conn.execute(query)]


def _ledger() -> list[dict]:
    from airloop.stages.promote.ledger import PENDING, ledger

    return [r for r in ledger(_engine(), MODEL) if r["outcome"] != PENDING]


def _alias(alias: str) -> str | None:
    from airloop.adapters import registry

    return registry.version_for_alias(MODEL, alias)


def _label(partition: str, value_of) -> None:
    """Labels for every row of ``partition`` as the labels step writes them; ``value_of(row_key, cnt)`` -> value."""
    from airloop.adapters.lake import default_lake
    from airloop.adapters.warehouse import labels
    from airloop.core.spec import get_spec
    from airloop.stages.ingest.keys import row_keys

    spec = get_spec(MODEL)
    frame = default_lake().read(MODEL, "validated", partition)
    keys = row_keys(frame, spec.keys)
    now = datetime.now(UTC)
    rows = [
        {
            "model": MODEL,
            "partition": partition,
            "row_key": key,
            "ts": ts.to_pydatetime(),
            "label": repr(float(value_of(key, cnt))),
            "revision": 1,
            "arrived_at": now,
        }
        for key, ts, cnt in zip(keys, frame[spec.source.time_column], frame[spec.target.name], strict=True)
    ]
    with _engine().begin() as conn:
        conn.execute(labels.insert(), rows)


def _triggered(run_id: str) -> dict | None:
    """The conf of the promote run the score DAG triggered with this id (None: no such run)."""
    from airflow.models.dagrun import DagRun
    from airflow.utils.session import create_session

    with create_session() as session:
        found = session.scalar(sa.select(DagRun).where(DagRun.dag_id == f"{MODEL}_promote", DagRun.run_id == run_id))
        return None if found is None else dict(found.conf or {})


def test_a_challenger_that_passes_offline_waits_as_shadowing(champion):
    run, states = _run("train", {"reason": "challenger a"})
    assert states["gate"] == "success" and states["promote"] == "skipped" and states["record"] == "success", states
    assert run.state == "success"
    newest = _ledger()[0]
    challenger = newest["candidate_version"]
    assert (newest["outcome"], newest["moved"], newest["champion_after"]) == ("shadowing", False, champion)
    assert "SHADOW" in newest["reason"] and "0 so far" in newest["reason"]
    assert newest["evidence"]["live"]["status"] == "waiting"
    assert _alias("champion") == champion and _alias("challenger") == challenger


def test_the_score_dag_shadows_the_waiting_challenger_and_never_serves_it(champion, partitions, capfd, caplog):
    from airloop.adapters.lake import default_lake

    challenger = _alias("challenger")
    first, second = partitions[-4], partitions[-3]
    run, states = _run("score", _span(first, second))
    assert states["score"] == "success" and states["shadow"] == "success", states
    assert states["live_gate_due"] == "success" and states["live_gate"] == "skipped"  # no labels yet
    lake = default_lake()
    for partition in (first, second):
        validated = lake.manifest(MODEL, "validated", partition).rows
        served, shadow = _rows("predictions", partition), _rows("shadow_predictions", partition)
        assert {r["model_version"] for r in served} == {champion} and len(served) == validated
        assert {r["model_version"] for r in shadow} == {challenger} and len(shadow) == validated
        assert {r["dag_run_id"] for r in shadow} == {run.run_id}
        assert [r["row_key"] for r in shadow] == [r["row_key"] for r in served]
        assert lake.manifest(MODEL, "shadow", partition).meta["model_version"] == challenger
        assert lake.manifest(MODEL, "predictions", partition).meta["model_version"] == champion
    log = "".join(capfd.readouterr()) + caplog.text
    assert f"Shadowed 2 partition(s) of {MODEL} with @challenger v{challenger}" in log and "never served" in log


def test_rescoring_replaces_the_shadow_rows_of_the_interval(champion, partitions):
    first, second = partitions[-4], partitions[-3]
    before = [(r["row_key"], r["prediction"]) for r in _rows("shadow_predictions", first)]
    run, states = _run("score", _span(first, second))
    assert states["shadow"] == "success", states
    after = _rows("shadow_predictions", first)
    assert [(r["row_key"], r["prediction"]) for r in after] == before  # replaced, never duplicated
    assert {r["dag_run_id"] for r in after} == {run.run_id}


def test_too_few_labelled_shadow_intervals_keep_it_waiting(champion, partitions):
    challenger = _alias("challenger")
    first = partitions[-4]
    served = {r["row_key"]: r["prediction"] for r in _rows("predictions", first)}
    _label(first, lambda key, cnt: served[key] + 1)  # labels the champion predicted almost exactly
    _, states = _run("promote", {"action": "promote", "version": challenger, "reason": "is it ready"})
    assert states["gate"] == "success" and states["promote"] == "skipped", states
    newest = _ledger()[0]
    assert (newest["outcome"], newest["candidate_version"], newest["moved"]) == ("shadowing", challenger, False)
    assert "(1 so far)" in newest["reason"]
    assert newest["evidence"]["live"]["intervals"] == {first: len(served)}
    assert _alias("champion") == champion and _alias("challenger") == challenger


def test_a_challenger_worse_on_live_intervals_is_refused(champion, partitions, caplog):
    from airloop.core.shadow import live_gate_run_id

    challenger = _alias("challenger")
    first, second = partitions[-4], partitions[-3]
    served = {r["row_key"]: r["prediction"] for r in _rows("predictions", second)}
    _label(second, lambda key, cnt: served[key] + 1)
    # The score DAG sees two labelled shadow intervals and triggers the live gate through the promote DAG.
    _, states = _run("score", _span(first, second))
    assert states["live_gate_due"] == "success" and states["live_gate"] == "success", states
    conf = _triggered(live_gate_run_id(MODEL, challenger, 2))
    assert conf is not None and conf["version"] == challenger and conf["action"] == "promote", conf
    _, states = _run("promote", conf)
    assert states["gate"] == "success" and states["promote"] == "skipped", states
    newest = _ledger()[0]
    assert (newest["outcome"], newest["candidate_version"]) == ("refused", challenger)
    assert "live rmse" in newest["reason"] and f"served (v{champion})" in newest["reason"], newest["reason"]
    live = newest["evidence"]["live"]
    assert live["status"] == "compared" and sorted(live["intervals"]) == [first, second]
    assert live["served"] == pytest.approx(1.0) and live["challenger"] > live["served"]
    failed = [c for c in newest["evidence"]["verdict"]["checks"] if not c["passed"]]
    assert [c["name"] for c in failed] == ["live"]  # the offline gate passed; live is what refused it
    assert _alias("champion") == champion

    # Refused, it no longer waits: the next score run does not shadow it.
    before = _rows("shadow_predictions", first)
    caplog.clear()
    _, states = _run("score", _span(first, first))
    assert states["shadow"] == "success" and states["live_gate"] == "skipped", states
    assert _rows("shadow_predictions", first) == before
    assert f"@challenger v{challenger} was decided on (refused): it no longer waits" in caplog.text


def test_a_challenger_better_on_live_intervals_is_promoted(champion, partitions, capfd, caplog):
    from airloop.core.shadow import live_gate_run_id

    _, states = _run("train", {"reason": "challenger b", "overrides": {"max_iter": 60}})
    assert _ledger()[0]["outcome"] == "shadowing", states
    challenger = _alias("challenger")
    third, fourth = partitions[-2], partitions[-1]
    for partition in (third, fourth):
        _label(partition, lambda key, cnt: cnt)  # the real labels
    _, states = _run("score", _span(third, fourth))
    assert states["shadow"] == "success" and states["live_gate"] == "success", states
    conf = _triggered(live_gate_run_id(MODEL, challenger, 2))
    assert conf is not None
    _, states = _run("promote", conf)
    assert states["promote"] == "success", states
    newest = _ledger()[0]
    assert (newest["outcome"], newest["from_version"], newest["champion_after"]) == ("promoted", champion, challenger)
    live = newest["evidence"]["live"]
    assert live["status"] == "compared" and live["challenger"] < live["served"]
    assert "live rmse" in next(c["detail"] for c in newest["evidence"]["verdict"]["checks"] if c["name"] == "live")
    assert _alias("challenger") is None

    # Promoted, it is served; nothing is shadowed any more.
    capfd.readouterr()
    caplog.clear()
    _, states = _run("score", _span(third, third))
    assert states["shadow"] == "success" and states["live_gate"] == "skipped", states
    assert {r["model_version"] for r in _rows("predictions", third)} == {challenger}
    assert "No shadow scoring of bikeshadow: no @challenger" in "".join(capfd.readouterr()) + caplog.text

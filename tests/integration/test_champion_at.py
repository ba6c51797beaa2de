"""Who was champion when, and why: a model's life told by its ledger, on the real MLflow store and warehouse.

The model is ``bikesat``, a copy of the bikes spec in a models folder of this module's own (its registry and ledger
start empty). The tests run in file order and build on each other: no champion yet (scoring skips), promote v1,
promote v2, roll back to v1, then ``@champion`` moved to v3 by hand with the MLflow client (outside airloop):
scoring notices it once, records it, notifies, and keeps serving the ledger's v1; a promotion through the promote
DAG then makes v3 champion, from v1. At moments between the steps, ``champion_at``, ``airloop ledger at`` (text
and ``--json``) and a prediction row name the version, since when, who moved it and why.
"""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from tests.integration.test_alerts import webhook_server  # noqa: F401

ROOT = Path(__file__).resolve().parents[2]
MODEL = "bikesat"
RANGE = {"start": "2012-11-03", "end": "2012-12-29"}  # the two newest validated partitions


@pytest.fixture(scope="module")
def models_dir(tmp_path_factory, airflow_db, seeded_source):
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


@pytest.fixture(scope="module")
def story(models_dir) -> dict[str, Any]:
    """What the tests fill in as the model's life goes on: versions and the moments between the steps."""
    return {}


def _engine():
    from airloop.adapters.db import engine_for
    from airloop.core.settings import WAREHOUSE_CONN_ID

    return engine_for(WAREHOUSE_CONN_ID)


def _dag(stage: str):
    from airflow.dag_processing.dagbag import DagBag

    bag = DagBag(dag_folder=str(ROOT / "dags" / f"{stage}.py"))
    assert bag.import_errors == {}
    return bag.dags[f"{MODEL}_{stage}"]


def _states(run) -> dict[str, str]:
    return {ti.task_id: ti.state for ti in run.get_task_instances()}


def _between() -> datetime:
    """A moment strictly between the step just done and the next one."""
    time.sleep(0.05)
    moment = datetime.now(UTC)
    time.sleep(0.05)
    return moment


def _rows(*, outcome: str | None = None) -> list[dict]:
    from airloop.stages.promote.ledger import ledger

    return [r for r in reversed(ledger(_engine(), MODEL)) if outcome is None or r["outcome"] == outcome]


def _predictions() -> list[dict]:
    from airloop.adapters.warehouse import predictions

    query = sa.select(predictions).where(predictions.c.model == MODEL)
    with _engine().connect() as conn:
        return [dict(r._mapping) for r in conn.execute(query)]


def _decide(version: str, action: str, reason: str, decided_by: str):
    from airloop.stages.promote.ledger import Decision

    return Decision(MODEL, action, version, reason, decided_by, evidence={"holdout": "[2012-11-03, 2012-12-29)"})  # type: ignore[arg-type]


def test_before_the_first_promotion_there_is_no_champion_and_scoring_skips(story, capfd):
    from airloop.stages.promote.ledger import champion_at

    story["t0"] = _between()
    answer = champion_at(_engine(), MODEL, story["t0"])
    assert answer.version is None and answer.first_promotion is None
    assert answer.text() == f"{MODEL}: no champion at {story['t0']:%Y-%m-%d %H:%M:%S} UTC (no promotion yet)."
    run = _dag("score").test(run_conf=RANGE)
    assert _states(run)["pin"] == "skipped" and run.state == "success"
    assert "no @champion yet" in "".join(capfd.readouterr())


def test_promotions_and_a_rollback_each_answer_for_their_own_time(story):
    from airloop.adapters import registry
    from airloop.core.contracts import RunInfo, TrainRequest
    from airloop.core.spec import get_spec
    from airloop.stages.promote.ledger import apply, champion_at
    from airloop.stages.train import runner as train_stage

    spec, engine = get_spec(MODEL), _engine()
    v1 = train_stage.train(spec, TrainRequest(reason="v1", overrides={"max_iter": 20}), RunInfo()).version
    v2 = str(registry.client().create_model_version(MODEL, source=models_source(spec)).version)
    v3 = train_stage.train(spec, TrainRequest(reason="v3", overrides={"max_iter": 30}), RunInfo()).version
    story.update(v1=v1, v2=v2, v3=v3)

    apply(engine, _decide(v1, "promote", "first champion", "gate"), expected_champion=None)
    story["t1"] = _between()
    apply(engine, _decide(v2, "promote", "v2 handles weekends", "override by alice"), expected_champion=v1)
    story["t2"] = _between()
    apply(engine, _decide(v1, "rollback", "v2 over-predicts at night", "gate + approval by bob"), expected_champion=v2)
    story["t3"] = _between()
    moves = _rows()
    promoted_v1, promoted_v2, rolled_back = (r for r in moves if r["moved"])

    before = champion_at(engine, MODEL, story["t0"])
    assert before.version is None and before.first_promotion is not None
    assert story["t0"] < before.first_promotion < story["t1"]
    assert "no champion at" in before.text() and "first promotion at" in before.text()
    expected = {
        "t1": (v1, promoted_v1, "promote", "gate", "first champion", None),
        "t2": (v2, promoted_v2, "promote", "override by alice", "v2 handles weekends", v1),
        "t3": (v1, rolled_back, "rollback", "gate + approval by bob", "v2 over-predicts at night", v2),
    }
    for moment, (version, row, action, decided_by, reason, from_version) in expected.items():
        answer = champion_at(engine, MODEL, story[moment])
        assert (answer.version, answer.seq, answer.action, answer.decided_by, answer.reason) == (
            version,
            row["seq"],
            action,
            decided_by,
            reason,
        ), moment
        assert answer.from_version == from_version and answer.evidence["holdout"] == "[2012-11-03, 2012-12-29)"
        assert answer.since is not None and answer.since <= story[moment]
    # Naive times are UTC; a time given in another zone is converted.
    assert champion_at(engine, MODEL, story["t2"].replace(tzinfo=None)).version == v2
    in_paris = story["t2"].astimezone(__import__("zoneinfo").ZoneInfo("Europe/Paris"))
    assert champion_at(engine, MODEL, in_paris).version == v2


def models_source(spec: Any) -> str:
    """Where a bare version (never loaded: promoted and replaced by ledger decisions only) says it comes from."""
    from airloop.core.settings import paths

    folder = paths().home / "bare-versions" / spec.name
    folder.mkdir(parents=True, exist_ok=True)
    return folder.as_uri()


def test_an_alias_moved_outside_airloop_is_recorded_once_notified_and_not_adopted(
    story,
    monkeypatch,
    webhook_server,  # noqa: F811
    capfd,
    caplog,
):
    from airloop.adapters import registry
    from airloop.stages.promote.ledger import OUT_OF_BAND, OUTSIDE_AIRLOOP, champion_at

    v1, v3 = story["v1"], story["v3"]
    url = f"http://127.0.0.1:{webhook_server.server_port}/hook"
    monkeypatch.setenv("AIRFLOW_CONN_EVENTS_HOOK", json.dumps({"conn_type": "http", "host": url}))
    monkeypatch.setenv("AIRLOOP_ALERTS_CONN_ID", "events_hook")
    monkeypatch.setenv("AIRLOOP_NOTIFY", "promotion")

    registry.client().set_registered_model_alias(MODEL, registry.CHAMPION, v3)  # by hand, as in the MLflow UI
    story["t4"] = _between()
    run = _dag("score").test(run_conf=RANGE)
    assert _states(run)["score"] == "success" and run.state == "success", _states(run)
    log = "".join(capfd.readouterr()) + caplog.text
    story["t5"] = _between()

    # Scoring served the ledger's champion, by version number, and said so.
    predictions = _predictions()
    assert predictions and {p["model_version"] for p in predictions} == {v1}
    assert f"@champion of {MODEL} is v{v3} in MLflow, moved outside airloop: not adopted" in log
    assert f"Serving the ledger's champion v{v1} by version number" in log
    # Recorded once, with both versions ...
    (seen,) = _rows(outcome=OUT_OF_BAND)
    assert (seen["action"], seen["moved"], seen["decided_by"]) == ("observe", False, OUTSIDE_AIRLOOP)
    assert (seen["from_version"], seen["champion_after"], seen["candidate_version"]) == (v1, v1, v3)
    assert seen["evidence"]["registry_champion"] == v3 and seen["evidence"]["ledger_champion"] == v1
    assert seen["evidence"]["noticed_by"] == "scoring" and seen["dag_run_id"] == run.run_id
    # ... and notified once.
    (notice,) = [json.loads(body) for _, _, body in webhook_server.received]
    assert notice["kind"] == "promotion" and notice["data"]["outcome"] == OUT_OF_BAND
    assert (notice["data"]["registry_champion"], notice["data"]["ledger_champion"]) == (v3, v1)
    assert notice["headline"] == f"@champion moved outside airloop to v{v3}; v{v1} keeps serving"

    # The next scoring notices the same move: nothing more is recorded or sent, and v1 still serves.
    again = _dag("score").test(run_conf=RANGE)
    assert _states(again)["score"] == "success"
    assert len(_rows(outcome=OUT_OF_BAND)) == 1 and len(webhook_server.received) == 1
    assert {p["model_version"] for p in _predictions()} == {v1}
    assert registry.version_for_alias(MODEL, registry.CHAMPION) == v3  # airloop does not move it back either

    # Who was champion then: still v1, since the rollback, with the move outside airloop noted.
    answer = champion_at(_engine(), MODEL, story["t5"])
    assert (answer.version, answer.action, answer.decided_by) == (v1, "rollback", "gate + approval by bob")
    assert [(o["seq"], o["registry"]) for o in answer.out_of_band] == [(seen["seq"], v3)]
    assert f"@champion was found at {v3} in MLflow (moved outside airloop)" in answer.text()
    assert champion_at(_engine(), MODEL, story["t4"]).out_of_band == []  # not yet noticed then


def test_a_prediction_row_answers_through_its_version(story, capsys):
    from airloop.ops.cli import main
    from airloop.stages.promote.ledger import champion_of_prediction

    row = next(p for p in _predictions())
    prediction, answer = champion_of_prediction(_engine(), MODEL, row["partition"], row["row_key"])
    assert prediction["model_version"] == story["v1"] and prediction["dag_run_id"] == row["dag_run_id"]
    assert (answer.version, answer.action, answer.reason) == (story["v1"], "rollback", "v2 over-predicts at night")

    assert main(["ledger", "at", "--model", MODEL, "--prediction", f"{row['partition']}:{row['row_key']}"]) == 0
    out = capsys.readouterr().out
    assert f"scored by v{story['v1']}" in out and "rollback" in out and "v2 over-predicts at night" in out
    assert main(["ledger", "at", "--model", MODEL, "--prediction", f"{row['partition']}:no-such-key"]) == 1
    assert "has no prediction in partition" in capsys.readouterr().err


def test_a_promotion_through_airloop_then_makes_the_moved_version_champion(story):
    from airloop.adapters import registry
    from airloop.stages.promote.ledger import OUT_OF_BAND, champion_at

    v1, v3 = story["v1"], story["v3"]
    conf = {"action": "promote", "version": v3, "override": True, "reason": "adopt the hand-set v3"}
    run = _dag("promote").test(run_conf=conf)
    assert _states(run)["promote"] == "success" and run.state == "success", _states(run)
    story["t6"] = _between()
    promoted = [r for r in _rows() if r["moved"]][-1]
    assert (promoted["outcome"], promoted["from_version"], promoted["champion_after"]) == ("promoted", v1, v3)
    assert "adopt the hand-set v3" in promoted["reason"]
    answer = champion_at(_engine(), MODEL, story["t6"])
    assert (answer.version, answer.seq, answer.from_version) == (v3, promoted["seq"], v1)
    assert answer.decided_by.startswith("override by") and answer.out_of_band == []
    # The alias and the ledger agree again: scoring serves v3, and records nothing more.
    run = _dag("score").test(run_conf=RANGE)
    assert _states(run)["score"] == "success"
    assert {p["model_version"] for p in _predictions()} == {v3}
    assert len(_rows(outcome=OUT_OF_BAND)) == 1 and registry.version_for_alias(MODEL, registry.CHAMPION) == v3


def test_the_cli_answers_in_text_and_json(story, capsys):
    from airloop.ops.cli import main

    v1, v2 = story["v1"], story["v2"]
    assert main(["ledger", "at", story["t2"].strftime("%Y-%m-%dT%H:%M:%S.%f"), "--model", MODEL]) == 0
    out = capsys.readouterr().out
    assert f"{MODEL} at {story['t2']:%Y-%m-%d %H:%M:%S} UTC: v{v2} was champion" in out
    assert "moved by:   override by alice" in out and "reason:     v2 handles weekends" in out
    assert f"from v{v1}" in out

    assert main(["ledger", "at", story["t3"].isoformat(), "--model", MODEL, "--json"]) == 0
    body = json.loads(capsys.readouterr().out)
    assert (body["champion"], body["action"], body["decided_by"], body["from_version"]) == (
        v1,
        "rollback",
        "gate + approval by bob",
        v2,
    )
    assert datetime.fromisoformat(body["since"]) <= story["t3"] and body["reason"] == "v2 over-predicts at night"

    assert main(["ledger", "at", "now", "--model", MODEL, "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["champion"] == story["v3"]

    early = (story["t0"] - timedelta(days=1)).strftime("%Y-%m-%d")
    assert main(["ledger", "at", early, "--model", MODEL]) == 0
    assert f"{MODEL}: no champion at {early} 00:00:00 UTC (first promotion at " in capsys.readouterr().out

    assert main(["ledger", "at", "yesterday", "--model", MODEL]) == 2
    assert "TIME is 'yesterday', not a time: give ISO 8601" in capsys.readouterr().err
    assert main(["ledger", "at", "now", "--model", "nosuchmodel"]) == 2
    assert "No model spec" in capsys.readouterr().err

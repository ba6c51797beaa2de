"""bikes_train and bikes_promote run for real with dag.test(): real data, real MLflow store, real warehouse.

The tests run in file order and build on each other, as a model's life does: a first champion, a worse
challenger refused, a better one promoted, a rollback. Each asserts what the registry and the ledger say.
"""

from __future__ import annotations

import json
from pathlib import Path
from urllib.parse import quote

import pytest
import sqlalchemy as sa

from tests.integration.test_alerts import webhook_server  # noqa: F401

ROOT = Path(__file__).resolve().parents[2]

WEAK = {"max_iter": 20, "learning_rate": 0.1}  # passes the absolute thresholds, leaves room to improve
WORSE = {"max_iter": 3, "learning_rate": 0.05}  # far worse: fails thresholds and the comparison


class _FreshDags:
    """Each run gets a freshly parsed DAG, as the scheduler's runs do: dag.test() runs tasks in this process,
    and a run's conf updates the params of the task objects it ran, which the next run would inherit."""

    def __getitem__(self, dag_id: str):
        from airflow.dag_processing.dagbag import DagBag

        bag = DagBag(dag_folder=str(ROOT / "dags" / f"{dag_id.split('_', 1)[1]}.py"))
        assert bag.import_errors == {}
        return bag.dags[dag_id]


@pytest.fixture(scope="module")
def dags(airflow_db, validated_lake):
    return _FreshDags()


@pytest.fixture(scope="module")
def warehouse():
    from airloop.adapters.db import engine_for
    from airloop.core.settings import WAREHOUSE_CONN_ID

    return engine_for(WAREHOUSE_CONN_ID)


def _run(dag, conf: dict):
    run = dag.test(run_conf=conf)
    return run, {ti.task_id: ti.state for ti in run.get_task_instances()}


def _ledger(warehouse, *, intents: bool = False) -> list[dict]:
    """The ledger of bikes, newest first: its decisions (``intents``: with the intent rows before them)."""
    from airloop.stages.promote.ledger import PENDING, ledger

    return [r for r in ledger(warehouse, "bikes") if intents or r["outcome"] != PENDING]


def _promotion_notices(monkeypatch, server) -> list[dict]:
    """Route ``promotion`` notifications to the local webhook; the list the posts arrive in."""
    url = f"http://127.0.0.1:{server.server_port}/hook"
    monkeypatch.setenv("AIRFLOW_CONN_EVENTS_HOOK", json.dumps({"conn_type": "http", "host": url}))
    monkeypatch.setenv("AIRLOOP_ALERTS_CONN_ID", "events_hook")
    monkeypatch.setenv("AIRLOOP_NOTIFY", "promotion")
    monkeypatch.setenv("AIRFLOW__API__BASE_URL", "http://airflow.example.test:8080")
    return server.received


def _posted(received: list) -> list[dict]:
    return [json.loads(body) for _, _, body in received]


def _champion() -> str | None:
    from airloop.adapters import registry as tracking

    return tracking.version_for_alias("bikes", tracking.CHAMPION)


def test_first_model_becomes_champion_with_lineage(dags, warehouse, validated_lake):
    from airloop.adapters import registry as tracking

    run, states = _run(dags["bikes_train"], {"reason": "first champion", "overrides": WEAK})
    assert states == {
        "check": "success",
        "train": "success",
        "gate": "success",
        "promote": "success",
        "record": "success",
        "outcome": "skipped",  # runs only when a task failed
    }, states
    assert run.state == "success"
    version = _champion()
    assert version is not None
    assert tracking.version_for_alias("bikes", tracking.CHALLENGER) is None  # cleared on promotion
    intent, row = reversed(_ledger(warehouse, intents=True))  # the intent, then the decision that closes it
    assert (intent["seq"], intent["outcome"], intent["moved"], intent["dag_run_id"]) == (
        1,
        "pending",
        False,
        run.run_id,
    )
    assert (row["seq"], row["action"], row["outcome"], row["moved"]) == (2, "promote", "promoted", True)
    assert row["evidence"]["intent_seq"] == 1
    assert (row["from_version"], row["champion_after"], row["decided_by"]) == (None, version, "gate")
    assert row["dag_run_id"] == run.run_id and "first champion" in row["reason"]
    assert row["evidence"]["verdict"]["passed"] is True

    # Lineage: version -> run -> dataset input (digest) -> partitions with their digests.
    c = tracking.client()
    mv = c.get_model_version("bikes", version)
    assert mv.tags["gate.passed"] == "true" and "first champion" in mv.description
    mlflow_run = c.get_run(mv.run_id)
    assert mlflow_run.data.tags["airflow.dag_id"] == "bikes_train"
    assert mlflow_run.data.tags["airflow.run_id"] == run.run_id
    assert mlflow_run.data.tags["airloop.spec_digest"]
    assert "schema:fixture" in mlflow_run.data.tags["airloop.suite_digests"]
    assert mlflow_run.data.tags["mlflow.source.git.commit"]
    assert mlflow_run.data.params["estimator.max_iter"] == "20"
    for metric in ("holdout_rmse", "holdout_mae", "holdout_r2", "slice_hour_band_night_rmse", "slice_season_4_rmse"):
        assert metric in mlflow_run.data.metrics, metric
    (dataset_input,) = mlflow_run.inputs.dataset_inputs
    lineage_path = c.download_artifacts(mv.run_id, "lineage/training_data.json")
    lineage = json.loads(Path(lineage_path).read_text())
    assert dataset_input.dataset.digest == lineage["content_digest"][:36]
    assert [p["partition"] for p in lineage["partitions"]] == validated_lake[-len(lineage["partitions"]) :]
    assert all(len(p["content_digest"]) == 64 for p in lineage["partitions"])
    # Where the labels came from: every row labelled by its partition here (no labels table rows for bikes).
    assert (mlflow_run.data.metrics["unlabelled_rows"], mlflow_run.data.metrics["labelled_from_table"]) == (0, 0)
    assert mlflow_run.data.tags["airloop.labels_digest"] == "none" and lineage["labels"]["unlabelled_rows"] == 0
    artifacts = {a.path for a in c.list_artifacts(mv.run_id, "plots")}
    assert artifacts == {"plots/predicted_vs_actual.png", "plots/residuals.png", "plots/feature_importance.png"}
    from mlflow.models import get_model_info

    info = get_model_info(f"models:/bikes/{version}")
    assert info.signature is not None and "hum" in info.signature.inputs.input_names()


def test_worse_challenger_is_refused_and_the_ledger_says_why(dags, warehouse, monkeypatch, webhook_server):  # noqa: F811
    received = _promotion_notices(monkeypatch, webhook_server)
    champion = _champion()
    run, states = _run(dags["bikes_train"], {"reason": "deliberately worse", "overrides": WORSE})
    assert states["gate"] == "success" and states["promote"] == "skipped" and states["record"] == "success"
    assert run.state == "success" and states["outcome"] == "skipped"  # a refusal is the gate working, not a failure
    assert _champion() == champion
    newest = _ledger(warehouse)[0]
    assert (newest["outcome"], newest["moved"], newest["champion_after"]) == ("refused", False, champion)
    failed = {c["name"] for c in newest["evidence"]["verdict"]["checks"] if not c["passed"]}
    assert "improvement" in failed and "threshold:rmse" in failed, failed
    assert "REFUSE" in newest["reason"] and "deliberately worse" in newest["reason"]
    # On-call hears of the refusal with the verdict and the gate's numbers (AIRLOOP_NOTIFY=promotion).
    (notice,) = _posted(received)
    assert (notice["kind"], notice["data"]["outcome"], notice["data"]["seq"]) == ("promotion", "refused", newest["seq"])
    assert "refused by the gate" in notice["headline"] and "[FAIL]" in notice["text"]
    assert {c["name"] for c in notice["data"]["checks"] if not c["passed"]} == failed
    assert notice["link"] == f"http://airflow.example.test:8080/dags/bikes_train/runs/{quote(run.run_id)}"


def test_better_challenger_is_promoted(dags, warehouse):
    before = _champion()
    _, states = _run(dags["bikes_train"], {"reason": "spec defaults"})
    assert states["promote"] == "success", states
    after = _champion()
    assert int(after) > int(before)
    newest = _ledger(warehouse)[0]
    assert (newest["outcome"], newest["from_version"], newest["champion_after"]) == ("promoted", before, after)
    assert newest["evidence"]["verdict"]["checks"]


def test_rollback_restores_the_previous_champion(dags, warehouse, monkeypatch, webhook_server):  # noqa: F811
    received = _promotion_notices(monkeypatch, webhook_server)
    history = [r["champion_after"] for r in reversed(_ledger(warehouse)) if r["moved"]]
    current, previous = history[-1], history[-2]
    _, states = _run(dags["bikes_promote"], {"action": "rollback", "reason": "new champion misbehaves"})
    assert states["promote"] == "success", states
    assert _champion() == previous
    newest = _ledger(warehouse)[0]
    assert (newest["action"], newest["outcome"], newest["from_version"], newest["champion_after"]) == (
        "rollback",
        "rolled_back",
        current,
        previous,
    )
    (notice,) = _posted(received)
    assert (notice["data"]["outcome"], notice["data"]["from_version"], notice["data"]["champion_after"]) == (
        "rolled_back",
        current,
        previous,
    )
    assert f"rolled back @champion to v{previous} (was v{current})" in notice["headline"]


def test_promote_a_named_version_through_the_gate_or_with_override(dags, warehouse):
    refused = next(r["candidate_version"] for r in _ledger(warehouse) if r["outcome"] == "refused")
    champion = _champion()
    _, states = _run(dags["bikes_promote"], {"action": "promote", "version": refused, "reason": "try it"})
    assert states["promote"] == "skipped" and _champion() == champion
    assert _ledger(warehouse)[0]["outcome"] == "refused"

    _, states = _run(
        dags["bikes_promote"], {"action": "promote", "version": refused, "reason": "forced", "override": True}
    )
    assert states["promote"] == "success" and _champion() == refused
    newest = _ledger(warehouse)[0]
    assert newest["decided_by"].startswith("override by") and "OVERRIDE" in newest["reason"]
    assert newest["evidence"]["verdict"]["passed"] is False  # the evidence still says the gate refused


def test_holdout_the_champion_was_trained_on_is_flagged(dags, warehouse):
    champion = _champion()
    _, states = _run(dags["bikes_train"], {"reason": "older window", "window_end": "2012-10-06"})
    assert states["gate"] == "success", states
    newest = _ledger(warehouse)[0]
    assert newest["evidence"]["holdout"] == "[2012-08-11, 2012-10-06)"
    (note,) = newest["evidence"]["notes"]
    assert f"v{champion} was trained on data up to 2012-11-03" in note and "optimistic" in note


def test_unknown_or_missing_params_fail_fast_naming_them(dags, warehouse, capfd, caplog):
    rows = len(_ledger(warehouse))
    run, states = _run(dags["bikes_train"], {"reason": "typo", "overides": {"max_iter": 5}})
    assert states["check"] == "failed" and states["train"] == "upstream_failed"
    assert states["outcome"] == "failed" and run.state == "failed"  # the run is red, not hidden by `record`
    err = "".join(capfd.readouterr())
    assert "overides" in err and "reason" in err

    _, states = _run(dags["bikes_train"], {})
    assert states["check"] == "failed"
    err = "".join(capfd.readouterr())
    assert "param `reason` is required" in err

    _, states = _run(dags["bikes_train"], {"reason": "bad override", "overrides": {"loss": "absolute_error"}})
    assert states["check"] == "failed"
    err = "".join(capfd.readouterr())
    assert "not allowed" in err and "loss" in err

    _, states = _run(dags["bikes_promote"], {"action": "promote", "reason": "no version given"})
    assert states["check"] == "failed"
    err = "".join(capfd.readouterr())
    assert "param `version` is required" in err

    _, states = _run(dags["bikes_promote"], {"action": "promote", "version": "999", "reason": "no such version"})
    assert states["gate"] == "failed" and states["promote"] == "upstream_failed"
    err = "".join(capfd.readouterr())
    assert "has no version '999'" in err
    assert len(_ledger(warehouse)) == rows  # refused requests decide nothing


def test_ledger_is_append_only(warehouse):
    from airloop.adapters.warehouse import promotion_ledger

    with pytest.raises(sa.exc.DatabaseError, match="append-only"), warehouse.begin() as conn:
        conn.execute(promotion_ledger.update().values(reason="rewritten"))
    with pytest.raises(sa.exc.DatabaseError, match="append-only"), warehouse.begin() as conn:
        conn.execute(promotion_ledger.delete())
    seqs = [r["seq"] for r in _ledger(warehouse, intents=True)]
    assert seqs == list(range(len(seqs), 0, -1))

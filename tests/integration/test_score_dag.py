"""bikes_score run for real with dag.test(): the pinned champion, every row once, provenance on every row."""

from __future__ import annotations

from pathlib import Path

import pytest
import sqlalchemy as sa

ROOT = Path(__file__).resolve().parents[2]
HOLDOUT = {"start": "2012-11-03", "end": "2012-12-29"}  # the two newest validated partitions


def _dag():
    from airflow.dag_processing.dagbag import DagBag

    bag = DagBag(dag_folder=str(ROOT / "dags" / "score.py"))
    assert bag.import_errors == {}
    return bag.dags["bikes_score"]


def _run(conf: dict):
    run = _dag().test(run_conf=conf)
    states: dict[str, list[str]] = {}
    for ti in run.get_task_instances():
        states.setdefault(ti.task_id, []).append(ti.state)
    return run, states


@pytest.fixture(scope="module")
def champion(airflow_db, validated_lake, bikes_spec) -> str:
    """The current champion; trained and promoted here when this file runs on its own."""
    from airloop.adapters import registry as tracking
    from airloop.adapters.db import engine_for
    from airloop.core.contracts import RunInfo, TrainRequest
    from airloop.core.settings import WAREHOUSE_CONN_ID
    from airloop.stages.promote.ledger import Decision, apply
    from airloop.stages.train import runner as train_stage

    version = tracking.version_for_alias("bikes", tracking.CHAMPION)
    if version is None:
        request = TrainRequest(reason="score tests", overrides={"max_iter": 20})
        trained = train_stage.train(bikes_spec, request, RunInfo())
        decision = Decision("bikes", "promote", trained.version, "score tests", "tests")
        apply(engine_for(WAREHOUSE_CONN_ID), decision, expected_champion=None)
        version = trained.version
    return version


def _rows(partition: str | None = None) -> list[dict]:
    from airloop.adapters.db import engine_for
    from airloop.adapters.warehouse import predictions
    from airloop.core.settings import WAREHOUSE_CONN_ID

    query = sa.select(predictions).where(predictions.c.model == "bikes").order_by(predictions.c.ts)
    if partition:
        query = query.where(predictions.c.partition == partition)
    with engine_for(WAREHOUSE_CONN_ID).connect() as conn:
        return [dict(r._mapping) for r in conn.execute(query)]


def test_rescoring_a_range_writes_every_row_once_with_provenance(champion, validated_lake):
    from airloop.adapters import registry as tracking
    from airloop.adapters.lake import default_lake

    run, states = _run(HOLDOUT)
    assert states["pin"] == ["success"] and states["score"] == ["success"], states
    lake = default_lake()
    run_id = tracking.client().get_model_version("bikes", champion).run_id
    for partition in validated_lake[-2:]:
        validated = lake.manifest("bikes", "validated", partition)
        rows = _rows(partition)
        assert len(rows) == validated.rows
        assert {(r["model_version"], r["mlflow_run_id"], r["input_digest"], r["dag_run_id"]) for r in rows} == {
            (champion, run_id, validated.content_digest, run.run_id)
        }
        assert all(r["prediction"] >= 0 for r in rows)
        assert lake.manifest("bikes", "predictions", partition).rows == validated.rows


def test_scoring_an_interval_twice_gives_the_same_rows(champion, validated_lake):
    from airloop.adapters.lake import default_lake

    partition = validated_lake[-1]
    before = [(r["ts"], r["prediction"]) for r in _rows(partition)]
    digest = default_lake().manifest("bikes", "predictions", partition).content_digest
    _run(HOLDOUT)
    assert [(r["ts"], r["prediction"]) for r in _rows(partition)] == before
    assert default_lake().manifest("bikes", "predictions", partition).content_digest == digest


def test_a_new_champion_rescores_with_its_own_version(champion, validated_lake, bikes_spec):
    from airloop.adapters import registry as tracking
    from airloop.adapters.db import engine_for
    from airloop.core.contracts import RunInfo, TrainRequest
    from airloop.core.settings import WAREHOUSE_CONN_ID
    from airloop.stages.promote.ledger import Decision, apply
    from airloop.stages.train import runner as train_stage

    request = TrainRequest(reason="new champion", overrides={"max_iter": 30})
    trained = train_stage.train(bikes_spec, request, RunInfo())
    apply(engine_for(WAREHOUSE_CONN_ID), Decision("bikes", "promote", trained.version, "t", "tests"), champion)
    try:
        _run(HOLDOUT)
        versions = {r["model_version"] for r in _rows(validated_lake[-1])}
        assert versions == {trained.version}  # one model per run, the one pinned at its start
    finally:
        apply(
            engine_for(WAREHOUSE_CONN_ID),
            Decision("bikes", "promote", champion, "restore", "tests"),
            trained.version,
        )
    assert tracking.version_for_alias("bikes", tracking.CHAMPION) == champion


def test_an_alias_deleted_outside_airloop_is_not_adopted(champion, validated_lake, capfd, caplog):
    """Deleting ``@champion`` in MLflow does not stop scoring: the ledger's champion serves (no champion at all
    skips: ``test_champion_at.py::test_before_the_first_promotion_there_is_no_champion_and_scoring_skips``)."""
    from airloop.adapters import registry as tracking

    tracking.clear_alias("bikes", tracking.CHAMPION)
    try:
        _, states = _run(HOLDOUT)
    finally:
        tracking.set_alias("bikes", tracking.CHAMPION, champion)
    assert states["pin"] == ["success"] and states["score"] == ["success"], states
    assert {r["model_version"] for r in _rows(validated_lake[-1])} == {champion}
    log = "".join(capfd.readouterr()) + caplog.text
    assert "@champion of bikes is unset in MLflow, moved outside airloop: not adopted" in log


@pytest.mark.parametrize(
    ("conf", "message"),
    [
        ({}, "give params `start` and `end`"),
        ({"start": "2012-06-01", "end": "2012-01-01"}, "must be before"),
        ({"start": "1999-01-01", "end": "2000-01-01"}, "No validated partition"),
        ({"start": "2012-01-01", "end": "2013-01-01", "version": "3"}, "does not know the param(s) ['version']"),
    ],
    ids=["no-range", "inverted", "empty-range", "unknown-param"],
)
def test_bad_rescoring_requests_fail_naming_the_param(champion, capfd, conf, message):
    run, states = _run(conf)
    assert states["select"] == ["failed"] and run.state == "failed", states
    assert message in "".join(capfd.readouterr())

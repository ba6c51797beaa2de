"""``scoring.rescore_on_promotion``: when @champion moves, the newest N validated intervals are re-scored with it.

The train DAG runs for real with dag.test() (real data, MLflow store, warehouse) for a model of its own (the bikes
spec under another name, with ``scoring.rescore_on_promotion: {intervals: 2}``) and its own lake. Its ``rescore``
task announces the newest intervals on the model's ``validated`` Asset; what the scheduler would then start
(``<model>_score`` selecting the announced partitions and scoring them with the champion it pins) runs here with the
score stage's own functions.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import sqlalchemy as sa
import yaml

ROOT = Path(__file__).resolve().parents[2]
MODEL = "bikes_rescore"
N = 2
WEAK = {"max_iter": 20, "learning_rate": 0.1}  # passes the thresholds, leaves room to improve
BETTER = {"max_iter": 100, "learning_rate": 0.1}


@pytest.fixture(scope="module")
def setup(airflow_db, seeded_source, tmp_path_factory):
    from airloop.adapters.db import engine_for
    from airloop.adapters.lake import Lake
    from airloop.core.settings import SOURCE_CONN_ID
    from airloop.core.spec import get_spec
    from tests.support import write_validated_partitions

    models = tmp_path_factory.mktemp("models")
    raw = yaml.safe_load((ROOT / "include" / "models" / "bikes.yaml").read_text())
    raw.pop("labels", None)  # labels with the rows: bikes' own label table is filled by the demo only
    raw.update(name=MODEL, scoring={"rescore_on_promotion": {"intervals": N}})
    (models / f"{MODEL}.yaml").write_text(yaml.safe_dump(raw))
    root = tmp_path_factory.mktemp("lake")
    mp = pytest.MonkeyPatch()
    mp.setenv("AIRLOOP_MODELS_DIR", str(models))
    mp.setenv("AIRLOOP_LAKE_URL", str(root))
    spec = get_spec(MODEL)
    keys = write_validated_partitions(engine_for(SOURCE_CONN_ID), Lake(root), spec)
    yield {"spec": spec, "keys": keys}
    mp.undo()


def _train_dag():
    from airflow.dag_processing.dagbag import DagBag

    bag = DagBag(dag_folder=str(ROOT / "dags" / "train.py"))
    assert bag.import_errors == {}
    return bag.dags[f"{MODEL}_train"]


def _announced(run_id: str) -> dict:
    """The extra of the event the run's rescore task put on the model's validated Asset."""
    from airflow.models.asset import AssetEvent, AssetModel
    from airflow.utils.session import create_session

    with create_session() as session:
        extras = session.scalars(
            sa.select(AssetEvent.extra)
            .join(AssetModel, AssetEvent.asset_id == AssetModel.id)
            .where(AssetModel.name == f"{MODEL}.validated", AssetEvent.source_run_id == run_id)
        ).all()
    assert len(extras) == 1, extras
    return dict(extras[0])


def _score_as_the_scheduler_would(spec, extra: dict) -> None:
    """What ``<model>_score`` does with the event: select the announced partitions, score them with @champion."""
    from airloop.adapters.registry import pin_champion
    from airloop.core.contracts import RunInfo
    from airloop.stages.score.runner import score_partitions, select_partitions

    chosen = select_partitions(spec, [extra], {}, {})
    score_partitions(spec, chosen, pin_champion(MODEL), RunInfo(dag_id=f"{MODEL}_score", run_id="rescore"))


def _served_versions() -> dict[str, set[str]]:
    from airloop.adapters import warehouse
    from airloop.adapters.db import engine_for
    from airloop.core.settings import WAREHOUSE_CONN_ID

    t = warehouse.predictions.c
    with engine_for(WAREHOUSE_CONN_ID).connect() as conn:
        rows = conn.execute(sa.select(t.partition, t.model_version).where(t.model == MODEL).distinct()).all()
    found: dict[str, set[str]] = {}
    for partition, version in rows:
        found.setdefault(partition, set()).add(str(version))
    return found


def test_a_promotion_re_scores_the_newest_intervals_with_the_new_champion(setup, caplog):
    from airloop.adapters import registry

    spec, keys = setup["spec"], setup["keys"]
    first = _train_dag().test(run_conf={"reason": "first champion", "overrides": WEAK})
    states = {ti.task_id: ti.state for ti in first.get_task_instances()}
    assert states["promote"] == "success" and states["rescore"] == "success", states
    v1 = registry.version_for_alias(MODEL, registry.CHAMPION)
    extra = _announced(first.run_id)
    assert extra["partitions"] == keys[-N:]
    assert extra["rescore"]["champion"] == v1 and extra["rescore"]["from_version"] is None
    assert any("asking" in r.getMessage() and "re-score the newest 2" in r.getMessage() for r in caplog.records)
    _score_as_the_scheduler_would(spec, extra)
    assert _served_versions() == {k: {v1} for k in keys[-N:]}

    # Older intervals scored by v1 too, then a better model is promoted: only the newest N move to it.
    _score_as_the_scheduler_would(spec, {"partitions": keys[-4:]})
    second = _train_dag().test(run_conf={"reason": "a better one", "overrides": BETTER})
    states = {ti.task_id: ti.state for ti in second.get_task_instances()}
    v2 = registry.version_for_alias(MODEL, registry.CHAMPION)
    assert v2 != v1 and states["rescore"] == "success", states
    extra = _announced(second.run_id)
    assert extra["partitions"] == keys[-N:] and extra["rescore"]["from_version"] == v1
    _score_as_the_scheduler_would(spec, extra)
    served = _served_versions()
    assert {k: served[k] for k in keys[-N:]} == {k: {v2} for k in keys[-N:]}
    assert {k: served[k] for k in keys[-4:-N]} == {k: {v1} for k in keys[-4:-N]}


def test_no_rescore_task_unless_the_spec_asks(airflow_db, monkeypatch):
    from airflow.dag_processing.dagbag import DagBag

    monkeypatch.setenv("AIRLOOP_MODELS_DIR", str(ROOT / "include" / "models"))
    bag = DagBag(dag_folder=str(ROOT / "dags" / "train.py"))
    assert "rescore" not in bag.dags["bikes_train"].task_ids

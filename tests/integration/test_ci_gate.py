"""``airloop ci``'s gate step with a real registry and lake: today's ``@champion`` judged by the spec's gate on the
newest holdout (the promote stage's holdout, evaluation and rules), and the reasons it is skipped instead."""

from __future__ import annotations

import pytest

from airloop.ops.ci import gate_check


@pytest.fixture(scope="module")
def bikes_spec(bikes_spec, seeded_source):
    """A copy of the bikes spec named ``bikesci`` with validated partitions of its own, so the champion promoted here
    never meets the other modules' bikes (whose tests expect a first champion of their own)."""
    from airloop.adapters.db import engine_for
    from airloop.adapters.lake import default_lake
    from airloop.core.settings import SOURCE_CONN_ID
    from tests.support import write_validated_partitions

    spec = bikes_spec.model_copy(update={"name": "bikesci"})
    write_validated_partitions(engine_for(SOURCE_CONN_ID), default_lake(), spec)
    return spec


@pytest.fixture(scope="module")
def champion(bikes_spec) -> str:
    """The champion of ``bikesci``, trained and promoted here."""
    from airloop.adapters import registry
    from airloop.adapters.db import engine_for
    from airloop.core.contracts import RunInfo, TrainRequest
    from airloop.core.settings import WAREHOUSE_CONN_ID
    from airloop.stages.promote.ledger import Decision, apply
    from airloop.stages.train import runner as train_stage

    version = registry.version_for_alias(bikes_spec.name, registry.CHAMPION)
    if version is None:
        trained = train_stage.train(bikes_spec, TrainRequest(reason="ci tests", overrides={"max_iter": 20}), RunInfo())
        apply(
            engine_for(WAREHOUSE_CONN_ID),
            Decision(bikes_spec.name, "promote", trained.version, "ci tests", "tests"),
            expected_champion=None,
        )
        version = trained.version
    return version


def _with_gate(spec, **changes):
    return spec.model_copy(update={"gate": spec.gate.model_copy(update=changes)})


def test_the_champion_passes_a_gate_it_meets_on_the_newest_holdout(champion, bikes_spec):
    # The test's champion is trained with few iterations: a gate with thresholds it meets.
    check = gate_check(_with_gate(bikes_spec, thresholds={"rmse": 500.0, "r2": 0.0}))
    assert check.status == "pass", check.reason
    assert check.reason.startswith(f"champion v{champion} on holdout [2012-11-03, 2012-12-29) (")
    assert "threshold:rmse" in check.reason and "threshold:r2" in check.reason and "sanity:max" in check.reason
    assert "improvement" not in check.reason and "signature" not in check.reason, "comparisons need two models"


def test_a_threshold_the_champion_no_longer_meets_fails_naming_it(champion, bikes_spec):
    check = gate_check(_with_gate(bikes_spec, thresholds={"rmse": 1.0, "r2": -100.0}))
    assert check.status == "fail"
    assert "threshold:rmse" in check.reason and "(threshold: at most 1" in check.reason
    assert "threshold:r2" not in check.reason, "a failure shows the failed checks"


def test_a_sanity_bound_the_champion_breaks_fails(champion, bikes_spec):
    sanity = bikes_spec.gate.sanity.model_copy(update={"max_prediction": 5.0})
    check = gate_check(_with_gate(bikes_spec, sanity=sanity))
    assert check.status == "fail" and "sanity:max" in check.reason and "above the bound 5" in check.reason


def test_a_spec_whose_task_the_champion_does_not_do_fails(champion, bikes_spec):
    target = bikes_spec.target.model_copy(update={"task": "classification"})
    check = gate_check(bikes_spec.model_copy(update={"target": target}))
    assert check.status == "fail" and "cannot be scored under this spec" in check.reason, check.reason


def test_a_feature_the_lake_does_not_hold_is_a_skip_naming_it(champion, bikes_spec):
    """No holdout can be assembled under this spec yet (the dry run judges the source); nothing to judge."""
    features = [f.model_copy(update={"name": "temp_c"}) if f.name == "temp" else f for f in bikes_spec.features]
    check = gate_check(bikes_spec.model_copy(update={"features": features}))
    assert check.status == "skip" and "no recent holdout" in check.reason and "temp_c" in check.reason


def test_no_champion_is_a_skip(champion, bikes_spec):
    check = gate_check(bikes_spec.model_copy(update={"name": "bikes_without_champion"}))
    assert check.status == "skip" and "has no @champion yet" in check.reason


def test_no_holdout_in_the_lake_is_a_skip(champion, bikes_spec, tmp_path, monkeypatch):
    monkeypatch.setenv("AIRLOOP_LAKE_URL", str(tmp_path / "empty-lake"))
    check = gate_check(bikes_spec)
    assert check.status == "skip" and f"no recent holdout for champion v{champion}" in check.reason


def test_no_mlflow_store_is_a_skip(bikes_spec, tmp_path, monkeypatch):
    monkeypatch.setenv("AIRLOOP_HOME", str(tmp_path / "home"))
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)  # mlflow.set_tracking_uri sets it in this process
    check = gate_check(bikes_spec)
    assert check.status == "skip" and "no MLflow store here" in check.reason
    assert not (tmp_path / "home" / "mlflow").exists(), "asking must not create a store"


def test_an_unreachable_mlflow_server_is_a_skip(bikes_spec, monkeypatch):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://127.0.0.1:9")
    check = gate_check(bikes_spec)
    assert check.status == "skip" and "http://127.0.0.1:9 is not reachable" in check.reason

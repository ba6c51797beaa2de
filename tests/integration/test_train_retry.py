"""A retried train task continues its Airflow run's registration instead of registering a second version.

Real lake (a temporary folder) and real MLflow store (the session's); the train runner is called as the task calls
it, twice with the same Airflow run, as Airflow's retry does.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np
import pandas as pd
import pytest

from airloop.adapters import registry
from airloop.adapters.lake import Lake
from airloop.core.contracts import RunInfo, TrainRequest
from airloop.core.spec import ModelSpec

FIRST = datetime(2021, 1, 1, tzinfo=UTC)
STEP = timedelta(days=10)
PARTITIONS = 8


def _lake(tmp_path: Any, monkeypatch: Any, name: str) -> None:
    """A noisy linear target over 80 days of hourly rows, as validated 10-day partitions of the default lake."""
    monkeypatch.setenv("AIRLOOP_LAKE_URL", str(tmp_path / "lake"))
    rng = np.random.default_rng(7)
    ts = pd.date_range(FIRST.replace(tzinfo=None), periods=PARTITIONS * 10 * 24, freq="h")
    frame = pd.DataFrame({"ts": ts, "x1": rng.normal(size=len(ts)), "x2": rng.uniform(size=len(ts))})
    frame["y"] = 3 * frame.x1 + frame.x2 + rng.normal(scale=0.1, size=len(ts))
    lake = Lake(tmp_path / "lake")
    for i in range(PARTITIONS):
        start, end = FIRST + i * STEP, FIRST + (i + 1) * STEP
        rows = frame[(frame.ts >= start.replace(tzinfo=None)) & (frame.ts < end.replace(tzinfo=None))]
        meta = {"interval_start": start.isoformat(), "interval_end": end.isoformat()}
        lake.write(name, "validated", start.strftime("%Y-%m-%dT%H%M%SZ"), rows.reset_index(drop=True), meta=meta)


def _spec(name: str) -> ModelSpec:
    return ModelSpec.model_validate(
        {
            "name": name,
            "description": "a regression made up by a retry test",
            "owner": "tests",
            "source": {"table": "events", "time_column": "ts"},
            "schedule": {"every": "10d", "start": FIRST.date().isoformat()},
            "features": [{"name": "x1", "kind": "numeric"}, {"name": "x2", "kind": "numeric"}],
            "target": {"name": "y"},
            "training": {
                "window_days": 70,
                "holdout_days": 20,
                "min_rows": 200,
                "estimator": {"params": {"max_iter": 20}},
            },
        }
    )


def _try(spec: ModelSpec, run_id: str, try_number: int) -> Any:
    from airloop.stages.train import runner

    run = RunInfo(dag_id=spec.dag_id("train"), run_id=run_id, try_number=try_number, run_type="manual")
    return runner.train(spec, TrainRequest(reason="retry test"), run)


def _versions(model: str) -> list[str]:
    return sorted(str(v.version) for v in registry.client().search_model_versions(f"name = '{model}'"))


def _runs(model: str, run_id: str) -> list[Any]:
    c = registry.client()
    experiment = c.get_experiment_by_name(model)
    return list(c.search_runs([experiment.experiment_id], filter_string=f"tags.`airflow.run_id` = '{run_id}'"))


def test_a_retry_reuses_the_version_its_run_registered(tmp_path, monkeypatch):
    name = "retry_reuse"
    _lake(tmp_path, monkeypatch, name)
    spec = _spec(name)
    first = _try(spec, "manual__retry-1", 1)
    again = _try(spec, "manual__retry-1", 2)
    assert _versions(name) == [first.version]  # one version, no orphan awaiting the gate
    assert len(_runs(name, "manual__retry-1")) == 1  # and one MLflow run
    assert (again.version, again.mlflow_run_id, again.window, again.metrics) == (
        first.version,
        first.mlflow_run_id,
        first.window,
        first.metrics,
    )
    assert again.train_rows == first.train_rows and again.reason == first.reason
    assert registry.version_for_alias(name, registry.CHALLENGER) == first.version

    other = _try(spec, "manual__retry-2", 1)  # another Airflow run trains a version of its own
    assert other.version != first.version and _versions(name) == sorted([first.version, other.version])


def test_a_try_that_died_after_registering_is_completed_by_the_retry(tmp_path, monkeypatch):
    """The first try registers the version, then fails before ``@challenger`` is set: the retry sets it."""
    name = "retry_complete"
    _lake(tmp_path, monkeypatch, name)
    spec = _spec(name)
    real = registry.set_alias

    def dies(model: str, alias: str, version: str) -> None:
        raise ConnectionError("MLflow went away after registering")

    monkeypatch.setattr(registry, "set_alias", dies)
    with pytest.raises(ConnectionError):
        _try(spec, "manual__died-1", 1)
    monkeypatch.setattr(registry, "set_alias", real)
    (registered,) = _versions(name)
    assert registry.version_for_alias(name, registry.CHALLENGER) is None

    retried = _try(spec, "manual__died-1", 2)
    assert _versions(name) == [registered] == [retried.version]
    assert registry.version_for_alias(name, registry.CHALLENGER) == registered
    description = registry.client().get_model_version(name, registered).description
    assert "awaiting the gate" in description

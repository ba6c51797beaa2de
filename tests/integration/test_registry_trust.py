"""Only versions airloop's training registered are ever unpickled (issue 14, item 2).

Each crafted version here is registered straight through ``MlflowClient`` in the session's real MLflow store, with
a model file whose unpickling would create a marker file: loading (or scoring with it as ``@champion``) must
refuse it, name what failed, and leave the marker absent.
"""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import pytest

MODEL = "crafted"


class _Payload:
    """Unpickling this writes a marker file: the stand-in for code an attacker wants run."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (open, (str(self.marker), "w"))


def _payload_model(folder: Path, marker: Path) -> Path:
    """A valid MLflow sklearn model folder whose pickle is the payload."""
    import mlflow.sklearn
    from sklearn.linear_model import LinearRegression

    mlflow.sklearn.save_model(
        LinearRegression().fit(np.ones((3, 1)), [1.0, 2.0, 3.0]), folder, serialization_format="cloudpickle"
    )
    (folder / "model.pkl").write_bytes(pickle.dumps(_Payload(marker)))
    return folder


@pytest.fixture
def store():
    from airloop.adapters import registry

    c = registry.client()
    experiment_id = registry.ensure_experiment(MODEL)
    registry.ensure_registered_model(MODEL, "crafted versions", "tests")
    return c, experiment_id


def _airloop_run(experiment_id: str, model: str = MODEL) -> str:
    """A run tagged the way airloop's training tags its runs."""
    import mlflow

    with mlflow.start_run(experiment_id=experiment_id, tags={"airloop.model": model}) as run:
        pass
    return run.info.run_id


def _refused(version: str, marker: Path, *fragments: str) -> None:
    from airloop.adapters import registry

    error: Exception | None = None
    try:
        registry.load_version(MODEL, version)
    except Exception as exc:  # checked below, after the marker: the unpickling is what must not happen
        error = exc
    assert not marker.exists(), "the crafted version was unpickled"
    assert isinstance(error, registry.UntrustedVersion), error
    message = str(error)
    assert f"{MODEL} version {version}" in message
    assert "Retrain" in message
    for fragment in fragments:
        assert fragment in message


def test_a_version_registered_from_a_folder_elsewhere_is_refused_and_never_unpickled(store, tmp_path):
    c, experiment_id = store
    marker = tmp_path / "pwned"
    folder = _payload_model(tmp_path / "evil", marker)
    run_id = _airloop_run(experiment_id)
    # Everything right but the source: tagged with a real airloop-looking run of the model's experiment.
    mv = c.create_model_version(MODEL, folder.as_uri(), run_id=run_id, tags={"airloop.run_id": run_id})
    _refused(str(mv.version), marker, "source")


def test_a_version_without_airloops_tag_is_refused(store, tmp_path):
    c, _ = store
    marker = tmp_path / "pwned"
    folder = _payload_model(tmp_path / "evil", marker)
    mv = c.create_model_version(MODEL, folder.as_uri())
    _refused(str(mv.version), marker, "airloop.run_id")


def test_a_model_logged_in_another_experiment_is_refused(store, tmp_path):
    """A logged model (the source form airloop uses) from another experiment, claimed by an airloop run."""
    import mlflow
    from sklearn.linear_model import LinearRegression

    c, experiment_id = store
    marker = tmp_path / "pwned"
    elsewhere = c.create_experiment(f"elsewhere-{tmp_path.name}", artifact_location=(tmp_path / "art").as_uri())
    with mlflow.start_run(experiment_id=elsewhere) as other:
        info = mlflow.sklearn.log_model(
            LinearRegression().fit(np.ones((3, 1)), [1.0, 2.0, 3.0]), name="model", serialization_format="cloudpickle"
        )
    pkl = next((tmp_path / "art").rglob("model.pkl"))
    pkl.write_bytes(pickle.dumps(_Payload(marker)))
    run_id = _airloop_run(experiment_id)
    mv = c.create_model_version(MODEL, info.model_uri, run_id=run_id, tags={"airloop.run_id": run_id})
    _refused(str(mv.version), marker, other.info.run_id)


def test_a_run_of_another_model_is_refused(store, tmp_path):
    c, experiment_id = store
    marker = tmp_path / "pwned"
    folder = _payload_model(tmp_path / "evil", marker)
    run_id = _airloop_run(experiment_id, model="someone-else")
    mv = c.create_model_version(MODEL, folder.as_uri(), run_id=run_id, tags={"airloop.run_id": run_id})
    _refused(str(mv.version), marker, "airloop.model")


def test_a_version_logged_the_way_training_logs_it_loads(store):
    """The check lets through what ``log_training_run`` writes: a logged model of the tagged run, registered."""
    import mlflow
    from sklearn.linear_model import LinearRegression

    from airloop.adapters import registry

    _, experiment_id = store
    with mlflow.start_run(experiment_id=experiment_id, tags={"airloop.model": MODEL}) as run:
        fitted = LinearRegression().fit(np.ones((3, 1)) * [[1.0], [2.0], [3.0]], [1.0, 2.0, 3.0])
        info = mlflow.sklearn.log_model(fitted, name="model", serialization_format="cloudpickle")
    mv = mlflow.register_model(info.model_uri, MODEL, tags={"airloop.run_id": run.info.run_id})
    loaded = registry.load_version(MODEL, str(mv.version))
    assert loaded.predict(np.array([[4.0]]))[0] == pytest.approx(4.0)


def test_scoring_with_a_crafted_champion_refuses_it(store, tmp_path):
    """The issue's scenario: someone points @champion at a payload; the next scoring run must not run it."""
    from airloop.adapters import registry
    from airloop.stages.score import runner

    c, _ = store
    marker = tmp_path / "pwned"
    folder = _payload_model(tmp_path / "evil", marker)
    mv = c.create_model_version(MODEL, folder.as_uri())
    registry.set_alias(MODEL, registry.CHAMPION, str(mv.version))
    pinned = registry.pin_champion(MODEL)
    runner._load.cache_clear()
    error: Exception | None = None
    try:
        runner._load(MODEL, pinned.version)
    except Exception as exc:  # checked below, after the marker
        error = exc
    assert not marker.exists(), "the crafted champion was unpickled"
    assert isinstance(error, registry.UntrustedVersion), error

"""What training logs as its model, and what logging it no longer does (issue 16: ``log_model`` ≤ 0.1 s).

Real lake and real MLflow store, as in test_train_retry.py: the train runner is called as the task calls it. The
logged model keeps its signature, input example, pins and linked metrics, and loads and predicts through the
registry alias as scoring loads it; logging it does not load it back, re-read the run's metric histories or
re-check the pins against the installed packages.
"""

from __future__ import annotations

import json
from importlib.metadata import version as dist_version
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

from airloop.core.contracts import RunInfo, TrainRequest
from tests.integration.test_train_retry import _lake, _spec


def _train(tmp_path: Any, monkeypatch: Any, name: str) -> str:
    from airloop.stages.train import runner

    _lake(tmp_path, monkeypatch, name)
    spec = _spec(name)
    run = RunInfo(dag_id=spec.dag_id("train"), run_id=f"manual__{name}", try_number=1, run_type="manual")
    return runner.train(spec, TrainRequest(reason="log_model test"), run).version


def test_the_logged_model_keeps_signature_example_pins_and_metrics_and_loads_through_the_alias(tmp_path, monkeypatch):
    import mlflow
    import mlflow.artifacts
    import mlflow.pyfunc
    import mlflow.sklearn

    from airloop.adapters import registry

    name = "logged_model_check"
    version = _train(tmp_path, monkeypatch, name)
    uri = f"models:/{name}@{registry.CHALLENGER}"
    c = registry.client()
    mv = c.get_model_version(name, version)

    info = mlflow.models.get_model_info(uri)
    assert info.signature is not None and info.signature.inputs.input_names() == ["x1", "x2"]
    assert info.signature.outputs is not None
    assert info.saved_input_example_info is not None
    assert info.flavors["python_function"]["loader_module"] == "mlflow.sklearn"
    assert info.flavors["sklearn"]["serialization_format"] == "cloudpickle"

    folder = Path(mlflow.artifacts.download_artifacts(uri, dst_path=str(tmp_path / "model")))
    example = pd.DataFrame(**json.loads((folder / "input_example.json").read_text()))
    assert list(example.columns) == ["x1", "x2"] and len(example) == 5
    assert "dataframe_split" in json.loads((folder / "serving_input_example.json").read_text())
    pins = (folder / "requirements.txt").read_text().split()
    assert f"scikit-learn=={dist_version('scikit-learn')}" in pins
    assert f"mlflow=={mlflow.__version__}" in pins
    assert (folder / "conda.yaml").exists() and (folder / "python_env.yaml").exists()

    # The run's metrics are linked to the logged model (its page in the MLflow UI lists them).
    run_metrics = c.get_run(mv.run_id).data.metrics
    logged = c.get_logged_model(mv.source.removeprefix("models:/"))
    assert logged.source_run_id == mv.run_id and logged.params  # the run's params, copied onto the model
    assert run_metrics and {m.key: m.value for m in logged.metrics} == run_metrics

    # Scoring's way in: the registry alias, through pyfunc and through the sklearn flavor, after the trust check.
    with registry._pickle_allowed():
        through_pyfunc = mlflow.pyfunc.load_model(uri).predict(example)
        through_sklearn = mlflow.sklearn.load_model(uri).predict(example)
    loaded = registry.load_version(name, version)
    assert len(through_pyfunc) == 5
    assert list(through_pyfunc) == pytest.approx(list(through_sklearn))
    assert list(loaded.predict(example)) == pytest.approx(list(through_sklearn))
    assert loaded.signature == {"x1": "double", "x2": "double"}


def test_logging_the_model_does_not_load_it_back_reread_metrics_or_recheck_pins(tmp_path, monkeypatch):
    """MLflow's redundant work while logging (about 0.1 s warm, 0.5 s on a process's first model) is skipped."""
    import mlflow.pyfunc
    from mlflow import MlflowClient
    from mlflow.utils import requirements_utils

    calls: dict[str, int] = {}

    def counted(owner: Any, attribute: str) -> None:
        original = getattr(owner, attribute)

        def call(*args: Any, **kwargs: Any) -> Any:
            calls[attribute] = calls.get(attribute, 0) + 1
            return original(*args, **kwargs)

        monkeypatch.setattr(owner, attribute, call)

    counted(mlflow.pyfunc, "load_model")  # MLflow's serving-input check loads the saved model back
    counted(MlflowClient, "get_metric_history")  # linking metrics logged before the model re-reads each one
    counted(requirements_utils, "_check_requirement_satisfied")  # the pins against the installed packages

    assert _train(tmp_path, monkeypatch, "logged_model_work")
    assert calls == {}


def test_the_embedded_store_commits_through_a_write_ahead_log():
    """Each commit of a logged model appends to one log file instead of writing and deleting a journal."""
    import sqlite3
    from contextlib import closing

    from airloop.adapters import registry

    registry.ensure_experiment("wal_check")
    uri = registry.tracking_uri()
    # A local SQLite store (which one depends on the tests that ran before: some point MLflow at their own home).
    assert uri.startswith("sqlite:///"), uri
    with closing(sqlite3.connect(uri.removeprefix("sqlite:///"))) as conn:
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"

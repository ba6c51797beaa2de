"""The train runner logs its MLflow run on a second thread while it fits and evaluates (issue 16).

Real lake (a temporary folder) and real MLflow store (the session's), as in test_train_retry.py. The run is open
while the fit runs; a fit or an evaluation that fails leaves a FAILED run and no version, and the caller's error
(not the logging thread's) is what the task raises; a logging that fails makes the train call fail.
"""

from __future__ import annotations

import threading
from typing import Any

import pytest

from airloop.adapters import registry
from airloop.core.contracts import RunInfo, TrainRequest
from tests.integration.test_train_retry import _lake, _runs, _spec, _versions


def _run(spec: Any, run_id: str) -> Any:
    from airloop.stages.train import runner

    run = RunInfo(dag_id=spec.dag_id("train"), run_id=run_id, try_number=1, run_type="manual")
    return runner.train(spec, TrainRequest(reason="run log test"), run)


def test_the_run_is_opened_and_its_data_logged_while_the_fit_runs(tmp_path, monkeypatch):
    from airloop.stages.train import steps

    name = "run_log_overlap"
    _lake(tmp_path, monkeypatch, name)
    spec = _spec(name)
    seen: dict[str, Any] = {}
    original_fit = steps.fit

    def fit(*args: Any, **kwargs: Any) -> Any:
        seen["fit_thread"] = threading.current_thread().name
        # The logging thread opens the run and logs its data input meanwhile: wait for it (bounded), then fit.
        runs: list[Any] = []
        for _ in range(200):
            if registry.client().get_experiment_by_name(name) is not None:  # made by the logging thread
                runs = _runs(name, "manual__overlap")
                if runs and runs[0].inputs.dataset_inputs:
                    break
            threading.Event().wait(0.05)
        seen["runs_during_fit"] = [(r.info.status, len(r.inputs.dataset_inputs)) for r in runs]
        return original_fit(*args, **kwargs)

    monkeypatch.setattr(steps, "fit", fit)
    trained = _run(spec, "manual__overlap")
    assert seen["fit_thread"] == threading.main_thread().name  # the fit stays on the task's own thread
    assert seen["runs_during_fit"] == [("RUNNING", 1)]
    [finished] = _runs(name, "manual__overlap")
    assert finished.info.status == "FINISHED" and finished.info.run_id == trained.mlflow_run_id
    assert finished.data.metrics["holdout_rmse"] == pytest.approx(trained.metrics["rmse"])
    assert finished.data.params["estimator.max_iter"] == "20"
    assert registry.run_dict(trained.mlflow_run_id, "airloop/trained.json") is not None
    assert _versions(name) == [trained.version]


@pytest.mark.parametrize("failing", ["fit", "feature_importance"])
def test_a_failed_fit_or_evaluation_ends_the_run_failed_and_registers_nothing(tmp_path, monkeypatch, failing):
    from airloop.stages.train import steps

    name = f"run_log_fails_{failing}"
    _lake(tmp_path, monkeypatch, name)
    spec = _spec(name)

    def broken(*args: Any, **kwargs: Any) -> Any:
        raise ValueError(f"{failing} broke")

    monkeypatch.setattr(steps, failing, broken)
    with pytest.raises(ValueError, match=f"{failing} broke"):
        _run(spec, "manual__fails")
    [failed] = _runs(name, "manual__fails")
    assert failed.info.status == "FAILED"
    assert _versions(name) == []
    assert not [t for t in threading.enumerate() if t.name.startswith("airloop-mlflow")]  # the thread is gone


def test_a_logging_failure_fails_the_train_call(tmp_path, monkeypatch):
    name = "run_log_logging_fails"
    _lake(tmp_path, monkeypatch, name)
    spec = _spec(name)

    def refused(*args: Any, **kwargs: Any) -> Any:
        raise ConnectionError("tracking server refused the model")

    monkeypatch.setattr(registry, "_log_model", refused)
    with pytest.raises(ConnectionError, match="refused the model"):
        _run(spec, "manual__logging_fails")
    [failed] = _runs(name, "manual__logging_fails")
    assert failed.info.status == "FAILED"
    assert _versions(name) == []


def test_a_dataset_that_cannot_be_described_fails_before_the_thread_and_leaves_the_warning_filters(
    tmp_path, monkeypatch
):
    import warnings

    name = "run_log_bad_dataset"
    _lake(tmp_path, monkeypatch, name)
    spec = _spec(name)

    def undescribable(*args: Any, **kwargs: Any) -> Any:
        raise TypeError("no schema for this frame")

    monkeypatch.setattr(registry, "training_dataset", undescribable)
    filters = list(warnings.filters)
    with pytest.raises(TypeError, match="no schema"):
        _run(spec, "manual__bad_dataset")
    assert warnings.filters == filters  # the run log's filters are undone, not left for the rest of the process
    assert registry.client().get_experiment_by_name(name) is None  # nothing was opened
    assert not [t for t in threading.enumerate() if t.name.startswith("airloop-mlflow")]

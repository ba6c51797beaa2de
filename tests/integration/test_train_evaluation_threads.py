"""The train runner predicts on its small holdout on one thread and fits on every core (issue 16).

Real lake and real MLflow store, as in test_train_retry.py; the library's steps are wrapped only to read the
thread pools while they run.
"""

from __future__ import annotations

from typing import Any

from threadpoolctl import threadpool_info

from airloop.core.contracts import RunInfo, TrainRequest
from tests.integration.test_train_retry import _lake, _spec


def _max_threads() -> int:
    return max(pool["num_threads"] for pool in threadpool_info())


def test_evaluation_importance_plots_and_signature_run_on_one_thread(tmp_path, monkeypatch):
    import mlflow

    from airloop.adapters import registry
    from airloop.stages.train import runner, steps

    seen: dict[str, int] = {}

    def watched(name: str, module: Any = steps) -> Any:
        original = getattr(module, name)

        def call(*args: Any, **kwargs: Any) -> Any:
            out = original(*args, **kwargs)
            seen[name] = _max_threads()
            return out

        monkeypatch.setattr(module, name, call)

    for name in ("fit", "evaluate", "feature_importance", "evaluation_plots", "importance_plot"):
        watched(name)
    watched("signature_sample", registry)  # the signature's prediction (the logging thread never predicts)
    name = "threads_check"
    _lake(tmp_path, monkeypatch, name)
    spec = _spec(name)
    run = RunInfo(dag_id=spec.dag_id("train"), run_id="manual__threads", try_number=1, run_type="manual")
    trained = runner.train(spec, TrainRequest(reason="threads test"), run)
    assert trained.version
    assert seen["evaluate"] == seen["feature_importance"] == seen["evaluation_plots"] == seen["signature_sample"] == 1
    info = mlflow.models.get_model_info(f"models:/{name}/{trained.version}")
    assert info.signature is not None and info.signature.inputs.input_names() == ["x1", "x2"]
    assert info.saved_input_example_info is not None
    assert seen["fit"] == _max_threads()  # fit keeps the libraries' own pools, restored after evaluation

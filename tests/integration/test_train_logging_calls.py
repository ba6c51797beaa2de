"""What a training run logs to MLflow stays the same while it costs fewer calls and less time (issue 16).

Real lake and real MLflow store, as in test_train_retry.py: the train runner is called as the task calls it. The
evaluation figures are logged as the PNGs of the figures (same pixels as ``mlflow.log_figure`` writes), drawn on a
worker thread while the run talks to the store; the version is registered with its description, tags, run and
``@challenger`` and linked from its logged model, without MLflow's refused attempt to create the registered model
again or a second write for the description.
"""

from __future__ import annotations

import io
import json
import threading
from pathlib import Path
from typing import Any

import numpy as np

from airloop.core.contracts import RunInfo, TrainRequest
from tests.integration.test_train_retry import _lake, _spec


def _train(tmp_path: Any, monkeypatch: Any, name: str) -> str:
    from airloop.stages.train import runner

    _lake(tmp_path, monkeypatch, name)
    spec = _spec(name)
    run = RunInfo(dag_id=spec.dag_id("train"), run_id=f"manual__{name}", try_number=1, run_type="manual")
    return runner.train(spec, TrainRequest(reason="logging test"), run).version


def _pixels(png: bytes) -> np.ndarray:
    from PIL import Image

    with Image.open(io.BytesIO(png)) as image:
        assert image.format == "PNG"
        return np.asarray(image.convert("RGBA"))


def test_the_plots_are_the_figures_pngs_drawn_off_the_logging_thread(tmp_path, monkeypatch):
    """Each figure ``plots`` made is logged under ``plots/`` as a PNG with the pixels of ``savefig``'s default PNG
    (what ``mlflow.log_figure`` writes), compressed at airloop's level, drawn on a thread other than the run's."""
    import matplotlib.figure

    from airloop.adapters import registry
    from airloop.stages.train import steps

    expected: dict[str, tuple[np.ndarray, bytes]] = {}

    def expecting(original: Any) -> Any:
        def plots(*args: Any, **kwargs: Any) -> dict[str, Any]:
            figures = original(*args, **kwargs)
            _expect(figures, expected)
            return figures

        return plots

    drawn_on: list[str] = []
    original_savefig = matplotlib.figure.Figure.savefig

    def savefig(self: Any, *args: Any, **kwargs: Any) -> Any:
        drawn_on.append(threading.current_thread().name)
        return original_savefig(self, *args, **kwargs)

    for function in ("evaluation_plots", "importance_plot"):  # the runner's two kinds of figures
        monkeypatch.setattr(steps, function, expecting(getattr(steps, function)))
    monkeypatch.setattr(matplotlib.figure.Figure, "savefig", savefig)
    name = "logged_plots_check"
    version = _train(tmp_path, monkeypatch, name)

    c = registry.client()
    run_id = c.get_model_version(name, version).run_id
    logged = sorted(Path(f.path).name for f in c.list_artifacts(run_id, "plots"))
    assert logged == sorted(expected) == ["feature_importance.png", "predicted_vs_actual.png", "residuals.png"]
    for figure_name, (pixels, ours) in expected.items():
        png = Path(c.download_artifacts(run_id, f"plots/{figure_name}", str(tmp_path / "download"))).read_bytes()
        assert np.array_equal(_pixels(png), pixels), figure_name
        assert png == ours, figure_name
    # Two savefig calls per figure here in the test's wrapper (main thread), one per figure by the run's thread.
    main = threading.main_thread().name
    assert drawn_on.count(main) == 2 * len(expected)
    assert len(drawn_on) - drawn_on.count(main) == len(expected)


def _expect(figures: dict[str, Any], expected: dict[str, tuple[np.ndarray, bytes]]) -> None:
    """What each figure's PNG must be: ``savefig``'s default pixels, and the bytes at airloop's zlib level."""
    for name, figure in figures.items():
        default, ours = io.BytesIO(), io.BytesIO()
        figure.savefig(default, format="png")
        figure.savefig(ours, format="png", pil_kwargs={"compress_level": 1})  # airloop's level
        expected[name] = (_pixels(default.getvalue()), ours.getvalue())


def test_registering_the_version_skips_mlflows_refused_create_and_the_second_description_write(tmp_path, monkeypatch):
    """The version has its description, lineage tags, run and ``@challenger``, and its logged model lists it, as
    with ``mlflow.register_model`` + ``update_model_version``; the registered model is created once (by
    ``ensure_registered_model``), not attempted again, and the description is not written a second time."""
    from mlflow import MlflowClient

    from airloop.adapters import registry

    calls: dict[str, int] = {}
    for attribute in ("create_registered_model", "update_model_version", "create_model_version"):
        original = getattr(MlflowClient, attribute)

        def call(*args: Any, _original: Any = original, _attribute: str = attribute, **kwargs: Any) -> Any:
            calls[_attribute] = calls.get(_attribute, 0) + 1
            return _original(*args, **kwargs)

        monkeypatch.setattr(MlflowClient, attribute, call)

    name = "registration_calls_check"
    version = _train(tmp_path, monkeypatch, name)
    assert calls == {"create_registered_model": 1, "create_model_version": 1}

    c = registry.client()
    mv = c.get_model_version(name, version)
    run = c.get_run(mv.run_id)
    assert mv.description == f"Trained by run {mv.run_id} ({run.info.run_name}); awaiting the gate."
    assert mv.tags["airloop.run_id"] == mv.run_id and mv.tags["airloop.dataset_digest"]
    assert mv.tags["airloop.partitions"].count(",") >= 1
    assert mv.tags["airflow.run_id"] == f"manual__{name}"
    assert mv.source.startswith("models:/m-")
    assert registry.version_for_alias(name, registry.CHALLENGER) == version
    logged = c.get_logged_model(mv.source.removeprefix("models:/"))
    assert logged.source_run_id == mv.run_id
    linked = json.loads(logged.tags["mlflow.modelVersions"])  # the version as the store returned it (int or str)
    assert [(entry["name"], str(entry["version"])) for entry in linked] == [(name, version)]

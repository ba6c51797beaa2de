"""Predictions after ``fit`` on a small holdout run on one thread (issue 16: training overhead)."""

from __future__ import annotations

import os
from typing import Any

import pytest
import sklearn.ensemble  # noqa: F401  (loads scikit-learn's OpenMP runtime, whose pool is limited)
from threadpoolctl import threadpool_info

from airloop.adapters import registry
from airloop.stages.train import threads


def _threads() -> dict[str, int]:
    return {pool["filepath"]: pool["num_threads"] for pool in threadpool_info()}


def test_few_rows_runs_every_native_pool_on_one_thread_and_restores_it():
    before = _threads()
    assert before, "scikit-learn's OpenMP runtime should be loaded"
    with threads.few_rows(1_340):
        assert set(_threads().values()) == {1}
    assert _threads() == before


def test_a_large_holdout_keeps_the_libraries_threads():
    before = _threads()
    with threads.few_rows(threads.FEW_ROWS + 1):
        assert _threads() == before


class _Recording:
    """A model that records the native thread pools' sizes while it predicts (what a real model would use)."""

    classes_ = ("no", "yes")

    def __init__(self) -> None:
        self.seen: list[set[int]] = []

    def predict(self, x: Any) -> Any:
        import numpy as np

        self.seen.append(set(_threads().values()))
        return np.zeros(len(x))

    def predict_proba(self, x: Any) -> Any:
        import numpy as np

        self.seen.append(set(_threads().values()))
        return np.full((len(x), 2), 0.5)


def _frame(rows: int) -> Any:
    import pandas as pd

    return pd.DataFrame({"a": range(rows)})


def test_the_gate_and_the_monitor_predict_a_few_rows_on_one_thread():
    """The gate's evaluation (``predict_with``, champion and challenger on the holdout) and the monitor's
    predictions on its window samples run on one thread, as the training run's evaluation does."""
    from airloop.stages.monitor.outputs import ClassOutputs, with_predictions
    from airloop.stages.train.steps import Task, predict_with

    if os.cpu_count() == 1 or set(_threads().values()) == {1}:
        pytest.skip("one core: the pools have one thread anyway")
    model = _Recording()
    predict_with(model, _frame(669), Task("regression"))
    predict_with(model, _frame(669), Task("binary", ("no", "yes")))
    with_predictions(_frame(669), model, ["a"], None)
    with_predictions(_frame(669), model, ["a"], ClassOutputs(("no", "yes"), ("_proba_no", "_proba_yes"), "yes", 0.5))
    assert model.seen == [{1}] * 4
    before = _threads()
    predict_with(model, _frame(threads.FEW_ROWS + 1), Task("regression"))
    assert model.seen[-1] == set(before.values()) != {1}


def test_pip_requirements_are_pinned_and_a_fresh_list_each_call():
    first = registry.pip_requirements()
    assert [p.split("==")[0] for p in first] == list(registry.PIP_PACKAGES)
    assert all(p.split("==")[1] for p in first)
    first.append("mutated")
    assert "mutated" not in registry.pip_requirements()


def test_pip_requirements_read_package_metadata_once_per_process(monkeypatch):
    calls: list[str] = []

    def counted(name: str) -> str:
        calls.append(name)
        return "1.0"

    monkeypatch.setattr(registry, "dist_version", counted)
    registry._pins.cache_clear()
    try:
        assert registry.pip_requirements() == registry.pip_requirements()
        assert calls == list(registry.PIP_PACKAGES)
    finally:
        registry._pins.cache_clear()

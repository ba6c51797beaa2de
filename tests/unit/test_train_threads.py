"""Predictions after ``fit`` on a small holdout run on one thread (issue 16: training overhead)."""

from __future__ import annotations

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

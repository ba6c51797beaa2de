"""A training run's full garbage collections skip the objects the process held before each phase (issue 16).

Real lake and real MLflow store, as in test_train_retry.py; the train runner is called as the task calls it.
"""

from __future__ import annotations

import gc
from typing import Any

from airloop.core.contracts import RunInfo, TrainRequest
from tests.integration.test_train_retry import _lake, _spec


def _train_watching_fit(tmp_path: Any, monkeypatch: Any, name: str) -> int:
    """Train; the number of frozen objects while ``fit`` ran."""
    from airloop.stages.train import runner, steps

    seen: list[int] = []
    original = steps.fit

    def fit(*args: Any, **kwargs: Any) -> Any:
        seen.append(gc.get_freeze_count())
        return original(*args, **kwargs)

    monkeypatch.setattr(steps, "fit", fit)
    _lake(tmp_path, monkeypatch, name)
    spec = _spec(name)
    run = RunInfo(dag_id=spec.dag_id("train"), run_id=f"manual__{name}", try_number=1, run_type="manual")
    assert runner.train(spec, TrainRequest(reason="gc test"), run).version
    (frozen,) = seen
    return frozen


def test_a_run_leaves_the_processes_objects_out_of_full_collections_and_thaws_them_after(tmp_path, monkeypatch):
    assert gc.get_freeze_count() == 0
    objects = len(gc.get_objects())
    frozen = _train_watching_fit(tmp_path, monkeypatch, "gc_frozen_check")
    assert frozen >= objects // 2  # the libraries' objects, at least those there before the run
    assert gc.get_freeze_count() == 0  # nothing stays frozen: cycles among them are collected again


def test_a_process_that_froze_its_own_objects_keeps_them_frozen(tmp_path, monkeypatch):
    """An executor's forked worker freezes its objects to keep its memory shared: the run does not thaw them."""
    gc.freeze()
    try:
        before = gc.get_freeze_count()
        assert _train_watching_fit(tmp_path, monkeypatch, "gc_kept_frozen_check") > before // 2
        assert gc.get_freeze_count() > before // 2  # not thawed (a few frozen objects may have been freed)
    finally:
        gc.unfreeze()

"""The training data as the run's dataset input: digest, rows and schema, without MLflow's per-value scan (issue 16).

Real lake and real MLflow store, as in test_train_retry.py; the train runner is called as the task calls it.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from airloop.core.contracts import RunInfo, TrainRequest
from tests.integration.test_train_retry import _lake, _spec


def test_the_logged_dataset_carries_digest_rows_and_schema_without_looking_at_every_value(tmp_path, monkeypatch):
    """MLflow's schema inference tests every value of every column for nulls in Python (a ``Timestamp`` per row of
    the time column); the run's dataset still shows its digest, rows and schema when that scan is not there."""
    import mlflow.types.utils

    from airloop.adapters import registry
    from airloop.stages.train import runner

    def no_scan(col: Any) -> bool:
        raise AssertionError("MLflow's per-value scan of a column ran")

    monkeypatch.setattr(mlflow.types.utils, "_infer_required", no_scan)
    name = "dataset_input_check"
    _lake(tmp_path, monkeypatch, name)
    spec = _spec(name)
    run = RunInfo(dag_id=spec.dag_id("train"), run_id=f"manual__{name}", try_number=1, run_type="manual")
    version = runner.train(spec, TrainRequest(reason="dataset input test"), run).version

    c = registry.client()
    mv = c.get_model_version(name, version)
    (dataset_input,) = c.get_run(mv.run_id).inputs.dataset_inputs
    lineage = json.loads(Path(c.download_artifacts(mv.run_id, "lineage/training_data.json")).read_text())
    dataset = dataset_input.dataset
    assert dataset.digest == lineage["content_digest"][:36] == mv.tags["airloop.dataset_digest"][:36]
    assert json.loads(dataset.profile)["num_rows"] == lineage["rows"] > 0
    columns = json.loads(dataset.schema)["mlflow_colspec"]
    assert [(col["name"], col["type"], col["required"]) for col in columns] == [
        ("x1", "double", True),
        ("x2", "double", True),
        ("y", "double", True),
        ("ts", "datetime", True),
    ]
    assert {t.key: t.value for t in dataset_input.tags}["mlflow.data.context"] == "training"


def test_the_training_dataset_is_what_mlflows_from_pandas_makes(tmp_path):
    """Same name, digest, source, profile and schema (types and ``required``) as MLflow's own, nulls or none."""
    from mlflow.data.pandas_dataset import from_pandas

    from airloop.adapters import registry

    n = 50
    frame = pd.DataFrame(
        {
            "count": np.arange(n, dtype="int64"),
            "ratio": np.linspace(0, 1, n),
            "ratio_with_nan": [np.nan if i % 7 == 0 else i / n for i in range(n)],
            "flag": [i % 2 == 0 for i in range(n)],
            "word": [f"w{i}" for i in range(n)],
            "word_with_none": [None if i == 3 else f"w{i}" for i in range(n)],
            "nullable_int": pd.array([None if i == 5 else i for i in range(n)], dtype="Int64"),
            "ts": pd.date_range("2021-01-01", periods=n, freq="h", tz="UTC"),
            "ts_with_nat": pd.Series(pd.date_range("2021-01-01", periods=n, freq="h")).where(lambda s: s.index != 9),
        }
    )
    source = str(tmp_path / "lake" / "m" / "validated")
    ours = registry.training_dataset(frame, source=source, target="ratio", name="m-training", digest="d" * 36)
    mlflows = from_pandas(frame, source=source, targets="ratio", name="m-training", digest="d" * 36)
    assert ours.schema is not None
    assert ours.to_dict() == mlflows.to_dict()
    assert ours.targets == "ratio" and ours.profile == {"num_rows": n, "num_elements": n * frame.shape[1]}

"""The view's version cards and the demo's champion line show the task's metrics, the gate's metric first."""

from __future__ import annotations

import pytest

from airloop.ops.demo import _champion_metrics
from airloop.ui.board import card_metrics

REGRESSION_RUN = {
    "holdout_rmse": 52.14,
    "holdout_mae": 33.41,
    "holdout_r2": 0.8712,
    "holdout_smape": 0.25,
    "holdout_rows": 1306.0,
    "train_rows": 6000.0,
    "slice_season_4_rmse": 40.0,
}
BINARY_RUN = {"holdout_log_loss": 0.31, "holdout_roc_auc": 0.91, "holdout_f1": 0.6, "holdout_rows": 500.0}


@pytest.mark.parametrize(
    ("run", "gate_metric", "expected"),
    [
        pytest.param(
            REGRESSION_RUN,
            "rmse",
            ["holdout_rmse", "holdout_mae", "holdout_r2", "holdout_smape", "holdout_rows", "train_rows"],
            id="regression",
        ),
        pytest.param(
            REGRESSION_RUN,
            "r2",
            ["holdout_r2", "holdout_rmse", "holdout_mae", "holdout_smape", "holdout_rows", "train_rows"],
            id="gate-metric-first",
        ),
        pytest.param(
            BINARY_RUN, "roc_auc", ["holdout_roc_auc", "holdout_log_loss", "holdout_f1", "holdout_rows"], id="binary"
        ),
    ],
)
def test_card_metrics(run, gate_metric, expected):
    assert list(card_metrics(run, gate_metric)) == expected


def test_champion_line_names_the_gate_metric_and_the_task_metrics(bikes_spec):
    assert _champion_metrics(bikes_spec, REGRESSION_RUN, "regression") == "rmse 52.1, mae 33.4, r2 0.871"
    assert _champion_metrics(bikes_spec, {"holdout_rows": 3.0}, None) == "no holdout metrics"

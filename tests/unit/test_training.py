"""Training functions on the real bike data: window, assembly with lineage, time split, pipeline, evaluation."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import numpy as np
import pytest

from airloop.adapters.lake import Lake
from airloop.stages.train import steps as training
from airloop.stages.train.steps import TrainingProblem

STEP = timedelta(days=28)
FIRST = datetime(2012, 1, 28, tzinfo=UTC)


@pytest.fixture(scope="module")
def lake(tmp_path_factory, demo_frame, bikes_spec) -> Lake:
    """Eleven 28-day validated partitions from 2012-01-28, the 7th of them quarantined instead."""
    lake = Lake(tmp_path_factory.mktemp("lake"))
    for i in range(11):
        start, end = FIRST + i * STEP, FIRST + (i + 1) * STEP
        rows = demo_frame[(demo_frame.ts >= start.replace(tzinfo=None)) & (demo_frame.ts < end.replace(tzinfo=None))]
        key = start.strftime("%Y-%m-%dT%H%M%SZ")
        meta = {"interval_start": start.isoformat(), "interval_end": end.isoformat(), "suite_digests": {"s": f"d{i}"}}
        lake.write("bikes", "quarantine" if i == 6 else "validated", key, rows.reset_index(drop=True), meta=meta)
    return lake


def test_window_defaults_to_the_newest_partition(bikes_spec, lake):
    window = training.resolve_window(bikes_spec, lake)
    assert window.end == FIRST + 11 * STEP
    assert window.end - window.start == timedelta(days=bikes_spec.training.window_days)
    assert window.end - window.holdout_start == timedelta(days=bikes_spec.training.holdout_days)


def test_window_without_room_for_training_is_refused(bikes_spec, lake):
    end = FIRST + 11 * STEP
    with pytest.raises(TrainingProblem, match="no training rows before its holdout"):
        training.resolve_window(bikes_spec, lake, end=end, start=end - timedelta(days=30))


def test_no_validated_data_names_the_ingest_dag(bikes_spec, tmp_path):
    with pytest.raises(TrainingProblem, match="bikes_ingest"):
        training.resolve_window(bikes_spec, Lake(tmp_path))


def test_assemble_keeps_lineage_and_reports_gaps(bikes_spec, lake):
    window = training.resolve_window(bikes_spec, lake)
    data = training.assemble(bikes_spec, lake, window)
    assert len(data.partitions) == 10  # 11 written, one of them quarantined
    assert all(len(p.content_digest) == 64 and p.rows > 0 for p in data.partitions)
    assert data.frame.ts.is_monotonic_increasing
    assert sum(p.rows for p in data.partitions) == len(data.frame)  # the window covers them all
    quarantined = (FIRST + 6 * STEP).strftime("%Y-%m-%dT%H%M%SZ")
    assert any(quarantined in g for g in data.gaps) and any("no validated data" in g for g in data.gaps)
    again = training.assemble(bikes_spec, lake, window)
    assert again.content_digest == data.content_digest


def test_split_is_by_time(bikes_spec, lake):
    data = training.assemble(bikes_spec, lake, training.resolve_window(bikes_spec, lake))
    train, holdout = training.split(bikes_spec, data)
    assert train.ts.max() < holdout.ts.min()
    assert holdout.ts.min() >= data.window.holdout_start.replace(tzinfo=None)
    assert len(train) + len(holdout) == len(data.frame)


def test_split_refuses_too_few_training_rows(bikes_spec, lake):
    spec = bikes_spec.model_copy(update={"training": bikes_spec.training.model_copy(update={"min_rows": 10**6})})
    data = training.assemble(spec, lake, training.resolve_window(spec, lake))
    with pytest.raises(TrainingProblem, match=r"training\.min_rows"):
        training.split(spec, data)


def test_overrides_only_for_declared_parameters(bikes_spec):
    assert training.estimator_params(bikes_spec, {"max_iter": 7})["max_iter"] == 7
    with pytest.raises(TrainingProblem, match=r"`loss` is not allowed.*training\.overridable in bikes\.yaml"):
        training.estimator_params(bikes_spec, {"loss": "absolute_error"})


@pytest.mark.parametrize(
    ("overrides", "expected"),
    [
        (
            {"max_iter": 10**9},
            "`max_iter` = 1000000000 is out of range: training.overridable in bikes.yaml allows [1, 1000]",
        ),
        (
            {"learning_rate": 0},
            "`learning_rate` = 0 is out of range: training.overridable in bikes.yaml allows [0.001, 1]",
        ),
        ({"max_leaf_nodes": "many"}, "`max_leaf_nodes` = 'many' is not a number (got str)"),
        ({"max_iter": True}, "`max_iter` = True is not a number (got bool)"),
    ],
    ids=["runaway-max-iter", "below-min", "not-a-number", "bool-is-not-a-number"],
)
def test_overrides_outside_their_declared_range_are_refused_naming_param_range_and_file(
    bikes_spec, overrides, expected
):
    with pytest.raises(TrainingProblem) as err:
        training.estimator_params(bikes_spec, overrides)
    assert expected in str(err.value)


def test_overrides_at_the_bounds_of_their_range_are_taken(bikes_spec):
    params = training.estimator_params(bikes_spec, {"max_iter": 1000, "learning_rate": 0.001})
    assert (params["max_iter"], params["learning_rate"]) == (1000, 0.001)


def test_bad_estimator_parameter_is_named(bikes_spec):
    with pytest.raises(TrainingProblem, match="does not accept these parameters"):
        training.build_pipeline(bikes_spec, {"max_iterations": 3})


def test_fit_is_deterministic_and_evaluation_has_slices(bikes_spec, lake):
    data = training.assemble(bikes_spec, lake, training.resolve_window(bikes_spec, lake))
    train, holdout = training.split(bikes_spec, data)
    a = training.fit(bikes_spec, train, {"max_iter": 30})
    b = training.fit(bikes_spec, train, {"max_iter": 30})
    x = holdout[bikes_spec.feature_names]
    assert np.array_equal(a.pipeline.predict(x), b.pipeline.predict(x))
    evaluation = training.evaluate(bikes_spec, a.pipeline, holdout)
    assert evaluation.predictions == len(holdout) and evaluation.nan_predictions == 0
    assert evaluation.min_prediction >= 0  # poisson loss: counts are never negative
    assert 0.5 < evaluation.metrics["r2"] <= 1
    bands = {k for k in evaluation.slices if k.startswith("hour_band=")}
    assert bands == {
        "hour_band=night",
        "hour_band=morning_peak",
        "hour_band=midday",
        "hour_band=evening_peak",
        "hour_band=late",
    }
    assert {"workingday=0", "workingday=1"} <= set(evaluation.slices)
    assert sum(evaluation.slices[b]["rows"] for b in bands) == len(holdout)


def test_evaluation_of_nan_predictions_is_not_finite(bikes_spec, lake):
    data = training.assemble(bikes_spec, lake, training.resolve_window(bikes_spec, lake))
    _, holdout = training.split(bikes_spec, data)
    evaluation = training.evaluate(bikes_spec, lambda x: np.full(len(x), np.nan), holdout)
    assert evaluation.nan_predictions == len(holdout)
    assert np.isnan(evaluation.metrics["rmse"])


def test_bounded_search_picks_from_the_space(bikes_spec, lake):
    from airloop.core.spec import Search

    search = Search(space={"max_iter": [10, 40], "learning_rate": [0.05, 0.1]}, max_trials=3, folds=2)
    t = bikes_spec.training.model_copy(update={"search": search, "overridable": {}})
    spec = bikes_spec.model_copy(update={"training": t})
    data = training.assemble(spec, lake, training.resolve_window(spec, lake))
    train, _ = training.split(spec, data)
    result = training.fit(spec, train)
    assert len(result.trials) == 3
    assert result.params["max_iter"] in (10, 40) and result.params["learning_rate"] in (0.05, 0.1)
    best = min(result.trials, key=lambda t: t["rmse"])
    assert {k: result.params[k] for k in best["params"]} == best["params"]


def test_an_estimator_that_cannot_be_imported_is_named(bikes_spec):
    from airloop.core.spec import Estimator

    t = bikes_spec.training.model_copy(update={"estimator": Estimator(class_path="sklearn.ensemble.NoSuchRegressor")})
    with pytest.raises(TrainingProblem, match=r"NoSuchRegressor.*cannot be imported"):
        training.build_pipeline(bikes_spec.model_copy(update={"training": t}), {})


def test_a_partition_without_a_feature_column_is_named(bikes_spec, tmp_path, demo_frame):
    lake = Lake(tmp_path)
    end = FIRST + STEP
    rows = demo_frame[(demo_frame.ts >= FIRST.replace(tzinfo=None)) & (demo_frame.ts < end.replace(tzinfo=None))]
    meta = {"interval_start": FIRST.isoformat(), "interval_end": end.isoformat()}
    lake.write("bikes", "validated", "p", rows.drop(columns=["hum"]).reset_index(drop=True), meta=meta)
    window = training.Window(start=FIRST - 10 * STEP, end=end, holdout_start=FIRST)
    with pytest.raises(TrainingProblem, match=r"no column\(s\) \['hum'\]"):
        training.assemble(bikes_spec, lake, window)


def _write_partition(lake: Lake, demo_frame, start: datetime, end: datetime) -> str:
    rows = demo_frame[(demo_frame.ts >= start.replace(tzinfo=None)) & (demo_frame.ts < end.replace(tzinfo=None))]
    key = start.strftime("%Y-%m-%dT%H%M%SZ")
    meta = {"interval_start": start.isoformat(), "interval_end": end.isoformat(), "suite_digests": {}}
    lake.write("bikes", "validated", key, rows.reset_index(drop=True), meta=meta)
    return key


def test_overlapping_partitions_are_refused_naming_the_off_grid_one(bikes_spec, tmp_path, demo_frame):
    # The case: 2011-01-01 and 2011-01-29 ingested on the grid, then a manual run at 2011-02-12
    # published [2011-01-15, 2011-02-12), which holds rows of both.
    lake = Lake(tmp_path)
    jan1, jan15, jan29 = (datetime(2011, 1, d, tzinfo=UTC) for d in (1, 15, 29))
    for start in (jan1, jan29):
        _write_partition(lake, demo_frame, start, start + STEP)
    off = _write_partition(lake, demo_frame, jan15, jan15 + STEP)
    window = training.Window(start=jan1, end=jan29 + STEP, holdout_start=jan29)
    with pytest.raises(TrainingProblem, match="overlap") as refused:
        training.assemble(bikes_spec, lake, window)
    message = str(refused.value)
    assert isinstance(refused.value, training.OverlappingPartitions)
    assert "2011-01-01T000000Z [2011-01-01T00:00:00+00:00, 2011-01-29T00:00:00+00:00) and 2011-01-15T000000Z" in message
    assert "2011-01-15T000000Z [2011-01-15T00:00:00+00:00, 2011-02-12T00:00:00+00:00) and 2011-01-29T000000Z" in message
    assert f"Partition(s) ['{off}'] are not intervals of the timetable" in message
    assert lake.partition_url("bikes", "validated", off) in message
    # Once the off-grid partition is gone, the same window trains on the grid partitions alone.
    lake.delete("bikes", "validated", off)
    data = training.assemble(bikes_spec, lake, window)
    assert [p.partition for p in data.partitions] == ["2011-01-01T000000Z", "2011-01-29T000000Z"]


def test_a_partition_inside_a_longer_one_is_refused(bikes_spec, tmp_path, demo_frame):
    # Sorted by start, the contained partition's neighbour may not be the one it overlaps: [a, a+3*STEP) holds
    # [a+STEP, a+2*STEP) and [a+2*STEP, ...) both; every pair is named.
    lake = Lake(tmp_path)
    a = datetime(2011, 1, 1, tzinfo=UTC)
    _write_partition(lake, demo_frame, a, a + 3 * STEP)
    _write_partition(lake, demo_frame, a + STEP, a + 2 * STEP)
    _write_partition(lake, demo_frame, a + 2 * STEP, a + 3 * STEP)
    with pytest.raises(TrainingProblem, match="overlap") as refused:
        training.assemble(bikes_spec, lake, training.Window(start=a, end=a + 3 * STEP, holdout_start=a + 2 * STEP))
    message = str(refused.value)
    assert isinstance(refused.value, training.OverlappingPartitions)
    assert "2011-01-01T000000Z [2011-01-01T00:00:00+00:00, 2011-03-26T00:00:00+00:00) and 2011-01-29T000000Z" in message
    assert "2011-01-01T000000Z [2011-01-01T00:00:00+00:00, 2011-03-26T00:00:00+00:00) and 2011-02-26T000000Z" in message
    assert "Partition(s) ['2011-01-01T000000Z'] are not intervals of the timetable" in message

"""The monitor's pure steps on the real data: cleaning, sampling, the seasonal reference, Evidently's verdict."""

from __future__ import annotations

import re
from datetime import UTC, datetime

import numpy as np
import pandas as pd
import pytest

from airloop.stages.monitor import runner as monitoring
from airloop.stages.monitor.policy import RetrainDecision
from airloop.stages.monitor.runner import PREDICTION, Frames, MonitorProblem


def _window(frame: pd.DataFrame, start: str, end: str) -> pd.DataFrame:
    times = frame["ts"]
    return frame[(times >= pd.Timestamp(start)) & (times < pd.Timestamp(end))].copy()


@pytest.fixture(scope="module")
def early_2011_model(demo_frame, bikes_spec):
    """A small real pipeline trained on the first half of 2011 (the predictions whose drift is measured)."""
    from airloop.stages.train.steps import fit

    return fit(bikes_spec, _window(demo_frame, "2011-01-01", "2011-07-01"), {"max_iter": 20}).pipeline


def _frames(model, spec, reference: pd.DataFrame, current: pd.DataFrame) -> Frames:
    reference, current = reference.copy(), current.copy()
    reference[PREDICTION] = model.predict(reference[spec.feature_names])
    current[PREDICTION] = model.predict(current[spec.feature_names])
    return Frames(reference=reference, current=current)


# --- clean: what Evidently would silently drop or crash on, named -------------------------------------------


def test_clean_turns_inf_into_nan_and_says_how_many():
    frame = pd.DataFrame({"temp": [0.1, np.inf, -np.inf, np.nan, 0.5], "weathersit": [1, 2, None, 1, 1]})
    out, notes = monitoring.clean(frame, ["temp", "weathersit"], "the window W", min_rows=1)
    assert out["temp"].isna().sum() == 3 and not np.isinf(out["temp"].to_numpy(dtype=float)).any()
    assert "the window W: 2 inf value(s) in `temp` ignored" in notes
    assert "the window W: 3 NaN value(s) in `temp` ignored (60.0%)" in notes
    assert "the window W: 1 NaN value(s) in `weathersit` ignored (20.0%)" in notes
    assert np.isinf(frame["temp"]).sum() == 2  # the caller's frame is left as it was


@pytest.mark.parametrize(
    ("frame", "min_rows", "message"),
    [
        (pd.DataFrame({"temp": []}), 1, "the window W has no rows: nothing to compare"),
        (pd.DataFrame({"temp": [0.1, 0.2]}), 3, "has 2 rows, fewer than monitoring.min_rows (3)"),
        (pd.DataFrame({"temp": [np.nan, np.inf]}), 1, "Column `temp` has no finite value in the window W (2 rows"),
    ],
)
def test_clean_refuses_what_cannot_be_judged_naming_it(frame, min_rows, message):
    with pytest.raises(MonitorProblem) as err:
        monitoring.clean(frame, ["temp"], "the window W", min_rows=min_rows)
    assert message in str(err.value)


# --- sampling and the seasonal reference ---------------------------------------------------------------------


def test_sample_caps_rows_reproducibly_and_keeps_small_frames_whole():
    frame = pd.DataFrame({"x": range(10_000)})
    a, b = monitoring.sample(frame, 1000, seed=42), monitoring.sample(frame, 1000, seed=42)
    assert len(a) == 1000 and a.equals(b) and a.index.is_monotonic_increasing
    assert monitoring.sample(frame, 20_000, seed=42) is frame


def test_seasonal_rows_take_the_same_weeks_of_any_year_and_wrap_the_new_year():
    times = pd.Series(pd.date_range("2011-01-01", "2012-12-31", freq="D", tz="UTC"))
    start, end = datetime(2012, 1, 7, tzinfo=UTC), datetime(2012, 1, 21, tzinfo=UTC)
    chosen = times[monitoring.seasonal_rows(times, start, end, margin_days=10)]
    assert chosen.dt.year.nunique() == 2  # both years' early Januaries (and late Decembers)
    assert set(chosen.dt.month) == {1, 12}
    assert chosen[chosen.dt.year == 2011].min() == pd.Timestamp("2011-01-01", tz="UTC")
    assert pd.Timestamp("2011-12-28", tz="UTC") in set(chosen)  # 7 January minus 10 days, a year earlier
    assert pd.Timestamp("2011-02-05", tz="UTC") not in set(chosen)
    assert monitoring.seasonal_rows(times, start, end, margin_days=200).all()  # wider than a year: every row


# --- Evidently on the real data -------------------------------------------------------------------------------


def test_windows_drawn_from_one_month_do_not_drift_against_that_month(demo_frame, bikes_spec, early_2011_model):
    june = _window(demo_frame, "2011-06-01", "2011-07-01")
    for seed in (1, 2, 3):
        current = june.sample(n=300, random_state=seed)
        result, _ = monitoring.drift(bikes_spec, _frames(early_2011_model, bikes_spec, june, current))
        assert not result.drifted, result
        assert result.drifted_columns == () and not result.prediction.drifted
        assert [c.column for c in result.columns] == bikes_spec.monitored_features  # calendar columns excluded


def test_mid_2012_drifts_against_early_2011(demo_frame, bikes_spec, early_2011_model):
    reference = _window(demo_frame, "2011-01-01", "2011-07-01")
    current = _window(demo_frame, "2012-06-01", "2012-07-01")
    result, snapshot = monitoring.drift(bikes_spec, _frames(early_2011_model, bikes_spec, reference, current))
    assert result.drifted
    assert "yr" in result.drifted_columns  # a year the model never saw
    by_column = {c.column: c for c in result.columns}
    assert by_column["yr"].score > bikes_spec.monitoring.column_threshold
    assert by_column["yr"].threshold == bikes_spec.monitoring.column_threshold
    assert result.share == len(result.drifted_columns) / len(bikes_spec.monitored_features)
    assert "metrics" in snapshot.dict()


def test_a_category_unseen_in_the_reference_is_measured_not_a_crash(demo_frame, bikes_spec, early_2011_model):
    reference = _window(demo_frame, "2011-06-01", "2011-07-01")
    reference = reference[reference["weathersit"] != 3]
    current = _window(demo_frame, "2011-06-01", "2011-07-01")

    def weather_score(frame: pd.DataFrame) -> float:
        result, _ = monitoring.drift(bikes_spec, _frames(early_2011_model, bikes_spec, reference, frame))
        return next(c.score for c in result.columns if c.column == "weathersit")

    before = weather_score(current)
    current.loc[current.index[:300], "weathersit"] = 4  # heavy rain: absent from the reference
    after = weather_score(current)
    assert np.isfinite(after) and after > before + 0.2


# --- performance and the verdict -----------------------------------------------------------------------------


def test_performance_against_training_and_without_labels():
    frame = pd.DataFrame({"cnt": [10.0, 20.0, np.nan, 40.0], PREDICTION: [12.0, 16.0, 30.0, 40.0]})
    perf = monitoring.performance(frame, "cnt", {"holdout_mae": 1.5, "holdout_rmse": 2.0}, max_degradation=0.25)
    assert perf is not None and perf.rows == 3
    assert perf.mae == pytest.approx(2.0) and perf.rmse == pytest.approx((20 / 3) ** 0.5)
    assert perf.degradation == pytest.approx(2.0 / 1.5 - 1) and perf.degraded
    fine = monitoring.performance(frame, "cnt", {"holdout_mae": 1.8}, max_degradation=0.25)
    assert fine is not None and not fine.degraded
    unknown = monitoring.performance(frame, "cnt", {}, max_degradation=0.25)
    assert unknown is not None and unknown.degradation is None and not unknown.degraded
    assert monitoring.performance(frame.assign(cnt=np.nan), "cnt", {}, max_degradation=0.25) is None


def test_verdict_names_drifted_columns_scores_performance_and_the_decision(demo_frame, bikes_spec, early_2011_model):
    reference = _window(demo_frame, "2011-01-01", "2011-07-01")
    current = _window(demo_frame, "2012-06-01", "2012-07-01")
    frames = _frames(early_2011_model, bikes_spec, reference, current)
    frames.notes.append("the window has a gap: [x, y) has no validated data")
    result, _ = monitoring.drift(bikes_spec, frames)
    perf = monitoring.performance(frames.current, "cnt", {"holdout_mae": 40.0}, 0.25)
    decision = RetrainDecision(True, "drift in 2 of the last 2 windows, including the latest (yr)")
    text = monitoring.verdict(
        bikes_spec,
        "3",
        (datetime(2012, 6, 1, tzinfo=UTC), datetime(2012, 7, 1, tzinfo=UTC)),
        frames,
        result,
        perf,
        decision,
        "same-weeks",
    )
    assert text.startswith("bikes v3, window [2012-06-01, 2012-07-01)")
    assert "DRIFT:" in text and re.search(r"scores \(\* drifted\): .*yr \d+\.\d\d\*", text)
    assert "performance on" in text and "vs training's 40 (lower is better)" in text  # core.numbers
    assert "note: the window has a gap" in text
    assert text.endswith("decision: REQUEST RETRAINING: drift in 2 of the last 2 windows, including the latest (yr)")


# --- the reference, read back through the champion's lineage -----------------------------------------------


def test_the_reference_is_read_through_the_lineage_and_says_what_changed(tmp_path, monkeypatch, demo_frame, bikes_spec):
    from airloop.adapters.lake import Lake

    monkeypatch.setenv("AIRLOOP_HOME", str(tmp_path))
    lake = Lake(tmp_path / "lake")
    parts = {}
    for key, start, end in [("a", "2011-01-01", "2011-01-29"), ("b", "2011-01-29", "2011-02-26")]:
        parts[key] = lake.write("bikes", "validated", key, _window(demo_frame, start, end), meta={})
    trained = {
        "window": {"start": "2011-01-08T00:00:00+00:00", "end": "2011-02-26T00:00:00+00:00"},
        "partitions": [
            {"partition": "a", "content_digest": parts["a"].content_digest},
            {"partition": "b", "content_digest": "digest at training time"},
            {"partition": "gone", "content_digest": "x"},
        ],
    }
    frame, notes = monitoring._reference(bikes_spec, trained)
    assert frame["ts"].min() == pd.Timestamp("2011-01-08") and frame["ts"].max() < pd.Timestamp("2011-02-26")
    assert len(frame) == len(_window(demo_frame, "2011-01-08", "2011-02-26"))  # only the training window's rows
    assert notes == [
        "reference partition b changed since training (re-ingested); its current rows are used",
        "reference partitions no longer validated in the lake (left out): gone",
    ]
    with pytest.raises(MonitorProblem, match=r"None of the champion's training partitions \(1\) is in the lake"):
        monitoring._reference(bikes_spec, {**trained, "partitions": [{"partition": "gone", "content_digest": "x"}]})


# --- the request: once per window, announced again by a retry of the same run --------------------------------


def test_a_request_is_recorded_once_per_window_and_a_retry_announces_it_again(bikes_spec):
    from dataclasses import replace

    from airloop.core.contracts import MonitorSummary, RunInfo

    spec = bikes_spec.model_copy(update={"name": "requnit"})
    summary = MonitorSummary(
        model="requnit",
        champion_version="3",
        window_start=datetime(2012, 5, 19, tzinfo=UTC),
        window_end=datetime(2012, 6, 16, tzinfo=UTC),
        drifted=True,
        drift_share=0.1,
        drifted_columns=("yr",),
        scores={"yr": 1000.0},
        prediction_score=0.1,
        prediction_drifted=False,
        performance=None,
        retrain=True,
        reason="drift in 2 of the last 2 windows",
        report="/reports/x.html",
        report_json="/reports/x.json",
    )
    first = RunInfo(dag_id="requnit_monitor", run_id="manual__1")
    extra = monitoring.request_retraining(spec, summary, first)
    assert extra is not None and extra["window_end"] == "2012-06-16T00:00:00+00:00"
    assert extra["window_start"] == "2012-05-19T00:00:00+00:00" and extra["drifted_columns"] == ["yr"]
    assert extra["reason"] == "requnit monitor, window ending 2012-06-16: drift in 2 of the last 2 windows"
    again = monitoring.request_retraining(spec, summary, first)  # the task retried: announce it again
    assert again is not None and again["request_id"] == extra["request_id"]
    other = RunInfo(dag_id="requnit_monitor", run_id="manual__2")
    assert monitoring.request_retraining(spec, summary, other) is None  # another run: the window has its request
    no = replace(summary, window_end=datetime(2012, 7, 14, tzinfo=UTC), retrain=False, reason="-")
    assert monitoring.request_retraining(spec, no, other) is None


# --- the run's pure steps: window, reference choice, labelled rows, the recorded row and the summary -----------

JUNE = (datetime(2012, 6, 1, tzinfo=UTC), datetime(2012, 6, 29, tzinfo=UTC))


def test_the_window_ends_at_as_of():
    assert monitoring.window_of(JUNE[1], 28) == JUNE


@pytest.mark.parametrize(
    ("train_end", "noted"),
    [(datetime(2012, 5, 1, tzinfo=UTC), False), (JUNE[0], False), (datetime(2012, 6, 10, tzinfo=UTC), True)],
    ids=["before", "at-start", "overlapping"],
)
def test_a_window_overlapping_the_training_data_is_noted(train_end, noted):
    notes = monitoring.overlap_notes(JUNE[0], train_end)
    assert bool(notes) is noted
    if noted:
        assert notes[0].startswith("the window overlaps the champion's training data (until 2012-06-10)")


@pytest.mark.parametrize(
    ("reference", "min_rows", "kind", "noted"),
    [("whole", 50, "whole", False), ("seasonal", 50, "same-weeks", False), ("seasonal", 10**6, "whole", True)],
    ids=["whole", "seasonal", "seasonal-too-few"],
)
def test_the_reference_is_the_same_weeks_only_when_asked_and_enough(
    demo_frame, bikes_spec, reference, min_rows, kind, noted
):
    m = bikes_spec.monitoring.model_copy(update={"reference": reference, "min_rows": min_rows})
    spec = bikes_spec.model_copy(update={"monitoring": m})
    training = _window(demo_frame, "2011-01-01", "2012-01-01")
    chosen, got_kind, notes = monitoring.choose_reference(spec, training, JUNE)
    assert got_kind == kind and bool(notes) is noted
    if kind == "same-weeks":
        assert 0 < len(chosen) < len(training) and set(chosen["ts"].dt.month) <= {5, 6, 7}
    else:
        assert len(chosen) == len(training)


def test_the_recorded_row_the_policys_history_and_the_summary(demo_frame, bikes_spec, early_2011_model, tmp_path):
    from airloop.core.contracts import RunInfo

    reference = _window(demo_frame, "2011-01-01", "2011-07-01")
    frames = _frames(early_2011_model, bikes_spec, reference, _window(demo_frame, *[f"{d:%Y-%m-%d}" for d in JUNE]))
    frames.notes.append("a note")
    result, _ = monitoring.drift(bikes_spec, frames)
    perf = monitoring.performance(frames.current, "cnt", {"holdout_mae": 40.0}, 0.25)
    run = RunInfo(dag_id="bikes_monitor", run_id="run")
    row = monitoring.drift_row(bikes_spec, "3", JUNE, "whole", frames, result, perf, tmp_path, run)
    assert (row["window_start"], row["window_end"], row["champion_version"]) == (*JUNE, "3")
    assert row["drifted_columns"] == list(result.drifted_columns) and row["notes"] == ["a note"]
    assert row["mae"] == perf.mae and row["report_path"] == str(tmp_path / "report.html")
    assert row["column_scores"]["yr"]["score"] == next(c.score for c in result.columns if c.column == "yr")

    history = [{**row, "degraded": None}, {**row, "drifted": False, "drifted_columns": None, "degraded": True}]
    windows = monitoring.window_results(history)
    assert [(w.drifted, w.degraded) for w in windows] == [(result.drifted, False), (False, True)]
    assert windows[1].drifted_columns == ()

    decision = RetrainDecision(True, "drift")
    summary = monitoring.summary_of(bikes_spec, "3", JUNE, frames, result, perf, decision, tmp_path)
    assert (summary.retrain, summary.reason, summary.notes) == (True, "drift", ("a note",))
    assert summary.scores == {c.column: round(c.score, 4) for c in result.columns}
    assert summary.performance == perf.to_dict() and summary.report_json == str(tmp_path / "report.json")

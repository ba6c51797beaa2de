"""Realized performance from stored outcomes per version, and performance estimated without labels (CBPE), on the
real bird-strike classifier: the real spec (``include/models/birds.yaml``: class-weighted gradient boosting, so its
raw probabilities are badly calibrated) trained by airloop's own steps on 1991-1992, 1993 held out, judged on the
later half-years it never saw."""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import sqlalchemy as sa

from airloop.adapters import warehouse
from airloop.core import metrics
from airloop.core.spec import load_spec
from airloop.stages.monitor import runner as monitoring
from airloop.stages.monitor.estimate import estimate, expected_roc_auc
from airloop.stages.monitor.outputs import class_outputs
from airloop.stages.monitor.policy import WindowResult, decide
from airloop.stages.train import calibration as calibrations
from airloop.stages.train import steps

ROOT = Path(__file__).resolve().parents[2]
HALVES = [("1994-01-01", "1994-07-01"), ("1994-07-01", "1995-01-01"), ("1995-01-01", "1995-07-01")]


@pytest.fixture(scope="module")
def spec():
    return load_spec(ROOT / "include/models/birds.yaml")


@pytest.fixture(scope="module")
def strikes() -> pd.DataFrame:
    """The vendored strikes as the birds spec's query reads them: ``had_effect`` 1 when ``effect`` is filled."""
    frame = pd.read_csv(ROOT / "include/data/faa_birdstrikes/birds.csv")
    frame["date"] = pd.to_datetime(frame["date"], format="%m/%d/%Y %H:%M:%S", utc=True)
    frame["had_effect"] = frame["effect"].notna().astype(int)
    return frame


def _between(frame: pd.DataFrame, start: str, end: str) -> pd.DataFrame:
    return frame[(frame["date"] >= pd.Timestamp(start, tz="UTC")) & (frame["date"] < pd.Timestamp(end, tz="UTC"))]


@pytest.fixture(scope="module")
def trained(spec, strikes):
    """The birds champion as airloop trains it (1991-1992; 60 boosting rounds, for time), with its 1993 holdout."""
    model = steps.fit(spec, _between(strikes, "1991-01-01", "1993-01-01"), {"max_iter": 60}).pipeline
    record = calibrations.holdout_record(spec, model, _between(strikes, "1993-01-01", "1994-01-01"))
    return model, record


def _served(spec, model, rows: pd.DataFrame) -> pd.DataFrame:
    """What the score stage serves for ``rows``: P(positive) and the class by the spec's threshold, as text."""
    p = model.predict_proba(rows[spec.feature_names])[:, list(model.classes_).index(1)]
    return pd.DataFrame(
        {"probability": p, "predicted_class": np.where(p >= spec.target.decision_threshold, "1", "0")},
        index=rows.index,
    )


def _estimate(served, calibration, **kw):
    args = dict(version="1", metric="roc_auc", max_degradation=0.1, max_ece=0.05, min_rows=100, reference={})
    args.update(kw)
    reference = args.pop("reference")
    return estimate(served, calibration, reference, **args)


@pytest.mark.parametrize(("start", "end"), HALVES)
def test_cbpe_estimates_a_later_window_within_three_standard_errors_of_what_it_realized(
    spec, strikes, trained, start, end
):
    """Estimated without a label, then realized from the true labels of the same rows.

    Tolerance: 3 standard errors of what is estimated at that window size (746-1,482 strikes): for accuracy a
    proportion's, sqrt(a(1-a)/n); for ROC AUC Hanley and McNeil's (1982), from the window's positives and
    negatives. A correct estimator misses by more about 3 times in 1,000; both figures are sampling noise of the
    realized value, which is what the estimate can at best be compared with.
    """
    model, record = trained
    calibration = calibrations.calibration(record)
    rows = _between(strikes, start, end)
    served = _served(spec, model, rows)
    got = _estimate(served.reset_index(drop=True), calibration)
    assert got.estimated, got.reason
    y = rows["had_effect"].to_numpy()
    real = metrics.compute(
        "binary",
        y,
        y_pred=served["predicted_class"].astype(int).to_numpy(),
        proba=served["probability"],
        classes=[0, 1],
    )
    n, pos = len(y), int(y.sum())
    acc = real["accuracy"]
    assert abs(got.performance.scores["accuracy"] - acc) <= 3 * math.sqrt(acc * (1 - acc) / n)
    auc = real["roc_auc"]
    q1, q2 = auc / (2 - auc), 2 * auc**2 / (1 + auc)
    se_auc = math.sqrt(
        (auc * (1 - auc) + (pos - 1) * (q1 - auc**2) + (n - pos - 1) * (q2 - auc**2)) / (pos * (n - pos))
    )
    assert abs(got.performance.scores["roc_auc"] - auc) <= 3 * se_auc
    assert got.performance.kind == "estimated" and got.performance.rows == n


def test_calibration_is_measured_cross_fitted_and_the_class_weighted_raw_scores_are_poor(trained):
    _, record = trained
    calibration = calibrations.calibration(record)
    assert record["task"] == "binary" and record["positive"] == "1" and record["rows"] > 1000
    # balanced class weights lift every probability toward 0.5: far from the 10 % of strikes that had an effect
    assert calibration.raw_ece > 0.1
    assert calibration.calibrated_ece < 0.05  # isotonic on the holdout, measured on folds it was not fitted on


def test_a_poorly_calibrated_model_says_so_instead_of_estimating(spec, strikes, trained):
    model, record = trained
    raw = calibrations.calibration(record, calibrate=False)  # monitoring.calibrate_estimates: false
    served = _served(spec, model, _between(strikes, *HALVES[0])).reset_index(drop=True)
    got = _estimate(served, raw)
    assert not got.estimated and got.performance is None
    assert got.reason.startswith(f"not estimated: calibration poor, ECE {raw.raw_ece:.3g} > 0.05 (uncalibrated")
    assert got.to_dict()["status"] == "not estimated"
    missing = _estimate(served, None)
    assert "kept no holdout probabilities" in missing.reason


def test_expected_roc_auc_is_the_auc_when_outcomes_are_certain():
    from sklearn.metrics import roc_auc_score

    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 300)
    score = np.round(rng.random(300), 2)  # ties
    assert expected_roc_auc(y.astype(float), score) == pytest.approx(roc_auc_score(y, score))


# --- realized per version from outcomes ------------------------------------------------------------------------


@pytest.fixture
def engine(tmp_path):
    engine = sa.create_engine(f"sqlite:///{tmp_path / 'warehouse.db'}")
    warehouse.ensure_schema(engine)
    yield engine
    engine.dispose()


def _outcome_rows(spec, model, rows: pd.DataFrame, version: str, arrived: datetime) -> list[dict]:
    served = _served(spec, model, rows)
    return [
        {
            "model": "birds",
            "partition": f"{ts:%Y-%m}",
            "row_key": str(rid),
            "ts": ts.to_pydatetime(),
            "model_version": version,
            "predicted_class": cls,
            "probability": float(p),
            "label": str(label),
            "label_revision": 1,
            "label_arrived_at": arrived,
            "joined_at": arrived,
        }
        for rid, ts, cls, p, label in zip(
            rows["record_id"],
            rows["date"],
            served["predicted_class"],
            served["probability"],
            rows["had_effect"],
            strict=True,
        )
    ]


def _insert(engine, rows: list[dict]) -> None:
    with engine.begin() as conn:
        conn.execute(warehouse.outcomes.insert(), rows)


@pytest.fixture(scope="module")
def second(spec, strikes):
    """A second real version of birds, trained on 1990-1991 with 20 boosting rounds."""
    return steps.fit(spec, _between(strikes, "1990-01-01", "1992-01-01"), {"max_iter": 20}).pipeline


def test_realized_performance_comes_per_version_from_outcomes_and_few_labels_are_not_judged(
    spec, strikes, trained, second, engine
):
    """v1 served January-May 1994, v2 took over in June: both are scored on the outcomes they served, in the
    task's metrics; v2's 40 labelled June strikes are fewer than min_labels (100): shown, not judged."""
    model, _ = trained
    arrived = datetime(1994, 7, 15, tzinfo=UTC)
    january_may = _between(strikes, "1994-01-01", "1994-06-01")
    june = _between(strikes, "1994-06-01", "1994-07-01").head(40)
    _insert(engine, _outcome_rows(spec, model, january_may, "1", arrived))
    _insert(engine, _outcome_rows(spec, second, june, "2", arrived))
    window = (datetime(1994, 1, 1, tzinfo=UTC), datetime(1994, 7, 1, tzinfo=UTC))
    rows = warehouse.outcomes_between(engine, "birds", *window)
    outputs = class_outputs(spec, model.classes_)
    references = {"1": {"holdout_roc_auc": 0.8, "holdout_accuracy": 0.7}, "2": {"holdout_roc_auc": 0.8}}
    realized = monitoring.realized_by_version(spec, rows, outputs, references.__getitem__)

    assert set(realized) == {"1", "2"}
    first = realized["1"]
    p = _served(spec, model, january_may)
    expected = metrics.compute(
        "binary",
        january_may["had_effect"].to_numpy(),
        y_pred=p["predicted_class"].astype(int).to_numpy(),
        proba=p["probability"].to_numpy(),
        classes=[0, 1],
    )
    assert first.rows == len(january_may) and first.version == "1" and first.kind == "realized"
    for name in ("roc_auc", "accuracy", "f1", "log_loss"):
        assert first.scores[name] == pytest.approx(expected[name])
    assert first.unjudged is None and first.degradation is not None  # judged against its holdout 0.8
    late = realized["2"]
    assert late.rows == 40 and late.degradation is None and not late.degraded
    assert late.unjudged.startswith("only 40 labelled outcomes, fewer than monitoring.min_labels (100)")
    lines = monitoring.other_version_lines("1", realized)
    assert lines == [lines[0]] and "realized v2" in lines[0] and "too few to judge" in lines[0]
    assert "only 40 labelled outcomes" in monitoring.performance_lines(late, timedelta(0))[1]


def test_served_rows_without_an_outcome_are_the_ones_estimated(spec, strikes, trained, engine):
    model, _ = trained
    rows = _between(strikes, "1994-01-01", "1994-02-01")
    served = _served(spec, model, rows)
    predictions = [
        {
            "model": "birds",
            "partition": "1994-01",
            "interval_start": datetime(1994, 1, 1, tzinfo=UTC),
            "interval_end": datetime(1994, 2, 1, tzinfo=UTC),
            "ts": ts.to_pydatetime(),
            "row_key": str(rid),
            "predicted_class": cls,
            "probability": float(p),
            "model_version": "1",
            "mlflow_run_id": "r",
            "input_digest": "d",
        }
        for rid, ts, cls, p in zip(
            rows["record_id"], rows["date"], served["predicted_class"], served["probability"], strict=True
        )
    ]
    with engine.begin() as conn:
        conn.execute(warehouse.predictions.insert(), predictions)
    labelled = rows.head(30)
    _insert(engine, _outcome_rows(spec, model, labelled, "1", datetime(1994, 3, 1, tzinfo=UTC)))
    window = (datetime(1994, 1, 1, tzinfo=UTC), datetime(1994, 2, 1, tzinfo=UTC))
    unlabelled = warehouse.unlabelled_predictions(engine, "birds", *window)
    assert len(unlabelled) == len(rows) - 30
    assert {r["row_key"] for r in unlabelled}.isdisjoint(set(labelled["record_id"].astype(str)))


def test_the_estimate_error_is_recorded_once_the_estimated_rows_are_labelled(spec, strikes, trained, engine):
    """A window estimated on 1994's first half (no labels then); its labels arrive; the next run records
    estimated - realized per metric, and a later run updates (never duplicates) it."""
    model, record = trained
    rows = _between(strikes, *HALVES[0])
    served = _served(spec, model, rows).reset_index(drop=True)
    est = _estimate(served, calibrations.calibration(record))
    measured = datetime(1994, 7, 2, tzinfo=UTC)
    window = (datetime(1994, 1, 1, tzinfo=UTC), datetime(1994, 7, 1, tzinfo=UTC))
    history = [
        {
            "window_start": window[0],
            "window_end": window[1],
            "champion_version": "1",
            "measured_at": measured,
            "estimated_performance": {"1": est.to_dict()},
        }
    ]
    outputs = class_outputs(spec, model.classes_)
    assert monitoring.compare_estimates(spec, outputs, history, engine) == []  # no label yet: nothing to compare
    # labels that arrived before the estimate are not the estimated rows: still nothing
    _insert(engine, _outcome_rows(spec, model, rows.head(200), "1", measured - timedelta(days=1)))
    assert monitoring.compare_estimates(spec, outputs, history, engine) == []
    later = rows.iloc[200:]
    _insert(engine, _outcome_rows(spec, model, later, "1", measured + timedelta(days=30)))
    compared = {r["metric"]: r for r in monitoring.compare_estimates(spec, outputs, history, engine)}
    assert {"roc_auc", "accuracy", "f1"} <= set(compared)
    acc = compared["accuracy"]
    truth = float((later["had_effect"].astype(str) == _served(spec, model, later)["predicted_class"]).mean())
    assert acc["realized"] == pytest.approx(truth) and acc["labelled_rows"] == len(later)
    assert acc["estimated"] == pytest.approx(est.performance.scores["accuracy"])
    assert acc["error"] == pytest.approx(acc["estimated"] - truth) and acc["estimated_rows"] == len(rows)
    for row in compared.values():
        warehouse.record_estimate_error(engine, row)
        warehouse.record_estimate_error(engine, row)  # a re-run replaces
    stored = warehouse.estimate_errors_of(engine, "birds")
    assert len(stored) == len(compared) and {r["model_version"] for r in stored} == {"1"}


def test_an_estimated_degradation_asks_for_retraining_only_when_the_spec_says_so(spec):
    end = datetime(1996, 1, 1, tzinfo=UTC)
    history = [WindowResult(window_end=end, drifted=False, estimated_degraded=True)]
    off = decide(history, spec.monitoring)
    assert not off.request and "monitoring.act_on_estimate is off" in off.reason
    on = decide(history, spec.monitoring.model_copy(update={"act_on_estimate": True}))
    assert on.request and "estimated performance (CBPE, labels not in yet) degraded" in on.reason
    cooling = decide(
        history, spec.monitoring.model_copy(update={"act_on_estimate": True}), last_training_end=end - timedelta(days=5)
    )
    assert not cooling.request and "cooling down" in cooling.reason

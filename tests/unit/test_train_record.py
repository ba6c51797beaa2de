"""What a training run records (run name, params, metrics, tags, lineage) and the train request's pure checks."""

from __future__ import annotations

import math
from datetime import UTC, datetime

import pytest

from airloop.adapters.registry import loggable_metrics, loggable_params, version_tags
from airloop.core.contracts import Evaluation, RunInfo
from airloop.core.params import RequestProblem
from airloop.stages.train import record
from airloop.stages.train.request import describe_window, request_reason, requested_window
from airloop.stages.train.steps import PartitionRef, Window

WINDOW = Window(
    start=datetime(2011, 12, 30, tzinfo=UTC),
    end=datetime(2012, 12, 29, tzinfo=UTC),
    holdout_start=datetime(2012, 11, 3, tzinfo=UTC),
)
PARTS = [
    PartitionRef("2012-11-24", "a", "b", 10, "d1", {"schema": "s1", "stats": "t1"}),
    PartitionRef("2012-12-01", "b", "c", 12, "d2", {"schema": "s1", "stats": "t2"}),
]
EVALUATION = Evaluation(
    metrics={"rmse": 40.0, "mae": 25.0, "r2": 0.9},
    slices={"band=night": {"rmse": 10.0, "mae": 7.0, "rows": 300}},
    predictions=100,
    nan_predictions=0,
    min_prediction=0.0,
    max_prediction=900.0,
)
DAY = datetime(2012, 6, 1, tzinfo=UTC)


@pytest.mark.parametrize(
    ("run_id", "expected"),
    [
        ("manual__2012-12-29", "m-20121229-manual__2012-12-29"),
        (None, "m-20121229-local"),
        ("x" * 300, ("m-20121229-" + "x" * 300)[:250]),
    ],
    ids=["airflow-run", "outside-airflow", "cut-to-mlflow-limit"],
)
def test_run_name(run_id, expected):
    assert record.run_name("m", WINDOW, run_id) == expected


def test_run_metrics_prefix_holdout_and_name_slices():
    assert record.run_metrics(EVALUATION, 800, 100) == {
        "holdout_rmse": 40.0,
        "holdout_mae": 25.0,
        "holdout_r2": 0.9,
        "slice_band_night_rmse": 10.0,
        "slice_band_night_mae": 7.0,
        "train_rows": 800.0,
        "holdout_rows": 100.0,
    }


@pytest.mark.parametrize(
    ("partitions", "expected"),
    [
        ([], []),
        (PARTS[:1], ["schema:s1", "stats:t1"]),
        (PARTS, ["schema:s1", "stats:t1", "stats:t2"]),  # each once, sorted
    ],
)
def test_suite_digests(partitions, expected):
    assert record.suite_digests(partitions) == expected


def test_run_params_carry_the_window_the_estimator_and_the_search(bikes_spec):
    params = record.run_params(bikes_spec, {"max_iter": 20}, WINDOW, 0)
    assert params["estimator.max_iter"] == 20
    assert params["estimator.class"] == bikes_spec.training.estimator.class_path
    assert (params["window.start"], params["window.holdout_start"]) == (
        "2011-12-30T00:00:00+00:00",
        "2012-11-03T00:00:00+00:00",
    )
    assert params["features"] == bikes_spec.feature_names and params["target"] == bikes_spec.target.name
    assert params["search"] == ("none" if bikes_spec.training.search is None else "0 trials")


def test_run_tags():
    run = RunInfo(dag_id="m_train", run_id="manual__1", try_number=2)
    tags = record.run_tags(
        run=run,
        model="m",
        reason="r" * 600,
        window=WINDOW,
        partitions=2,
        suites=["schema:s1", "stats:t1"],
        spec_digest="abc",
        git_commit="deadbeef",
    )
    assert tags["airflow.dag_id"] == "m_train" and tags["airflow.try_number"] == "2"
    assert tags["airloop.reason"] == "r" * 500  # the tag is cut; the note keeps all of it
    assert tags["mlflow.note.content"] == f"{'r' * 600}\n\nWindow {WINDOW}; 2 partitions."
    assert (tags["airloop.suite_digests"], tags["airloop.spec_digest"]) == ("schema:s1,stats:t1", "abc")
    assert (tags["airloop.window"], tags["mlflow.source.git.commit"]) == (str(WINDOW), "deadbeef")
    assert all(isinstance(v, str) for v in tags.values())


def test_lineage_names_every_partition():
    lineage = record.lineage("m", WINDOW, rows=22, content_digest="c", partitions=PARTS, gaps=["g"], suites=["s"])
    assert [p["partition"] for p in lineage["partitions"]] == ["2012-11-24", "2012-12-01"]
    assert (lineage["rows"], lineage["gaps"], lineage["window"]["end"]) == (22, ["g"], "2012-12-29T00:00:00+00:00")


@pytest.mark.parametrize(
    ("trials", "files"),
    [
        ([], ["evaluation/holdout.json", "evaluation/importance.json"]),
        ([{"rmse": 1.0}], ["evaluation/holdout.json", "evaluation/importance.json", "search/trials.json"]),
    ],
    ids=["no-search", "search"],
)
def test_artifacts(trials, files):
    assert sorted(record.artifacts(EVALUATION, {"f": 0.5}, trials)) == files


def test_loggable_params_metrics_and_version_tags():
    assert loggable_params({"a": [1, 2], "b": {"c": 1}, "d": 3}) == {"a": "[1, 2]", "b": '{"c": 1}', "d": 3}
    assert loggable_metrics({"rmse": 1.0, "r2": math.nan}) == {"rmse": 1.0}
    tags = version_tags("run1", "digest", [{"partition": "p1"}, {"partition": "p2"}], {"airflow.run_id": "x", "y": "z"})
    assert tags == {
        "airloop.run_id": "run1",
        "airloop.dataset_digest": "digest",
        "airloop.partitions": "p1,p2",
        "airflow.run_id": "x",
    }


# --- the train request's checks -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("params", "run_type", "extras", "expected"),
    [
        ({"reason": "  by hand  "}, "manual", [], "by hand"),
        ({}, "scheduled", [], "scheduled retraining (CRON)"),
        ({}, "asset_triggered", [{"reason": "drift"}, {}], "retrain requested: drift; asset event"),
        ({"reason": "mine"}, "asset_triggered", [{"reason": "drift"}], "mine"),
    ],
    ids=["manual", "scheduled", "requested", "reason-param-wins"],
)
def test_request_reason(bikes_spec, params, run_type, extras, expected):
    spec = bikes_spec.model_copy(update={"training": bikes_spec.training.model_copy(update={"cron": "CRON"})})
    assert request_reason(spec, params, RunInfo(run_type=run_type), extras) == expected


def test_a_manual_run_without_a_reason_is_refused(bikes_spec):
    with pytest.raises(RequestProblem, match="param `reason` is required"):
        request_reason(bikes_spec, {"reason": " "}, RunInfo(run_type="manual"), [])


@pytest.mark.parametrize(
    ("params", "extras", "expected"),
    [
        ({}, [], (None, None)),
        ({"window_start": "2012-01-01"}, [], (datetime(2012, 1, 1, tzinfo=UTC), None)),
        ({}, [{"window_end": "2012-03-01"}, {"window_end": "2012-06-01"}, {}], (None, DAY)),
        ({"window_end": "2012-02-01"}, [{"window_end": "2012-06-01"}], (None, datetime(2012, 2, 1, tzinfo=UTC))),
    ],
    ids=["defaults", "start-only", "latest-requested-end", "param-wins"],
)
def test_requested_window(params, extras, expected):
    assert requested_window(params, extras) == expected


def test_an_inverted_window_is_refused():
    with pytest.raises(RequestProblem, match=r"`window_start` \(2012-06-01\) must be before `window_end`"):
        requested_window({"window_start": "2012-06-01", "window_end": "2012-06-01"}, [])


@pytest.mark.parametrize(
    ("start", "end", "expected"),
    [
        (None, None, "the 364 days up to the newest validated data"),
        (None, DAY, "the 364 days up to 2012-06-01"),
        (datetime(2012, 1, 1, tzinfo=UTC), None, "from 2012-01-01 up to the newest validated data"),
        (datetime(2012, 1, 1, tzinfo=UTC), DAY, "from 2012-01-01 up to 2012-06-01"),
    ],
)
def test_describe_window(start, end, expected):
    assert describe_window(start, end, 364) == expected

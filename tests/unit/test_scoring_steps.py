"""The scoring runner's pure steps: provenance, row constants, the row checks, the lake's rows, the log lines."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import numpy as np
import pandas as pd
import pytest

from airloop.core.contracts import PinnedChampion, RunInfo, ScoredPartition
from airloop.stages.score import runner as scoring
from airloop.stages.score.outputs import Classes, Outputs, bad_probability_rows, classify, positive_index

PINNED = PinnedChampion(version="7", run_id="r" * 32)
META = {"interval_start": "2012-11-03T00:00:00+00:00", "interval_end": "2012-12-01T00:00:00+00:00"}


def test_row_constants_and_lake_meta_carry_the_interval_and_provenance():
    provenance = scoring.provenance_of(PINNED, "d" * 64)
    assert provenance == {"model_version": "7", "mlflow_run_id": "r" * 32, "input_digest": "d" * 64}
    constants = scoring.row_constants("m", "p", META, provenance, RunInfo(dag_id="m_score", run_id="run"))
    assert constants == {
        "model": "m",
        "partition": "p",
        "interval_start": datetime(2012, 11, 3, tzinfo=UTC),
        "interval_end": datetime(2012, 12, 1, tzinfo=UTC),
        **provenance,
        "dag_id": "m_score",
        "dag_run_id": "run",
    }
    assert scoring.lake_meta(constants) == {**META, **provenance}


def _chunk(spec, times: list[str | None]) -> pd.DataFrame:
    return pd.DataFrame({spec.source.time_column: pd.to_datetime(times, utc=True)})


@pytest.mark.parametrize(
    ("y", "bad"),
    [([1.0, 2.0, 3.0], None), ([1.0, np.nan, 3.0], 1), ([np.inf, 2.0, -np.inf], 2)],
    ids=["finite", "nan", "infinities"],
)
def test_non_finite_predictions_are_refused_naming_how_many_and_where(bikes_spec, y, bad):
    chunk = _chunk(bikes_spec, ["2012-11-03 00:00", "2012-11-03 01:00", "2012-11-03 02:00"])
    if bad is None:
        scoring.refuse_non_finite(bikes_spec, "p", "7", chunk, np.array(y))
        return
    with pytest.raises(scoring.ScoringProblem, match=rf"v7 gave {bad} non-finite predictions in partition p \(rows at"):
        scoring.refuse_non_finite(bikes_spec, "p", "7", chunk, np.array(y))


def test_row_times_are_utc_and_a_missing_time_is_refused(bikes_spec):
    times = scoring.row_times(bikes_spec, "p", _chunk(bikes_spec, ["2012-11-03 00:00", "2012-11-03 01:00"]))
    assert str(times.dt.tz) == "UTC" and len(times) == 2
    with pytest.raises(scoring.ScoringProblem, match=r"Partition p of .* has 1 rows without a time"):
        scoring.row_times(bikes_spec, "p", _chunk(bikes_spec, ["2012-11-03 00:00", None]))


def test_lake_rows_hold_time_key_outputs_and_provenance_with_one_type_per_column_whatever_the_task():
    ts = pd.Series(pd.to_datetime(["2012-11-03 00:00", "2012-11-03 01:00"], utc=True))
    provenance = scoring.provenance_of(PINNED, "d")
    rows = scoring.lake_rows(ts, ["k1", "k2"], Outputs(prediction=np.array([1.5, 2.5])), provenance)
    assert list(rows.columns) == [
        "ts",
        "row_key",
        "prediction",
        "predicted_class",
        "probability",
        "probabilities",
        "model_version",
        "mlflow_run_id",
        "input_digest",
    ]
    assert rows["prediction"].tolist() == [1.5, 2.5] and set(rows["model_version"]) == {"7"}
    assert rows["row_key"].tolist() == ["k1", "k2"] and rows["predicted_class"].isna().all()
    classes = classify(np.array([[0.2, 0.8], [0.9, 0.1]]), Classes(("no", "yes"), 1), 0.5)
    classified = scoring.lake_rows(ts, ["k1", "k2"], classes, provenance)
    assert classified["predicted_class"].tolist() == ["yes", "no"] and classified["prediction"].isna().all()
    assert list(classified.dtypes) == list(rows.dtypes)  # a partition's chunks agree on their schema


@pytest.mark.parametrize("task", ["regression", "binary", "multiclass"])
def test_lake_rows_are_the_frame_pandas_builds_from_plain_values(task):
    """The arrays built directly (no per-element pd.array) are the ones pd.array makes: same values, NA, dtypes and
    the same content digest (pandas' row hashes)."""
    n = 1_001
    ts = pd.Series(pd.date_range("1969-12-31 23:00", periods=n, freq="37s", tz="UTC"))
    keys = [f"k{i}" for i in range(n)]
    p = np.random.default_rng(0).random(n)
    p[:3] = [-0.0, 5e-324, 1.0]
    labels = ["no", "yes"] * (n // 2) + ["no"]
    outputs = {
        "regression": Outputs(prediction=p),
        "binary": Outputs(predicted_class=labels, probability=p),
        "multiclass": Outputs(predicted_class=labels, probability=p, probabilities=[json.dumps({"x": v}) for v in p]),
    }[task]
    provenance = scoring.provenance_of(PINNED, "d" * 64)
    got = scoring.lake_rows(ts, keys, outputs, provenance)

    def plain(values, dtype):
        return pd.array([None] * n if values is None else list(values), dtype=dtype)

    expected = pd.DataFrame(
        {
            "ts": ts,
            "row_key": plain(keys, "string"),
            "prediction": plain(outputs.prediction, "Float64"),
            "predicted_class": plain(outputs.predicted_class, "string"),
            "probability": plain(outputs.probability, "Float64"),
            "probabilities": plain(outputs.probabilities, "string"),
            **provenance,
        }
    )
    pd.testing.assert_frame_equal(got, expected)
    assert pd.util.hash_pandas_object(got, index=False).equals(pd.util.hash_pandas_object(expected, index=False))
    for name in ("prediction", "probability"):  # bit for bit, -0.0 kept
        if getattr(outputs, name) is not None:
            assert got[name].to_numpy(dtype=np.float64).tobytes() == p.tobytes()
    if outputs.prediction is not None:
        outputs.prediction[0] = 99.0  # the lake's frame shares no memory with the outputs the sink also gets
        assert got["prediction"][0] == 0.0


@pytest.mark.parametrize(
    ("proba", "positive", "threshold", "expected", "probability"),
    [
        ([[0.3, 0.7], [0.6, 0.4], [0.5, 0.5]], 1, 0.5, ["b", "a", "b"], [0.7, 0.4, 0.5]),
        ([[0.3, 0.7], [0.6, 0.4], [0.5, 0.5]], 1, 0.75, ["a", "a", "a"], [0.7, 0.4, 0.5]),
        ([[0.3, 0.7], [0.6, 0.4], [0.5, 0.5]], 0, 0.5, ["b", "a", "a"], [0.3, 0.6, 0.5]),
        ([0.7, 0.4, 0.5], 1, 0.5, ["b", "a", "b"], [0.7, 0.4, 0.5]),
    ],
    ids=["second-class-positive", "threshold", "first-class-positive", "one-column"],
)
def test_binary_classes_come_from_the_positive_probability_and_the_threshold(
    proba, positive, threshold, expected, probability
):
    out = classify(np.array(proba), Classes(("a", "b"), positive), threshold)
    assert out.predicted_class == expected and out.probability.tolist() == probability
    assert out.prediction is None and out.probabilities is None


def test_multiclass_takes_the_most_probable_class_and_keeps_every_probability():
    out = classify(np.array([[0.1, 0.7, 0.2], [0.4, 0.2, 0.4]]), Classes(("0", "1", "2"), None), 0.5)
    assert out.predicted_class == ["1", "0"]  # a tie goes to the first class
    assert out.probability.tolist() == [0.7, 0.4]
    assert [json.loads(t) for t in out.probabilities] == [
        {"0": 0.1, "1": 0.7, "2": 0.2},
        {"0": 0.4, "1": 0.2, "2": 0.4},
    ]


def test_the_positive_class_is_found_by_value_or_text_and_defaults_to_the_second():
    assert positive_index(np.array([0, 1]), None) == 1
    assert positive_index(np.array([0, 1]), 0) == 0
    assert positive_index(np.array(["no", "yes"]), "yes") == 1
    assert positive_index(np.array([False, True]), "True") == 1
    assert positive_index(np.array(["no", "yes"]), "maybe") is None


def test_bad_probability_rows_are_found_by_position():
    proba = np.array([[0.5, 0.5], [np.nan, 1.0], [1.2, -0.2], [0.5, 0.6], [0.1, 0.9]])
    assert bad_probability_rows(proba, 2, 1e-5).tolist() == [1, 2, 3]
    assert bad_probability_rows(proba, 3, 1e-5).tolist() == [0, 1, 2, 3, 4]  # wrong shape: every row


def test_log_lines_say_what_was_scored_with_what_and_how_fast():
    scored = ScoredPartition(partition="p1", rows=1000, version="7", digest="abcdef0123456789")
    line = scoring.scored_line("m", scored, 2.0, "SQLite multi-row INSERT", "/lake/m/predictions/p1")
    assert line == (
        "Scored 1000 rows of m partition p1 with v7 in 2.0 s (500 rows/s): warehouse view predictions "
        "(batch and rows replaced, SQLite multi-row INSERT) and /lake/m/predictions/p1 (digest abcdef012345)."
    )
    assert "(0 rows/s)" in scoring.scored_line("m", scored, 0.0, "sink", "where")
    second = ScoredPartition(partition="p2", rows=500, version="7", digest="x")
    assert scoring.run_line("m", [scored, second], PINNED, 3.0).startswith(
        f"Scored 2 partition(s) of m, p1 to p2, with v7 (MLflow run {PINNED.run_id}): 1500 rows in 3.0 s;"
    )
    assert scoring.run_line("m", [], PINNED, 0.0) == "Nothing to score for m: no partition was selected."

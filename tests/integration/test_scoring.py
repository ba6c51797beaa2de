"""score_partition called directly: exactly the model's predictions, everywhere, or nothing at all.

The partitions are scored in small chunks and short INSERT statements, so every test crosses chunk and statement
boundaries (the ``bikes_score`` DAG itself is tested in ``test_score_dag.py``).
"""

from __future__ import annotations

import numpy as np
import pytest
import sqlalchemy as sa

CHUNK_ROWS = 100  # a 28-day partition holds about 670 rows: 7 chunks


@pytest.fixture(scope="module")
def pinned(validated_lake, bikes_spec):
    """The champion, pinned; trained (max_iter 20) and promoted here when this file runs on its own."""
    from airloop.adapters import registry as tracking
    from airloop.adapters.db import engine_for
    from airloop.adapters.registry import pin_champion
    from airloop.core.contracts import RunInfo, TrainRequest
    from airloop.core.settings import WAREHOUSE_CONN_ID
    from airloop.stages.promote.ledger import Decision, apply
    from airloop.stages.train import runner as train_stage

    if tracking.version_for_alias("bikes", tracking.CHAMPION) is None:
        request = TrainRequest(reason="scoring tests", overrides={"max_iter": 20})
        trained = train_stage.train(bikes_spec, request, RunInfo())
        decision = Decision("bikes", "promote", trained.version, "scoring tests", "tests")
        apply(engine_for(WAREHOUSE_CONN_ID), decision, expected_champion=None)
    return pin_champion("bikes")


@pytest.fixture(autouse=True)
def short_statements(monkeypatch):
    from airloop.adapters import prediction_sink

    monkeypatch.setattr(
        prediction_sink, "SQLITE_ROWS_PER_STATEMENT", 32
    )  # 100-row chunks: 3 full statements and 1 short


def _score(spec, partition: str, pinned, run_id: str):
    from airloop.core.contracts import RunInfo
    from airloop.stages.score.runner import score_partition

    return score_partition(spec, partition, pinned, RunInfo(dag_id="bikes_score", run_id=run_id), CHUNK_ROWS)


def _rows(partition: str) -> list[dict]:
    from airloop.adapters.db import engine_for
    from airloop.adapters.warehouse import predictions
    from airloop.core.settings import WAREHOUSE_CONN_ID

    query = (
        sa.select(predictions)
        .where(predictions.c.model == "bikes", predictions.c.partition == partition)
        .order_by(predictions.c.ts)
    )
    with engine_for(WAREHOUSE_CONN_ID).connect() as conn:
        return [dict(r._mapping) for r in conn.execute(query)]


def _lake_state(partition: str) -> tuple:
    """The predictions partition's manifest and the files in its folder (temporary ones included)."""
    from airloop.adapters.lake import default_lake

    lake = default_lake()
    return lake.manifest("bikes", "predictions", partition), lake.files("bikes", "predictions", partition)


def test_rows_are_exactly_what_the_model_predicts_in_the_warehouse_and_the_lake(pinned, validated_lake, bikes_spec):
    from airloop.adapters.lake import default_lake
    from airloop.stages.score import runner as scoring

    partition = validated_lake[-3]
    result = _score(bikes_spec, partition, pinned, "exact")
    lake = default_lake()
    validated = lake.read("bikes", "validated", partition)
    expected = np.asarray(scoring._load("bikes", pinned.version).predict(validated[bikes_spec.feature_names]))
    assert len(validated) > 3 * CHUNK_ROWS  # several chunks, and a short last one
    assert result.rows == len(validated)

    rows = _rows(partition)
    assert [r["prediction"] for r in rows] == expected.tolist()  # bit for bit, in time order
    times = validated["ts"].dt.tz_convert("UTC").dt.tz_localize(None).dt.to_pydatetime().tolist()
    assert [r["ts"] for r in rows] == times
    # keyed by the time column (bikes' only key), canonical ISO UTC text; no classifier columns
    assert [r["row_key"] for r in rows] == [f"{t:%Y-%m-%dT%H:%M:%S}Z" for t in times]
    assert {(r["predicted_class"], r["probability"], r["probabilities"]) for r in rows} == {(None, None, None)}
    manifest = lake.manifest("bikes", "validated", partition)
    assert {
        (
            r["model"],
            r["partition"],
            r["interval_start"].isoformat(),
            r["interval_end"].isoformat(),
            r["model_version"],
            r["mlflow_run_id"],
            r["input_digest"],
            r["dag_id"],
            r["dag_run_id"],
        )
        for r in rows
    } == {
        (
            "bikes",
            partition,
            manifest.meta["interval_start"].removesuffix("+00:00"),
            manifest.meta["interval_end"].removesuffix("+00:00"),
            pinned.version,
            pinned.run_id,
            manifest.content_digest,
            "bikes_score",
            "exact",
        )
    }

    written = lake.read("bikes", "predictions", partition)
    assert written["prediction"].tolist() == expected.tolist()
    assert written["ts"].dt.tz_localize(None).dt.to_pydatetime().tolist() == times
    assert set(written["model_version"]) == {pinned.version}
    assert set(written["input_digest"]) == {manifest.content_digest}
    assert written["row_key"].tolist() == [r["row_key"] for r in rows]


def test_the_fast_sink_and_sqlalchemy_core_write_the_same_rows(pinned, validated_lake, bikes_spec, monkeypatch):
    from airloop.adapters import prediction_sink

    partition = validated_lake[-3]
    _score(bikes_spec, partition, pinned, "same")
    fast, (fast_manifest, _) = _rows(partition), _lake_state(partition)
    monkeypatch.setattr(prediction_sink, "sink_for", prediction_sink.CoreSink)
    _score(bikes_spec, partition, pinned, "same")
    assert _rows(partition) == fast
    assert _lake_state(partition)[0] == fast_manifest


@pytest.mark.parametrize(
    ("where", "failing_chunk"),
    [("database", 3), ("database", "last"), ("model", 3), ("model", "last")],
    ids=["database-middle", "database-last-chunk", "model-middle", "model-last-chunk"],
)
def test_a_failure_in_the_middle_of_a_partition_leaves_the_previous_predictions(
    pinned, validated_lake, bikes_spec, monkeypatch, where, failing_chunk
):
    from airloop.adapters import prediction_sink
    from airloop.adapters import registry as tracking
    from airloop.stages.score import runner as scoring

    partition = validated_lake[-4]
    _score(bikes_spec, partition, pinned, "before")
    before, lake_before = _rows(partition), _lake_state(partition)
    chunks = -(-len(before) // CHUNK_ROWS)
    assert chunks > 3
    failing = chunks if failing_chunk == "last" else failing_chunk

    calls = {"n": 0}
    if where == "database":
        original = prediction_sink.SQLiteSink.write

        def write(self, rows):
            calls["n"] += 1
            if calls["n"] == failing:
                raise sa.exc.OperationalError("INSERT", {}, Exception("disk I/O error"))
            original(self, rows)

        monkeypatch.setattr(prediction_sink.SQLiteSink, "write", write)
        expected = pytest.raises(sa.exc.OperationalError, match="disk I/O error")
    else:
        predict = tracking.LoadedModel.predict

        def nan_in_one_chunk(self, frame):
            calls["n"] += 1
            y = np.asarray(predict(self, frame), dtype=float)
            return np.full_like(y, np.nan) if calls["n"] == failing else y

        monkeypatch.setattr(tracking.LoadedModel, "predict", nan_in_one_chunk)
        expected = pytest.raises(scoring.ScoringProblem, match=r"non-finite predictions.*nothing of this partition")

    with expected:
        _score(bikes_spec, partition, pinned, "after")
    assert calls["n"] == failing  # nothing was written or predicted after the failure
    assert _rows(partition) == before  # the earlier chunks' inserts were rolled back with the delete
    assert _lake_state(partition) == lake_before  # no new data file, no temporary file left behind


def test_a_failure_on_a_partition_never_scored_writes_no_lake_partition(
    pinned, validated_lake, bikes_spec, monkeypatch
):
    from airloop.adapters import prediction_sink
    from airloop.adapters.db import engine_for
    from airloop.adapters.lake import default_lake
    from airloop.adapters.warehouse import predictions
    from airloop.core.settings import WAREHOUSE_CONN_ID

    partition = validated_lake[0]
    default_lake().delete("bikes", "predictions", partition)
    with engine_for(WAREHOUSE_CONN_ID).begin() as conn:
        conn.execute(predictions.delete().where(predictions.c.partition == partition))
    original = prediction_sink.SQLiteSink.write
    calls = {"n": 0}

    def write(self, rows):
        calls["n"] += 1
        if calls["n"] == 2:
            raise RuntimeError("the database went away")
        original(self, rows)

    monkeypatch.setattr(prediction_sink.SQLiteSink, "write", write)
    with pytest.raises(RuntimeError, match="went away"):
        _score(bikes_spec, partition, pinned, "never")
    assert _rows(partition) == []
    assert _lake_state(partition) == (None, [])


def test_a_failed_warehouse_commit_leaves_both_stores_as_they_were_and_the_retry_converges(
    pinned, validated_lake, bikes_spec, monkeypatch
):
    """The warehouse transaction is the commit point: the lake partition is published only after it commits."""
    from airloop.adapters import registry as tracking
    from airloop.adapters.db import engine_for
    from airloop.adapters.lake import default_lake
    from airloop.core.settings import WAREHOUSE_CONN_ID

    partition = validated_lake[-2]
    _score(bikes_spec, partition, pinned, "before-commit")
    before, lake_before = _rows(partition), _lake_state(partition)

    predict = tracking.LoadedModel.predict
    monkeypatch.setattr(tracking.LoadedModel, "predict", lambda self, frame: predict(self, frame) + 1.0)  # new rows
    engine = engine_for(WAREHOUSE_CONN_ID)
    failures = {"left": 1}

    def failing_commit(conn):  # the database refuses the commit itself (a full disk, a lost connection)
        if failures["left"]:
            failures["left"] -= 1
            raise sa.exc.OperationalError("COMMIT", {}, Exception("disk I/O error at commit"))

    sa.event.listen(engine, "commit", failing_commit)
    try:
        with pytest.raises(sa.exc.OperationalError, match="at commit"):
            _score(bikes_spec, partition, pinned, "failed-commit")
    finally:
        sa.event.remove(engine, "commit", failing_commit)
    assert failures["left"] == 0
    assert _rows(partition) == before  # the old rows in the warehouse ...
    assert _lake_state(partition) == lake_before  # ... and the old partition in the lake, nothing half-published

    _score(bikes_spec, partition, pinned, "retried")  # the task's retry
    after = _rows(partition)
    lake = default_lake().read("bikes", "predictions", partition).sort_values("ts")
    assert {r["dag_run_id"] for r in after} == {"retried"}
    np.testing.assert_allclose([r["prediction"] for r in after], [r["prediction"] + 1.0 for r in before])
    np.testing.assert_allclose(lake["prediction"].to_numpy(dtype=float), [r["prediction"] for r in after])


@pytest.mark.parametrize("labels", ["null", "absent"])
def test_an_interval_without_its_labels_is_scored_in_full(pinned, validated_lake, bikes_spec, labels):
    """Scoring serves every validated row: an interval ingested before its labels were due (its target null, or
    not extracted at all with a label source of its own) is scored row for row, as any other."""
    from airloop.adapters.lake import default_lake

    lake = default_lake()
    partition = validated_lake[-5]
    original, manifest = lake.read("bikes", "validated", partition), lake.manifest("bikes", "validated", partition)
    unlabelled = (
        original.assign(cnt=np.full(len(original), np.nan)) if labels == "null" else original.drop(columns=["cnt"])
    )
    lake.write("bikes", "validated", partition, unlabelled, meta=manifest.meta)
    try:
        result = _score(bikes_spec, partition, pinned, f"unlabelled-{labels}")
        rows = _rows(partition)
        assert result.rows == len(rows) == len(original) > 3 * CHUNK_ROWS
        assert all(np.isfinite(r["prediction"]) for r in rows)
        assert {r["input_digest"] for r in rows} == {lake.manifest("bikes", "validated", partition).content_digest}
    finally:
        lake.write("bikes", "validated", partition, original, meta=manifest.meta)
        _score(bikes_spec, partition, pinned, "restored")

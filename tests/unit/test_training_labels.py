"""Training uses labelled rows only: labels from the warehouse's ``labels`` table (current revision) win over the
partition's own target; rows with neither are left out and counted; too few labelled rows are refused.

The real bike data in a lake in ``tmp_path`` and the session's real SQLite warehouse (its migrations applied), under
a model name of this file's own.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pandas as pd
import pytest

from airloop.adapters.lake import Lake
from airloop.stages.ingest.keys import row_keys
from airloop.stages.train import record
from airloop.stages.train import steps as training
from airloop.stages.train.steps import TrainingProblem

STEP = timedelta(days=28)
FIRST = datetime(2012, 1, 28, tzinfo=UTC)
PARTS = 11
MODEL = "lbltrain"


def _key(i: int) -> str:
    return (FIRST + i * STEP).strftime("%Y-%m-%dT%H%M%SZ")


def _spec(bikes_spec, name: str = MODEL, **labels: object):
    from airloop.core.spec import Labels

    return bikes_spec.model_copy(update={"name": name, "labels": Labels.model_validate(labels)})


def _lake(tmp_path, demo_frame, spec, *, unlabelled_from: int | None = None, drop_target: bool = False) -> Lake:
    """Eleven 28-day validated partitions from 2012-01-28; from partition ``unlabelled_from`` on, no row has its
    label in the partition (``cnt`` null), as ingested before the labels were due; ``drop_target``: no ``cnt``."""
    lake = Lake(tmp_path / "lake")
    for i in range(PARTS):
        start, end = FIRST + i * STEP, FIRST + (i + 1) * STEP
        rows = demo_frame[(demo_frame.ts >= start.replace(tzinfo=None)) & (demo_frame.ts < end.replace(tzinfo=None))]
        rows = rows.reset_index(drop=True)
        if drop_target:
            rows = rows.drop(columns=["cnt"])
        elif unlabelled_from is not None and i >= unlabelled_from:
            rows = rows.assign(cnt=pd.Series([None] * len(rows), dtype="float64"))
        meta = {"interval_start": start.isoformat(), "interval_end": end.isoformat(), "suite_digests": {"s": "d"}}
        lake.write(spec.name, "validated", _key(i), rows, meta=meta)
    return lake


def _engine():
    from airloop.adapters.db import engine_for
    from airloop.adapters.warehouse import ensure_schema
    from airloop.core.settings import WAREHOUSE_CONN_ID

    engine = engine_for(WAREHOUSE_CONN_ID)
    ensure_schema(engine)
    return engine


def _write_labels(model: str, partition: str, rows: pd.DataFrame, labels: list[object], revision: int = 1) -> None:
    """Rows of warehouse table ``labels``, as the labels step writes them: keyed by partition and row key."""
    from airloop.adapters.warehouse import labels as table

    keys = row_keys(rows, ["ts"])
    now = datetime.now(UTC)
    with _engine().begin() as conn:
        conn.execute(
            table.insert(),
            [
                {
                    "model": model,
                    "partition": partition,
                    "row_key": k,
                    "ts": t.to_pydatetime().replace(tzinfo=UTC),
                    "label": str(v),
                    "revision": revision,
                    "arrived_at": now,
                }
                for k, t, v in zip(keys, rows["ts"], labels, strict=True)
            ],
        )


def _clear_labels(model: str) -> None:
    from airloop.adapters.warehouse import labels as table

    with _engine().begin() as conn:
        conn.execute(table.delete().where(table.c.model == model))


def _rows(lake: Lake, model: str, i: int) -> pd.DataFrame:
    return lake.read(model, "validated", _key(i))


def test_current_labels_are_the_highest_revision_of_the_asked_partitions(demo_frame):
    from airloop.adapters.warehouse import current_labels_of_partitions as current_labels

    model = "lblread"
    _clear_labels(model)
    rows = demo_frame.head(3)
    _write_labels(model, "p1", rows, [1, 2, 3])
    _write_labels(model, "p1", rows.head(1), [10], revision=2)  # a correction of the first row
    _write_labels(model, "p2", rows, [7, 8, 9])
    _write_labels("another", "p1", rows, [0, 0, 0])
    found = current_labels(_engine(), model, ["p1"])
    assert list(found.columns) == ["partition", "row_key", "label", "revision"]
    assert found.to_dict("records") == [
        {"partition": "p1", "row_key": k, "label": v, "revision": r}
        for k, v, r in sorted(zip(row_keys(rows, ["ts"]), ["10", "2", "3"], [2, 1, 1], strict=True))
    ]
    assert current_labels(_engine(), model, []).empty
    assert len(current_labels(_engine(), model, ["p1", "p2", "p3"])) == 6


def test_training_takes_table_labels_over_the_partitions_and_leaves_out_rows_without_one(
    tmp_path, demo_frame, bikes_spec
):
    spec = _spec(bikes_spec, after="2d")
    _clear_labels(MODEL)
    lake = _lake(tmp_path, demo_frame, spec, unlabelled_from=9)  # the last two intervals ingested before labels
    window = training.resolve_window(spec, lake)
    before = training.assemble(spec, lake, window)
    assert before.labels.from_table == 0 and before.labels.digest is None

    late = _rows(lake, MODEL, 9)  # interval 9's labels arrived; interval 10's did not
    truth = demo_frame.set_index("ts").loc[late["ts"], "cnt"].tolist()
    _write_labels(MODEL, _key(9), late, truth)
    early = _rows(lake, MODEL, 3).head(5)  # table labels that differ from the partition's own values
    _write_labels(MODEL, _key(3), early, [v + 1000 for v in early["cnt"]])
    _write_labels(MODEL, _key(3), early.head(1), [4242], revision=2)  # ... and a correction of one of them
    same = _rows(lake, MODEL, 4).head(3)  # table labels equal to the partition's: taken, replacing nothing
    _write_labels(MODEL, _key(4), same, same["cnt"].tolist())

    data = training.assemble(spec, lake, window)
    by_time = data.frame.set_index("ts")["cnt"]
    assert by_time.loc[late["ts"]].tolist() == [float(v) for v in truth]
    assert by_time.loc[early["ts"].iloc[0]] == 4242  # the highest revision wins
    assert by_time.loc[early["ts"].iloc[1:]].tolist() == [float(v + 1000) for v in early["cnt"].iloc[1:]]
    missing = len(_rows(lake, MODEL, 10))
    used = data.labels
    assert (used.from_table, used.corrected, used.overriding) == (len(late) + 5 + 3, 1, 5)
    assert used.unlabelled == missing and used.from_partitions == len(data.frame) - missing - len(late) - 5 - 3
    assert used.digest is not None and data.content_digest != before.content_digest

    train, holdout = training.split(spec, data)
    assert len(train) + len(holdout) == len(data.frame) - missing and not holdout["cnt"].isna().any()
    assert holdout["ts"].max() < (FIRST + 10 * STEP).replace(tzinfo=None)  # interval 10 waits for its labels

    metrics = record.run_metrics(_evaluation(), len(train), len(holdout), used)
    assert (metrics["unlabelled_rows"], metrics["labelled_from_table"]) == (missing, len(late) + 5 + 3)
    tags = record.run_tags(
        run=_run(), model=MODEL, reason="r", window=window, partitions=10, suites=[], spec_digest="s",
        git_commit="c", labels=used,
    )  # fmt: skip
    assert tags[record.LABELS_DIGEST_TAG] == used.digest
    lineage = record.lineage(
        MODEL, window, rows=len(data.frame), content_digest=data.content_digest, partitions=data.partitions,
        gaps=[], suites=[], labels=used,
    )  # fmt: skip
    assert lineage["labels"]["labels_digest"] == used.digest and lineage["labels"]["unlabelled_rows"] == missing

    _write_labels(MODEL, _key(3), early.head(1), [4343], revision=3)  # a later correction changes the digest
    assert training.assemble(spec, lake, window).labels.digest != used.digest


def test_too_few_labelled_rows_are_refused_naming_the_window_the_counts_and_what_to_do(
    tmp_path, demo_frame, bikes_spec
):
    spec = _spec(bikes_spec, name="lblfew", after="2d")
    _clear_labels(spec.name)
    lake = _lake(tmp_path, demo_frame, spec, unlabelled_from=1)  # labels only in the first interval
    window = training.resolve_window(spec, lake)
    data = training.assemble(spec, lake, window)
    with pytest.raises(TrainingProblem) as caught:
        training.split(spec, data)
    message = str(caught.value)
    labelled = len(_rows(lake, spec.name, 0))
    assert f"Only {labelled} labelled training rows in {window}" in message
    assert f"{len(data.frame) - labelled} of {len(data.frame)} rows of the window have no label yet" in message
    assert "lblfew_labels" in message and "labels.after" in message


def test_with_a_label_source_training_takes_every_label_from_the_table(tmp_path, demo_frame, bikes_spec):
    spec = _spec(bikes_spec, name="lblsource", source={"table": "bike_labels"})
    _clear_labels(spec.name)
    lake = _lake(tmp_path, demo_frame, spec, drop_target=True)  # the features source has no target column
    for i in range(PARTS - 1):
        rows = _rows(lake, spec.name, i)
        _write_labels(spec.name, _key(i), rows, demo_frame.set_index("ts").loc[rows["ts"], "cnt"].tolist())
    data = training.assemble(spec, lake, training.resolve_window(spec, lake))
    assert list(data.frame.columns) == [*spec.feature_names, "cnt", "ts"]
    assert data.labels.unlabelled == len(_rows(lake, spec.name, PARTS - 1))
    train, holdout = training.split(spec, data)
    expected = demo_frame.set_index("ts").loc[train["ts"], "cnt"].astype(float).tolist()
    assert train["cnt"].tolist() == expected and len(holdout) > 0


def _evaluation():
    from airloop.core.contracts import Evaluation

    return Evaluation(metrics={"rmse": 1.0}, slices={}, predictions=1, nan_predictions=0)


def _run():
    from airloop.core.contracts import RunInfo

    return RunInfo(dag_id="m_train", run_id="manual__1", try_number=1)


def test_a_warehouse_that_cannot_be_read_is_named_and_retried(tmp_path, monkeypatch):
    import json

    from airloop.core.errors import ServiceUnavailable
    from airloop.stages.train.labels import warehouse_reader

    unreachable = {"conn_type": "sqlite", "host": str(tmp_path / "no-such-folder" / "warehouse.db")}
    monkeypatch.setenv("AIRFLOW_CONN_AIRLOOP_WAREHOUSE", json.dumps(unreachable))
    with pytest.raises(ServiceUnavailable) as caught:
        warehouse_reader(MODEL)([_key(0)])
    assert f"Reading the labels of {MODEL} from the warehouse (airloop_warehouse" in str(caught.value)
    assert "check the connection" in str(caught.value)


@pytest.mark.parametrize(
    ("own", "texts", "expected"),
    [
        ([1, 0, 1], ["0", None, None], [0, 0, 1]),  # integer classes stay integers when every row is labelled
        ([1, None, None], ["0", "1", None], [0.0, 1.0, None]),  # a row still without a label: numbers, one null
        (["a", "b", None], [None, "c", "a"], ["a", "c", "a"]),  # text classes stay text
        ([True, False, None], ["False", None, "True"], [False, False, True]),  # booleans stay booleans
        ([None, None, None], ["True", "False", "True"], [True, False, True]),  # booleans as the labels step writes
    ],
    ids=["int", "int-unlabelled", "text", "bool", "bool-from-table"],
)
def test_a_classifiers_table_labels_take_the_type_of_its_partition_classes(bikes_spec, own, texts, expected):
    from airloop.core.spec import Target
    from airloop.stages.train.labels import join_labels

    spec = bikes_spec.model_copy(update={"target": Target(name="cnt", task="classification")})
    times = pd.Series(pd.date_range("2012-01-01", periods=3, freq="h"))
    frame = pd.DataFrame({"ts": times, "cnt": pd.Series(own)})
    found = [i for i, t in enumerate(texts) if t is not None]
    table = pd.DataFrame(
        {
            "partition": ["p"] * len(found),
            "row_key": [row_keys(frame, ["ts"])[i] for i in found],
            "label": [texts[i] for i in found],
            "revision": [1] * len(found),
        }
    )
    out, used = join_labels(spec, frame, pd.Series(["p"] * 3), table)
    values = [None if pd.isna(v) else v for v in out["cnt"].tolist()]
    assert values == expected and [type(v) for v in values] == [type(v) for v in expected]
    assert used.from_table == len(found) and used.unlabelled == expected.count(None)

"""The Postgres ``COPY`` sink and revision 0007 on a real Postgres (started here on 127.0.0.1 by
``tests/distributed/services.py``; only Postgres, no Airflow): ``make test-distributed`` runs it.

The rows written through ``COPY`` are the ones SQLAlchemy's generic insert writes (awkward text, nulls, floats to
the last bit, times before 1970), read back through the view ``predictions`` and ``served_predictions``;
re-scoring replaces one batch; old-layout rows (served and shadow) keep their versions through 0007.
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pandas as pd
import psycopg2
import psycopg2.errors
import pytest
import sqlalchemy as sa
from alembic.script import ScriptDirectory

from airloop.adapters import migrations, prediction_sink, warehouse
from tests.distributed.services import Services

pytestmark = [pytest.mark.distributed, pytest.mark.timeout(600)]

START = datetime(2012, 11, 3, tzinfo=UTC)
AWKWARD = ["plain", "tab\there", "new\nline", "back\\slash", "\\N", "cr\rx", 'it\'s "q" é', ""]


@pytest.fixture(scope="module")
def services() -> Iterator[Services]:
    found = Services(root=Path(tempfile.mkdtemp(prefix="airloop-pgsink-")))
    try:
        found.start_postgres(["warehouse", "old"])
        yield found
    finally:
        found.stop()


@pytest.fixture(scope="module")
def engine(services: Services) -> Iterator[sa.Engine]:
    eng = sa.create_engine(services.pg_url("warehouse"))
    warehouse.ensure_schema(eng)
    yield eng
    eng.dispose()


def _constants(partition: int, version: str) -> dict:
    start = START + timedelta(days=28 * partition)
    return {
        "model": "m",
        "partition": f"{start:%Y-%m-%dT%H%M%SZ}",
        "interval_start": start,
        "interval_end": start + timedelta(days=28),
        "model_version": version,
        "mlflow_run_id": f"run-{version}",
        "input_digest": "d" * 64,
        "dag_id": "m_score",
        "dag_run_id": f"manual__{partition}",
    }


def _classifier_rows(n: int) -> prediction_sink.ScoredRows:
    ts = (pd.Timestamp("1969-12-31 23:59:58.5") + pd.to_timedelta(np.arange(n) * 3_700_001, unit="us")).to_numpy()
    ts = np.asarray(ts, dtype="datetime64[ns]")
    p = np.random.default_rng(0).random(n)
    p[:3] = [5e-324, 1 / 3, 1.0]
    classes = [AWKWARD[i % len(AWKWARD)] for i in range(n)]
    texts = [None if i % 3 else f'{{"a\\tb": {v!r}}}' for i, v in enumerate(p.tolist())]
    keys = [f"{AWKWARD[i % len(AWKWARD)]}-{i}" for i in range(n)]
    return prediction_sink.ScoredRows(ts, keys, predicted_class=classes, probability=p, probabilities=texts)


def _part(rows: prediction_sink.ScoredRows, cut: slice) -> prediction_sink.ScoredRows:
    return prediction_sink.ScoredRows(
        *(None if getattr(rows, n) is None else getattr(rows, n)[cut] for n in prediction_sink.VARYING)
    )


def _served(engine: sa.Engine, partition: str) -> pd.DataFrame:
    with engine.connect() as conn:
        return warehouse.served_predictions(conn, "m", partition)


def test_copy_writes_what_sqlalchemys_insert_writes(engine: sa.Engine, monkeypatch) -> None:
    rows = _classifier_rows(500)
    fast, core = _constants(0, "1"), _constants(1, "1")
    with prediction_sink.replacing(engine, fast, 2) as (writes, sink):
        writes.submit(_part(rows, slice(0, 200)))
        writes.submit(_part(rows, slice(200, None)))
    assert isinstance(sink, prediction_sink.PostgresCopySink)
    monkeypatch.setattr(prediction_sink, "sink_for", prediction_sink.CoreSink)
    with prediction_sink.replacing(engine, core, 2) as (writes, sink):
        writes.submit(rows)
    assert isinstance(sink, prediction_sink.CoreSink)

    got, expected = _served(engine, fast["partition"]), _served(engine, core["partition"])
    assert len(got) == 500
    pd.testing.assert_frame_equal(got, expected)
    by_key = got.set_index("row_key")
    assert by_key.loc[rows.row_key, "predicted_class"].tolist() == rows.predicted_class  # escapes undone
    assert by_key.loc[rows.row_key, "probability"].tolist() == rows.probability.tolist()  # bit for bit
    assert [None if pd.isna(v) else v for v in by_key.loc[rows.row_key, "probabilities"]] == rows.probabilities
    assert by_key.loc[rows.row_key, "ts"].tolist() == pd.to_datetime(rows.ts).tz_localize("UTC").floor("us").tolist()
    with engine.connect() as conn:  # the view shows the same times as timestamptz
        view = conn.execute(
            sa.select(
                warehouse.predictions.c.row_key, warehouse.predictions.c.ts, warehouse.predictions.c.model_version
            ).where(warehouse.predictions.c.partition == fast["partition"])
        ).all()
    assert {r.row_key: r.ts for r in view} == dict(zip(got["row_key"], got["ts"].dt.to_pydatetime(), strict=True))
    assert {r.model_version for r in view} == {"1"}


def test_rescoring_replaces_one_batch_and_a_duplicate_key_is_a_row_key_conflict(engine: sa.Engine) -> None:
    first, other = _constants(5, "1"), _constants(6, "1")
    for constants in (first, other):
        with prediction_sink.replacing(engine, constants, 2) as (writes, _):
            writes.submit(_classifier_rows(30))
    with prediction_sink.replacing(engine, {**first, "model_version": "2"}, 2) as (writes, _):
        writes.submit(_classifier_rows(7))
    assert len(_served(engine, first["partition"])) == 7
    assert set(_served(engine, first["partition"])["model_version"]) == {"2"}
    assert len(_served(engine, other["partition"])) == 30
    with (
        pytest.raises(prediction_sink.RowKeyConflict),
        prediction_sink.replacing(engine, {**first, "model_version": "3"}, 2) as (writes, _),
    ):
        writes.submit(_classifier_rows(4))
        writes.submit(_classifier_rows(4))
    assert set(_served(engine, first["partition"])["model_version"]) == {"2"}  # rolled back


def test_0007_moves_old_layout_rows_on_postgres(services: Services, tmp_path: Path) -> None:
    folder = tmp_path / "migrations"
    shutil.copytree(migrations.FOLDER, folder, ignore=shutil.ignore_patterns("__pycache__", "__init__.py"))
    for path in (folder / "versions").glob("0007_*.py"):
        path.unlink()
    engine = sa.create_engine(services.pg_url("old"))
    migrations.upgrade(engine, ScriptDirectory(str(folder)))
    old = []
    for partition, version in ((0, "1"), (1, "2")):
        constants = _constants(partition, version)
        old += [
            {
                **constants,
                "ts": constants["interval_start"] + timedelta(hours=i, microseconds=7 * i),
                "row_key": f"k{i}",
                "prediction": i / 7,
            }
            for i in range(4)
        ]
    old.append({**old[0], "partition": "1969", "ts": datetime(1969, 12, 31, 23, 59, 59, 500_000, tzinfo=UTC)})
    table = sa.Table("predictions", sa.MetaData(), autoload_with=engine)
    shadowed = [{**row, "model_version": "3", "prediction": row["prediction"] + 100} for row in old[4:8]]
    with engine.begin() as conn:
        conn.execute(table.insert(), old)
        conn.execute(sa.Table("shadow_predictions", sa.MetaData(), autoload_with=conn).insert(), shadowed)

    assert migrations.upgrade(engine).after == migrations.head()

    with engine.connect() as conn:
        assert migrations.compare(conn, warehouse.metadata) == []
        # the old tables are now the views
        assert {"predictions", "shadow_predictions"} <= set(sa.inspect(conn).get_view_names())
        batches = conn.execute(
            sa.text("SELECT partition, model_version, rows FROM prediction_batches WHERE role = 'served'")
        ).all()
        view = conn.execute(sa.select(warehouse.predictions)).mappings().all()
        shadow_view = conn.execute(sa.select(warehouse.shadow_predictions)).mappings().all()
    expected = [(_constants(0, "1")["partition"], "1", 4), (_constants(1, "2")["partition"], "2", 4), ("1969", "1", 1)]
    assert sorted(batches) == sorted(expected)  # one batch per partition, with its version and row count
    got = {(r["partition"], r["row_key"]): r for r in view}
    assert len(got) == len(old)
    for row in old:
        new = got[(row["partition"], row["row_key"])]
        assert (new["model_version"], new["mlflow_run_id"], new["prediction"], new["ts"]) == (
            row["model_version"], row["mlflow_run_id"], row["prediction"], row["ts"]
        )  # fmt: skip
    got_shadow = sorted(
        (r["partition"], r["row_key"], r["model_version"], r["prediction"], r["ts"]) for r in shadow_view
    )
    assert got_shadow == sorted(
        (r["partition"], r["row_key"], r["model_version"], r["prediction"], r["ts"]) for r in shadowed
    )
    engine.dispose()


def test_binary_copy_of_fixed_width_rows_writes_what_sqlalchemys_insert_writes(engine: sa.Engine, monkeypatch) -> None:
    """Keys of one byte length (time keys, here with a non-ASCII one) take the fixed-width layout."""
    n = 300
    ts = np.asarray(pd.date_range("1969-12-31 23:00:00.000001", periods=n, freq="37s").to_numpy(), dtype="<M8[ns]")
    keys = [f"k{i:05d}" for i in range(n)]
    keys[7] = "kéé0"  # 6 bytes in UTF-8, as the others
    p = np.random.default_rng(1).random(n)
    p[:3] = [5e-324, 1 / 3, 1.7976931348623157e308]
    regression = prediction_sink.ScoredRows(ts, keys, prediction=p)
    classifier = prediction_sink.ScoredRows(ts, keys, predicted_class=["yes", "no!"] * (n // 2), probability=p)
    column_of = ("prediction", "probability")
    for index, rows in enumerate((regression, classifier)):
        columns, _ = prediction_sink.copy_binary(1, rows)
        assert "row_key" in columns[: columns.index(column_of[index]) + 1]  # the key laid out with the fixed fields
        fast, core = _constants(10 + 2 * index, "1"), _constants(11 + 2 * index, "1")
        with prediction_sink.replacing(engine, fast, 2) as (writes, sink):
            writes.submit(_part(rows, slice(0, 100)))
            writes.submit(_part(rows, slice(100, None)))
        assert isinstance(sink, prediction_sink.PostgresCopySink)
        with monkeypatch.context() as patched:
            patched.setattr(prediction_sink, "sink_for", prediction_sink.CoreSink)
            with prediction_sink.replacing(engine, core, 2) as (writes, _):
                writes.submit(rows)
        got = _served(engine, fast["partition"])
        pd.testing.assert_frame_equal(got, _served(engine, core["partition"]))
        assert len(got) == n and sorted(got["row_key"]) == sorted(keys)
        column = "prediction" if index == 0 else "probability"
        assert got.set_index("row_key").loc[keys, column].tolist() == p.tolist()  # bit for bit
    varying = prediction_sink.ScoredRows(ts[:2], ["a", "bb"], prediction=p[:2])
    assert prediction_sink.copy_binary(1, varying)[0][-1] == "row_key"  # widths differ: laid out after the others


def _regression_rows(n: int, offset: int = 0, version: float = 0.0) -> prediction_sink.ScoredRows:
    """Rows keyed by integers of varying width (the variable-width layout), predictions ``version + i / 7``."""
    ts = np.asarray(pd.date_range("2030-01-01", periods=n, freq="min").to_numpy(), dtype="datetime64[ns]")
    keys = [str(offset + i) for i in range(n)]
    return prediction_sink.ScoredRows(ts, keys, prediction=version + np.arange(offset, offset + n) / 7)


def _heap_order(engine: sa.Engine, partition: str) -> list[tuple[str, float]]:
    """The partition's rows in the order the table stores them (COPY appends to a new batch's pages in order)."""
    with engine.connect() as conn:
        return [
            (r.row_key, r.prediction)
            for r in conn.execute(
                sa.text(
                    "SELECT r.row_key, r.prediction FROM prediction_rows r JOIN prediction_batches b "
                    "ON b.id = r.batch_id WHERE b.model = 'm' AND b.partition = :p AND b.role = 'served' "
                    "ORDER BY r.ctid"
                ),
                {"p": partition},
            )
        ]


def test_chunks_through_the_background_thread_write_every_row_once_in_order(engine: sa.Engine) -> None:
    constants = _constants(20, "1")
    sizes = [1, 999, 37, 1000, 0, 250, 3]
    with prediction_sink.replacing(engine, constants, 2) as (writes, sink):
        offset = 0
        for size in sizes:
            writes.submit(_regression_rows(size, offset))
            offset += size
    assert sink.rows == sum(sizes)
    stored = _heap_order(engine, constants["partition"])
    assert stored == [(str(i), i / 7) for i in range(sum(sizes))]  # each row once, chunk after chunk


def test_a_failure_in_the_middle_leaves_the_partition_as_it_was(engine: sa.Engine) -> None:
    constants = _constants(21, "1")
    with prediction_sink.replacing(engine, constants, 2) as (writes, _):
        writes.submit(_regression_rows(500))
    before = _heap_order(engine, constants["partition"])

    # the server refuses the second chunk (text cannot hold a NUL character), after the first was copied
    bad = _regression_rows(10, 5_000, version=100)
    bad = prediction_sink.ScoredRows(bad.ts, [*bad.row_key[:9], "nul\x00key"], prediction=bad.prediction)
    with (
        pytest.raises(psycopg2.DataError, match="0x00"),
        prediction_sink.replacing(engine, {**constants, "model_version": "2"}, 2) as (writes, _),
    ):
        writes.submit(_regression_rows(300, 0, version=100))
        writes.submit(bad)
        writes.submit(_regression_rows(300, 300, version=100))
        writes.finish()
    # the caller fails after its chunks were written (e.g. the next chunk's predictions are refused)
    with (
        pytest.raises(RuntimeError, match="caller"),
        prediction_sink.replacing(engine, {**constants, "model_version": "3"}, 2) as (writes, _),
    ):
        writes.submit(_regression_rows(700, 0, version=200))
        writes.finish()
        raise RuntimeError("caller failed mid-partition")
    assert _heap_order(engine, constants["partition"]) == before
    assert set(_served(engine, constants["partition"])["model_version"]) == {"1"}


def test_a_null_row_key_is_not_reported_as_two_rows_with_one_key(engine: sa.Engine) -> None:
    rows = _regression_rows(3)
    rows = prediction_sink.ScoredRows(rows.ts, ["a", None, "c"], prediction=rows.prediction)  # type: ignore[list-item]
    with (
        pytest.raises(psycopg2.errors.NotNullViolation, match="row_key"),
        prediction_sink.replacing(engine, _constants(22, "1"), 2) as (writes, _),
    ):
        writes.submit(rows)
    assert _served(engine, _constants(22, "1")["partition"]).empty

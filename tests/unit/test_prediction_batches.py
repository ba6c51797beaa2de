"""Predictions stored as one provenance row per partition (``prediction_batches``) and slim rows
(``prediction_rows``), joined back by the view ``predictions`` and by ``served_predictions``; re-scoring replaces
one batch; shadow rows are batches of role ``shadow`` (the view ``shadow_predictions``), never served; revision
0007 moves old-layout rows (served and shadow) without losing any row's version, and its downgrade restores them."""

from __future__ import annotations

import importlib.util
import shutil
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import sqlalchemy as sa
from alembic.migration import MigrationContext
from alembic.operations import Operations
from alembic.script import ScriptDirectory

from airloop.adapters import migrations, prediction_sink, shadow, warehouse

START = datetime(2012, 11, 3, tzinfo=UTC)


def _constants(partition: int, version: str, run: str = "run") -> dict:
    start = START + timedelta(days=28 * partition)
    return {
        "model": "m",
        "partition": f"{start:%Y-%m-%dT%H%M%SZ}",
        "interval_start": start,
        "interval_end": start + timedelta(days=28),
        "model_version": version,
        "mlflow_run_id": f"mlflow-run-of-v{version}",
        "input_digest": f"{partition}" * 64,
        "dag_id": "m_score",
        "dag_run_id": run,
    }


def _chunk(constants: dict, rows: int, offset: float = 0.0) -> prediction_sink.ScoredRows:
    ts = pd.date_range(constants["interval_start"].replace(tzinfo=None), periods=rows, freq="h").to_numpy()
    keys = [f"k{i}" for i in range(rows)]
    return prediction_sink.ScoredRows(ts, keys, prediction=np.arange(rows, dtype=float) / 3 + offset)


def _score(engine: sa.Engine, constants: dict, rows: int, offset: float = 0.0) -> None:
    with prediction_sink.replacing(engine, constants, 2) as (writes, _):
        half = rows // 2
        chunk = _chunk(constants, rows, offset)
        writes.submit(
            prediction_sink.ScoredRows(chunk.ts[:half], chunk.row_key[:half], prediction=chunk.prediction[:half])
        )
        writes.submit(
            prediction_sink.ScoredRows(chunk.ts[half:], chunk.row_key[half:], prediction=chunk.prediction[half:])
        )


@pytest.fixture
def engine(tmp_path: Path):
    eng = sa.create_engine(f"sqlite:///{tmp_path / 'warehouse.db'}")
    warehouse.ensure_schema(eng)
    yield eng
    eng.dispose()


def test_provenance_is_stored_once_per_partition_and_joined_back_on_every_row(engine: sa.Engine) -> None:
    first, second = _constants(0, "3", "run-a"), _constants(1, "4", "run-b")
    _score(engine, first, 50)
    _score(engine, second, 30)
    with engine.connect() as conn:
        batches = conn.execute(sa.select(warehouse.prediction_batches).order_by("id")).mappings().all()
        row_columns = {c["name"] for c in sa.inspect(conn).get_columns("prediction_rows")}
        view = conn.execute(sa.select(warehouse.predictions).order_by("partition", "ts")).mappings().all()
        served = warehouse.served_predictions(conn, "m", second["partition"])
    # once per partition: one batch row each, and nothing of the provenance on the rows
    assert [(b["partition"], b["model_version"], b["rows"], b["role"]) for b in batches] == [
        (first["partition"], "3", 50, "served"),
        (second["partition"], "4", 30, "served"),
    ]
    assert row_columns == {"batch_id", "ts", "row_key", "prediction", "predicted_class", "probability", "probabilities"}
    # joined back: every row with its partition's version, run, digest, DAG run and interval
    assert len(view) == 80
    for row in view:
        constants = first if row["partition"] == first["partition"] else second
        assert {k: row[k] for k in ("model_version", "mlflow_run_id", "input_digest", "dag_id", "dag_run_id")} == {
            k: constants[k] for k in ("model_version", "mlflow_run_id", "input_digest", "dag_id", "dag_run_id")
        }
        assert row["interval_start"].replace(tzinfo=UTC) == constants["interval_start"]
    assert [r["ts"] for r in view[:2]] == [datetime(2012, 11, 3, 0), datetime(2012, 11, 3, 1)]
    assert list(served.columns) == [
        "row_key", "ts", "model_version", "prediction", "predicted_class", "probability", "probabilities"
    ]  # fmt: skip
    assert len(served) == 30 and set(served["model_version"]) == {"4"}
    assert served["ts"].iloc[0] == pd.Timestamp(second["interval_start"])
    assert served["prediction"].tolist() == (np.arange(30) / 3).tolist()
    with engine.connect() as conn:
        assert warehouse.served_predictions(conn, "m", "never-scored").empty


def test_rescoring_an_interval_replaces_only_its_rows(engine: sa.Engine) -> None:
    first, second = _constants(0, "3"), _constants(1, "3")
    _score(engine, first, 40)
    _score(engine, second, 20)
    with engine.connect() as conn:
        other_before = conn.execute(
            sa.select(warehouse.predictions).where(warehouse.predictions.c.partition == second["partition"])
        ).all()
    _score(engine, {**first, "model_version": "5", "dag_run_id": "again"}, 10, offset=100.0)
    with engine.connect() as conn:
        batches = conn.execute(
            sa.select(warehouse.prediction_batches.c.partition, warehouse.prediction_batches.c.model_version)
        ).all()
        rescored = warehouse.served_predictions(conn, "m", first["partition"])
        other_after = conn.execute(
            sa.select(warehouse.predictions).where(warehouse.predictions.c.partition == second["partition"])
        ).all()
        total = conn.execute(sa.select(sa.func.count()).select_from(warehouse.prediction_rows)).scalar_one()
    assert sorted(batches) == sorted([(first["partition"], "5"), (second["partition"], "3")])
    assert len(rescored) == 10 and set(rescored["model_version"]) == {"5"}
    assert rescored["prediction"].tolist() == (np.arange(10) / 3 + 100).tolist()
    assert other_after == other_before and len(other_after) == 20  # the other interval untouched
    assert total == 30  # the old batch's 40 rows are gone


def test_a_failed_rescoring_keeps_the_old_batch(engine: sa.Engine) -> None:
    first = _constants(0, "3")
    _score(engine, first, 12)
    chunk = _chunk(first, 4)
    with (
        pytest.raises(prediction_sink.RowKeyConflict, match="same row key"),
        prediction_sink.replacing(engine, {**first, "model_version": "9"}, 2) as (writes, _),
    ):
        writes.submit(chunk)
        writes.submit(chunk)  # the same keys again
    with engine.connect() as conn:
        served = warehouse.served_predictions(conn, "m", first["partition"])
    assert len(served) == 12 and set(served["model_version"]) == {"3"}


def test_a_shadow_role_writes_its_own_table_through_the_same_sink(engine: sa.Engine) -> None:
    shadow = sa.Table("shadow_rows_test", sa.MetaData(), *[c.copy() for c in warehouse.prediction_rows.columns])
    shadow.create(engine)
    first = _constants(0, "3")
    _score(engine, first, 8)
    with prediction_sink.replacing(engine, {**first, "model_version": "4"}, 2, rows_table=shadow, role="shadow") as (
        writes,
        sink,
    ):
        writes.submit(_chunk(first, 5))
    assert isinstance(sink, prediction_sink.SQLiteSink)
    with engine.connect() as conn:
        roles = conn.execute(sa.select(warehouse.prediction_batches.c.role, warehouse.prediction_batches.c.rows)).all()
        assert conn.execute(sa.select(sa.func.count()).select_from(shadow)).scalar_one() == 5
        assert len(warehouse.served_predictions(conn, "m", first["partition"])) == 8  # served rows untouched
    assert sorted(roles) == [("served", 8), ("shadow", 5)]


def test_shadow_rows_are_batches_of_role_shadow_and_never_read_as_served(engine: sa.Engine) -> None:
    first = _constants(0, "3")
    _score(engine, first, 8)
    challenger = {**first, "model_version": "4", "mlflow_run_id": "mlflow-run-of-v4"}
    with prediction_sink.replacing(engine, challenger, 2, role=warehouse.SHADOW) as (writes, _):
        writes.submit(_chunk(first, 5, offset=100.0))
    with prediction_sink.replacing(engine, challenger, 2, role=warehouse.SHADOW) as (writes, _):
        writes.submit(_chunk(first, 6, offset=200.0))  # re-shadowing replaces the shadow batch only
    with engine.connect() as conn:
        served = conn.execute(sa.select(warehouse.predictions)).mappings().all()
        shadowed = conn.execute(sa.select(warehouse.shadow_predictions)).mappings().all()
        b = warehouse.prediction_batches.c
        roles = conn.execute(sa.select(b.role, b.model_version, b.rows).order_by(b.role)).all()
    assert roles == [("served", "3", 8), ("shadow", "4", 6)]
    assert len(served) == 8 and {r["model_version"] for r in served} == {"3"}
    assert all(r["prediction"] < 100 for r in served)  # no shadow row reads as served
    assert len(shadowed) == 6 and {r["model_version"] for r in shadowed} == {"4"}
    assert sorted(r["prediction"] for r in shadowed) == [200 + i / 3 for i in range(6)]
    assert [r["row_key"] for r in shadow.shadow_rows(engine, "m")] == sorted(f"k{i}" for i in range(6))


def _before_0007(tmp_path: Path) -> ScriptDirectory:
    """The revisions without 0007 (whatever precedes it)."""
    folder = tmp_path / "migrations"
    shutil.copytree(migrations.FOLDER, folder, ignore=shutil.ignore_patterns("__pycache__", "__init__.py"))
    for path in (folder / "versions").glob("0007_*.py"):
        path.unlink()
    return ScriptDirectory(str(folder))


def test_0007_moves_old_layout_rows_keeping_every_rows_version(tmp_path: Path) -> None:
    engine = sa.create_engine(f"sqlite:///{tmp_path / 'old.db'}")
    migrations.upgrade(engine, _before_0007(tmp_path))
    old = []
    for partition, version in ((0, "1"), (1, "2"), (2, "2")):
        constants = _constants(partition, version, f"run-{partition}")
        for i in range(5):
            old.append(
                {
                    **constants,
                    "ts": constants["interval_start"] + timedelta(hours=i, microseconds=250_000 * (i % 2)),
                    "row_key": f"k{i}",
                    "prediction": i / 7 if partition != 2 else None,
                    "predicted_class": "yes" if partition == 2 else None,
                    "probability": 0.25 * i if partition == 2 else None,
                    "probabilities": None,
                }
            )
    before_1970 = {**old[0], "partition": "1969", "ts": datetime(1969, 12, 31, 23, 59, 59, 500_000, tzinfo=UTC)}
    old.append(before_1970)
    table = sa.Table("predictions", sa.MetaData(), autoload_with=engine)  # the old table, as it is at 0004..0006
    with engine.begin() as conn:
        conn.execute(table.insert(), old)

    done = migrations.upgrade(engine)

    assert done.after == migrations.head()
    with engine.connect() as conn:
        assert migrations.compare(conn, warehouse.metadata) == []
        batches = conn.execute(sa.select(sa.func.count()).select_from(warehouse.prediction_batches)).scalar_one()
        view = conn.execute(sa.select(warehouse.predictions)).mappings().all()
        served = warehouse.served_predictions(conn, "m", _constants(1, "2")["partition"])
    assert batches == 4  # one per partition
    got = {(r["partition"], r["row_key"]): r for r in view}
    assert len(got) == len(old)
    for row in old:
        new = got[(row["partition"], row["row_key"])]
        for column in (
            "model_version",
            "mlflow_run_id",
            "input_digest",
            "dag_run_id",
            "prediction",
            "predicted_class",
            "probability",
        ):
            assert new[column] == row[column], column
        assert new["ts"].replace(tzinfo=UTC) == row["ts"]
    assert set(served["model_version"]) == {"2"} and len(served) == 5
    engine.dispose()


def test_0007_refuses_a_partition_holding_two_versions(tmp_path: Path) -> None:
    engine = sa.create_engine(f"sqlite:///{tmp_path / 'old.db'}")
    migrations.upgrade(engine, _before_0007(tmp_path))
    constants = _constants(0, "1")
    table = sa.Table("predictions", sa.MetaData(), autoload_with=engine)
    rows = [{**constants, "ts": START, "row_key": "a", "prediction": 1.0}]
    rows.append({**rows[0], "row_key": "b", "model_version": "2"})
    with engine.begin() as conn:
        conn.execute(table.insert(), rows)
    with pytest.raises(RuntimeError, match="more than one model version"):
        migrations.upgrade(engine)
    with engine.connect() as conn:  # nothing changed
        assert conn.execute(sa.text("SELECT count(*) FROM predictions")).scalar_one() == 2
        assert "prediction_rows" not in sa.inspect(conn).get_table_names()
    engine.dispose()


def _old_rows(partitions: tuple[tuple[int, str], ...], offset: float) -> list[dict]:
    rows = []
    for partition, version in partitions:
        constants = _constants(partition, version, f"run-{partition}")
        for i in range(3):
            ts = constants["interval_start"] + timedelta(hours=i, microseconds=250_000 * (i % 2))
            rows.append({**constants, "ts": ts, "row_key": f"k{i}", "prediction": offset + i / 7})
    return rows


def _run_0007_downgrade(engine: sa.Engine) -> None:
    path = next((migrations.FOLDER / "versions").glob("0007_*.py"))
    found = importlib.util.spec_from_file_location("revision_0007", path)
    assert found is not None and found.loader is not None
    module = importlib.util.module_from_spec(found)
    found.loader.exec_module(module)
    with engine.begin() as conn, Operations.context(MigrationContext.configure(conn)):
        module.downgrade()


def test_0007_moves_shadow_predictions_into_shadow_batches_and_back(tmp_path: Path) -> None:
    engine = sa.create_engine(f"sqlite:///{tmp_path / 'old.db'}")
    migrations.upgrade(engine, _before_0007(tmp_path))
    served, shadowed = _old_rows(((0, "3"), (1, "3")), 0.0), _old_rows(((1, "4"),), 100.0)
    with engine.begin() as conn:  # the old tables, as they are at 0005..0006
        conn.execute(sa.Table("predictions", sa.MetaData(), autoload_with=conn).insert(), served)
        conn.execute(sa.Table("shadow_predictions", sa.MetaData(), autoload_with=conn).insert(), shadowed)

    migrations.upgrade(engine)

    def read(name: str) -> list[tuple]:
        with engine.connect() as conn:
            table = sa.Table(name, sa.MetaData(), autoload_with=conn)
            query = sa.select(table.c.partition, table.c.row_key, table.c.model_version, table.c.prediction)
            return sorted(tuple(r) for r in conn.execute(query))

    def expected(rows: list[dict]) -> list[tuple]:
        return sorted((r["partition"], r["row_key"], r["model_version"], r["prediction"]) for r in rows)

    with engine.connect() as conn:
        assert migrations.compare(conn, warehouse.metadata) == []
        assert set(sa.inspect(conn).get_view_names()) >= {"predictions", "shadow_predictions"}
        b = warehouse.prediction_batches.c
        roles = sorted(conn.execute(sa.select(b.role, b.partition, b.rows)).all())
    partitions = [("served", served[0]["partition"]), ("served", served[3]["partition"])]
    assert roles == [(role, p, 3) for role, p in [*partitions, ("shadow", shadowed[0]["partition"])]]
    assert read("predictions") == expected(served) and read("shadow_predictions") == expected(shadowed)
    assert {r["ts"] for r in shadow.shadow_rows(engine, "m")} == {r["ts"].replace(tzinfo=None) for r in shadowed}

    _run_0007_downgrade(engine)

    with engine.connect() as conn:
        tables = set(sa.inspect(conn).get_table_names())
    assert {"predictions", "shadow_predictions"} <= tables and "prediction_rows" not in tables
    assert read("predictions") == expected(served) and read("shadow_predictions") == expected(shadowed)
    engine.dispose()

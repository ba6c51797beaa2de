"""The warehouse's migrations on real SQLite files: fresh, repeated, adopted, concurrent, and the recipe's draft.

The schema of the code before migrations is the baseline revision's (``tests/legacy_warehouse.py`` writes it with
sample rows).
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import threading
from pathlib import Path

import pytest
import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory

from airloop.adapters import migrations, warehouse
from tests import legacy_warehouse as legacy

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def engine(tmp_path: Path):
    eng = sa.create_engine(f"sqlite:///{tmp_path / 'warehouse.db'}")
    yield eng
    eng.dispose()


def _versions(engine: sa.Engine, table: str = migrations.VERSION_TABLE) -> list[str]:
    with engine.connect() as conn:
        return list(conn.execute(sa.text(f"SELECT version_num FROM {table}")).scalars())


def _ledger_is_append_only(engine: sa.Engine) -> bool:
    """Updates and deletes of the ledger abort (a row is added first: a trigger fires per row)."""
    with engine.begin() as conn:
        if not conn.execute(sa.select(sa.func.count()).select_from(warehouse.promotion_ledger)).scalar():
            conn.execute(warehouse.promotion_ledger.insert(), legacy.sample_rows()["promotion_ledger"])
    for statement in ("UPDATE promotion_ledger SET reason = 'x'", "DELETE FROM promotion_ledger"):
        try:
            with engine.begin() as conn:
                conn.execute(sa.text(statement))
        except sa.exc.DatabaseError as exc:
            assert "append-only" in str(exc)
        else:
            return False
    return True


def test_the_revisions_have_one_head_and_their_own_version_table() -> None:
    assert migrations.script_directory().get_heads() == [migrations.head()]
    assert migrations.VERSION_TABLE != "alembic_version"  # Airflow's and MLflow's
    assert (migrations.FOLDER / "script.py.mako").is_file()


def test_a_fresh_warehouse_gets_the_whole_schema(engine: sa.Engine) -> None:
    done = migrations.upgrade(engine)
    assert (done.before, done.after, done.adopted) == (None, migrations.head(), False)
    assert _versions(engine) == [migrations.head()]
    with engine.connect() as conn:
        # alembic's own comparison, with types: a column added to the MetaData without a revision fails here
        context = MigrationContext.configure(conn, opts={"version_table": migrations.VERSION_TABLE})
        assert compare_metadata(context, warehouse.metadata) == []
    assert set(sa.inspect(engine).get_table_names()) == {*warehouse.metadata.tables, migrations.VERSION_TABLE}
    assert _ledger_is_append_only(engine)


def test_the_comparison_names_a_column_without_a_revision(engine: sa.Engine) -> None:
    migrations.upgrade(engine)
    ahead = sa.MetaData()
    for table in warehouse.metadata.sorted_tables:
        table.to_metadata(ahead)
    ahead.tables["prediction_rows"].append_column(sa.Column("proba", sa.JSON))
    with engine.connect() as conn:
        assert migrations.compare(conn, ahead) == ["column prediction_rows.proba is missing"]


def test_upgrading_twice_changes_nothing(engine: sa.Engine) -> None:
    migrations.upgrade(engine)
    legacy_rows = legacy.sample_rows()
    keyed = [{**r, "row_key": r["ts"].strftime("%Y-%m-%dT%H:%M:%SZ")} for r in legacy_rows["predictions"]]
    with engine.begin() as conn:
        warehouse.insert_predictions(conn, keyed)
    before = legacy.rows(engine)
    again = migrations.upgrade(engine)
    assert (again.before, again.after, again.changed) == (migrations.head(), migrations.head(), False)
    assert legacy.rows(engine) == before and len(before["predictions"]) == 2
    assert _versions(engine) == [migrations.head()]


@pytest.mark.timeout(60)
def test_a_warehouse_at_head_is_only_read(tmp_path: Path) -> None:
    """No write lock is taken: a task upgrading while another holds SQLite's write lock does not wait for it."""
    import sqlite3
    import time

    db = tmp_path / "busy.db"
    migrations.upgrade(sa.create_engine(f"sqlite:///{db}"))
    writer = sqlite3.connect(db, isolation_level=None)
    writer.execute("BEGIN IMMEDIATE")  # another process in a long write transaction
    try:
        engine = sa.create_engine(f"sqlite:///{db}", connect_args={"timeout": 1})
        started = time.monotonic()
        assert migrations.upgrade(engine).changed is False
        assert time.monotonic() - started < 1
        engine.dispose()
    finally:
        writer.execute("ROLLBACK")
        writer.close()


def test_a_warehouse_made_before_migrations_is_adopted_with_its_rows(engine: sa.Engine) -> None:
    legacy.write(engine)
    before = legacy.rows(engine)
    assert {name: len(r) for name, r in before.items()} == {name: 2 for name in legacy.metadata.tables}

    warehouse.ensure_schema(engine)

    assert warehouse.current_revision(engine) == migrations.head()
    assert legacy.rows(engine) == before
    with engine.connect() as conn:
        assert migrations.compare(conn, warehouse.metadata) == []
    assert _ledger_is_append_only(engine)
    assert warehouse.drift_history(engine, "m")[0]["window_end"].day == 30  # the readers still read them


def test_adoption_reports_what_it_did_and_creates_tables_older_code_lacked(engine: sa.Engine) -> None:
    legacy.write(engine, tables=["validation_results", "predictions"])
    done = migrations.upgrade(engine)
    assert (done.before, done.after, done.adopted) == (None, migrations.head(), True)
    assert set(sa.inspect(engine).get_table_names()) == {*warehouse.metadata.tables, migrations.VERSION_TABLE}
    assert len(legacy.rows(engine)["predictions"]) == 2
    assert _ledger_is_append_only(engine)  # created now, with its triggers


def test_adoption_refuses_tables_that_differ_and_changes_nothing(engine: sa.Engine) -> None:
    with engine.begin() as conn:
        conn.exec_driver_sql("CREATE TABLE predictions (model VARCHAR(64) NOT NULL, prediction TEXT)")
        conn.exec_driver_sql("INSERT INTO predictions VALUES ('m', 'x')")
    with pytest.raises(migrations.SchemaMismatch) as caught:
        migrations.upgrade(engine)
    message = str(caught.value)
    assert "differ from the baseline revision 0001" in message
    assert "column predictions.dag_id is missing" in message
    assert "predictions.prediction: type is TEXT(), expected Float()" in message
    assert "airloop warehouse upgrade" in message
    assert set(sa.inspect(engine).get_table_names()) == {"predictions"}  # rolled back: no version table
    with engine.connect() as conn:
        assert conn.exec_driver_sql("SELECT * FROM predictions").all() == [("m", "x")]


def test_a_warehouse_from_a_newer_airloop_is_refused(engine: sa.Engine) -> None:
    migrations.upgrade(engine)
    with engine.begin() as conn:
        conn.exec_driver_sql(f"UPDATE {migrations.VERSION_TABLE} SET version_num = '9999'")
    with pytest.raises(migrations.SchemaMismatch, match=r"revision '9999'.*a newer airloop upgraded it"):
        migrations.upgrade(engine)
    assert _versions(engine) == ["9999"]


def test_another_applications_alembic_version_is_left_alone(engine: sa.Engine) -> None:
    with engine.begin() as conn:
        conn.exec_driver_sql("CREATE TABLE alembic_version (version_num VARCHAR(32) NOT NULL PRIMARY KEY)")
        conn.exec_driver_sql("INSERT INTO alembic_version VALUES ('29ce7909c52b')")
    assert migrations.upgrade(engine).after == migrations.head()
    assert _versions(engine, "alembic_version") == ["29ce7909c52b"]


def test_threads_upgrading_a_fresh_file_at_once_all_succeed(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'shared.db'}"
    start = threading.Barrier(4)
    results, errors = [], []

    def run() -> None:
        engine = sa.create_engine(url)  # an engine (and a connection) of its own, like a separate task
        try:
            start.wait()
            results.append(migrations.upgrade(engine))
        except Exception as exc:  # collected: the assertion below shows it
            errors.append(exc)
        finally:
            engine.dispose()

    threads = [threading.Thread(target=run) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert errors == []
    assert sorted(r.before or "" for r in results) == ["", *[migrations.head()] * 3]  # one did it, three found it
    engine = sa.create_engine(url)
    assert _versions(engine) == [migrations.head()]
    engine.dispose()


def test_processes_upgrading_a_fresh_file_at_once_both_succeed(tmp_path: Path) -> None:
    db = tmp_path / "shared.db"
    code = (
        "import sys, json, sqlalchemy as sa\n"
        "from airloop.adapters import migrations\n"
        "print('ready', flush=True)\n"
        "sys.stdin.read()\n"  # both wait here, imports done, until the test releases them together
        f"done = migrations.upgrade(sa.create_engine('sqlite:///{db}'))\n"
        "print(json.dumps([done.before, done.after]))\n"
    )
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", code], cwd=ROOT, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
        )
        for _ in range(2)
    ]
    for p in procs:
        assert p.stdout is not None and p.stdout.readline() == "ready\n"
    for p in procs:
        assert p.stdin is not None
        p.stdin.close()
    outs = [p.stdout.read() for p in procs if p.stdout is not None]
    assert [p.wait(timeout=120) for p in procs] == [0, 0], outs
    results = sorted((json.loads(out) for out in outs), key=lambda r: r[0] or "")
    assert results == [[None, migrations.head()], [migrations.head(), migrations.head()]]


def test_ensure_schema_upgrades_once_per_process_and_database(engine: sa.Engine) -> None:
    warehouse.ensure_schema(engine)
    assert warehouse.current_revision(engine) == migrations.head()
    with engine.begin() as conn:
        conn.exec_driver_sql(f"DROP TABLE {migrations.VERSION_TABLE}")
    warehouse.metadata.drop_all(engine)
    warehouse.ensure_schema(engine)  # cached: no second look at the database
    assert warehouse.current_revision(engine) is None
    assert warehouse.upgrade(engine).after == migrations.head()  # an explicit upgrade runs again


def test_draft_revision_writes_a_revision_that_reaches_the_metadata(tmp_path: Path) -> None:
    folder = tmp_path / "migrations"
    shutil.copytree(migrations.FOLDER, folder, ignore=shutil.ignore_patterns("__pycache__", "__init__.py"))
    with pytest.raises(ValueError, match="nothing to migrate"):
        migrations.draft_revision("nothing", warehouse.metadata, folder)
    with pytest.raises(ValueError, match="needs words"):
        migrations.draft_revision(" -- ", warehouse.metadata, folder)
    ahead = sa.MetaData()
    for table in warehouse.metadata.sorted_tables:
        table.to_metadata(ahead)
    ahead.tables["prediction_rows"].append_column(sa.Column("proba", sa.JSON, comment="class probabilities"))

    path = migrations.draft_revision("Add prediction_rows.proba", ahead, folder)

    head = migrations.head()
    assert path == folder / "versions" / f"{int(head) + 1:04d}_add_prediction_rows_proba.py"
    text = path.read_text()
    assert f"down_revision: str | None = '{head}'" in text and "batch_op.add_column(sa.Column('proba'" in text
    engine = sa.create_engine(f"sqlite:///{tmp_path / 'w.db'}")
    legacy.write(engine)
    done = migrations.upgrade(engine, ScriptDirectory(str(folder)))
    assert (done.before, done.after, done.adopted) == (None, f"{int(head) + 1:04d}", True)
    with engine.connect() as conn:
        assert migrations.compare(conn, ahead) == []
        assert conn.exec_driver_sql("SELECT count(*) FROM prediction_rows WHERE proba IS NULL").scalar() == 2
    engine.dispose()


def test_the_cli_upgrades_and_reports_the_revision(tmp_path: Path, monkeypatch, capsys) -> None:
    from airloop.ops.cli import main

    db = tmp_path / "cli.db"
    monkeypatch.setenv("AIRFLOW_CONN_AIRLOOP_WAREHOUSE", json.dumps({"conn_type": "sqlite", "host": str(db)}))
    head = migrations.head()
    assert main(["warehouse", "current"]) == 1
    captured = capsys.readouterr()
    assert f"cli.db: revision none, head {head}." in captured.out and "airloop warehouse upgrade" in captured.err
    assert main(["warehouse", "upgrade"]) == 0
    assert f"cli.db: upgraded from nothing to {head} (head)." in capsys.readouterr().out
    assert main(["warehouse", "upgrade"]) == 0
    assert f"cli.db: at {head} (head)." in capsys.readouterr().out
    assert main(["warehouse", "current"]) == 0
    assert f"revision {head}, head {head}." in capsys.readouterr().out
    assert main(["warehouse", "revision", "add nothing"]) == 2  # the code's tables match the newest revision
    assert "there is nothing to migrate" in capsys.readouterr().err


def test_the_cli_names_a_mismatch(tmp_path: Path, monkeypatch, capsys) -> None:
    from airloop.ops.cli import main

    db = tmp_path / "other.db"
    with sa.create_engine(f"sqlite:///{db}").begin() as conn:
        conn.exec_driver_sql("CREATE TABLE promotion_locks (model TEXT PRIMARY KEY)")
    monkeypatch.setenv("AIRFLOW_CONN_AIRLOOP_WAREHOUSE", json.dumps({"conn_type": "sqlite", "host": str(db)}))
    assert main(["warehouse", "upgrade"]) == 1
    err = capsys.readouterr().err
    assert "airloop warehouse failed:" in err and "column promotion_locks.holder is missing" in err


def test_the_compose_stack_upgrades_the_warehouse_before_the_workers() -> None:
    import yaml

    services = yaml.safe_load((ROOT / "docker-compose.yaml").read_text())["services"]
    assert "airloop warehouse upgrade" in "\n".join(services["airflow-init"]["command"])
    for worker in ("airflow-worker", "airflow-scheduler"):
        assert services[worker]["depends_on"]["airflow-init"]["condition"] == "service_completed_successfully"


def test_predictions_at_0001_keep_their_rows_keyed_by_their_time(engine: sa.Engine) -> None:
    """0002: a warehouse with predictions at 0001 keeps them, each keyed by its time (as scoring keys it now)."""
    from datetime import UTC, datetime

    import pandas as pd

    from airloop.stages.ingest.keys import row_keys

    legacy.write(engine)
    fraction = {**legacy.sample_rows()["predictions"][0], "ts": datetime(2024, 3, 1, 5, 0, 0, 250000, tzinfo=UTC)}
    with engine.begin() as conn:
        conn.execute(legacy.predictions.insert(), [fraction])
    before = legacy.rows(engine)["predictions"]
    with engine.begin() as conn:  # stamped at 0001, as an airloop of that revision left it
        conn.exec_driver_sql(f"CREATE TABLE {migrations.VERSION_TABLE} (version_num VARCHAR(32) PRIMARY KEY)")
        conn.exec_driver_sql(f"INSERT INTO {migrations.VERSION_TABLE} VALUES ('0001')")

    done = migrations.upgrade(engine)

    assert (done.before, done.after) == ("0001", migrations.head())
    assert legacy.rows(engine)["predictions"] == before  # every old column of every old row, unchanged
    with engine.connect() as conn:
        assert migrations.compare(conn, warehouse.metadata) == []
        got = conn.execute(sa.select(warehouse.predictions.c.ts, warehouse.predictions.c.row_key)).all()
    times = pd.DataFrame({"ts": pd.to_datetime([r.ts for r in got], utc=True)})
    assert [r.row_key for r in got] == row_keys(times, ["ts"])  # the SQL fill gives the canonical text
    assert "2024-03-01T05:00:00.250000Z" in {r.row_key for r in got}
    assert "2024-03-01T01:00:00Z" in {r.row_key for r in got}
    with engine.connect() as conn:
        batch_id = conn.execute(
            sa.select(warehouse.predictions.c.batch_id).where(warehouse.predictions.c.row_key == "2024-03-01T01:00:00Z")
        ).scalar_one()
    duplicate = {"batch_id": batch_id, "ts": datetime(2024, 3, 1, 1, tzinfo=UTC), "row_key": "2024-03-01T01:00:00Z"}
    with pytest.raises(sa.exc.IntegrityError), engine.begin() as conn:  # one row per model, partition and key
        conn.execute(warehouse.prediction_rows.insert(), [duplicate])

"""The warehouse's schema migrations (Alembic), run by code: no ``alembic.ini`` and no ``env.py``.

``upgrade(engine)`` brings a warehouse to the newest revision (``head``) in one transaction, holding a lock so
that two processes upgrading at once do not collide: on Postgres a transaction-level advisory lock, on SQLite the
database write lock (``BEGIN IMMEDIATE``); the second finds the work done. The version is kept in
``airloop_alembic_version``, never in ``alembic_version``, so a database shared with Airflow or MLflow (whose
migrations use that name) is safe. A warehouse created before migrations (airloop's tables, no version table) is
adopted: its tables are checked against the baseline revision (``0001``), the missing ones created, and it is
stamped at ``0001`` before upgrading; tables that differ stop the upgrade with the differences named.
``airloop.adapters.warehouse.ensure_schema`` calls ``upgrade`` once per process and database; operators run
``airloop warehouse upgrade`` / ``airloop warehouse current``.

How to add a column (or a table, an index)
------------------------------------------
1. Change the table in ``airloop/adapters/warehouse.py`` (the ``MetaData``: the schema as the code uses it).
2. Draft the revision from the difference between that ``MetaData`` and a database migrated to head::

       airloop warehouse revision "add predictions.proba"     # writes versions/0002_add_predictions_proba.py
       make format                                            # Alembic renders single quotes

   (Or write ``versions/<NNNN>_<slug>.py`` by hand from ``script.py.mako``: ``revision = "NNNN"`` and
   ``down_revision`` = the previous head.) Read the draft: autogenerate finds added and removed columns,
   tables, indexes, unique constraints and type changes, not renames (it drops and adds) nor triggers.
3. Keep every operation inside ``with op.batch_alter_table("<table>") as batch:`` (the draft does): SQLite
   cannot alter a column in place, batch mode copies the table when it must. A new ``nullable=False`` column
   needs a ``server_default`` (or a data step filling it) for the rows already there. A batch that has to
   copy ``promotion_ledger`` on SQLite drops its append-only triggers with the old table: create them again
   in the same revision. Never edit a revision that has shipped; add another.
4. ``make test``: ``tests/unit/test_migrations.py`` fails while the ``MetaData`` and the revisions disagree,
   and upgrades a warehouse written by the code before migrations.
"""

from __future__ import annotations

import contextlib
import re
import tempfile
import threading
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa

from airloop.core.errors import ExpectedFailure
from airloop.core.urls import mask_url

if TYPE_CHECKING:
    from alembic.runtime.migration import MigrationContext
    from alembic.script import ScriptDirectory
    from sqlalchemy.engine import Connection, Engine

#: airloop's own version table (Airflow and MLflow each use ``alembic_version``).
VERSION_TABLE = "airloop_alembic_version"
#: The revision that creates the schema of airloop before migrations; existing warehouses are adopted at it.
BASELINE = "0001"
FOLDER = Path(__file__).resolve().parent
#: Postgres advisory lock key: one per database, taken for the duration of the upgrade's transaction.
LOCK_KEY = zlib.crc32(b"airloop.warehouse.migrations")
#: Milliseconds an upgrade waits for SQLite's write lock (another upgrade, or a long write) before failing.
SQLITE_LOCK_WAIT_MS = 120_000


class SchemaMismatch(ExpectedFailure, RuntimeError):
    """A warehouse's existing tables differ from what the migrations expect; the message lists the differences."""


@dataclass(frozen=True)
class Upgrade:
    """What one upgrade did: the revision before (None: unversioned) and after, and whether it adopted."""

    before: str | None
    after: str | None
    adopted: bool = False

    @property
    def changed(self) -> bool:
        return self.before != self.after


_script_lock = threading.Lock()
_script: ScriptDirectory | None = None


def script_directory() -> ScriptDirectory:
    """The revisions shipped in this package (loaded once per process)."""
    global _script
    from alembic.script import ScriptDirectory

    with _script_lock:
        if _script is None:
            _script = ScriptDirectory(str(FOLDER))
        return _script


def head(script: ScriptDirectory | None = None) -> str:
    """The newest revision; raises when the revisions have several heads (two branches never merged)."""
    script = script or script_directory()
    heads = script.get_heads()
    if len(heads) != 1:
        raise RuntimeError(
            f"The warehouse migrations in {script.versions} have {len(heads)} heads ({', '.join(heads)}); "
            "exactly one is expected: set the newer revision's down_revision to the other one."
        )
    return heads[0]


def _context(conn: Connection, **opts: Any) -> MigrationContext:
    from alembic.runtime.migration import MigrationContext

    return MigrationContext.configure(conn, opts={"version_table": VERSION_TABLE, "render_as_batch": True, **opts})


def current(engine: Engine) -> str | None:
    """The warehouse's revision, or None when it has no version table (new, or created before migrations)."""
    with engine.connect() as conn:
        return _context(conn).get_current_revision()


def upgrade(engine: Engine, script: ScriptDirectory | None = None) -> Upgrade:
    """Upgrade the warehouse to ``head`` in one locked transaction (adopting a warehouse made before migrations).

    ``script``: the revisions to run (default: this package's). A warehouse already at head is only read: no
    lock, no write (a reader with a read-only login, a task while another holds SQLite's write lock).
    """
    script = script or script_directory()
    target = head(script)
    with engine.connect() as conn:
        if _context(conn).get_current_heads() == (target,):
            return Upgrade(before=target, after=target)
    with _locked_transaction(engine) as conn:
        return _migrate(conn, script)


@contextlib.contextmanager
def _locked_transaction(engine: Engine) -> Iterator[Connection]:
    """A connection in a transaction that holds the migration lock until it commits (or rolls back on error)."""
    if engine.dialect.name != "sqlite":
        with engine.connect() as conn, conn.begin():
            if engine.dialect.name == "postgresql":
                conn.execute(sa.text("SELECT pg_advisory_xact_lock(:key)"), {"key": LOCK_KEY})
            yield conn
        return
    with engine.connect() as conn:
        # pysqlite opens transactions lazily (and not for DDL): take over, and take the write lock up front.
        conn.execution_options(isolation_level="AUTOCOMMIT")
        waited = conn.exec_driver_sql("PRAGMA busy_timeout").scalar()
        conn.exec_driver_sql(f"PRAGMA busy_timeout = {max(int(waited or 0), SQLITE_LOCK_WAIT_MS)}")
        try:
            conn.exec_driver_sql("BEGIN IMMEDIATE")
            try:
                yield conn
            except BaseException:
                with contextlib.suppress(sa.exc.DBAPIError):
                    conn.exec_driver_sql("ROLLBACK")
                raise
            conn.exec_driver_sql("COMMIT")
        finally:
            conn.exec_driver_sql(f"PRAGMA busy_timeout = {int(waited or 0)}")
            conn.commit()  # ends SQLAlchemy's own (empty) transaction


def _migrate(conn: Connection, script: ScriptDirectory) -> Upgrade:
    """Adopt an unversioned warehouse if it has airloop's tables, then run the revisions up to head."""
    from alembic.operations import Operations

    target = head(script)
    context = _context(conn, fn=lambda rev, _ctx: script._upgrade_revs(target, rev))
    before = context.get_current_revision()
    if before is not None:
        _check_known(before, script, target)
    adopted = before is None and _adopt(conn, context, script)
    with Operations.context(context):
        context.run_migrations()
    return Upgrade(before=before, after=context.get_current_revision(), adopted=adopted)


def _check_known(revision: str, script: ScriptDirectory, target: str) -> None:
    """Refuse a warehouse at a revision these migrations do not have (upgraded by a newer airloop)."""
    from alembic.util import CommandError

    try:
        script.get_revision(revision)
    except CommandError:
        raise SchemaMismatch(
            f"The warehouse is at revision {revision!r} ({VERSION_TABLE}), which this airloop's migrations do not "
            f"have (their newest is {target!r}): a newer airloop upgraded it. Run that version here too; an older "
            "one must not write to this warehouse."
        ) from None


def _adopt(conn: Connection, context: MigrationContext, script: ScriptDirectory) -> bool:
    """Stamp a warehouse made by ``create_all`` at the baseline, once its tables match it; False if it has none."""
    baseline: sa.MetaData = script.get_revision(BASELINE).module.baseline()
    present = set(sa.inspect(conn).get_table_names()) & set(baseline.tables)
    if not present:
        return False
    differences = compare(conn, baseline, tables=present)
    if differences:
        raise SchemaMismatch(
            f"The warehouse ({mask_url(conn.engine.url.render_as_string(hide_password=True))}) has airloop's tables "
            f"({', '.join(sorted(present))}) but no {VERSION_TABLE} table, and they differ from the baseline "
            f"revision {BASELINE} (airloop/adapters/migrations/versions/):\n  - " + "\n  - ".join(differences) + "\n"
            "Point the airloop_warehouse connection at a database of airloop's own, or make these tables match "
            "the baseline (or drop them), then run `airloop warehouse upgrade` again."
        )
    baseline.create_all(conn, checkfirst=True)  # tables missing (older code made fewer): as create_all did
    context.stamp(script, BASELINE)
    return True


def compare(conn: Connection, metadata: sa.MetaData, tables: set[str] | None = None) -> list[str]:
    """The differences between the database and ``metadata`` (only ``tables``, default all of it), one line each."""
    from alembic.autogenerate import compare_metadata

    names = set(metadata.tables) if tables is None else tables

    def include_name(name: str | None, type_: str, *_: Any) -> bool:
        return type_ != "table" or name in names

    def include_object(_obj: Any, name: str | None, type_: str, *_: Any) -> bool:
        return include_name(name, type_)

    context = _context(conn, compare_type=True, include_name=include_name, include_object=include_object)
    return [_describe(diff) for diff in compare_metadata(context, metadata)]


def _describe(diff: Any) -> str:
    """One line for an autogenerate difference: ``add_*`` is missing in the database, ``remove_*`` unexpected."""
    if isinstance(diff, list):  # the modify_* differences of one column
        return "; ".join(_describe(d) for d in diff)
    kind = diff[0]
    if kind.startswith("modify_"):
        _, _, table, column, _, found, expected = diff
        return f"{table}.{column}: {kind.removeprefix('modify_')} is {found!r}, expected {expected!r}"
    if kind in ("add_column", "remove_column"):
        where = f"{diff[2]}.{diff[3].name}"
    else:
        obj = diff[-1]
        table = getattr(getattr(obj, "table", None), "name", None)
        where = f"{table}: {obj.name}" if table else str(obj.name)
    what = kind.split("_", 1)[1]
    return f"{what} {where} " + ("is missing" if kind.startswith("add_") else "is not expected")


def draft_revision(message: str, metadata: sa.MetaData, folder: Path = FOLDER) -> Path:
    """Write the next revision, its body drafted from the difference between head and ``metadata``; its path.

    ``folder``: the migrations folder (default: this package's). Raises ``ValueError`` when there is no
    difference (nothing to migrate) or the message has no words.
    """
    from alembic.autogenerate import produce_migrations, render_python_code
    from alembic.script import ScriptDirectory

    if not re.search(r"[A-Za-z0-9]", message):
        raise ValueError(f"The revision message {message!r} needs words, e.g. 'add predictions.proba'.")
    script = ScriptDirectory(str(folder))
    with tempfile.TemporaryDirectory() as scratch:
        engine = sa.create_engine(f"sqlite:///{Path(scratch) / 'head.db'}")
        try:
            upgrade(engine, script)
            with engine.connect() as conn:
                ops = produce_migrations(_context(conn, compare_type=True), metadata)
        finally:
            engine.dispose()
    if ops.upgrade_ops is None or ops.upgrade_ops.is_empty():
        raise ValueError("The warehouse MetaData matches the newest revision: there is nothing to migrate.")
    previous = head(script)
    written = script.generate_revision(
        f"{int(previous) + 1:04d}" if previous.isdigit() else _new_id(),
        message,
        head=previous,
        upgrades=render_python_code(ops.upgrade_ops, render_as_batch=True),
        downgrades=render_python_code(ops.downgrade_ops, render_as_batch=True) if ops.downgrade_ops else None,
        imports="",
    )
    assert written is not None and written.path is not None
    return Path(written.path)


def _new_id() -> str:
    from alembic.util import rev_id

    return str(rev_id())

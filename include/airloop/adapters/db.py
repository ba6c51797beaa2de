"""SQLAlchemy engines for airloop's Airflow connections.

The source and the warehouse are Airflow connections (``airloop_source``, ``airloop_warehouse``), so an
on-call engineer repoints them in the UI or with ``AIRFLOW_CONN_<ID>`` and no code changes. The engine comes
from the connection's own provider hook (``get_sqlalchemy_engine``), so SQLite, Postgres and the rest behave
as Airflow defines them. Outside Airflow (the ``airloop`` command line), a connection that Airflow cannot find
falls back to airloop's embedded default under ``AIRLOOP_HOME``; that fallback is logged, never silent.
An engine's errors while connecting (or for a lost connection) are marked with its connection id, so a task
says which database it could not reach (``airloop.adapters.outages``).
"""

from __future__ import annotations

import json
import logging
import os
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING, Any

from airloop.core.errors import ExpectedFailure
from airloop.core.urls import mask_url

if TYPE_CHECKING:
    from sqlalchemy.engine import Engine

log = logging.getLogger(__name__)


class ConnectionProblem(ExpectedFailure, RuntimeError):
    """A connection that is missing or does not work; the message says which and what to do."""


#: The environment variables naming one try of one task instance (Airflow sets them while a task runs).
_TRY_VARS = ("AIRFLOW_CTX_DAG_ID", "AIRFLOW_CTX_DAG_RUN_ID", "AIRFLOW_CTX_TASK_ID", "AIRFLOW_CTX_TRY_NUMBER")
#: A connection's URL as read during one try: key (conn id, the try, the AIRFLOW_CONN_ variable) -> URL.
_urls_this_try: dict[tuple[str, ...], str] = {}


def _try_key(conn_id: str) -> tuple[str, ...] | None:
    """The cache key of ``conn_id`` inside a running task's try; None outside a task (nothing is cached there)."""
    try_ids = tuple(os.environ.get(var, "") for var in _TRY_VARS)
    if not try_ids[0]:
        return None
    return (conn_id, *try_ids, os.environ.get(f"AIRFLOW_CONN_{conn_id.upper()}", ""))


def engine_for(conn_id: str) -> Engine:
    """An engine for an Airflow connection id (cached per id and URL).

    Inside a task, the connection is read once per try: each read is a call to the execution API, and a task
    asked for the same connection three to four times (about 9 ms of the api-server's time each). A connection
    edited in the UI is used from the next try on; outside a task it is read on every call.
    """
    from airloop.core.settings import default_connections

    key = _try_key(conn_id)
    if key is not None and key in _urls_this_try:
        return _engine(_urls_this_try[key], conn_id)
    url = None
    try:
        from airflow.sdk import Connection

        conn = Connection.get(conn_id)
        url = _url_of(conn)
        if key is not None:
            _urls_this_try[key] = url
    except Exception as exc:  # Airflow raises several types for "not found" and "no API here"
        # Inside a task a missing connection is a deployment error, never a reason to guess.
        in_task = bool(os.environ.get("AIRFLOW_CTX_DAG_ID"))
        default = None if in_task else default_connections().get(conn_id)
        if default is None:
            raise ConnectionProblem(
                f"Airflow connection {conn_id!r} is not available ({type(exc).__name__}: {exc}). "
                f"Create it in the Airflow UI (Admin > Connections) or export AIRFLOW_CONN_{conn_id.upper()}."
            ) from exc
        host = json.loads(default)["host"]
        Path(host).parent.mkdir(parents=True, exist_ok=True)
        if conn_id not in _defaulted:  # said once per process, not on every call
            _defaulted.add(conn_id)
            log.info("connection %s not found in Airflow; using the embedded default sqlite:///%s", conn_id, host)
        url = f"sqlite:///{host}"
    return _engine(url, conn_id)


#: Seconds a Postgres connection attempt may take (libpq ``connect_timeout``) unless the connection sets it.
POSTGRES_CONNECT_TIMEOUT = 10


def _url_of(conn: Any) -> str:
    """The SQLAlchemy URL of an Airflow connection, as its provider hook defines it.

    Postgres: the hook's URL names no driver, which SQLAlchemy 2.1 maps to psycopg 3; airloop ships psycopg2
    (what the Postgres provider itself uses), so the driver is named. Building the URL alone also avoids
    creating a throw-away engine.
    """
    hook = conn.get_hook()
    if conn.conn_type in ("postgres", "postgresql"):
        url = hook.sqlalchemy_url
        if url.drivername == "postgresql":
            url = url.set(drivername="postgresql+psycopg2")
        return url.render_as_string(hide_password=False)
    return hook.get_sqlalchemy_engine().url.render_as_string(hide_password=False)


#: Connection ids already reported as falling back to their embedded default.
_defaulted: set[str] = set()


@lru_cache(maxsize=16)
def _engine(url: str, conn_id: str) -> Engine:
    """An engine per URL and connection id; an unreachable database is named by its connection id in errors."""
    import sqlalchemy as sa

    from airloop.adapters.outages import watch_engine

    kwargs: dict[str, object] = {}
    if url.startswith("sqlite"):
        # Several task processes write the warehouse at once: wait for the lock instead of failing.
        kwargs["connect_args"] = {"timeout": 60}
    elif url.startswith("postgresql") and "connect_timeout" not in sa.engine.make_url(url).query:
        # A server that does not answer fails the try in seconds (Airflow retries it), not after the OS's
        # TCP timeout of about two minutes. A connection's own extra `connect_timeout` wins.
        kwargs["connect_args"] = {"connect_timeout": POSTGRES_CONNECT_TIMEOUT}
    engine = sa.create_engine(url, **kwargs)
    if url.startswith("sqlite"):

        @sa.event.listens_for(engine, "connect")
        def _sqlite_pragmas(dbapi_conn: Any, _record: Any) -> None:
            cursor = dbapi_conn.cursor()
            cursor.execute("PRAGMA journal_mode=WAL")
            cursor.execute("PRAGMA busy_timeout=60000")
            cursor.close()

    watch_engine(engine, conn_id)
    return engine


def describe(engine: Engine) -> str:
    """The engine's URL for logs and messages: without its password, and without its query, where a
    connection's extras (tokens, key passwords) end up (``airloop.core.urls.mask_url``)."""
    return mask_url(engine.url.render_as_string(hide_password=True))

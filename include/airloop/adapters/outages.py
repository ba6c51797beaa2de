"""Outages of the services a task needs (the MLflow tracking server, the databases), told to on-call.

An unreachable MLflow server or database is not a fault of the task's data or parameters, and it usually
passes (a restart, a fail-over, a network blip). So it fails the try *retryably*: :class:`ServiceUnavailable`
is a plain exception, which Airflow retries (``dagkit.default_args``: 2 retries, backoff from 30 s), never
``AirflowFailException``, which skips the retries and is kept for failures a retry cannot fix. The wait belongs
to Airflow's retries, not to minutes of client retries inside one try: :func:`mlflow_client_defaults` makes
MLflow's client give up within seconds on a refused connection (its own default retries for about 4 minutes).

What on-call reads is the exception's message: which service (the tracking URI, or the Airflow connection id
and its URL, credentials masked), what failed, on which model and interval, and what to do next.

:func:`find` is the one place that recognises an outage in an exception and its chain (:func:`explain` words
the message; ``airloop.orchestration.tasks`` applies both to every task body):

- MLflow: a ``requests`` connection error, timeout or retry error under an ``MlflowException`` (how MLflow's
  REST client reports a request that never got an answer, or only 5xx answers);
- a database: a SQLAlchemy error raised while *connecting*, or for a lost connection, on an engine that
  :func:`watch_engine` marked. Other database errors ("no such table", a constraint) are never taken for an
  outage: a retry would not fix them.
"""

from __future__ import annotations

import contextlib
import os
import re
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from airloop.core.errors import ServiceUnavailable as _ServiceUnavailable
from airloop.core.urls import mask_url

if TYPE_CHECKING:
    from sqlalchemy.engine import Engine

#: MLflow client settings airloop applies unless the deployment sets them (name: value, as environment strings).
#: With these a refused connection fails in about 3 s (MLflow's defaults: 7 retries, backoff factor 2, 120 s
#: timeout: about 4 minutes), and a server that accepts but never answers in about 3 minutes instead of 16 or more.
MLFLOW_CLIENT_DEFAULTS = {
    "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "2",
    "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1",
    "MLFLOW_HTTP_REQUEST_TIMEOUT": "60",
}

#: The attribute :func:`watch_engine` sets on a SQLAlchemy exception raised by an unreachable database.
_MARK = "airloop_unreachable"


# The retryable base lives in core (every layer raises or catches it); named here too for the adapters.
ServiceUnavailable = _ServiceUnavailable


@dataclass(frozen=True)
class Outage:
    """What could not be reached, where, and what the client saw."""

    service: str  #: "MLflow" or "database"
    where: str  #: the tracking URI, or "connection `<id>` (<url>)", credentials masked
    cause: str  #: the client's error, one line
    conn_id: str | None = None  #: the Airflow connection of a database


def mlflow_client_defaults() -> None:
    """Set airloop's MLflow client retry and timeout defaults where the environment does not set them."""
    for name, value in MLFLOW_CLIENT_DEFAULTS.items():
        os.environ.setdefault(name, value)


def watch_engine(engine: Engine, conn_id: str) -> None:
    """Mark errors of ``engine`` that mean its database is unreachable, so :func:`find` can name it.

    SQLAlchemy calls ``handle_error`` with no connection when connecting failed, and with ``is_disconnect``
    when an open connection was lost; only those count as an outage.
    """
    import sqlalchemy as sa

    mark = (conn_id, f"connection `{conn_id}` ({mask_url(engine.url.render_as_string(hide_password=True))})")

    @sa.event.listens_for(engine, "handle_error")
    def _mark(context: Any) -> None:
        if context.connection is None or context.is_disconnect:
            for exc in (context.sqlalchemy_exception, context.original_exception):
                with contextlib.suppress(AttributeError, TypeError):  # some driver errors take no attributes
                    setattr(exc, _MARK, mark)


def exception_chain(exc: BaseException) -> Iterator[BaseException]:
    """An exception, then its causes and contexts, each once."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        yield current
        current = current.__cause__ or current.__context__


def _one_line(text: str, limit: int = 300) -> str:
    line = " ".join(text.split())
    return line if len(line) <= limit else line[: limit - 3] + "..."


def _http_cause(exc: BaseException) -> str:
    """``[Errno 111] Connection refused`` rather than urllib3's whole pool, object and URL story."""
    reason: Any = exc.args[0] if exc.args else exc
    reason = getattr(reason, "reason", reason)  # urllib3's MaxRetryError wraps the last error
    text = re.sub(r"^<[^>]*>:\s*", "", str(reason))  # "<HTTPConnection object at 0x..>: Failed to ..."
    path = getattr(exc.args[0], "url", None) if exc.args else None
    request = getattr(exc, "request", None)
    if path is None and request is not None and getattr(request, "url", None):
        path = urlsplit(request.url).path
    if path:
        text = f"{text} (request {urlsplit(str(path)).path})"
    return f"{type(exc).__name__}: {_one_line(text)}"


def find(exc: BaseException) -> Outage | None:
    """The outage behind ``exc`` (itself or anything in its chain), or None when it is not an outage."""
    chain = list(exception_chain(exc))
    for link in chain:
        mark = getattr(link, _MARK, None)
        if mark:
            conn_id, where = mark
            orig = getattr(link, "orig", None) or link
            cause = f"{type(orig).__name__}: {_one_line((str(orig) or repr(orig)).splitlines()[0])}"
            return Outage("database", where, cause, conn_id=conn_id)
    # An MLflow error can only come from an MLflow already imported: never import it (3 s) just to look.
    mlflow_exceptions, requests_exceptions = (
        sys.modules.get("mlflow.exceptions"),
        sys.modules.get("requests.exceptions"),
    )
    if mlflow_exceptions is None or requests_exceptions is None:
        return None
    if not any(isinstance(link, mlflow_exceptions.MlflowException) for link in chain):
        return None
    from airloop.core.settings import mlflow_tracking_uri

    http = (requests_exceptions.ConnectionError, requests_exceptions.Timeout, requests_exceptions.RetryError)
    for link in chain:
        if isinstance(link, http):
            return Outage("MLflow", f"tracking URI {mask_url(mlflow_tracking_uri())}", _http_cause(link))
    return None


def explain(outage: Outage, doing: str, *, try_number: int | None = None, retries_left: bool | None = None) -> str:
    """The on-call message for ``outage`` met while ``doing`` (e.g. "scoring churn partition 2012-11-03...")."""
    from airloop.core.settings import paths

    if outage.service == "MLflow":
        headline = f"MLflow is unreachable at {outage.where}: {outage.cause}, while {doing}."
        check = (
            "Check the MLflow server: `airloop status` (embedded runtime; its log is "
            f"{paths().run / 'mlflow.log'}), or your tracking server's health and logs; and that "
            "MLFLOW_TRACKING_URI points at it."
        )
        settings = ", ".join(f"{name}={os.environ.get(name, 'unset')}" for name in MLFLOW_CLIENT_DEFAULTS)
        check += f" This try gave up after MLflow's client retries ({settings})."
        back = "MLflow"
    else:
        conn_id = outage.conn_id or "?"
        headline = f"The database of {outage.where} is unreachable: {outage.cause}, while {doing}."
        check = (
            "Check that the database is up and reachable from the workers, and the connection: Airflow UI "
            f"Admin > Connections > {conn_id}, or AIRFLOW_CONN_{conn_id.upper()}; `airloop status` shows the "
            "embedded runtime."
        )
        back = "the database"
    if retries_left is None:
        retry = f"Airflow retries the task with backoff; if its retries run out, clear it once {back} is back."
    elif retries_left:
        retry = (
            f"This was try {try_number}: Airflow retries the task with backoff; nothing else to do if {back} is back."
        )
    else:
        retry = f"This was the last try ({try_number}): clear the task once {back} is back."
    return f"{headline}\nWhat to do: {check}\n{retry}"

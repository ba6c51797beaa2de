"""Failure alerts through Airflow's notifier mechanism: an e-mail or a webhook, chosen per deployment.

Every airloop task gets :class:`FailureAlert` as its ``on_failure_callback`` (``dagkit.default_args``). Airflow
calls it in the task's own process once the task has finally failed (a failed try that will be retried calls
``on_retry_callback`` instead, so retries never alert); for a task that died without reporting (killed, out of
memory) the scheduler has the dag-processor call it, without the exception. What it does is decided when it runs,
from the deployment's environment, never at DAG parse time:

``AIRLOOP_ALERTS_CONN_ID``
    The id of an Airflow connection. Unset or empty: alerts are off, and each failure logs one line saying so
    and how to turn them on. The connection's type picks the channel:

    - ``smtp``: an e-mail through the SMTP provider's ``SmtpHook`` (host, port, login, and the extras
      ``from_email``, ``disable_ssl``, ``disable_tls``, ``timeout``, ``retry_limit``) to ``AIRLOOP_ALERTS_TO``;
    - ``http`` (or ``https``): a JSON ``POST`` through the HTTP provider's ``HttpHook`` to the connection's
      URL (put the whole URL in the host, e.g. ``https://hooks.example.com/services/T0/B0/XYZ``), plus
      ``AIRLOOP_ALERTS_ENDPOINT`` when set. Login and password become basic auth; other extras become
      request headers (e.g. ``{"Authorization": "Bearer ..."}``). The timeout is 10 s unless the extras say.
``AIRLOOP_ALERTS_TO``
    Comma-separated e-mail recipients; required for an ``smtp`` connection (missing: an error in the log).
``AIRLOOP_ALERTS_ENDPOINT``
    Optional path appended to the webhook connection's URL.

Every stage DAG also has a deadline (``timeouts.<stage>.deadline`` of the model spec, ``build.run_limits``):
when a run has not finished that long after it was queued, the scheduler has the executor call
:func:`deadline_missed`, which sends a deadline alert through the same channel (``kind``
``deadline_missed``, ``task_id`` null, ``log_url`` the run's page).

The webhook body is one JSON object (:meth:`Alert.payload`)::

    {"kind": "failed", "dag_id": "bikes_ingest", "task_id": "validate",
     "run_id": "scheduled__2012-11-03T00:00:00+00:00",
     "try_number": 1, "logical_date": "2012-11-03T00:00:00+00:00",
     "interval_start": "2012-11-03T00:00:00+00:00", "interval_end": "2012-12-01T00:00:00+00:00",
     "owner": "ml-platform", "error": "ValueError: Batch QUARANTINED ...",
     "log_url": "http://airflow.example.com/dags/bikes_ingest/runs/.../tasks/validate?try_number=1",
     "text": "<the same human summary the e-mail carries>"}

Dates are ISO 8601 (``null`` when the run has none, e.g. a manual run without a logical date); ``error`` is the
exception's type and message, cut to its first lines; ``text`` suits chat webhooks that show a ``text`` field.
``log_url`` is built from Airflow's ``[api] base_url``.

A broken alert channel (unreachable server, refused login, HTTP error, missing connection) is logged as an error
naming the connection and the cause, and never raises: the task's own failure is what on-call must see.

This module is imported at DAG parse time: it imports ``airflow.sdk`` only; the providers load when an alert
is actually sent.
"""

from __future__ import annotations

import html
import logging
import socket
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from airflow.sdk import BaseNotifier

from airloop.core import settings

log = logging.getLogger(__name__)

CONN_ID_VAR = settings.ALERTS_CONN_ID.name
TO_VAR = settings.ALERTS_TO.name
ENDPOINT_VAR = settings.ALERTS_ENDPOINT.name

EMAIL_CONN_TYPES = frozenset({"smtp"})
WEBHOOK_CONN_TYPES = frozenset({"http", "https"})

#: How much of the exception an alert carries; the full traceback is one click away (``log_url``).
MAX_ERROR_LINES = 12
MAX_ERROR_CHARS = 1500
WEBHOOK_TIMEOUT_S = 10

OFF_MESSAGE = (
    f"Failure alerts are off: set {CONN_ID_VAR} to the id of an Airflow connection of type smtp "
    f"(e-mail to the comma-separated addresses in {TO_VAR}) or http (JSON webhook to the connection's URL)."
)


#: The kinds of alert: a task that finally failed, and a run that missed its deadline.
FAILED, DEADLINE_MISSED = "failed", "deadline_missed"


@dataclass(frozen=True)
class Alert:
    """What on-call needs to act on one failed task instance, or on one run that missed its deadline."""

    dag_id: str
    task_id: str | None
    run_id: str
    try_number: int | None
    logical_date: str | None
    interval_start: str | None
    interval_end: str | None
    owner: str | None
    error: str
    log_url: str | None
    kind: str = FAILED

    @property
    def where(self) -> str:
        return self.dag_id if self.task_id is None else f"{self.dag_id}.{self.task_id}"

    @property
    def label(self) -> str:
        """How the log names this alert: ``Failure alert`` or ``Deadline alert``."""
        return "Deadline alert" if self.kind == DEADLINE_MISSED else "Failure alert"

    @property
    def subject(self) -> str:
        if self.kind == DEADLINE_MISSED:
            return f"[airloop] LATE {self.where} (run {self.run_id}): deadline missed"
        tried = f", try {self.try_number}" if self.try_number else ""
        return f"[airloop] FAILED {self.where} (run {self.run_id}{tried})"

    @property
    def text(self) -> str:
        """The human summary: what failed (or is late), in which run and interval, why, and where the log is."""
        tried = f" (try {self.try_number})" if self.try_number else ""
        late = self.kind == DEADLINE_MISSED
        rows = [
            ("Run late" if late else "Task failed", self.where),
            ("Run", f"{self.run_id}{tried}"),
            ("Interval", f"{self.interval_start or 'none'} to {self.interval_end or 'none'}"),
            ("Logical date", self.logical_date or "none"),
            ("Owner", self.owner or "unknown"),
            ("Error", self.error.replace("\n", "\n" + " " * 14)),
            ("Log", self.log_url or "unknown"),
            (
                "Triage",
                "the DAG's Docs in the Airflow UI (section Triage); find the task still running or queued"
                if late
                else "the DAG's Docs in the Airflow UI (section Triage); clear the task once fixed",
            ),
        ]
        return "\n".join(f"{label + ':':<14}{value}" for label, value in rows)

    def payload(self) -> dict[str, Any]:
        """The webhook's JSON body (the fields are documented in this module's docstring)."""
        return {
            "kind": self.kind,
            "dag_id": self.dag_id,
            "task_id": self.task_id,
            "run_id": self.run_id,
            "try_number": self.try_number,
            "logical_date": self.logical_date,
            "interval_start": self.interval_start,
            "interval_end": self.interval_end,
            "owner": self.owner,
            "error": self.error,
            "log_url": self.log_url,
            "text": self.text,
        }

    def html(self) -> str:
        """The e-mail body: the summary as preformatted text, and the log as a link."""
        link = f'<p><a href="{html.escape(self.log_url)}">Open the task log</a></p>\n' if self.log_url else ""
        return f"<pre>{html.escape(self.text)}</pre>\n{link}"


def summarize_error(error: BaseException | str | None) -> str:
    """``Type: message``, cut to its first lines and characters, saying so when cut."""
    if error is None:
        return "(no exception was recorded; see the log)"
    text = f"{type(error).__name__}: {error}" if isinstance(error, BaseException) else str(error)
    lines = text.strip().splitlines() or [text]
    kept = "\n".join(lines[:MAX_ERROR_LINES])
    cut = len(lines) > MAX_ERROR_LINES
    if len(kept) > MAX_ERROR_CHARS:
        kept, cut = kept[:MAX_ERROR_CHARS].rstrip(), True
    return kept + ("\n... (cut; the full message and traceback are in the log)" if cut else "")


def _iso(value: Any) -> str | None:
    if value is None:
        return None
    return value.isoformat() if isinstance(value, datetime) else str(value)


def _run_url(dag_id: str, run_id: str) -> str:
    """The DAG run's page in the UI (``[api] base_url``)."""
    from urllib.parse import quote

    from airflow.sdk.configuration import conf

    base = conf.get("api", "base_url", fallback="http://localhost:8080/").rstrip("/")
    return f"{base}/dags/{dag_id}/runs/{quote(run_id)}"


def _log_url(dag_id: str, run_id: str, task_id: str, map_index: int | None, try_number: int | None) -> str:
    """The task instance's page in the UI, built like ``RuntimeTaskInstance.log_url`` (``[api] base_url``)."""
    mapped = f"/mapped/{map_index}" if map_index is not None and map_index >= 0 else ""
    tried = f"?try_number={try_number}" if try_number else ""
    return f"{_run_url(dag_id, run_id)}/tasks/{task_id}{mapped}{tried}"


def alert_from_context(context: Mapping[str, Any]) -> Alert:
    """Read an :class:`Alert` from an Airflow task context; missing pieces become ``None`` or ``"?"``."""
    ti = context.get("ti") or context.get("task_instance")
    dag_run = context.get("dag_run")
    task = context.get("task")
    dag_id = str(getattr(ti, "dag_id", None) or getattr(dag_run, "dag_id", None) or "?")
    task_id = str(getattr(ti, "task_id", None) or getattr(task, "task_id", None) or "?")
    run_id = str(getattr(ti, "run_id", None) or context.get("run_id") or getattr(dag_run, "run_id", None) or "?")
    try_number = getattr(ti, "try_number", None)
    log_url: str | None
    try:
        log_url = ti.log_url if ti is not None and hasattr(ti, "log_url") else None
        if log_url is None and "?" not in (dag_id, task_id, run_id):
            log_url = _log_url(dag_id, run_id, task_id, getattr(ti, "map_index", None), try_number)
    except Exception:  # a URL is a convenience; the alert goes out without it
        log.warning("Could not build the log URL for %s.%s", dag_id, task_id, exc_info=True)
        log_url = None
    return Alert(
        dag_id=dag_id,
        task_id=task_id,
        run_id=run_id,
        try_number=int(try_number) if try_number is not None else None,
        logical_date=_iso(context.get("logical_date")),
        interval_start=_iso(context.get("data_interval_start") or getattr(dag_run, "data_interval_start", None)),
        interval_end=_iso(context.get("data_interval_end") or getattr(dag_run, "data_interval_end", None)),
        owner=getattr(task, "owner", None),
        error=summarize_error(context.get("exception")),
        log_url=log_url,
    )


def alert_from_deadline(context: Mapping[str, Any], owner: str | None = None, allowed: str | None = None) -> Alert:
    """Read a deadline :class:`Alert` from the context Airflow gives a deadline callback: the DAG run as the REST
    API shows it (``dag_run``: ``dag_id``, ``dag_run_id``, ``queued_at``, ``state``, ...) and the ``deadline``
    (``deadline_time``); ``allowed`` is the spec's deadline as written (``2h``)."""
    run = context.get("dag_run") or {}
    deadline = context.get("deadline") or {}
    dag_id, run_id = str(run.get("dag_id") or "?"), str(run.get("dag_run_id") or run.get("run_id") or "?")
    queued = _iso(run.get("queued_at")) or "an unknown time"
    due = _iso(deadline.get("deadline_time")) or "its deadline"
    within = f" (allowed: {allowed} after it was queued: timeouts.<stage>.deadline of the spec)" if allowed else ""
    error = (
        f"Deadline missed: the run was queued at {queued} and had not finished by {due}{within}; its state is "
        f"{run.get('state') or 'unknown'}. A task may be hung or waiting for a slot; the run is failed when it "
        "reaches its run limit (timeouts.<stage>.run)."
    )
    try:
        log_url: str | None = _run_url(dag_id, run_id) if "?" not in (dag_id, run_id) else None
    except Exception:  # a URL is a convenience; the alert goes out without it
        log.warning("Could not build the run URL for %s", dag_id, exc_info=True)
        log_url = None
    return Alert(
        dag_id=dag_id,
        task_id=None,
        run_id=run_id,
        try_number=None,
        logical_date=_iso(run.get("logical_date")),
        interval_start=_iso(run.get("data_interval_start")),
        interval_end=_iso(run.get("data_interval_end")),
        owner=owner,
        error=error,
        log_url=log_url,
        kind=DEADLINE_MISSED,
    )


def deadline_missed(context: Mapping[str, Any], owner: str | None = None, allowed: str | None = None) -> None:
    """The deadline callback of every stage DAG (a ``SyncCallback``, run by the executor when a run is late):
    send a deadline alert through the failure alert channel. Like :class:`FailureAlert`, it never raises."""
    try:
        alert = alert_from_deadline(context, owner, allowed)
    except Exception:
        log.exception("Deadline alert NOT sent: could not read the late run from its context")
        return
    FailureAlert().deliver(alert)


def recipients(value: str | None) -> list[str]:
    """Comma- (or semicolon-) separated addresses, blanks dropped."""
    return [a.strip() for a in (value or "").replace(";", ",").split(",") if a.strip()]


class FailureAlert(BaseNotifier):
    """Airflow notifier that sends a failed task's summary by e-mail or webhook, or logs that alerts are off.

    Use it as a task's ``on_failure_callback``. Arguments left ``None`` are read from the environment when the
    alert is sent (``AIRLOOP_ALERTS_CONN_ID``, ``AIRLOOP_ALERTS_TO``, ``AIRLOOP_ALERTS_ENDPOINT``), so one DAG
    file serves every deployment. It never raises.
    """

    def __init__(self, *, conn_id: str | None = None, to: str | None = None, endpoint: str | None = None) -> None:
        super().__init__()
        self.conn_id = conn_id
        self.to = to
        self.endpoint = endpoint

    def notify(self, context: Any) -> None:
        try:
            alert = alert_from_context(context)
        except Exception:
            log.exception("Failure alert NOT sent: could not read the failed task from its context")
            return
        self.deliver(alert)

    def deliver(self, alert: Alert) -> None:
        """Send ``alert`` through the deployment's channel, or log that alerts are off; never raises."""
        conn_id = (self.conn_id if self.conn_id is not None else settings.alerts_conn_id()).strip()
        if not conn_id:
            log.info(OFF_MESSAGE)
            return
        try:
            self._send(alert, conn_id)
        except Exception as exc:  # a broken alert must never hide (or replace) the task's own failure
            log.error(
                "%s for %s NOT sent through connection %r: %s: %s. The task's failure stands; "
                "check the connection (Admin > Connections or AIRFLOW_CONN_%s).",
                alert.label,
                alert.where,
                conn_id,
                type(exc).__name__,
                exc,
                conn_id.upper(),
            )

    def _send(self, alert: Alert, conn_id: str) -> None:
        from airflow.sdk import Connection

        conn = Connection.get(conn_id)
        conn_type = (conn.conn_type or "").lower()
        if conn_type in EMAIL_CONN_TYPES:
            self._email(alert, conn_id)
        elif conn_type in WEBHOOK_CONN_TYPES:
            if conn.schema and conn.schema not in ("http", "https") and "://" not in (conn.host or ""):
                # A URI such as https://hooks.example.com/services/T0/B0/X stores the path as the schema, which
                # HttpHook takes for the protocol ("services/T0/B0/X://hooks.example.com").
                log.error(
                    "%s for %s NOT sent: webhook connection %r has schema %r, which HttpHook uses as "
                    "the protocol. Put the whole URL in the connection's host instead (JSON form: "
                    '{"conn_type": "http", "host": "https://..."}).',
                    alert.label,
                    alert.where,
                    conn_id,
                    conn.schema,
                )
                return
            self._webhook(alert, conn_id, conn.extra_dejson)
        else:
            log.error(
                "%s for %s NOT sent: connection %r has type %r; alerts need type smtp (e-mail) "
                "or http/https (webhook).",
                alert.label,
                alert.where,
                conn_id,
                conn_type,
            )

    def _email(self, alert: Alert, conn_id: str) -> None:
        from airflow.providers.smtp.hooks.smtp import SmtpHook

        to = recipients(self.to if self.to is not None else settings.alerts_to())
        if not to:
            log.error(
                "%s for %s NOT sent: connection %r is an e-mail (smtp) connection but %s is empty; "
                "set it to the comma-separated addresses to alert.",
                alert.label,
                alert.where,
                conn_id,
                TO_VAR,
            )
            return
        with SmtpHook(smtp_conn_id=conn_id) as hook:
            hook.send_email_smtp(
                to=to,
                subject=alert.subject,
                html_content=alert.html(),
                from_email=hook.from_email or f"airloop@{socket.gethostname()}",
            )
        log.info("%s for %s e-mailed to %s through connection %r", alert.label, alert.where, ", ".join(to), conn_id)

    def _webhook(self, alert: Alert, conn_id: str, extras: Mapping[str, Any]) -> None:
        from airflow.providers.http.hooks.http import HttpHook

        endpoint = self.endpoint if self.endpoint is not None else settings.alerts_endpoint()
        options = {} if "timeout" in extras else {"timeout": WEBHOOK_TIMEOUT_S}
        hook = HttpHook(method="POST", http_conn_id=conn_id)
        response = hook.run(endpoint=endpoint, json=alert.payload(), extra_options=options)
        log.info(
            "%s for %s posted to %s (HTTP %s) through connection %r",
            alert.label,
            alert.where,
            response.url,
            response.status_code,
            conn_id,
        )

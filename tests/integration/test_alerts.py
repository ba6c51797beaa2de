"""Failure alerts for real: a task fails under dag.test(), and Airflow's failure callback (airloop's notifier,
wired through ``dagkit.default_args``) reaches a local SMTP server (aiosmtpd) or a local HTTP server. The DAG's
deadline callback (``dagkit.run_limits``), run the way Airflow's executor runs it on a missed deadline, reaches the
same servers.

The probe DAG is a real DAG file in a bundle of its own (``dag.test()`` only runs DAGs it finds in a configured
bundle). Its one task fails twice: the first try goes up for retry (no alert), the second fails for good
(one alert).
"""

from __future__ import annotations

import email
import html
import json
import logging
import socket
import textwrap
import threading
from collections.abc import Callable, Iterator
from email.message import Message
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from tests.unit.test_alert_messages import WEBHOOK_FIELDS

DAG_ID = "alerts_probe"
TASK_ID = "extract"
ERROR = "source table bikes_hourly has no rows for [2012-01-01, 2012-01-29)"
BASE_URL = "http://airflow.example.test:8080"

_DAG_FILE = textwrap.dedent(
    f'''
    """A DAG whose only task fails: its second and last try is the one that alerts."""
    from datetime import timedelta

    from airflow.sdk import DAG, task

    from airloop.orchestration import build as dagkit
    spec = dagkit.model_specs()[0]
    with DAG(
        {DAG_ID!r},
        schedule=None,
        default_args=dagkit.default_args(spec, "ingest", retries=1),
        tags=["test"],
        **dagkit.run_limits(spec, "ingest"),
    ):

        @task(task_id={TASK_ID!r}, retry_delay=timedelta(0), retry_exponential_backoff=False)
        def extract():
            raise ValueError({ERROR!r} + "\\ndetail on a second line")

        extract()
    '''
)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="module")
def probe_bundle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("alerts_bundle")
    (folder / "alerts_probe.py").write_text(_DAG_FILE)
    return folder


@pytest.fixture
def run_probe(
    airflow_db: Path,
    probe_bundle: Path,
    monkeypatch: pytest.MonkeyPatch,
    capfd: pytest.CaptureFixture[str],
    caplog: pytest.LogCaptureFixture,
) -> Callable[[], tuple[Any, str]]:
    """Run the probe DAG once with dag.test(); return the DAG run and everything logged meanwhile.

    Task output reaches the captured stdout or, once Airflow's log handlers point at an earlier test's capture,
    only ``logging``: the log is both.
    """
    from airflow.dag_processing.dagbag import DagBag

    caplog.set_level(logging.INFO, logger="airloop.orchestration.notifiers")

    local = "airflow.dag_processing.bundles.local.LocalDagBundle"
    bundles = [
        {"name": "dags-folder", "classpath": local, "kwargs": {}},
        {"name": "alerts-probe", "classpath": local, "kwargs": {"path": str(probe_bundle)}},
    ]
    monkeypatch.setenv("AIRFLOW__DAG_PROCESSOR__DAG_BUNDLE_CONFIG_LIST", json.dumps(bundles))
    monkeypatch.setenv("AIRFLOW__API__BASE_URL", BASE_URL)
    monkeypatch.delenv("AIRLOOP_ALERTS_CONN_ID", raising=False)
    monkeypatch.delenv("AIRLOOP_ALERTS_TO", raising=False)
    monkeypatch.delenv("AIRLOOP_ALERTS_ENDPOINT", raising=False)

    def run() -> tuple[Any, str]:
        bag = DagBag(dag_folder=str(probe_bundle))
        assert bag.import_errors == {}
        capfd.readouterr()
        caplog.clear()
        dag_run = bag.dags[DAG_ID].test()
        (ti,) = dag_run.get_task_instances()
        # The task's own failure stands whatever the alert did: failed, after its one retry.
        assert (dag_run.state, ti.state, ti.try_number) == ("failed", "failed", 2)
        return dag_run, "".join(capfd.readouterr()) + caplog.text

    return run


class _Mailbox:
    """aiosmtpd handler that keeps every message it is given."""

    def __init__(self) -> None:
        self.messages: list[tuple[list[str], Message]] = []

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        self.messages.append((list(envelope.rcpt_tos), email.message_from_bytes(envelope.content)))
        return "250 Message accepted for delivery"


@pytest.fixture
def smtp_server() -> Iterator[tuple[int, _Mailbox]]:
    from aiosmtpd.controller import Controller

    logging.getLogger("mail.log").setLevel(logging.WARNING)  # aiosmtpd's per-connection chatter
    mailbox = _Mailbox()
    controller = Controller(mailbox, hostname="127.0.0.1", port=_free_port())
    controller.start()
    try:
        yield controller.port, mailbox
    finally:
        controller.stop()


class _Webhook(ThreadingHTTPServer):
    received: list[tuple[str, dict[str, str], bytes]]


@pytest.fixture
def webhook_server() -> Iterator[_Webhook]:
    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
            server.received.append((self.path, dict(self.headers), body))
            self.send_response(200)
            self.end_headers()
            self.wfile.write(b"ok")

        def log_message(self, *args: Any) -> None:  # keep the test output to Airflow's own log
            pass

    server = _Webhook(("127.0.0.1", 0), Handler)
    server.received = []
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


def _smtp_conn(port: int) -> str:
    extra = {"disable_ssl": True, "disable_tls": True, "from_email": "airflow@example.test", "retry_limit": 0}
    return json.dumps({"conn_type": "smtp", "host": "127.0.0.1", "port": port, "extra": extra})


def _body(message: Message) -> str:
    parts = [p for p in message.walk() if p.get_content_maintype() == "text"]
    return html.unescape("".join(p.get_payload(decode=True).decode(p.get_content_charset() or "utf-8") for p in parts))


def test_email_alert_reaches_a_local_smtp_server(run_probe, smtp_server, monkeypatch):
    port, mailbox = smtp_server
    monkeypatch.setenv("AIRFLOW_CONN_ALERTS_MAIL", _smtp_conn(port))
    monkeypatch.setenv("AIRLOOP_ALERTS_CONN_ID", "alerts_mail")
    monkeypatch.setenv("AIRLOOP_ALERTS_TO", "oncall@example.test, ml-team@example.test")

    dag_run, log = run_probe()

    assert len(mailbox.messages) == 1, log[-3000:]  # the retry did not alert; the final failure did, once
    rcpt, message = mailbox.messages[0]
    assert rcpt == ["oncall@example.test", "ml-team@example.test"]
    assert message["From"] == "airflow@example.test"
    assert f"FAILED {DAG_ID}.{TASK_ID}" in message["Subject"] and "try 2" in message["Subject"]
    body = _body(message)
    log_url = f"{BASE_URL}/dags/{DAG_ID}/runs/"
    for expected in (DAG_ID, TASK_ID, dag_run.run_id, f"ValueError: {ERROR}", log_url, "?try_number=2"):
        assert expected in body, (expected, body)
    assert f"Failure alert for {DAG_ID}.{TASK_ID} e-mailed to oncall@example.test, ml-team@example.test" in log


def test_webhook_alert_posts_the_documented_json(run_probe, webhook_server, monkeypatch):
    url = f"http://127.0.0.1:{webhook_server.server_port}/hooks/airloop"
    conn = {"conn_type": "http", "host": url, "extra": {"Authorization": "Bearer s3cret"}}
    monkeypatch.setenv("AIRFLOW_CONN_ALERTS_HOOK", json.dumps(conn))
    monkeypatch.setenv("AIRLOOP_ALERTS_CONN_ID", "alerts_hook")

    dag_run, log = run_probe()

    assert len(webhook_server.received) == 1, log[-3000:]
    path, headers, body = webhook_server.received[0]
    assert path == "/hooks/airloop"
    assert headers["Content-Type"] == "application/json"
    assert headers["Authorization"] == "Bearer s3cret"  # the connection's extras are sent as headers
    alert = json.loads(body)
    assert set(alert) == WEBHOOK_FIELDS
    assert (alert["dag_id"], alert["task_id"], alert["run_id"], alert["try_number"]) == (
        DAG_ID,
        TASK_ID,
        dag_run.run_id,
        2,
    )
    assert alert["error"] == f"ValueError: {ERROR}\ndetail on a second line"
    assert alert["log_url"].startswith(f"{BASE_URL}/dags/{DAG_ID}/runs/")
    assert alert["log_url"].endswith(f"/tasks/{TASK_ID}?try_number=2")
    assert alert["interval_start"] == dag_run.data_interval_start.isoformat()
    assert alert["owner"] not in (None, "", "airflow")
    for expected in (DAG_ID, TASK_ID, ERROR, alert["log_url"]):
        assert expected in alert["text"]
    assert f"posted to {url} (HTTP 200)" in log


def test_alerts_are_off_by_default_and_say_how_to_turn_them_on(run_probe):
    from airloop.orchestration.notifiers import OFF_MESSAGE

    _, log = run_probe()
    assert OFF_MESSAGE in log
    assert "AIRLOOP_ALERTS_CONN_ID" in OFF_MESSAGE and "smtp" in OFF_MESSAGE and "http" in OFF_MESSAGE


@pytest.mark.parametrize("conn_type", ["http", "smtp"])
def test_an_unreachable_channel_is_logged_and_the_task_failure_stands(run_probe, monkeypatch, conn_type):
    port = _free_port()  # nothing listens there: connection refused
    if conn_type == "http":
        conn = json.dumps({"conn_type": "http", "host": f"http://127.0.0.1:{port}/hook"})
    else:
        conn = _smtp_conn(port)
        monkeypatch.setenv("AIRLOOP_ALERTS_TO", "oncall@example.test")
    monkeypatch.setenv("AIRFLOW_CONN_ALERTS_DOWN", conn)
    monkeypatch.setenv("AIRLOOP_ALERTS_CONN_ID", "alerts_down")

    _, log = run_probe()  # asserts the task failed with its own error after its retry

    assert f"Failure alert for {DAG_ID}.{TASK_ID} NOT sent through connection 'alerts_down'" in log
    assert "Connection refused" in log or "ConnectionRefusedError" in log, log[-3000:]
    assert "Failed to run task callback" not in log  # nothing escaped the notifier
    assert f"ValueError: {ERROR}" in log


def test_email_without_recipients_is_a_clear_error(run_probe, smtp_server, monkeypatch):
    port, mailbox = smtp_server
    monkeypatch.setenv("AIRFLOW_CONN_ALERTS_MAIL", _smtp_conn(port))
    monkeypatch.setenv("AIRLOOP_ALERTS_CONN_ID", "alerts_mail")

    _, log = run_probe()

    assert mailbox.messages == []
    assert "is an e-mail (smtp) connection but AIRLOOP_ALERTS_TO is empty" in log


def _missed_deadline(dag_run: Any, bundle: Path) -> tuple[bool, str | None]:
    """Run the probe DAG's deadline callback as Airflow does when the deadline passes: the context the scheduler
    builds (``Deadline.handle_miss``: the run as the REST API shows it, and the deadline), handed with the
    callback's kwargs to the executor's ``execute_callback``."""
    from datetime import UTC, datetime

    import structlog
    from airflow.api_fastapi.core_api.datamodels.dag_run import DAGRunResponse
    from airflow.dag_processing.dagbag import DagBag
    from airflow.models import DagRun
    from airflow.sdk.execution_time.callback_supervisor import execute_callback
    from airflow.utils.session import create_session

    (alert,) = DagBag(dag_folder=str(bundle)).dags[DAG_ID].deadline
    with create_session() as session:
        run = session.get(DagRun, dag_run.id)
        shown = DAGRunResponse.model_validate(run).model_dump(mode="json")
    context = {"dag_run": shown, "deadline": {"id": "0", "deadline_time": datetime(2030, 1, 1, 1, tzinfo=UTC)}}
    data = alert.callback.serialize()
    return execute_callback(
        data["path"], {**data["kwargs"], "context": context}, "alerts_probe.py", None, structlog.get_logger()
    )


def test_a_missed_deadline_posts_to_the_same_webhook(run_probe, probe_bundle, webhook_server, monkeypatch):
    url = f"http://127.0.0.1:{webhook_server.server_port}/hooks/airloop"
    monkeypatch.setenv("AIRFLOW_CONN_ALERTS_HOOK", json.dumps({"conn_type": "http", "host": url}))
    monkeypatch.setenv("AIRLOOP_ALERTS_CONN_ID", "alerts_hook")
    dag_run, _ = run_probe()
    webhook_server.received.clear()  # the task's own failure alert

    assert _missed_deadline(dag_run, probe_bundle) == (True, None)

    (received,) = webhook_server.received
    alert = json.loads(received[2])
    assert set(alert) == WEBHOOK_FIELDS
    assert (alert["kind"], alert["dag_id"], alert["task_id"], alert["run_id"]) == (
        "deadline_missed",
        DAG_ID,
        None,
        dag_run.run_id,
    )
    assert alert["owner"] not in (None, "", "airflow")
    assert "Deadline missed" in alert["error"] and "2030-01-01T01:00:00+00:00" in alert["error"]
    assert "allowed: 1h after it was queued" in alert["error"]
    assert alert["log_url"].startswith(f"{BASE_URL}/dags/{DAG_ID}/runs/") and "/tasks/" not in alert["log_url"]
    assert f"Run late:     {DAG_ID}" in alert["text"]


def test_a_missed_deadline_is_e_mailed_through_the_same_channel(
    run_probe, probe_bundle, smtp_server, monkeypatch, caplog
):
    port, mailbox = smtp_server
    monkeypatch.setenv("AIRFLOW_CONN_ALERTS_MAIL", _smtp_conn(port))
    monkeypatch.setenv("AIRLOOP_ALERTS_CONN_ID", "alerts_mail")
    monkeypatch.setenv("AIRLOOP_ALERTS_TO", "oncall@example.test")
    dag_run, _ = run_probe()
    mailbox.messages.clear()  # the task's own failure alert

    assert _missed_deadline(dag_run, probe_bundle) == (True, None)

    ((rcpt, message),) = mailbox.messages
    assert rcpt == ["oncall@example.test"]
    assert message["Subject"] == f"[airloop] LATE {DAG_ID} (run {dag_run.run_id}): deadline missed"
    assert "Deadline missed: the run was queued at" in _body(message)
    assert f"Deadline alert for {DAG_ID} e-mailed to oncall@example.test" in caplog.text

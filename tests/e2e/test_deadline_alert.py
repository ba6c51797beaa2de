"""A late run alerts for real: the embedded runtime's scheduler sees a run miss its deadline (the spec's
``timeouts.ingest.deadline``, wired by ``build.run_limits``) and its executor runs airloop's deadline callback,
which posts the alert to a local webhook through the failure alert channel.

Slow (the runtime's start, about a minute and a half on 2 cores, and the one-minute deadline).
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
import yaml

from airloop.ops import runtime
from tests.e2e.helpers import wait_for
from tests.e2e.test_runtime import _isolate, _request

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(900)]

ROOT = Path(__file__).resolve().parents[2]
DAG_ID = "airloop_e2e_late"
LATE_DAG = f"""
import time

from airflow.sdk import DAG, task

from airloop.orchestration import build

spec = build.model_specs()[0]
with DAG(
    {DAG_ID!r},
    schedule=None,
    start_date=spec.schedule.start_datetime,
    catchup=False,
    default_args=build.default_args(spec, "ingest"),
    **build.run_limits(spec, "ingest"),
):

    @task
    def hang():
        time.sleep(600)  # a call that never returns

    hang()
"""


@pytest.fixture
def webhook() -> Iterator[tuple[ThreadingHTTPServer, list[bytes]]]:
    received: list[bytes] = []

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            received.append(self.rfile.read(int(self.headers.get("Content-Length", 0))))
            self.send_response(200)
            self.end_headers()

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server, received
    finally:
        server.shutdown()
        server.server_close()


def test_a_run_past_its_deadline_alerts_through_the_webhook(tmp_path: Path, webhook) -> None:
    server, received = webhook
    home, project = tmp_path / "home", tmp_path / "project"
    (project / "dags").mkdir(parents=True)
    (project / "dags" / "late.py").write_text(LATE_DAG)
    spec = yaml.safe_load((ROOT / "include" / "models" / "bikes.yaml").read_text())
    spec["timeouts"] = {"ingest": {"task": "10m", "run": "10m", "deadline": "1m"}}
    (project / "include" / "models").mkdir(parents=True)
    (project / "include" / "models" / "bikes.yaml").write_text(yaml.safe_dump(spec))
    with pytest.MonkeyPatch.context() as mp:
        _isolate(mp, home, project)
        hook = {"conn_type": "http", "host": f"http://127.0.0.1:{server.server_port}/late"}
        mp.setenv("AIRFLOW_CONN_ALERTS_HOOK", json.dumps(hook))
        mp.setenv("AIRLOOP_ALERTS_CONN_ID", "alerts_hook")
        try:
            status = runtime.up(wait_timeout=240)
            token = runtime.get_token("admin", runtime.read_credentials()["admin"])
            dag_url = f"{status.urls['api']}/dags/{DAG_ID}"
            wait_for("the DAG to be parsed", lambda: _request(dag_url, token)[0] == 200, timeout=120)
            assert _request(dag_url, token, "PATCH", {"is_paused": False})[0] == 200
            code, _, body = _request(f"{dag_url}/dagRuns", token, "POST", {"logical_date": None})
            assert code == 200, body
            run_id = json.loads(body)["dag_run_id"]

            wait_for("the deadline alert", lambda: received, timeout=300, every=2)
        finally:
            runtime.down()

    alert = json.loads(received[0])
    assert (alert["kind"], alert["dag_id"], alert["run_id"], alert["task_id"]) == (
        "deadline_missed",
        DAG_ID,
        run_id,
        None,
    )
    assert "allowed: 1m after it was queued" in alert["error"] and "its state is running" in alert["error"]
    assert alert["owner"] == spec["owner"]

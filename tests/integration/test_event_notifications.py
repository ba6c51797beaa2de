"""Event notifications for real: each kind reaches a local SMTP server (aiosmtpd) and a local HTTP server through
the failure alerts' channel code; a kind switched off sends nothing; a broken channel never fails the task; and a
freshness breach in a real monitor run is notified (the quarantine in a real ingest run: test_quarantine_notice.py).
"""

from __future__ import annotations

import json
import logging
import textwrap
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from airloop.core import freshness
from airloop.core.intervals import Interval
from airloop.orchestration import events
from airloop.orchestration.notifiers import EVENT_FIELDS, Event, notify_event
from tests.integration.test_alerts import _body, _free_port, _smtp_conn, smtp_server, webhook_server  # noqa: F401
from tests.unit.test_event_messages import _gate, _row, _summary

BASE_URL = "http://airflow.example.test:8080"
D = datetime(2012, 6, 1, tzinfo=UTC)


def _one_of_each(bikes_spec) -> dict[str, Event]:
    interval = Interval(datetime(2011, 3, 26, tzinfo=UTC), datetime(2011, 4, 23, tzinfo=UTC))
    quarantined = {"partition": interval.key, "rows": 650, "evaluated": 14, "failed": 2, "quarantined_rows": 650}
    answer = f"{BASE_URL}/dags/bikes_train/runs/r/tasks/approve/required_actions?map_index=-1"
    stale = freshness.check(bikes_spec, datetime(2011, 1, 29, tzinfo=UTC), datetime(2011, 6, 1, tzinfo=UTC), after=3)
    return {
        "retrain": events.retrain(_summary(), {"request_id": 3}, "bikes_monitor", "r"),
        "promotion": events.promotion(_gate(), _row("promoted", True), "bikes_train", "r"),
        "approval": events.approval(_gate(), answer, D, D + timedelta(minutes=42), None, "bikes_train", "r"),
        "quarantine": events.quarantine("bikes", interval, quarantined, "bikes_ingest", "r"),
        "freshness": events.freshness(stale, "bikes_ingest", "bikes_monitor", "r"),
    }


@pytest.fixture
def env(monkeypatch, caplog):
    monkeypatch.setenv("AIRFLOW__API__BASE_URL", BASE_URL)
    for var in ("AIRLOOP_ALERTS_CONN_ID", "AIRLOOP_ALERTS_TO", "AIRLOOP_ALERTS_ENDPOINT", "AIRLOOP_NOTIFY"):
        monkeypatch.delenv(var, raising=False)
    caplog.set_level(logging.INFO, logger="airloop.orchestration.notifiers")
    return monkeypatch


def _webhook_conn(monkeypatch, server) -> str:
    url = f"http://127.0.0.1:{server.server_port}/hooks/airloop"
    monkeypatch.setenv("AIRFLOW_CONN_EVENTS_HOOK", json.dumps({"conn_type": "http", "host": url}))
    monkeypatch.setenv("AIRLOOP_ALERTS_CONN_ID", "events_hook")
    return url


@pytest.mark.parametrize("kind", ["retrain", "promotion", "approval", "quarantine", "freshness"])
def test_each_kind_is_e_mailed(kind, env, smtp_server, bikes_spec, caplog):  # noqa: F811
    port, mailbox = smtp_server
    env.setenv("AIRFLOW_CONN_EVENTS_MAIL", _smtp_conn(port))
    env.setenv("AIRLOOP_ALERTS_CONN_ID", "events_mail")
    env.setenv("AIRLOOP_ALERTS_TO", "oncall@example.test")
    env.setenv("AIRLOOP_NOTIFY", "all")
    event = _one_of_each(bikes_spec)[kind]

    assert notify_event(event) is True

    ((rcpt, message),) = mailbox.messages
    assert rcpt == ["oncall@example.test"]
    assert message["Subject"] == event.subject and f"[airloop] {kind.upper()} bikes:" in message["Subject"]
    body = _body(message)
    assert event.text in body and event.link in body
    assert f"{kind.title()} notification for bikes e-mailed to oncall@example.test" in caplog.text


@pytest.mark.parametrize("kind", ["retrain", "promotion", "approval", "quarantine", "freshness"])
def test_each_kind_is_posted_as_json(kind, env, webhook_server, bikes_spec, caplog):  # noqa: F811
    url = _webhook_conn(env, webhook_server)
    env.setenv("AIRLOOP_NOTIFY", "all")
    event = _one_of_each(bikes_spec)[kind]

    assert notify_event(event) is True

    ((path, headers, body),) = webhook_server.received
    assert path == "/hooks/airloop" and headers["Content-Type"] == "application/json"
    sent = json.loads(body)
    assert set(sent) == EVENT_FIELDS
    assert (sent["kind"], sent["model"], sent["link"], sent["text"]) == (kind, "bikes", event.link, event.text)
    assert sent["link"].startswith(BASE_URL)
    assert sent["data"] == json.loads(json.dumps(dict(event.data or {})))
    assert f"posted to {url} (HTTP 200)" in caplog.text


def test_a_kind_switched_off_sends_nothing(env, webhook_server, bikes_spec, caplog):  # noqa: F811
    _webhook_conn(env, webhook_server)
    env.setenv("AIRLOOP_NOTIFY", "quarantine,freshness")
    each = _one_of_each(bikes_spec)

    sent = {kind: notify_event(event) for kind, event in each.items()}

    assert sent == {"retrain": False, "promotion": False, "approval": False, "quarantine": True, "freshness": True}
    assert sorted(json.loads(b)["kind"] for _, _, b in webhook_server.received) == ["freshness", "quarantine"]
    assert "kind 'promotion' is off (AIRLOOP_NOTIFY=quarantine,freshness)" in caplog.text


# --- inside a task ---

_PROBE = textwrap.dedent(
    '''
    """A task that notifies through a broken channel (and with a message that cannot be built), then succeeds."""
    from airflow.sdk import DAG, task

    from airloop.orchestration import build as dagkit

    spec = dagkit.model_specs()[0]
    args = dagkit.default_args(spec, "monitor", retries=0)
    with DAG("notify_probe", schedule=None, default_args=args, tags=["test"]):

        @task
        def announce():
            from airloop.orchestration.notifiers import Event, notify_built

            event = Event(kind="retrain", model="bikes", headline="probe", facts=(("Why", "probe"),))
            notify_built("retrain", lambda: event)
            notify_built("promotion", lambda: 1 / 0)
            return "done"

        announce()
    '''
)


def test_a_broken_channel_is_logged_and_never_fails_the_task(airflow_db, tmp_path, env, capfd, caplog):
    from airflow.dag_processing.dagbag import DagBag

    (tmp_path / "notify_probe.py").write_text(_PROBE)
    local = "airflow.dag_processing.bundles.local.LocalDagBundle"
    bundles = [
        {"name": "dags-folder", "classpath": local, "kwargs": {}},
        {"name": "notify-probe", "classpath": local, "kwargs": {"path": str(tmp_path)}},
    ]
    env.setenv("AIRFLOW__DAG_PROCESSOR__DAG_BUNDLE_CONFIG_LIST", json.dumps(bundles))
    env.setenv(
        "AIRFLOW_CONN_EVENTS_DOWN", json.dumps({"conn_type": "http", "host": f"http://127.0.0.1:{_free_port()}/h"})
    )
    env.setenv("AIRLOOP_ALERTS_CONN_ID", "events_down")
    env.setenv("AIRLOOP_NOTIFY", "all")
    bag = DagBag(dag_folder=str(tmp_path))
    assert bag.import_errors == {}

    run = bag.dags["notify_probe"].test()

    (ti,) = run.get_task_instances()
    assert (run.state, ti.state) == ("success", "success")
    log = "".join(capfd.readouterr()) + caplog.text
    assert "Retrain notification for bikes NOT sent through connection 'events_down'" in log
    assert "Connection refused" in log or "ConnectionRefusedError" in log, log[-3000:]
    assert "The promotion notification could not be built or sent" in log


FRESH_MODEL = "bikesfresh"


def test_a_freshness_breach_in_a_real_monitor_run_fails_its_task_and_is_notified(
    airflow_db,
    seeded_source,
    tmp_path,
    env,
    webhook_server,  # noqa: F811
):
    """A model of its own whose ingestion stopped: its five newest intervals were never validated."""
    from airflow.dag_processing.dagbag import DagBag

    from airloop.adapters.db import engine_for
    from airloop.adapters.lake import default_lake
    from airloop.core.spec import get_spec
    from tests.support import models_folder, write_validated_partitions

    env.setenv("AIRLOOP_MODELS_DIR", str(models_folder(tmp_path, FRESH_MODEL)))
    spec = get_spec(FRESH_MODEL)
    lake = default_lake()
    keys = write_validated_partitions(engine_for("airloop_source"), lake, spec, last=8)
    for key in keys[-5:]:
        lake.delete(FRESH_MODEL, "validated", key)
    newest_end = datetime.fromisoformat(lake.manifest(FRESH_MODEL, "validated", keys[-6]).meta["interval_end"])
    _webhook_conn(env, webhook_server)
    env.setenv("AIRLOOP_NOTIFY", "freshness")
    env.setenv("AIRLOOP_FRESHNESS_AFTER", "2")

    def run(as_of: datetime) -> dict[str, str]:
        bag = DagBag(dag_folder=str(Path(__file__).resolve().parents[2] / "dags" / "monitor.py"))
        dag_run = bag.dags[f"{FRESH_MODEL}_monitor"].test(run_conf={"as_of": f"{as_of:%Y-%m-%d}"})
        return {ti.task_id: ti.state for ti in dag_run.get_task_instances()}

    def notices() -> list[dict]:
        return [b for b in (json.loads(r[2]) for r in webhook_server.received) if b.get("kind") == "freshness"]

    # As of one interval after the newest validated end: one missing, under the threshold of 2.
    states = run(newest_end + timedelta(days=28))
    assert states["freshness"] == "success", states
    assert notices() == []

    # As of two intervals after: a breach; the task fails (visible) and on-call is told.
    states = run(newest_end + timedelta(days=56))
    assert states["freshness"] == "failed" and states["check"] == "success", states
    (sent,) = notices()
    assert sent["model"] == FRESH_MODEL and sent["data"]["breached"] is True and sent["data"]["missing"] == 2
    assert sent["data"]["newest_end"] == newest_end.isoformat()
    assert sent["link"] == f"{BASE_URL}/dags/{FRESH_MODEL}_ingest"
    assert "no new validated interval for 2 expected interval(s)" in sent["headline"]


def test_the_approval_operators_notifier_posts_the_answer_link_and_the_wait(env, webhook_server):  # noqa: F811
    """What Airflow hands the approval operator's notifiers once the request is written (the task's context)."""
    from types import SimpleNamespace

    from airloop.orchestration.approval import ApprovalWaiting, RecordedApproval

    _webhook_conn(env, webhook_server)
    env.setenv("AIRLOOP_NOTIFY", "approval")
    operator = RecordedApproval(task_id="approve", subject="Promote?", response_timeout=timedelta(hours=24))
    gate = _gate()
    started = datetime.now(UTC) - timedelta(minutes=7, seconds=30)

    def xcom_pull(task_ids: str, key: str) -> dict:
        assert (task_ids, key) == ("gate", "gate")
        return gate.to_dict()

    ti = SimpleNamespace(
        dag_id="bikes_train", run_id="manual__r+1", task_id="approve", map_index=-1, start_date=started,
        xcom_pull=xcom_pull,
    )  # fmt: skip
    ApprovalWaiting()({"ti": ti, "task_instance": ti, "task": operator})  # as HITLOperator.execute calls it

    ((_, _, body),) = webhook_server.received
    sent = json.loads(body)
    assert sent["kind"] == "approval" and sent["model"] == "bikes"
    assert sent["link"] == f"{BASE_URL}/dags/bikes_train/runs/manual__r+1/tasks/approve/required_actions?map_index=-1"
    assert sent["data"]["candidate"] == "7" and 450 <= sent["data"]["waited_seconds"] < 600
    assert "7m so far" in sent["text"] and started.isoformat() in sent["text"]
    timeout = datetime.fromisoformat(sent["data"]["timeout_at"])
    assert timedelta(hours=23, minutes=59) < timeout - datetime.now(UTC) <= timedelta(hours=24)

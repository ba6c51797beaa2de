"""The alert's content and the notifier's decisions, without a DAG run (the channels are tested for real in
tests/integration/test_alerts.py)."""

from __future__ import annotations

import json
import logging
from datetime import UTC, datetime
from types import SimpleNamespace

import pytest

from airloop.orchestration import notifiers as alerts
from airloop.orchestration.notifiers import Alert, FailureAlert, alert_from_context, recipients, summarize_error

#: The webhook body's fields, as docs/operations.md and notifiers.py document them (the contract tested here).
WEBHOOK_FIELDS = {
    "kind",
    "dag_id",
    "task_id",
    "run_id",
    "try_number",
    "logical_date",
    "interval_start",
    "interval_end",
    "owner",
    "error",
    "log_url",
    "text",
}


@pytest.fixture
def context() -> dict:
    """The parts of an Airflow task context the alert reads (a task instance without ``log_url``)."""
    start, end = datetime(2012, 1, 1, tzinfo=UTC), datetime(2012, 1, 29, tzinfo=UTC)
    return {
        "ti": SimpleNamespace(
            dag_id="bikes_ingest", task_id="validate", run_id="scheduled__2012-01-01T00:00:00+00:00", try_number=3
        ),
        "task": SimpleNamespace(task_id="validate", owner="ml-platform"),
        "logical_date": start,
        "data_interval_start": start,
        "data_interval_end": end,
        "exception": ValueError("Batch QUARANTINED: 3 expectations failed <cnt>"),
    }


@pytest.fixture
def no_alert_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for var in (alerts.CONN_ID_VAR, alerts.TO_VAR, alerts.ENDPOINT_VAR):
        monkeypatch.delenv(var, raising=False)


def test_alert_reads_the_context_and_builds_the_log_url_from_the_api_base_url(context, monkeypatch):
    monkeypatch.setenv("AIRFLOW__API__BASE_URL", "https://airflow.example.test/")
    alert = alert_from_context(context)
    assert alert.where == "bikes_ingest.validate"
    assert alert.try_number == 3 and alert.owner == "ml-platform"
    assert (alert.interval_start, alert.interval_end) == ("2012-01-01T00:00:00+00:00", "2012-01-29T00:00:00+00:00")
    assert alert.error == "ValueError: Batch QUARANTINED: 3 expectations failed <cnt>"
    assert alert.log_url == (
        "https://airflow.example.test/dags/bikes_ingest/runs/scheduled__2012-01-01T00%3A00%3A00%2B00%3A00"
        "/tasks/validate?try_number=3"
    )


def test_a_task_instance_log_url_is_used_as_airflow_gives_it(context):
    context["ti"].log_url = "http://x.test/dags/d/runs/r/tasks/t?try_number=3"
    assert alert_from_context(context).log_url == "http://x.test/dags/d/runs/r/tasks/t?try_number=3"


def test_payload_has_the_documented_fields_and_text_carries_the_summary(context):
    alert = alert_from_context(context)
    payload = json.loads(json.dumps(alert.payload()))  # JSON-safe as it is
    assert set(payload) == WEBHOOK_FIELDS
    for expected in ("bikes_ingest.validate", "try 3", "2012-01-01T00:00:00+00:00", "QUARANTINED", alert.log_url):
        assert expected in payload["text"]
    assert "FAILED bikes_ingest.validate" in alert.subject


def test_email_body_escapes_the_error_and_links_the_log(context):
    body = alert_from_context(context).html()
    assert "&lt;cnt&gt;" in body and "<cnt>" not in body
    assert '<a href="http' in body


def test_a_context_without_a_task_instance_still_gives_an_alert():
    alert = alert_from_context({"dag_run": SimpleNamespace(dag_id="d", run_id="r"), "exception": "it broke"})
    assert (alert.dag_id, alert.task_id, alert.run_id, alert.error, alert.log_url) == ("d", "?", "r", "it broke", None)
    assert "none" in alert.text  # no interval: said, not crashed


@pytest.mark.parametrize(
    ("error", "expected", "cut"),
    [
        (None, "(no exception was recorded; see the log)", False),
        ("plain text", "plain text", False),
        (KeyError("col"), "KeyError: 'col'", False),
        (RuntimeError("\n".join(f"line {i}" for i in range(40))), "RuntimeError: line 0", True),
        (RuntimeError("x" * 5000), "RuntimeError: xxx", True),
    ],
)
def test_error_is_summarised_and_says_when_it_was_cut(error, expected, cut):
    text = summarize_error(error)
    assert text.startswith(expected)
    assert ("cut; the full message and traceback are in the log" in text) is cut
    assert text.count("\n") <= alerts.MAX_ERROR_LINES
    assert len(text) <= alerts.MAX_ERROR_CHARS + 80


def test_recipients_are_split_and_trimmed():
    assert recipients(" a@x.test, b@x.test;c@x.test ,, ") == ["a@x.test", "b@x.test", "c@x.test"]
    assert recipients(None) == [] and recipients(" , ") == []


def test_off_by_default_logs_how_to_turn_alerts_on(context, no_alert_env, caplog):
    caplog.set_level(logging.INFO, logger="airloop.orchestration.notifiers")
    FailureAlert()(context)  # through BaseNotifier.__call__, as Airflow calls it
    assert caplog.messages == [alerts.OFF_MESSAGE]
    assert alerts.CONN_ID_VAR in alerts.OFF_MESSAGE and alerts.TO_VAR in alerts.OFF_MESSAGE


def test_a_missing_connection_is_logged_and_never_raises(context, no_alert_env, caplog):
    FailureAlert(conn_id="no_such_alert_conn")(context)
    (record,) = [r for r in caplog.records if r.name == "airloop.orchestration.notifiers"]
    assert record.levelno == logging.ERROR
    assert "NOT sent through connection 'no_such_alert_conn'" in record.getMessage()
    assert "AIRFLOW_CONN_NO_SUCH_ALERT_CONN" in record.getMessage()


def test_a_connection_of_another_type_is_logged(context, no_alert_env, monkeypatch, caplog):
    monkeypatch.setenv("AIRFLOW_CONN_ALERTS_PG", json.dumps({"conn_type": "postgres", "host": "db"}))
    monkeypatch.setenv(alerts.CONN_ID_VAR, "alerts_pg")
    FailureAlert()(context)
    assert "has type 'postgres'; alerts need type smtp (e-mail) or http/https (webhook)" in caplog.text


def test_a_webhook_given_as_a_uri_with_a_path_is_explained(context, no_alert_env, monkeypatch, caplog):
    monkeypatch.setenv("AIRFLOW_CONN_ALERTS_URI", "https://hooks.example.test/services/T0/B0/XYZ")
    FailureAlert(conn_id="alerts_uri")(context)
    assert "has schema 'services/T0/B0/XYZ', which HttpHook uses as the protocol" in caplog.text
    assert "Put the whole URL in the connection's host" in caplog.text


def test_email_without_recipients_is_a_clear_error(context, no_alert_env, monkeypatch, caplog):
    monkeypatch.setenv("AIRFLOW_CONN_ALERTS_SMTP", json.dumps({"conn_type": "smtp", "host": "127.0.0.1", "port": 1}))
    FailureAlert(conn_id="alerts_smtp")(context)
    assert "is an e-mail (smtp) connection but AIRLOOP_ALERTS_TO is empty" in caplog.text


def test_default_args_alert_on_final_failure_only(bikes_spec):
    from airloop.orchestration import build as dagkit

    args = dagkit.default_args(bikes_spec, "ingest")
    assert isinstance(args["on_failure_callback"], FailureAlert)
    assert "on_retry_callback" not in args


def test_alert_is_a_plain_value():
    alert = Alert("d", "t", "r", 1, None, None, None, None, "E", None)
    assert "Log:          unknown" in alert.text and "Interval:     none to none" in alert.text


@pytest.fixture
def deadline_context() -> dict:
    """The context Airflow gives a deadline callback (``Deadline.handle_miss``), after its JSON round trip."""
    return {
        "dag_run": {
            "dag_id": "bikes_train",
            "dag_run_id": "manual__2026-12-07T10:00:00+00:00",
            "logical_date": None,
            "queued_at": "2026-12-07T10:00:00Z",
            "data_interval_start": None,
            "data_interval_end": None,
            "state": "running",
        },
        "deadline": {"id": "0193", "deadline_time": "2026-12-07T12:00:00Z"},
    }


def test_a_deadline_alert_says_which_run_is_late_since_when_and_what_was_allowed(deadline_context, monkeypatch):
    monkeypatch.setenv("AIRFLOW__API__BASE_URL", "https://airflow.example.test/")
    alert = alerts.alert_from_deadline(deadline_context, owner="ml-platform", allowed="2h")
    assert (alert.kind, alert.where, alert.task_id, alert.owner) == (
        "deadline_missed",
        "bikes_train",
        None,
        "ml-platform",
    )
    assert alert.subject == "[airloop] LATE bikes_train (run manual__2026-12-07T10:00:00+00:00): deadline missed"
    assert alert.error.startswith(
        "Deadline missed: the run was queued at 2026-12-07T10:00:00Z and had not finished by 2026-12-07T12:00:00Z "
        "(allowed: 2h after it was queued: timeouts.<stage>.deadline of the spec); its state is running."
    )
    assert (
        alert.log_url == "https://airflow.example.test/dags/bikes_train/runs/manual__2026-12-07T10%3A00%3A00%2B00%3A00"
    )
    payload = json.loads(json.dumps(alert.payload()))
    assert set(payload) == WEBHOOK_FIELDS and payload["kind"] == "deadline_missed" and payload["task_id"] is None
    assert "Run late:     bikes_train" in payload["text"]


def test_the_deadline_callback_goes_through_the_failure_channel_and_never_raises(
    deadline_context, no_alert_env, monkeypatch, caplog
):
    caplog.set_level(logging.INFO, logger="airloop.orchestration.notifiers")
    alerts.deadline_missed(deadline_context, owner="ml-platform", allowed="2h")
    assert alerts.OFF_MESSAGE in caplog.text  # off by default, like failure alerts
    monkeypatch.setenv("AIRFLOW_CONN_ALERTS_FTP", json.dumps({"conn_type": "ftp", "host": "x"}))
    monkeypatch.setenv(alerts.CONN_ID_VAR, "alerts_ftp")
    alerts.deadline_missed(deadline_context)
    assert "Deadline alert for bikes_train NOT sent: connection 'alerts_ftp' has type 'ftp'" in caplog.text
    alerts.deadline_missed({"dag_run": "not a mapping"})  # logged, never raised
    assert "Deadline alert NOT sent: could not read the late run from its context" in caplog.text

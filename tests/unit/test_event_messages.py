"""Event notifications without a DAG run: the AIRLOOP_NOTIFY switch, the freshness count, and each kind's message
(the channels are exercised for real in tests/integration/test_event_notifications.py)."""

from __future__ import annotations

import logging
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from airloop.core import freshness, settings
from airloop.core.contracts import GateResult, MonitorSummary, PromotionOutcome
from airloop.core.intervals import Interval
from airloop.orchestration import events
from airloop.orchestration.notifiers import EVENT_FIELDS, Event, notify_event

ROOT = Path(__file__).resolve().parents[2]
BASE = "https://airflow.example.test"
D = datetime(2012, 1, 1, tzinfo=UTC)


@pytest.fixture(autouse=True)
def base_url(monkeypatch):
    monkeypatch.setenv("AIRFLOW__API__BASE_URL", f"{BASE}/")


# --- AIRLOOP_NOTIFY and AIRLOOP_FRESHNESS_AFTER ---


@pytest.mark.parametrize(
    ("value", "kinds"),
    [
        (None, set()),
        ("", set()),
        ("none", set()),
        ("all", set(settings.NOTIFY_KINDS)),
        ("ALL", set(settings.NOTIFY_KINDS)),
        ("retrain", {"retrain"}),
        (" quarantine , Freshness;promotion ", {"quarantine", "freshness", "promotion"}),
    ],
)
def test_notify_kinds_parse(value, kinds):
    env = {} if value is None else {"AIRLOOP_NOTIFY": value}
    assert settings.notify_kinds(env) == kinds


@pytest.mark.parametrize(("value", "named"), [("retrain,promotions", "promotions"), ("all,retrain", "all/none")])
def test_notify_kinds_refuse_unknown_words_naming_them_and_the_known_kinds(value, named):
    with pytest.raises(ValueError) as caught:
        settings.notify_kinds({"AIRLOOP_NOTIFY": value})
    message = str(caught.value)
    assert "AIRLOOP_NOTIFY" in message and named in message
    assert "retrain, promotion, approval, quarantine, freshness" in message


def test_freshness_after_defaults_to_three_and_refuses_nonsense():
    assert settings.freshness_after({}) == 3
    assert settings.freshness_after({"AIRLOOP_FRESHNESS_AFTER": "5"}) == 5
    for bad in ("0", "-1", "three"):
        with pytest.raises(ValueError, match="AIRLOOP_FRESHNESS_AFTER"):
            settings.freshness_after({"AIRLOOP_FRESHNESS_AFTER": bad})


# --- the freshness count ---


def test_freshness_counts_expected_intervals_ended_since_the_newest_validated(bikes_spec):
    step = timedelta(days=28)  # bikes: every 28d from 2011-01-01
    start = datetime(2011, 1, 1, tzinfo=UTC)
    newest = start + 5 * step
    # 2 more intervals ended by as_of (the third ends a day later): within tolerance at 3
    as_of = start + 8 * step - timedelta(days=1)
    fresh = freshness.check(bikes_spec, newest, as_of, after=3)
    assert len(fresh.missing) == 2 and not fresh.breached
    assert fresh.missing[0] == Interval(newest, newest + step)
    assert "within tolerance" in fresh.summary
    stale = freshness.check(bikes_spec, newest, as_of + timedelta(days=1), after=3)
    assert len(stale.missing) == 3 and stale.breached
    assert "STALE" in stale.summary and newest.isoformat() in stale.summary
    assert freshness.check(bikes_spec, start + 8 * step, as_of, after=1).missing == ()


def test_freshness_with_nothing_validated_counts_every_expected_interval(bikes_spec):
    as_of = datetime(2011, 4, 1, tzinfo=UTC)  # three 28-day intervals ended by then
    checked = freshness.check(bikes_spec, None, as_of, after=3)
    assert len(checked.missing) == 3 and checked.breached
    assert checked.to_dict()["newest_end"] is None and checked.to_dict()["breached"] is True
    assert freshness.check(bikes_spec, None, datetime(2010, 1, 1, tzinfo=UTC), after=1).missing == ()


def test_freshness_follows_a_cron_schedule_and_stops_at_the_spec_end():
    from airloop.core.spec import get_spec

    birds = get_spec("birds", ROOT / "include" / "models")  # calendar months, 1990-01 to 1998-10
    newest = datetime(1998, 6, 1, tzinfo=UTC)
    checked = freshness.check(birds, newest, datetime(1998, 9, 15, tzinfo=UTC), after=3)
    assert [i.start.month for i in checked.missing] == [6, 7, 8] and checked.breached
    # Long after the schedule's end nothing more is expected: the last interval is the spec's last.
    late = freshness.check(birds, datetime(1998, 11, 1, tzinfo=UTC), datetime(2030, 1, 1, tzinfo=UTC), after=1)
    assert late.missing == () and not late.breached


# --- each kind's message ---


def _summary() -> MonitorSummary:
    return MonitorSummary(
        model="bikes",
        champion_version="4",
        window_start=datetime(2012, 5, 1, tzinfo=UTC),
        window_end=datetime(2012, 6, 1, tzinfo=UTC),
        drifted=True,
        drift_share=0.625,
        drifted_columns=("temp", "hum"),
        scores={"temp": 0.4},
        prediction_score=0.31,
        prediction_drifted=True,
        performance={"rmse": 61.5, "baseline_rmse": 40.25},
        retrain=True,
        reason="drift in 2 of the last 3 windows",
        report="/reports/bikes/drift/x.html",
        report_json="/reports/bikes/drift/x.json",
    )


def _gate(promote: bool = True, action: str = "promote", candidate: str = "7") -> GateResult:
    checks = [
        {"name": "threshold", "passed": True, "detail": "rmse 52.1 <= 80"},
        {"name": "improvement", "passed": promote, "detail": "rmse 52.1 vs champion 55.0: improves 5.3% (need 1%)"},
    ]
    return GateResult(
        model="bikes",
        action=action,
        candidate=candidate,
        expected_champion="6",
        reason="drift",
        promote=promote,
        summary="PASS: all checks passed" if promote else "FAIL: improvement too small",
        verdict={"passed": promote, "promote": promote, "mode": "enabled", "metric": "rmse", "checks": checks},
        holdout="2012-10-06 to 2012-12-01",
    )


def _row(outcome: str, moved: bool, candidate: str = "7") -> PromotionOutcome:
    return PromotionOutcome(
        model="bikes",
        seq=12,
        action="rollback" if outcome == "rolled_back" else "promote",
        outcome=outcome,
        moved=moved,
        candidate_version=candidate,
        from_version="6",
        champion_after=candidate if moved else "6",
        decided_by="gate",
        reason="drift",
    )


def _payload_ok(event: Event) -> dict:
    payload = event.payload()
    assert set(payload) == EVENT_FIELDS
    assert payload["text"] == event.text and event.kind.upper() in event.subject and "bikes" in event.subject
    assert event.link and event.link.startswith(BASE) and "@" not in event.link.split("//", 1)[1].split("/", 1)[0]
    return payload


def test_retrain_message_says_why_the_window_and_the_figures():
    event = events.retrain(_summary(), {"request_id": 9}, "bikes_monitor", "manual__1")
    payload = _payload_ok(event)
    text = event.text
    for expected in ("drift in 2 of the last 3 windows", "2012-05-01", "2012-06-01", "v4", "0.625", "temp, hum"):
        assert expected in text, expected
    assert "rmse 61.5" in text and "#9" in text
    assert event.link == f"{BASE}/airloop/go/training-run?dag_id=bikes_monitor&run_id=manual__1"
    assert f"{BASE}/airloop/go/drift-report?dag_id=bikes_monitor" in text
    assert payload["data"]["drift_share"] == 0.625 and payload["data"]["request_id"] == 9


@pytest.mark.parametrize(
    ("gate", "row", "headline"),
    [
        (_gate(), _row("promoted", True), "v7 promoted to @champion (was v6)"),
        (_gate(promote=False), _row("refused", False), "v7 refused by the gate; @champion stays v6"),
        (_gate(action="rollback", candidate="5"), _row("rolled_back", True, "5"), "rolled back @champion to v5"),
    ],
)
def test_promotion_message_carries_the_verdict_and_the_gates_numbers(gate, row, headline):
    event = events.promotion(gate, row, "bikes_train", "asset_triggered__x")
    payload = _payload_ok(event)
    assert headline in event.subject
    assert gate.summary in event.text and "rmse 52.1 vs champion 55.0" in event.text
    assert ("[FAIL]" in event.text) is (not gate.promote)
    assert event.link == f"{BASE}/dags/bikes_train/runs/asset_triggered__x"
    assert payload["data"]["outcome"] == row.outcome and payload["data"]["metric"] == "rmse"
    assert payload["data"]["checks"][1]["passed"] is gate.promote


def test_out_of_band_message_names_both_versions_and_what_to_do():
    row = {
        "seq": 9,
        "action": "observe",
        "outcome": "out_of_band",
        "evidence": {
            "registry_champion": "5",
            "ledger_champion": "3",
            "noticed_by": "scoring",
            "noticed_at": "2026-12-07T14:00:00+00:00",
        },
    }
    event = events.out_of_band("bikes", row, "bikes_score", "manual__x")
    payload = _payload_ok(event)
    assert event.headline == "@champion moved outside airloop to v5; v3 keeps serving"
    assert "v3 (the ledger's champion, loaded by version number)" in event.text and "bikes_promote" in event.text
    assert event.link == f"{BASE}/dags/bikes_score/runs/manual__x" and event.kind == "promotion"
    assert payload["data"]["outcome"] == "out_of_band" and payload["data"]["moved"] is False
    assert (payload["data"]["registry_champion"], payload["data"]["ledger_champion"]) == ("5", "3")
    unset = events.out_of_band("bikes", {**row, "evidence": {**row["evidence"], "registry_champion": None}}, "d", "r")
    assert unset.headline == "@champion moved outside airloop to unset; v3 keeps serving"


def test_approval_message_has_the_answer_link_and_how_long_it_has_waited():
    since, now = D, D + timedelta(hours=3, minutes=5)
    link = f"{BASE}/dags/bikes_train/runs/r/tasks/approve/required_actions?map_index=-1"
    event = events.approval(_gate(), link, since, now, now + timedelta(hours=21), "bikes_train", "r")
    payload = _payload_ok(event)
    assert event.link == link and link in event.text
    assert "3h 05m so far" in event.text and "promote v7" in event.text
    assert payload["data"]["waited_seconds"] == 3 * 3600 + 300
    assert events.duration(2 * 86400 + 3600) == "2d 1h" and events.duration(59) == "0m"


def test_quarantine_message_has_the_failed_expectations_counts_and_report_link():
    interval = Interval(datetime(2011, 3, 26, tzinfo=UTC), datetime(2011, 4, 23, tzinfo=UTC))
    details = {
        "partition": interval.key,
        "rows": 650,
        "evaluated": 14,
        "failed": 12,
        "quarantined_rows": 650,
        "failures": [f"rule {i} failed" for i in range(10)],
    }
    event = events.quarantine("bikes", interval, details, "bikes_ingest", "manual__q")
    payload = _payload_ok(event)
    assert "12 of 14 expectations on 650 rows" in event.text
    assert "- rule 9 failed" in event.text and "... and 2 more" in event.text
    assert event.link == f"{BASE}/airloop/go/validation?dag_id=bikes_ingest&run_id=manual__q"
    assert payload["data"]["failed"] == 12 and payload["data"]["partition"] == "2011-03-26T000000Z"


def test_freshness_message_names_the_gap_and_links_the_ingest_dag(bikes_spec):
    checked = freshness.check(bikes_spec, datetime(2011, 1, 29, tzinfo=UTC), datetime(2011, 6, 1, tzinfo=UTC), after=3)
    event = events.freshness(checked, "bikes_ingest", "bikes_monitor", "manual__f")
    payload = _payload_ok(event)
    assert "no new validated interval for 4 expected interval(s)" in event.subject
    assert "2011-01-29T00:00:00+00:00" in event.text and "28d" in event.text and "bikes_ingest" in event.text
    assert event.link == f"{BASE}/dags/bikes_ingest"
    assert payload["data"]["missing"] == 4 and payload["data"]["breached"] is True


def test_links_never_carry_the_base_urls_credentials(monkeypatch):
    monkeypatch.setenv("AIRFLOW__API__BASE_URL", "https://admin:s3cret@airflow.example.test:8443/root/")
    event = events.retrain(_summary(), {"request_id": 1}, "bikes_monitor", "r")
    assert event.link is not None and event.link.startswith("https://airflow.example.test:8443/root/airloop/go/")
    assert "s3cret" not in event.text and "admin" not in event.text


# --- the switch ---


def _any_event() -> Event:
    return Event(kind="retrain", model="bikes", headline="h", facts=(("Why", "w"),), link=f"{BASE}/x")


def test_a_kind_switched_off_is_not_sent_and_says_so(monkeypatch, caplog):
    monkeypatch.setenv("AIRLOOP_NOTIFY", "quarantine")
    monkeypatch.setenv("AIRLOOP_ALERTS_CONN_ID", "no_such_connection")  # would be an error if it were tried
    caplog.set_level(logging.INFO, logger="airloop.orchestration.notifiers")
    assert notify_event(_any_event()) is False
    assert "kind 'retrain' is off (AIRLOOP_NOTIFY=quarantine)" in caplog.text
    assert "NOT sent through connection" not in caplog.text


def test_off_by_default(monkeypatch, caplog):
    monkeypatch.delenv("AIRLOOP_NOTIFY", raising=False)
    monkeypatch.setenv("AIRLOOP_ALERTS_CONN_ID", "no_such_connection")
    caplog.set_level(logging.INFO, logger="airloop.orchestration.notifiers")
    assert notify_event(_any_event()) is False
    assert "is off (AIRLOOP_NOTIFY=none)" in caplog.text


def test_an_invalid_switch_is_a_logged_error_not_an_exception(monkeypatch, caplog):
    monkeypatch.setenv("AIRLOOP_NOTIFY", "retrian")
    caplog.set_level(logging.INFO, logger="airloop.orchestration.notifiers")
    assert notify_event(_any_event()) is False
    assert (
        "Retrain notification for bikes NOT sent: AIRLOOP_NOTIFY='retrian' is not valid (unknown: retrian)"
        in caplog.text
    )


def test_on_without_a_channel_warns(monkeypatch, caplog):
    monkeypatch.setenv("AIRLOOP_NOTIFY", "all")
    monkeypatch.delenv("AIRLOOP_ALERTS_CONN_ID", raising=False)
    caplog.set_level(logging.INFO, logger="airloop.orchestration.notifiers")
    assert notify_event(_any_event()) is False
    assert "AIRLOOP_NOTIFY turns it on but AIRLOOP_ALERTS_CONN_ID is unset" in caplog.text

"""The event notifications' content: one builder per kind, from what the stage function returned.

Each builder returns a :class:`~airloop.orchestration.notifiers.Event` with what on-call needs to act: the model,
the interval or window, the figures, and a link (absolute, from Airflow's ``[api] base_url``, built with
:func:`airloop.core.urls.link_url` where the airloop view has one). :func:`~airloop.orchestration.notifiers.
notify_event` decides whether it is sent (``AIRLOOP_NOTIFY``) and through which channel.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any
from urllib.parse import quote

from airloop.core.contracts import GateResult, MonitorSummary, PromotionOutcome
from airloop.core.freshness import Freshness
from airloop.core.intervals import Interval
from airloop.core.urls import DRIFT, TRAINING_RUN, VALIDATION, link_url
from airloop.orchestration.notifiers import Event, absolute_url

RETRAIN, PROMOTION, APPROVAL, QUARANTINE, FRESHNESS = "retrain", "promotion", "approval", "quarantine", "freshness"


def run_url(dag_id: str, run_id: str | None = None) -> str:
    """The Airflow UI page of a DAG run (of the DAG when ``run_id`` is None)."""
    return absolute_url(f"/dags/{dag_id}" + (f"/runs/{quote(run_id)}" if run_id else ""))


def _num(value: Any) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def duration(seconds: float) -> str:
    """``2d 3h``, ``3h 05m``, ``12m``: how long, to the minute."""
    minutes = max(0, int(seconds // 60))
    days, rest = divmod(minutes, 24 * 60)
    hours, mins = divmod(rest, 60)
    if days:
        return f"{days}d {hours}h"
    return f"{hours}h {mins:02d}m" if hours else f"{mins}m"


def retrain(summary: MonitorSummary, extra: Mapping[str, Any], dag_id: str, run_id: str) -> Event:
    """The monitor asked for retraining: why, the window judged, its drift and performance figures."""
    window = f"{summary.window_start.isoformat()} to {summary.window_end.isoformat()}"
    drifted = ", ".join(summary.drifted_columns) or "none"
    facts = [
        ("Why", summary.reason),
        ("Window", window),
        ("Champion", f"v{summary.champion_version}"),
        ("Drift share", f"{_num(summary.drift_share)} (drifted columns: {drifted})"),
        ("Prediction", f"drift score {_num(summary.prediction_score)}, drifted: {summary.prediction_drifted}"),
    ]
    if summary.performance:
        facts.append(("Performance", ", ".join(f"{k} {_num(v)}" for k, v in summary.performance.items())))
    facts += [
        ("Request", f"#{extra.get('request_id', '?')} (starts the train DAG through its retrain Asset)"),
        ("Drift report", absolute_url(link_url(DRIFT, dag_id, run_id))),
    ]
    return Event(
        kind=RETRAIN,
        model=summary.model,
        headline=f"retraining requested for the window ending {summary.window_end:%Y-%m-%d}",
        facts=tuple(facts),
        link=absolute_url(link_url(TRAINING_RUN, dag_id, run_id)),
        dag_id=dag_id,
        run_id=run_id,
        data={
            "request_id": extra.get("request_id"),
            "window_start": summary.window_start.isoformat(),
            "window_end": summary.window_end.isoformat(),
            "champion_version": summary.champion_version,
            "reason": summary.reason,
            "drift_share": summary.drift_share,
            "drifted_columns": list(summary.drifted_columns),
            "prediction_score": summary.prediction_score,
            "performance": summary.performance,
        },
    )


_HEADLINES = {
    "promoted": "v{candidate} promoted to @champion (was {before})",
    "rolled_back": "rolled back @champion to v{candidate} (was {before})",
    "refused": "v{candidate} refused by the gate; @champion stays {before}",
    "dry_run": "v{candidate} judged in dry run; nothing moved",
    "rejected": "v{candidate} rejected in review; @champion stays {before}",
    "timed_out": "approval of v{candidate} timed out; nothing moved",
    "conflict": "v{candidate} not promoted: @champion changed since the gate",
    "no_change": "v{candidate} is already @champion",
    "failed": "promotion of v{candidate} did not complete",
}


def promotion(gate: GateResult, row: PromotionOutcome, dag_id: str, run_id: str) -> Event:
    """A promotion decision (promoted, refused, rolled back, rejected, ...): the verdict and the gate's numbers."""
    before = f"v{row.from_version}" if row.from_version else "unset"
    template = _HEADLINES.get(row.outcome, "decision {outcome} on v{candidate}")
    headline = template.format(candidate=gate.candidate, before=before, outcome=row.outcome)
    checks = [c for c in gate.verdict.get("checks") or [] if isinstance(c, Mapping)]
    check_lines = "\n".join(
        f"[{'pass' if c.get('passed') else 'FAIL'}] {c.get('detail', c.get('name'))}" for c in checks
    )
    facts = [
        ("Decision", f"{row.outcome} ({gate.action}{', override' if gate.override else ''})"),
        ("Verdict", gate.summary),
        ("Champion", f"{before} -> {'v' + row.champion_after if row.champion_after else 'unset'}"),
        ("Holdout", gate.holdout),
        ("Gate metric", str(gate.verdict.get("metric", "?"))),
        ("Checks", check_lines or "none recorded"),
        ("Reason", row.reason),
        ("Decided by", row.decided_by),
        ("Ledger row", f"#{row.seq}"),
    ]
    return Event(
        kind=PROMOTION,
        model=gate.model,
        headline=headline,
        facts=tuple(facts),
        link=run_url(dag_id, run_id),
        dag_id=dag_id,
        run_id=run_id,
        data={
            "outcome": row.outcome,
            "action": gate.action,
            "moved": row.moved,
            "candidate": gate.candidate,
            "from_version": row.from_version,
            "champion_after": row.champion_after,
            "passed": gate.verdict.get("passed"),
            "promote": gate.promote,
            "override": gate.override,
            "metric": gate.verdict.get("metric"),
            "checks": [dict(c) for c in checks],
            "seq": row.seq,
        },
    )


def approval(
    gate: GateResult,
    answer_url: str,
    waiting_since: datetime,
    now: datetime,
    timeout_at: datetime | None,
    dag_id: str,
    run_id: str,
) -> Event:
    """An approval is waiting: what to decide, the link to answer, how long it has waited and when it times out."""
    waited = (now - waiting_since).total_seconds()
    facts = [
        ("Decide", f"{gate.action} v{gate.candidate} to @champion (now {gate.expected_champion or 'unset'})"),
        ("Verdict", gate.summary),
        *([("Live (shadow)", str(gate.live.get("summary")))] if gate.live else []),
        ("Waiting since", f"{waiting_since.isoformat()} ({duration(waited)} so far)"),
        ("Times out", timeout_at.isoformat() if timeout_at else "never"),
        ("Answer at", answer_url),
    ]
    return Event(
        kind=APPROVAL,
        model=gate.model,
        headline=f"approval waiting: promote v{gate.candidate}?",
        facts=tuple(facts),
        link=answer_url,
        dag_id=dag_id,
        run_id=run_id,
        data={
            "candidate": gate.candidate,
            "expected_champion": gate.expected_champion,
            "waiting_since": waiting_since.isoformat(),
            "waited_seconds": round(waited),
            "timeout_at": timeout_at.isoformat() if timeout_at else None,
            "live": gate.live,
        },
    )


def quarantine(model: str, interval: Interval, details: Mapping[str, Any], dag_id: str, run_id: str) -> Event:
    """A batch was quarantined: the failed expectations, the counts, and the link to the validation report."""
    failed, evaluated = details.get("failed", "?"), details.get("evaluated", "?")
    failures = list(details.get("failures") or [])
    more = int(failed) - len(failures) if isinstance(failed, int) else 0
    listed = "\n".join(f"- {f}" for f in failures) + (f"\n- ... and {more} more" if more > 0 else "")
    facts = [
        ("Interval", f"{interval} (partition {interval.key})"),
        ("Failed", f"{failed} of {evaluated} expectations on {details.get('rows', '?')} rows"),
        ("Quarantined", f"{details.get('quarantined_rows', '?')} rows; nothing of this interval flows on"),
        ("Expectations", listed or "see the report"),
        ("What to do", "fix the source and clear validate, or have a data steward fix the suite"),
    ]
    return Event(
        kind=QUARANTINE,
        model=model,
        headline=f"interval {interval.key} quarantined ({failed} of {evaluated} expectations failed)",
        facts=tuple(facts),
        link=absolute_url(link_url(VALIDATION, dag_id, run_id)),
        dag_id=dag_id,
        run_id=run_id,
        data={
            "interval_start": interval.start.isoformat(),
            "interval_end": interval.end.isoformat(),
            **{k: details.get(k) for k in ("partition", "rows", "evaluated", "failed", "quarantined_rows")},
            "failures": failures,
        },
    )


def freshness(check: Freshness, ingest_dag_id: str, dag_id: str, run_id: str) -> Event:
    """No new interval validated for ``after`` or more expected intervals."""
    newest = check.newest_end.isoformat() if check.newest_end else "none"
    missing = len(check.missing)
    span = f"{check.missing[0].start.isoformat()} to {check.missing[-1].end.isoformat()}" if missing else "none"
    facts = [
        ("Newest data", f"validated interval ending {newest}"),
        ("Missing", f"{missing} expected interval(s) of schedule {check.schedule} ({span})"),
        ("Threshold", f"breach at {check.after} (AIRLOOP_FRESHNESS_AFTER)"),
        ("As of", check.as_of.isoformat()),
        ("What to do", f"check {ingest_dag_id}: paused, failing, quarantining, or its source stopped delivering"),
    ]
    return Event(
        kind=FRESHNESS,
        model=check.model,
        headline=f"no new validated interval for {missing} expected interval(s)",
        facts=tuple(facts),
        link=run_url(ingest_dag_id),
        dag_id=dag_id,
        run_id=run_id,
        data=check.to_dict(),
    )


def labels_lagging(summary: Mapping[str, Any], dag_id: str, run_id: str) -> Event:
    """An interval's labels are still missing longer than ``labels.max_lag`` after they were due (a freshness
    alert of the label source: the predictions of that interval cannot be judged until they arrive)."""
    missing = summary.get("missing", "?")
    first = summary.get("first") or {}
    late = duration(float(summary.get("lag_seconds") or 0))
    partition = summary.get("partition")
    interval = f"{summary.get('interval_start')} to {summary.get('interval_end')} (partition {partition})"
    facts = [
        ("Interval", interval),
        ("Missing", f"{missing} label(s) of predicted rows (first: {', '.join(first.get('unlabelled', [])[:5])})"),
        ("Due", f"{summary.get('due_at')}; now {late} late (allowed: labels.max_lag {summary.get('max_lag')})"),
        ("Label source", str(summary.get("source"))),
        ("Arrived so far", f"{summary.get('accepted', 0)} label(s) accepted, {summary.get('new', 0)} new this run"),
        (
            "What to do",
            "check that the label source still delivers; once the labels are in, clear this run's labels task "
            "(or backfill the range) to record and join them",
        ),
    ]
    return Event(
        kind=FRESHNESS,
        model=str(summary.get("model")),
        headline=f"labels of interval {summary.get('partition')} still missing {late} after they were due",
        facts=tuple(facts),
        link=run_url(dag_id, run_id),
        dag_id=dag_id,
        run_id=run_id,
        data={
            "what": "labels",
            **{
                k: summary.get(k)
                for k in ("partition", "interval_start", "interval_end", "due_at", "missing", "lag_seconds", "max_lag")
            },
        },
    )


def out_of_band(model: str, row: Mapping[str, Any], dag_id: str, run_id: str) -> Event:
    """``@champion`` was found moved outside airloop (an ``out_of_band`` ledger row): both versions, not adopted.

    Sent as a ``promotion`` notification (it concerns who is champion), with ``data.outcome`` ``out_of_band``.
    """
    evidence = row.get("evidence") or {}
    alias, champion = evidence.get("registry_champion"), evidence.get("ledger_champion")
    found = f"v{alias}" if alias else "unset"
    serving = f"v{champion}" if champion else "nothing"
    facts = [
        ("Decision", "out_of_band: @champion moved outside airloop (MLflow UI or API); not adopted"),
        ("MLflow @champion", found),
        ("Serving", f"{serving} (the ledger's champion, loaded by version number)"),
        ("Noticed", f"{evidence.get('noticed_at', '?')} by {evidence.get('noticed_by', '?')}"),
        (
            "What to do",
            f"promote the intended version through {model}_promote (gate or override), or set "
            f"@champion back to {serving} in MLflow",
        ),
        ("Ledger row", f"#{row.get('seq')}"),
    ]
    return Event(
        kind=PROMOTION,
        model=model,
        headline=f"@champion moved outside airloop to {found}; {serving} keeps serving",
        facts=tuple(facts),
        link=run_url(dag_id, run_id),
        dag_id=dag_id,
        run_id=run_id,
        data={
            "outcome": row.get("outcome"),
            "action": row.get("action"),
            "moved": False,
            "registry_champion": alias,
            "ledger_champion": champion,
            "noticed_by": evidence.get("noticed_by"),
            "noticed_at": evidence.get("noticed_at"),
            "seq": row.get("seq"),
        },
    )

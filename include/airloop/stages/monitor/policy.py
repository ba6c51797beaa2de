"""When monitoring may ask for retraining: hysteresis, cooldown and one request per window, as a pure function.

Retraining on every noisy window would storm: one bad day is not drift. A request is made only when

- drift held in at least ``n`` of the last ``m`` windows **and** in the latest one (so drift that has passed
  does not trigger), or the champion's realized performance degraded beyond the spec's limit in the latest
  window, or (only with ``monitoring.act_on_estimate``) its estimated performance on the rows without labels did;
- the latest window is outside the cooldown after the last training or request;
- no request was made for this window yet (re-running the monitor never asks twice).

Times are data times (window ends), not wall-clock times, so a replay of two years behaves like two years.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from airloop.core.spec import Monitoring


@dataclass(frozen=True)
class WindowResult:
    """What the monitor found for one window."""

    window_end: datetime
    drifted: bool
    drifted_columns: tuple[str, ...] = ()
    degraded: bool = False
    #: The champion's estimated performance (CBPE, rows without labels yet) degraded beyond the spec's limit.
    estimated_degraded: bool = False


@dataclass(frozen=True)
class RetrainDecision:
    request: bool
    reason: str


def decide(
    history: list[WindowResult],
    policy: Monitoring,
    *,
    last_training_end: datetime | None = None,
    last_request_end: datetime | None = None,
    already_requested: bool = False,
) -> RetrainDecision:
    """Whether the latest window (the last of ``history``, oldest first) asks for retraining, and why."""
    if not history:
        return RetrainDecision(False, "no monitored window yet")
    latest = history[-1]
    if already_requested:
        return RetrainDecision(
            False, f"retraining was already requested for the window ending {latest.window_end:%Y-%m-%d}"
        )
    n, m = policy.hysteresis.n, policy.hysteresis.m
    recent = history[-m:]
    drifted = sum(w.drifted for w in recent)
    drift_holds = latest.drifted and drifted >= n
    estimated = policy.act_on_estimate and latest.estimated_degraded and not latest.degraded
    if not (drift_holds or latest.degraded or estimated):
        if latest.drifted:
            why = f"drift in {drifted} of the last {len(recent)} windows; {n} of {m} are needed"
        elif drifted:
            why = f"the latest window did not drift ({drifted} of the last {len(recent)} did)"
        else:
            why = f"no drift in the last {len(recent)} windows and performance within limits"
        if latest.estimated_degraded and not latest.degraded:
            why += "; the estimated performance degraded, but monitoring.act_on_estimate is off"
        return RetrainDecision(False, why)
    events = [t for t in (last_training_end, last_request_end) if t is not None]
    if events:
        since = max(events)
        until = since + timedelta(days=policy.cooldown_days)
        if latest.window_end < until:
            return RetrainDecision(
                False, f"cooling down until {until:%Y-%m-%d} ({policy.cooldown_days} days after {since:%Y-%m-%d})"
            )
    causes = []
    if drift_holds:
        columns = ", ".join(latest.drifted_columns) or "several features"
        causes.append(f"drift in {drifted} of the last {len(recent)} windows, including the latest ({columns})")
    if latest.degraded:
        causes.append("the champion's performance degraded beyond the spec's limit")
    if estimated:
        causes.append(
            "the champion's estimated performance (CBPE, labels not in yet) degraded beyond the spec's limit "
            "(monitoring.act_on_estimate)"
        )
    return RetrainDecision(True, "; ".join(causes))

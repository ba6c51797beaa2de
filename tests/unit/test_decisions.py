"""Retraining decisions: hysteresis (n of the last m, the latest included), cooldown, once per window."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from airloop.core.spec import Hysteresis, Monitoring
from airloop.stages.monitor.policy import WindowResult, decide

POLICY = Monitoring(hysteresis=Hysteresis(n=2, m=3), cooldown_days=28)
START = datetime(2012, 1, 1, tzinfo=UTC)


def _history(pattern: str, degraded_last: bool = False) -> list[WindowResult]:
    """``"..D"``: one window per character, 28 days apart, D = drifted; the last is the latest."""
    windows = [
        WindowResult(START + timedelta(days=28 * i), c == "D", ("temp", "hr") if c == "D" else ())
        for i, c in enumerate(pattern)
    ]
    if degraded_last:
        windows[-1] = WindowResult(windows[-1].window_end, windows[-1].drifted, windows[-1].drifted_columns, True)
    return windows


def _end(pattern: str) -> datetime:
    return START + timedelta(days=28 * (len(pattern) - 1))


# fmt: off
CASES = [
    # id, pattern, degraded, days since last training (None: never), already requested, request?, reason contains
    ("no-history",         "",      False, None, False, False, "no monitored window"),
    ("one-bad-window",     "..D",   False, None, False, False, "1 of the last 3 windows; 2 of 3 are needed"),
    ("two-of-three",       ".DD",   False, None, False, True,  "drift in 2 of the last 3 windows"),
    ("n-of-m-not-latest",  "DD.",   False, None, False, False, "the latest window did not drift"),
    ("gap-then-latest",    "D.D",   False, None, False, True,  "including the latest (temp, hr)"),
    ("old-drift-outside",  "D..D",  False, None, False, False, "1 of the last 3"),
    ("quiet",              "...",   False, None, False, False, "no drift in the last 3"),
    ("degraded-alone",     "...",   True,  None, False, True,  "performance degraded"),
    ("cooldown",           ".DD",   False, 10,   False, False, "cooling down until"),
    ("cooldown-over",      ".DD",   False, 28,   False, True,  "drift in 2 of the last 3"),
    ("degraded-cooldown",  "...",   True,  5,    False, False, "cooling down"),
    ("already-requested",  ".DD",   False, None, True,  False, "already requested"),
]
# fmt: on


@pytest.mark.parametrize(
    ("pattern", "degraded", "since", "already", "asks", "reason"), [c[1:] for c in CASES], ids=[c[0] for c in CASES]
)
def test_decisions(pattern, degraded, since, already, asks, reason):
    history = _history(pattern, degraded) if pattern else []
    last = _end(pattern) - timedelta(days=since) if since is not None else None
    decision = decide(history, POLICY, last_training_end=last, already_requested=already)
    assert decision.request is asks, decision
    assert reason in decision.reason, decision.reason


def test_the_latest_request_counts_for_the_cooldown_like_a_training():
    history = _history(".DD")
    recent_request = _end(".DD") - timedelta(days=3)
    decision = decide(history, POLICY, last_training_end=START - timedelta(days=400), last_request_end=recent_request)
    assert not decision.request and "cooling down" in decision.reason


def test_hysteresis_cannot_ask_for_more_windows_than_it_looks_at():
    with pytest.raises(ValueError, match="cannot exceed"):
        Hysteresis(n=4, m=3)

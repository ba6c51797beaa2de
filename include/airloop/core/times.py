"""Moments in time as airloop keeps them: timezone-aware, in UTC.

Pure and light (safe at DAG parse time).
"""

from __future__ import annotations

from datetime import UTC, datetime


def as_utc(value: datetime) -> datetime:
    """``value`` as an aware ``datetime`` in UTC: a naive value is read as UTC (never as local time), an aware
    one is converted. Always a plain ``datetime`` (a pendulum ``DateTime`` from Airflow comes back as one)."""
    moment = value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)
    return datetime(
        moment.year,
        moment.month,
        moment.day,
        moment.hour,
        moment.minute,
        moment.second,
        moment.microsecond,
        tzinfo=UTC,
    )

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


#: What a moment given by a person looks like (the CLI's TIME, the view's ``at``).
MOMENT_FORM = "ISO 8601, e.g. 2026-12-07T14:30:00Z or 2026-12-07 14:30 (no zone = UTC), or now"


def moment(value: str, name: str, now: datetime | None = None) -> datetime:
    """A moment given as text: ISO 8601 (a date, a date and time; without a zone it is UTC) or ``now``.

    ValueError names ``name`` and the expected form (:data:`MOMENT_FORM`).
    """
    text = (value or "").strip()
    if text.lower() == "now":
        return as_utc(now or datetime.now(UTC))
    try:
        return as_utc(datetime.fromisoformat(text))
    except ValueError:
        raise ValueError(f"{name} is {value!r}, not a time: give {MOMENT_FORM}.") from None

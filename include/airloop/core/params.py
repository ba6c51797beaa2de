"""Checks of a DAG run's ``conf`` shared by every DAG (ingest, which takes none, train, promote, score, monitor).

Airflow validates each declared ``Param`` against its JSON schema, but accepts unknown keys silently and does not
know what a date means to airloop; these checks fill that gap with messages that name the param and the fix.
"""

from __future__ import annotations

from datetime import UTC, date, datetime
from typing import Any

from airloop.core.errors import ExpectedFailure


class ParamProblem(ExpectedFailure, ValueError):
    """A run's parameters cannot be used; the message names the parameter, the value and the fix."""


def refuse_unknown(
    conf: dict[str, Any], allowed: tuple[str, ...], dag_id: str, fix: str = "Check the spelling and trigger again."
) -> None:
    """Refuse ``conf`` keys the DAG does not declare, naming each one and the keys it takes (``fix``: what to do)."""
    unknown = sorted(set(conf) - set(allowed))
    if unknown:
        takes = f"it takes {list(allowed)}" if allowed else "it takes no params"
        raise ParamProblem(f"{dag_id} does not know the param(s) {unknown}; {takes}. {fix}")


#: What the train and promote DAGs' check tasks raise (the name their callers know).
RequestProblem = ParamProblem


def day(name: str, value: Any) -> datetime | None:
    """A date param (``2012-06-30``, or an ISO timestamp whose day is used) as midnight UTC; None when unset."""
    if value in (None, ""):
        return None
    d: date | None = value if isinstance(value, date) else None  # a datetime is a date too: its day is used
    if d is None:
        text = str(value).strip()
        for parse in (date.fromisoformat, datetime.fromisoformat):  # the whole value: no trailing junk passes
            try:
                d = parse(text)
                break
            except ValueError:
                continue
    if d is None:
        raise ParamProblem(f"param `{name}` is {value!r}; expected a date like 2012-06-30 (UTC) or null.")
    return datetime(d.year, d.month, d.day, tzinfo=UTC)

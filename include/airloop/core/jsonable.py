"""Plain JSON-ready data from what airloop's tables and dataclasses hold. Pure and light."""

from __future__ import annotations

from datetime import datetime
from typing import Any


def jsonable(value: Any) -> Any:
    """``value`` with every ``datetime`` as ISO 8601 text, in dicts, lists and tuples (as lists) at any depth.

    Everything else is returned as it is.
    """
    if isinstance(value, dict):
        return {k: jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [jsonable(v) for v in value]
    if isinstance(value, datetime):
        return value.isoformat()
    return value

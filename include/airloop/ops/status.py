"""Where each model's data stands: validated, quarantined and missing intervals (``airloop status``, the demo)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any


def model_status() -> dict[str, Any]:
    """Per model: validated, quarantined and missing intervals (expected by the timetable up to now)."""
    from airloop.adapters.lake import default_lake
    from airloop.core.intervals import expected_intervals
    from airloop.core.settings import paths
    from airloop.core.spec import load_specs

    p = paths()
    lake = default_lake()
    now = datetime.now(UTC)
    out: dict[str, Any] = {}
    for spec in load_specs(p.models_dir):
        validated = lake.partitions(spec.name, "validated")
        quarantined = lake.partitions(spec.name, "quarantine")
        seen = set(validated) | set(quarantined)
        expected = [i.key for i in expected_intervals(spec, until=now)]
        out[spec.name] = {
            "validated": validated,
            "quarantined": quarantined,
            "missing": [k for k in expected if k not in seen],
            "expected": len(expected),
        }
    return out

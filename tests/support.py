"""Helpers shared by fixtures at several test levels (not fixtures themselves, so e2e code can call them)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from sqlalchemy.engine import Engine

    from airloop.lake import Lake
    from airloop.spec import ModelSpec


def write_validated_partitions(engine: Engine, lake: Lake, spec: ModelSpec, last: int = 14) -> list[str]:
    """Validated partitions of the newest ``last`` intervals (14 cover the bikes 364-day window), without GX.

    Real ingestion writes the same data files (extract, then copy raw to validated); validation itself is
    tested in ``tests/integration/test_ingest_dag.py``, and running it here would only add time.
    """
    from airloop.intervals import expected_intervals
    from airloop.source import extract_interval

    keys = []
    for interval in list(expected_intervals(spec, until=datetime.now(UTC)))[-last:]:
        meta = {
            "interval_start": interval.start.isoformat(),
            "interval_end": interval.end.isoformat(),
            "suite_digests": {"schema": "fixture", "values": "fixture"},
        }
        lake.write(spec.name, "validated", interval.key, extract_interval(engine, spec, interval).frame, meta=meta)
        keys.append(interval.key)
    return keys

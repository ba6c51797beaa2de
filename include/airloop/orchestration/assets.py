"""The Assets that connect airloop's DAGs: data published by ingest, retraining requested by the monitor.

Outside systems use the same ones through ``POST /api/v2/assets/events`` (see docs/rest-api.md).
"""

from __future__ import annotations

from airflow.sdk import Asset

from airloop.core.spec import ModelSpec

#: The URI scheme of airloop's Assets. Airflow skips its provider lookup for schemes starting with ``x-``
#: (custom schemes); any other scheme makes the first Asset of a parse load every provider's URI handlers,
#: 0.1-0.2 s of each DAG file's parse (benchmarks/parse_time.py measured it).
SCHEME = "x-airloop"


def validated_asset(spec: ModelSpec) -> Asset:
    """The Asset each validated partition is published to; its events carry the partition in ``extra``."""
    return Asset(name=f"{spec.name}.validated", uri=f"{SCHEME}://{spec.name}/validated", group="airloop")


def retrain_asset(spec: ModelSpec) -> Asset:
    """Retrain requests (from monitoring, or any service through ``POST /api/v2/assets/events``).

    The event's ``extra.reason`` becomes the training run's reason.
    """
    return Asset(name=f"{spec.name}.retrain_requested", uri=f"{SCHEME}://{spec.name}/retrain-requests", group="airloop")

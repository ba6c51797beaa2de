"""The Assets that connect airloop's DAGs: data published by ingest, retraining requested by the monitor.

Outside systems use the same ones through ``POST /api/v2/assets/events`` (see docs/rest-api.md).
"""

from __future__ import annotations

from airflow.sdk import Asset

from airloop.core.spec import ModelSpec


def validated_asset(spec: ModelSpec) -> Asset:
    """The Asset each validated partition is published to; its events carry the partition in ``extra``."""
    return Asset(name=f"{spec.name}.validated", uri=f"airloop://{spec.name}/validated", group="airloop")


def retrain_asset(spec: ModelSpec) -> Asset:
    """Retrain requests (from monitoring, or any service through ``POST /api/v2/assets/events``).

    The event's ``extra.reason`` becomes the training run's reason.
    """
    return Asset(name=f"{spec.name}.retrain_requested", uri=f"airloop://{spec.name}/retrain-requests", group="airloop")

"""OpenLineage events of airloop's tasks, through the Airflow OpenLineage provider (off unless a transport is set).

How: the provider's listener emits a START and a COMPLETE (or FAIL) event for every task instance. For an operator
that has a ``get_openlineage_facets_on_complete`` method it uses that method's ``OperatorLineage`` (the provider's
``DefaultExtractor``). airloop's tasks are TaskFlow ``@task`` functions, which have no such method and whose
datasets (which lake partitions, which model version) are known only once the task body has run. So the task body
calls :func:`record` with what it read and wrote, and :func:`record` puts that method on the running task's
operator (``context["task"]``, the very object the listener asks, in the same process). Why not the others:

- the hook-level lineage collector (``add_input_asset``/``add_output_asset``) carries Assets, which the provider
  translates by URI alone: dataset facets (digest, data quality) and run facets (model version) would be lost;
- emitting our own events with the provider's adapter would give each task a second, separate run (or events the
  provider's own COMPLETE event does not carry), where one run per task instance with its datasets is wanted.

Off by default: the provider registers its listener only when a transport is configured (see docs/lineage.md), and
:func:`record` builds nothing then. A lineage failure never fails a task: :func:`record` logs it, and the provider
logs (and drops) a failing extraction.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from airloop.core import lineage as ol

log = logging.getLogger(__name__)

#: The method the provider's ``DefaultExtractor`` looks for on an operator.
ON_COMPLETE = "get_openlineage_facets_on_complete"


def enabled() -> bool:
    """Whether the OpenLineage provider will emit events in this process (a transport, URL or config is set)."""
    try:
        from airflow.providers.openlineage.conf import is_disabled
    except ImportError:  # the provider is not installed
        return False
    try:
        return not is_disabled()
    except Exception:  # a broken configuration: the provider will not emit either
        log.warning("OpenLineage configuration could not be read: no lineage for this task.", exc_info=True)
        return False


def record(context: Any, build: Callable[[], ol.TaskLineage]) -> bool:
    """Give the running task the lineage ``build()`` returns, for the provider's COMPLETE event.

    ``build`` runs only when OpenLineage is on. Returns whether lineage was attached; any error is logged, never
    raised (lineage is not worth failing a task for).
    """
    if not enabled():
        return False
    try:
        lineage = build()
        task = context["task"]

        def on_complete(task_instance: Any = None) -> Any:
            from airloop.orchestration.openlineage_facets import operator_lineage

            return operator_lineage(lineage)

        setattr(task, ON_COMPLETE, on_complete)
        return True
    except Exception:
        log.warning("Could not record the OpenLineage datasets of this task; it goes on without them.", exc_info=True)
        return False


# --- datasets of airloop's stores -------------------------------------------------------------------------------


def partition(
    lake: Any, model: str, stage: str, key: str, *, digest: bool = True, extra: dict[str, dict] | None = None
) -> ol.DatasetRef:
    """A lake partition as a dataset; with ``digest``, its content digest facet from its manifest (if it has one)."""
    facets: dict[str, dict[str, Any]] = dict(extra or {})
    if digest:
        manifest = lake.manifest(model, stage, key)
        if manifest is not None:
            facets[ol.CONTENT_DIGEST] = ol.content_digest_facet(
                manifest.content_digest, manifest.rows, manifest.version or None
            )
    return ol.lake_dataset(lake.partition_url(model, stage, key), facets)


def warehouse_table(table: str, facets: dict[str, dict] | None = None) -> ol.DatasetRef:
    """A table of the warehouse (connection ``airloop_warehouse``) as a dataset."""
    from airloop.adapters.db import engine_for
    from airloop.core.settings import WAREHOUSE_CONN_ID

    url = engine_for(WAREHOUSE_CONN_ID).url
    namespace = ol.warehouse_namespace(url.drivername, url.host, url.port, url.database)
    return ol.table_dataset(namespace, table, facets)


def trained_on(lake: Any, model: str, version: str) -> tuple[str | None, list[str], list[ol.DatasetRef]]:
    """A registered version's MLflow run, and the keys and datasets of the validated partitions it was trained on
    (its ``airloop.partitions`` tag, written when it was registered)."""
    from airloop.adapters.registry import client

    mv = client().get_model_version(model, str(version))
    keys = [k for k in str((mv.tags or {}).get("airloop.partitions") or "").split(",") if k]
    run_id = None if mv.run_id is None else str(mv.run_id)
    return run_id, keys, [ol.lake_dataset(lake.partition_url(model, "validated", k)) for k in keys]

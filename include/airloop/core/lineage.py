"""OpenLineage datasets and facets of airloop's tasks, as plain JSON-ready data (pure and light).

What a task read and wrote is a :class:`TaskLineage`: datasets (lake partitions and warehouse tables) with their
dataset facets, and run facets. :mod:`airloop.orchestration.lineage` hands it to the Airflow OpenLineage provider,
which turns it into the task's COMPLETE event; nothing here imports OpenLineage or Airflow, so the builders are unit
tested against the facets' JSON schemas without either.

Dataset names follow OpenLineage's naming conventions: a lake partition is named by its path in the lake's
filesystem (namespace ``file`` on local disk, ``s3://<bucket>`` on object storage); a warehouse table by the table
(namespace: the database, ``postgres://host:port/database`` or ``sqlite:///path``, never with credentials).

The custom facets are airloop's own: each has a JSON schema in the repository under
``docs/openlineage/facets/<version>/`` and its ``_schemaURL`` points there (:data:`SCHEMA_BASE_URL`); a new field
means a new schema version folder, never an edit of a published one.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

#: Where airloop's facet schemas are published: the repository's ``docs/openlineage/facets`` folder.
SCHEMA_BASE_URL = "https://github.com/airloop/airloop/blob/main/docs/openlineage/facets"
#: The schema version of the facets below (the folder name under ``docs/openlineage/facets``).
SCHEMA_VERSION = "1-0-0"
#: The ``_producer`` of airloop's facets.
PRODUCER = "https://github.com/airloop/airloop"

#: Facet keys (OpenLineage asks custom facets to be prefixed by their producer's name).
CONTENT_DIGEST = "airloop_contentDigest"
MODEL_VERSION = "airloop_modelVersion"
DRIFT_VERDICT = "airloop_driftVerdict"
#: The standard facet (it is an input dataset facet in the spec: the assertions made on data read).
DATA_QUALITY = "dataQualityAssertions"

DATA_QUALITY_SCHEMA_URL = (
    "https://openlineage.io/spec/facets/1-1-0/DataQualityAssertionsDatasetFacet.json"
    "#/$defs/DataQualityAssertionsDatasetFacet"
)

#: The facets' schema files (class names, as OpenLineage names its own).
SCHEMAS = {
    CONTENT_DIGEST: "AirloopContentDigestDatasetFacet",
    MODEL_VERSION: "AirloopModelVersionRunFacet",
    DRIFT_VERDICT: "AirloopDriftVerdictRunFacet",
}
#: What a task did with a model version.
ROLES = ("trained", "gated", "promoted", "scoring")


def schema_url(facet: str) -> str:
    """The versioned ``_schemaURL`` of one of airloop's facets (a key of :data:`SCHEMAS`)."""
    name = SCHEMAS[facet]
    return f"{SCHEMA_BASE_URL}/{SCHEMA_VERSION}/{name}.json#/$defs/{name}"


def _facet(key: str, **fields: Any) -> dict[str, Any]:
    return {"_producer": PRODUCER, "_schemaURL": schema_url(key), **fields}


@dataclass(frozen=True)
class DatasetRef:
    """One OpenLineage dataset: namespace, name, dataset facets and (an input's) input facets (key -> JSON)."""

    namespace: str
    name: str
    facets: dict[str, dict[str, Any]] = field(default_factory=dict)
    input_facets: dict[str, dict[str, Any]] = field(default_factory=dict)


@dataclass(frozen=True)
class TaskLineage:
    """What one task read and wrote, and what its run was about (run facets)."""

    inputs: list[DatasetRef] = field(default_factory=list)
    outputs: list[DatasetRef] = field(default_factory=list)
    run_facets: dict[str, dict[str, Any]] = field(default_factory=dict)


# --- dataset names ----------------------------------------------------------------------------------------


def lake_dataset(location: str, facets: Mapping[str, dict[str, Any]] | None = None) -> DatasetRef:
    """A lake partition (or folder) as a dataset, from its location: a local path or an object-store URL.

    Local: namespace ``file``, name the absolute path. ``s3://bucket/a/b``: namespace ``s3://bucket``, name ``a/b``.
    """
    parts = urlsplit(location)
    if parts.scheme and parts.netloc and parts.scheme != "file":
        scheme = "s3" if parts.scheme in ("s3", "s3a", "s3n") else parts.scheme
        return DatasetRef(f"{scheme}://{parts.netloc}", parts.path.strip("/"), dict(facets or {}))
    path = parts.path if parts.scheme == "file" else location
    return DatasetRef("file", path.rstrip("/") or "/", dict(facets or {}))


def warehouse_namespace(drivername: str, host: str | None, port: int | None, database: str | None) -> str:
    """The namespace of a warehouse's tables: its database, without user or password.

    ``postgresql+psycopg2`` -> ``postgres://host:5432/db``; SQLite -> ``sqlite:///path/to/file.db``.
    """
    backend = drivername.split("+", 1)[0]
    if backend == "sqlite":
        return f"sqlite:///{(database or '').lstrip('/')}" if database else "sqlite://memory"
    scheme = "postgres" if backend in ("postgresql", "postgres") else backend
    address = f"{host or 'localhost'}{f':{port}' if port else ''}"
    return f"{scheme}://{address}/{database or ''}".rstrip("/")


def table_dataset(namespace: str, table: str, facets: Mapping[str, dict[str, Any]] | None = None) -> DatasetRef:
    """A warehouse table as a dataset."""
    return DatasetRef(namespace, table, dict(facets or {}))


# --- facets -----------------------------------------------------------------------------------------------


def content_digest_facet(digest: str, rows: int | None = None, version: str | None = None) -> dict[str, Any]:
    """``airloop_contentDigest``: the sha256 of a partition's rows (what MLflow and the ledger record), its row
    count and, when known, the partition version."""
    fields: dict[str, Any] = {"algorithm": "sha256", "digest": digest}
    if rows is not None:
        fields["rows"] = int(rows)
    if version is not None:
        fields["version"] = version
    return _facet(CONTENT_DIGEST, **fields)


def assertions(checks: Iterable[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """The standard ``dataQualityAssertions`` items from a validation report's ``checks`` (one per expectation:
    ``type``, ``column`` or None, ``success``): the expectation type as the assertion, its column, and whether it
    passed."""
    items = []
    for check in checks:
        item: dict[str, Any] = {"assertion": str(check["type"]), "success": bool(check["success"])}
        if isinstance(check.get("column"), str):
            item["column"] = check["column"]
        items.append(item)
    return items


def data_quality_facet(checks: Iterable[Mapping[str, Any]]) -> dict[str, Any]:
    """The standard ``dataQualityAssertions`` facet (its schema is OpenLineage's own)."""
    return {
        "_producer": PRODUCER,
        "_schemaURL": DATA_QUALITY_SCHEMA_URL,
        "assertions": assertions(checks),
    }


def model_version_facet(
    model: str,
    version: str,
    role: str,
    *,
    mlflow_run_id: str | None = None,
    training_partitions: Sequence[DatasetRef] = (),
) -> dict[str, Any]:
    """``airloop_modelVersion``: the registered model version a run trained, gated, promoted or scored with, and
    the partitions it was trained on (the link from a prediction back to its training data)."""
    if role not in ROLES:
        raise ValueError(f"unknown model-version role {role!r}; expected one of {', '.join(ROLES)}")
    fields: dict[str, Any] = {"model": model, "version": str(version), "role": role}
    if mlflow_run_id:
        fields["mlflowRunId"] = mlflow_run_id
    if training_partitions:
        fields["trainingPartitions"] = [{"namespace": d.namespace, "name": d.name} for d in training_partitions]
    return _facet(MODEL_VERSION, **fields)


def drift_verdict_facet(drifted: bool, share: float | None, features: Sequence[str]) -> dict[str, Any]:
    """``airloop_driftVerdict``: whether the window drifted, the share of drifted features and which drifted."""
    fields: dict[str, Any] = {"drifted": bool(drifted), "features": [str(f) for f in features]}
    if share is not None and share == share:  # NaN (not judged) is left out
        fields["share"] = float(share)
    return _facet(DRIFT_VERDICT, **fields)

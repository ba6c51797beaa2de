"""airloop's custom OpenLineage facets as the OpenLineage client's classes, and the conversion of a
:class:`~airloop.core.lineage.TaskLineage` into the provider's ``OperatorLineage``.

Imported only when the OpenLineage listener asks a task for its lineage (it imports the OpenLineage client), never
at DAG parse time. The facets' fields and schemas are defined in :mod:`airloop.core.lineage` and
``docs/openlineage/facets``; these classes only carry them (``attrs``, as the client's own facets are), so the
client serialises and redacts them like any facet.
"""

from __future__ import annotations

from typing import Any

import attr
from openlineage.client.event_v2 import InputDataset, OutputDataset
from openlineage.client.facet_v2 import data_quality_assertions_dataset
from openlineage.client.generated.base import DatasetFacet, RunFacet

from airloop.core import lineage as ol


@attr.define
class AirloopContentDigestDatasetFacet(DatasetFacet):
    algorithm: str
    digest: str
    rows: int | None = attr.field(default=None)
    version: str | None = attr.field(default=None)

    @staticmethod
    def _get_schema() -> str:
        return ol.schema_url(ol.CONTENT_DIGEST)


@attr.define
class TrainingPartition:
    namespace: str
    name: str


@attr.define
class AirloopModelVersionRunFacet(RunFacet):
    model: str
    version: str
    role: str
    mlflowRunId: str | None = attr.field(default=None)  # the facet's JSON field names
    trainingPartitions: list[TrainingPartition] | None = attr.field(default=None)

    @staticmethod
    def _get_schema() -> str:
        return ol.schema_url(ol.MODEL_VERSION)


@attr.define
class AirloopDriftVerdictRunFacet(RunFacet):
    drifted: bool
    features: list[str]
    share: float | None = attr.field(default=None)

    @staticmethod
    def _get_schema() -> str:
        return ol.schema_url(ol.DRIFT_VERDICT)


def _fields(data: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in data.items() if not k.startswith("_")}


def facet(key: str, data: dict[str, Any]) -> Any:
    """One facet (key and JSON object from :mod:`airloop.core.lineage`) as the client's class."""
    fields = _fields(data)
    if key == ol.DATA_QUALITY:
        items = [data_quality_assertions_dataset.Assertion(**a) for a in fields["assertions"]]
        return data_quality_assertions_dataset.DataQualityAssertionsDatasetFacet(assertions=items, producer=ol.PRODUCER)
    if key == ol.CONTENT_DIGEST:
        return AirloopContentDigestDatasetFacet(**fields, producer=ol.PRODUCER)
    if key == ol.MODEL_VERSION:
        partitions = [TrainingPartition(**p) for p in fields.pop("trainingPartitions", [])] or None
        return AirloopModelVersionRunFacet(**fields, trainingPartitions=partitions, producer=ol.PRODUCER)
    if key == ol.DRIFT_VERDICT:
        return AirloopDriftVerdictRunFacet(**fields, producer=ol.PRODUCER)
    raise ValueError(f"unknown airloop facet {key!r}")


def operator_lineage(lineage: ol.TaskLineage) -> Any:
    """The provider's ``OperatorLineage`` of one task: its datasets with their facets, and its run facets."""
    from airflow.providers.openlineage.extractors import OperatorLineage

    inputs = [
        InputDataset(
            namespace=d.namespace,
            name=d.name,
            facets={k: facet(k, v) for k, v in d.facets.items()},
            inputFacets={k: facet(k, v) for k, v in d.input_facets.items()},
        )
        for d in lineage.inputs
    ]
    outputs = [
        OutputDataset(namespace=d.namespace, name=d.name, facets={k: facet(k, v) for k, v in d.facets.items()})
        for d in lineage.outputs
    ]
    return OperatorLineage(
        inputs=inputs, outputs=outputs, run_facets={k: facet(k, v) for k, v in lineage.run_facets.items()}
    )

"""OpenLineage facets and datasets of airloop's tasks: the builders, their JSON schemas in docs/openlineage, the
conversion to the OpenLineage client's classes, and the attachment to a running task (off, on, failing)."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from types import SimpleNamespace

import jsonschema
import pytest

from airloop.core import lineage as ol

ROOT = Path(__file__).resolve().parents[2]
DIGEST = "ab" * 32
CHECKS = [
    {"type": "expect_column_values_to_not_be_null", "column": "temp", "success": True},
    {"type": "expect_table_row_count_to_be_between", "column": None, "success": False},
]


def _schema(key: str) -> dict:
    path = ROOT / "docs" / "openlineage" / "facets" / ol.SCHEMA_VERSION / f"{ol.SCHEMAS[key]}.json"
    return json.loads(path.read_text())


def _check(key: str, facet: dict) -> None:
    jsonschema.validate({key: facet}, _schema(key))


def _facets() -> dict[str, dict]:
    trained = [ol.lake_dataset("s3://lake/data/bikes/validated/2012-11-03T000000Z")]
    return {
        ol.CONTENT_DIGEST: ol.content_digest_facet(DIGEST, 650, "v-0123"),
        ol.MODEL_VERSION: ol.model_version_facet(
            "bikes", "3", "scoring", mlflow_run_id="abc", training_partitions=trained
        ),
        ol.DRIFT_VERDICT: ol.drift_verdict_facet(True, 0.5, ["temp", "hum"]),
    }


@pytest.mark.parametrize("key", sorted(ol.SCHEMAS))
def test_each_facet_matches_its_schema_in_the_repo(key):
    facet = _facets()[key]
    _check(key, facet)
    schema = _schema(key)
    # The versioned URL in code names this very file and definition.
    assert facet["_schemaURL"] == f"{schema['$id']}#/$defs/{ol.SCHEMAS[key]}"
    assert f"/{ol.SCHEMA_VERSION}/{ol.SCHEMAS[key]}.json" in facet["_schemaURL"]


def test_the_schemas_refuse_a_facet_that_breaks_them():
    bad_role = _facets()[ol.MODEL_VERSION] | {"role": "guessed"}
    with pytest.raises(jsonschema.ValidationError):
        _check(ol.MODEL_VERSION, bad_role)
    with pytest.raises(jsonschema.ValidationError):
        _check(ol.CONTENT_DIGEST, ol.content_digest_facet("not-a-digest"))
    with pytest.raises(ValueError, match="role"):
        ol.model_version_facet("bikes", "3", "guessed")


def test_minimal_facets_match_too():
    _check(ol.CONTENT_DIGEST, ol.content_digest_facet(DIGEST))
    _check(ol.MODEL_VERSION, ol.model_version_facet("bikes", "1", "trained"))
    not_judged = ol.drift_verdict_facet(False, float("nan"), [])
    _check(ol.DRIFT_VERDICT, not_judged)
    assert "share" not in not_judged


def test_data_quality_assertions_come_from_the_checks():
    facet = ol.data_quality_facet(CHECKS)
    assert facet["assertions"] == [
        {"assertion": "expect_column_values_to_not_be_null", "success": True, "column": "temp"},
        {"assertion": "expect_table_row_count_to_be_between", "success": False},
    ]
    assert "DataQualityAssertionsDatasetFacet" in facet["_schemaURL"]


@pytest.mark.parametrize(
    ("location", "namespace", "name"),
    [
        ("/data/airloop/lake/bikes/validated/k", "file", "/data/airloop/lake/bikes/validated/k"),
        ("file:///data/lake/bikes/raw/k", "file", "/data/lake/bikes/raw/k"),
        ("s3://bucket/lake/bikes/validated/k", "s3://bucket", "lake/bikes/validated/k"),
        ("s3a://bucket/bikes/raw/k/", "s3://bucket", "bikes/raw/k"),
    ],
)
def test_lake_partitions_are_named_by_their_path(location, namespace, name):
    assert ol.lake_dataset(location) == ol.DatasetRef(namespace, name)


def test_warehouse_namespace_is_the_database_without_credentials():
    assert ol.warehouse_namespace("postgresql+psycopg2", "db.internal", 5432, "airloop") == (
        "postgres://db.internal:5432/airloop"
    )
    assert ol.warehouse_namespace("sqlite", None, None, "/srv/airloop/warehouse.db") == (
        "sqlite:///srv/airloop/warehouse.db"
    )


def test_the_client_classes_serialise_to_the_same_facets():
    from openlineage.client.serde import Serde

    from airloop.orchestration.openlineage_facets import operator_lineage

    facets = _facets()
    quality = ol.data_quality_facet(CHECKS)
    task = ol.TaskLineage(
        inputs=[
            ol.DatasetRef(
                "file", "/lake/raw/k", {ol.CONTENT_DIGEST: facets[ol.CONTENT_DIGEST]}, {ol.DATA_QUALITY: quality}
            )
        ],
        outputs=[ol.DatasetRef("sqlite:///w.db", "predictions")],
        run_facets={ol.MODEL_VERSION: facets[ol.MODEL_VERSION], ol.DRIFT_VERDICT: facets[ol.DRIFT_VERDICT]},
    )
    converted = operator_lineage(task)
    [raw] = converted.inputs
    assert Serde.to_dict(raw.facets[ol.CONTENT_DIGEST]) == facets[ol.CONTENT_DIGEST]
    emitted = Serde.to_dict(raw.inputFacets[ol.DATA_QUALITY])["assertions"]
    assert [{k: a[k] for k in ("assertion", "success", "column") if k in a} for a in emitted] == quality["assertions"]
    for key in (ol.MODEL_VERSION, ol.DRIFT_VERDICT):
        emitted = Serde.to_dict(converted.run_facets[key])
        assert emitted == facets[key]
        _check(key, emitted)
    assert [(d.namespace, d.name) for d in converted.outputs] == [("sqlite:///w.db", "predictions")]


def _task_context() -> dict:
    return {"task": SimpleNamespace(task_id="t")}


def test_with_no_transport_nothing_is_built_or_attached(monkeypatch):
    from airloop.orchestration import lineage

    for name in ("AIRFLOW__OPENLINEAGE__TRANSPORT", "OPENLINEAGE_URL", "OPENLINEAGE_CONFIG"):
        monkeypatch.delenv(name, raising=False)
    context = _task_context()

    def build():
        raise AssertionError("built with OpenLineage off")

    assert lineage.enabled() is False
    assert lineage.record(context, build) is False
    assert not hasattr(context["task"], lineage.ON_COMPLETE)


def test_one_setting_turns_it_on(monkeypatch):
    from airloop.orchestration import lineage

    # The provider caches its settings per process (not under pytest): a deployment sets this before starting.
    monkeypatch.setenv("AIRFLOW__OPENLINEAGE__TRANSPORT", json.dumps({"type": "console"}))
    assert lineage.enabled() is True


def test_a_lineage_failure_is_logged_and_never_raised(monkeypatch, caplog):
    from airloop.orchestration import lineage

    monkeypatch.setattr(lineage, "enabled", lambda: True)
    context = _task_context()

    def build():
        raise OSError("report gone")

    with caplog.at_level(logging.WARNING, logger=lineage.__name__):
        assert lineage.record(context, build) is False
    assert "OpenLineage" in caplog.text and "report gone" in caplog.text
    assert not hasattr(context["task"], lineage.ON_COMPLETE)


def test_recorded_lineage_is_what_the_provider_extracts(monkeypatch):
    from airflow.providers.openlineage.extractors.manager import ExtractorManager

    from airloop.orchestration import lineage

    monkeypatch.setattr(lineage, "enabled", lambda: True)
    task = SimpleNamespace(task_id="score", task_type="_PythonDecoratedOperator", inlets=[], outlets=[])
    facet = _facets()[ol.MODEL_VERSION]
    assert lineage.record({"task": task}, lambda: ol.TaskLineage(run_facets={ol.MODEL_VERSION: facet}))
    extractor = ExtractorManager()._get_extractor(task)
    extracted = extractor.extract_on_complete(None)
    assert extracted.run_facets[ol.MODEL_VERSION].version == "3"


def test_validation_checks_name_every_expectation(demo_frame, bikes_spec):
    from airloop.adapters.expectations import load_suites, validate

    suites = load_suites(bikes_spec, ROOT / "expectations")
    outcome = validate(demo_frame.head(500), suites, keys=bikes_spec.keys)
    expected = [(e["type"], e["kwargs"].get("column")) for s in suites for e in s.raw["expectations"]]
    assert sorted((c["type"], c["column"] or "") for c in outcome.checks) == sorted((t, c or "") for t, c in expected)
    assert all(c["success"] for c in outcome.checks) == outcome.success
    assert outcome.report()["checks"] == outcome.checks


def test_the_monitor_reports_its_drift_verdict_on_the_predictions_table(home):
    from datetime import UTC, datetime

    from airloop.core.contracts import MonitorSummary
    from airloop.orchestration.tasks import _drift_lineage

    summary = MonitorSummary(
        model="bikes",
        champion_version="2",
        window_start=datetime(2012, 11, 1, tzinfo=UTC),
        window_end=datetime(2012, 12, 1, tzinfo=UTC),
        drifted=True,
        drift_share=0.4,
        drifted_columns=("temp", "hum"),
        scores={},
        prediction_score=0.0,
        prediction_drifted=False,
        performance=None,
        retrain=True,
        reason="drifted",
        report="r.html",
        report_json="r.json",
    )
    task = _drift_lineage(summary)
    verdict = task.run_facets[ol.DRIFT_VERDICT]
    _check(ol.DRIFT_VERDICT, verdict)
    assert (verdict["drifted"], verdict["share"], verdict["features"]) == (True, 0.4, ["temp", "hum"])
    warehouse = f"sqlite:///{(home / 'warehouse.db').as_posix().lstrip('/')}"
    assert [(d.namespace, d.name) for d in task.inputs] == [(warehouse, "predictions")]
    assert [(d.namespace, d.name) for d in task.outputs] == [(warehouse, "drift_metrics")]

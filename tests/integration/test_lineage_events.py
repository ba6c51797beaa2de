"""OpenLineage events of real dag.test() runs: one setting (a file transport) turns them on.

The ingest and score DAGs run in a child process whose only difference from the test session is
``AIRFLOW__OPENLINEAGE__TRANSPORT``: the provider reads it when Airflow loads its plugins, once per process, and the
session's own processes run with OpenLineage off (as a deployment does by default).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from airloop.core import lineage as ol

ROOT = Path(__file__).resolve().parents[2]
INTERVAL = "2011-01-01T000000Z"  # the first interval of bikes (28 days)
HOLDOUT = {"start": "2012-11-03", "end": "2012-12-29"}  # the two newest validated partitions

# The child applies the same dag.test() work-around for DAGs with deadline alerts as tests/conftest.py's
# `_dag_test_reads_stored_deadlines` (importing conftest would give the child a new AIRLOOP_HOME).
SCRIPT = """
import json, sys
from datetime import datetime, timedelta, UTC
from airflow.dag_processing.dagbag import DagBag
from airflow.models.dagrun import DagRun
from airflow.models.serialized_dag import SerializedDagModel
from airflow.utils.session import create_session

original = DagRun.update_state

def update_state(self, **kwargs):
    dag = getattr(self, "dag", None)
    if dag is not None and dag.deadline and not all(isinstance(d, str) for d in dag.deadline):
        session = kwargs.get("session")
        if session is None:
            with create_session() as own:
                stored = SerializedDagModel.get_dag(dag.dag_id, session=own)
        else:
            stored = SerializedDagModel.get_dag(dag.dag_id, session=session)
        if stored is not None:
            dag.deadline = stored.deadline
    return original(self, **kwargs)

DagRun.update_state = update_state

root = sys.argv[1]
states = {}
ingest = DagBag(dag_folder=root + "/dags/ingest.py").dags["bikes_ingest"]
run = ingest.test(logical_date=datetime(2011, 1, 1, tzinfo=UTC) + timedelta(days=28))
states["ingest"] = {ti.task_id: ti.state for ti in run.get_task_instances()}
train = DagBag(dag_folder=root + "/dags/train.py").dags["bikes_train"]
run = train.test(run_conf={"reason": "lineage test", "overrides": {"max_iter": 20}})
states["train"] = {ti.task_id: ti.state for ti in run.get_task_instances()}
score = DagBag(dag_folder=root + "/dags/score.py").dags["bikes_score"]
run = score.test(run_conf=json.loads(sys.argv[2]))
states["score"] = {ti.task_id: ti.state for ti in run.get_task_instances()}
print("STATES=" + json.dumps(states))
"""


@pytest.fixture(scope="module")
def champion(airflow_db, seeded_source, validated_lake, bikes_spec) -> str:
    """The current champion; trained and promoted here when this file runs on its own."""
    from airloop.adapters import registry as tracking
    from airloop.adapters.db import engine_for
    from airloop.core.contracts import RunInfo, TrainRequest
    from airloop.core.settings import WAREHOUSE_CONN_ID
    from airloop.stages.promote.ledger import Decision, apply
    from airloop.stages.train import runner as train_stage

    version = tracking.version_for_alias("bikes", tracking.CHAMPION)
    if version is None:
        trained = train_stage.train(
            bikes_spec, TrainRequest(reason="lineage tests", overrides={"max_iter": 20}), RunInfo()
        )
        apply(engine_for(WAREHOUSE_CONN_ID), Decision("bikes", "promote", trained.version, "lineage", "tests"), None)
        version = trained.version
    return version


@pytest.fixture(scope="module")
def events(champion, tmp_path_factory) -> list[dict]:
    log_file = tmp_path_factory.mktemp("openlineage") / "events.jsonl"
    env = os.environ | {
        "AIRFLOW__OPENLINEAGE__TRANSPORT": json.dumps({"type": "file", "log_file_path": str(log_file), "append": True})
    }
    done = subprocess.run(
        [sys.executable, "-c", SCRIPT, str(ROOT), json.dumps(HOLDOUT)],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr[-4000:]
    states = json.loads(next(line for line in done.stdout.splitlines() if line.startswith("STATES="))[7:])
    errors = [line for line in done.stderr.splitlines() if "error" in line.lower()][-20:]
    assert set(states["ingest"].values()) == {"success"}, (states, errors)
    assert states["train"]["train"] == states["train"]["gate"] == "success", (states, errors)
    assert states["score"]["score"] == "success", (states, errors)
    return [json.loads(line) for line in log_file.read_text().splitlines() if line.strip()]


def _complete(events: list[dict], job: str) -> dict:
    found = [e for e in events if e["eventType"] == "COMPLETE" and e["job"]["name"] == job]
    assert len(found) == 1, [(e["eventType"], e["job"]["name"]) for e in events]
    return found[0]


def _validate(facet: dict, key: str) -> None:
    import jsonschema

    schema_file = ROOT / "docs" / "openlineage" / "facets" / ol.SCHEMA_VERSION / f"{ol.SCHEMAS[key]}.json"
    schema = json.loads(schema_file.read_text())
    jsonschema.validate({key: facet}, schema)
    assert facet["_schemaURL"] == ol.schema_url(key)


def test_ingest_events_carry_the_validated_partition_with_assertions_and_digest(events):
    from airloop.adapters.lake import default_lake

    lake = default_lake()
    published = _complete(events, "bikes_ingest.publish")
    validated = lake.manifest("bikes", "validated", INTERVAL)
    [output] = published["outputs"]
    assert (output["namespace"], output["name"]) == ("file", lake.partition_url("bikes", "validated", INTERVAL))
    digest = output["facets"][ol.CONTENT_DIGEST]
    _validate(digest, ol.CONTENT_DIGEST)
    assert (digest["digest"], digest["rows"]) == (validated.content_digest, validated.rows)
    quality = output["facets"][ol.DATA_QUALITY]
    from airloop.core.spec import get_spec
    from airloop.stages.ingest.label_rules import is_target_rule

    # The bikes labels come from their own table (labels.source): the target's rules are set aside at ingest.
    spec = get_spec("bikes", ROOT / "include" / "models")
    assert spec.labels.source is not None
    suites = [json.loads(p.read_text()) for p in sorted((ROOT / "expectations" / "bikes").glob("*.json"))]
    expected = [e["type"] for s in suites for e in s["expectations"] if not is_target_rule(e, spec.target.name)]
    assert sorted(a["assertion"] for a in quality["assertions"]) == sorted(expected)
    assert all(a["success"] for a in quality["assertions"])
    assert {a.get("column") for a in quality["assertions"]} > {None}
    [raw] = published["inputs"]
    assert raw["name"] == lake.partition_url("bikes", "raw", INTERVAL)

    checked = _complete(events, "bikes_ingest.validate")
    [raw] = checked["inputs"]
    assert raw["inputFacets"][ol.DATA_QUALITY]["assertions"] == quality["assertions"]


def test_train_events_read_the_training_partitions_and_name_the_version(events):
    from airloop.adapters import registry as tracking
    from airloop.adapters.lake import default_lake

    lake = default_lake()
    trained = _complete(events, "bikes_train.train")["run"]["facets"][ol.MODEL_VERSION]
    _validate(trained, ol.MODEL_VERSION)
    mv = tracking.client().get_model_version("bikes", trained["version"])
    assert (trained["role"], trained["mlflowRunId"]) == ("trained", mv.run_id)
    keys = mv.tags["airloop.partitions"].split(",")
    inputs = _complete(events, "bikes_train.train")["inputs"]
    assert [i["name"] for i in inputs] == [lake.partition_url("bikes", "validated", k) for k in keys]
    assert [p["name"] for p in trained["trainingPartitions"]] == [i["name"] for i in inputs]
    assert all(i["facets"][ol.CONTENT_DIGEST]["digest"] for i in inputs)

    gated = _complete(events, "bikes_train.gate")["run"]["facets"][ol.MODEL_VERSION]
    assert (gated["role"], gated["version"]) == ("gated", trained["version"])
    promoted = [e for e in events if e["eventType"] == "COMPLETE" and e["job"]["name"] == "bikes_train.promote"]
    # The promote task names the version only when @champion moved to it (a refused challenger moves nothing).
    moved = tracking.version_for_alias("bikes", tracking.CHAMPION) == trained["version"]
    roles = [e["run"]["facets"].get(ol.MODEL_VERSION, {}).get("role") for e in promoted]
    assert roles == (["promoted"] if moved else [None] * len(promoted))


def test_score_events_link_predictions_to_the_model_version_and_its_training_partitions(events):
    from airloop.adapters import registry as tracking
    from airloop.adapters.lake import default_lake

    champion = tracking.version_for_alias("bikes", tracking.CHAMPION)
    lake = default_lake()
    scored = _complete(events, "bikes_score.score")
    mv = tracking.client().get_model_version("bikes", champion)
    version = scored["run"]["facets"][ol.MODEL_VERSION]
    _validate(version, ol.MODEL_VERSION)
    assert (version["model"], version["version"], version["role"], version["mlflowRunId"]) == (
        "bikes",
        champion,
        "scoring",
        mv.run_id,
    )
    trained_on = [p["name"] for p in version["trainingPartitions"]]
    assert trained_on == [lake.partition_url("bikes", "validated", k) for k in mv.tags["airloop.partitions"].split(",")]
    assert trained_on

    scored_keys = [k for k in lake.partitions("bikes", "predictions") if HOLDOUT["start"] <= k[:10] < HOLDOUT["end"]]
    outputs = {(o["namespace"], o["name"]) for o in scored["outputs"]}
    assert {("file", lake.partition_url("bikes", "predictions", k)) for k in scored_keys} < outputs
    [table] = [o for o in scored["outputs"] if o["name"] == "predictions"]
    assert table["namespace"].startswith("sqlite:///") and table["namespace"].endswith("warehouse.db")
    inputs = {i["name"]: i for i in scored["inputs"]}
    for key in scored_keys:
        manifest = lake.manifest("bikes", "validated", key)
        assert inputs[lake.partition_url("bikes", "validated", key)]["facets"][ol.CONTENT_DIGEST]["digest"] == (
            manifest.content_digest
        )

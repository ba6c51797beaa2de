"""DAG integrity and policy: every DAG file imports cleanly, cheaply, and carries what on-call needs."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
DAGS = ROOT / "dags"
HEAVY = [
    "pandas",
    "numpy",
    "sklearn",
    "mlflow",
    "great_expectations",
    "evidently",
    "scipy",
    "pyarrow",
    # Airflow loads every provider's Asset URI handlers (0.1-0.2 s) for the first Asset whose URI scheme is not
    # `x-...`; airloop's Assets use `x-airloop://` (orchestration/assets.py), so parsing never pays it.
    "airflow.providers.common.compat.assets",
]  # airflow.sdk itself loads sqlalchemy
# airloop's own modules that only task bodies and callbacks need: orchestration/tasks.py and build.py import them
# inside the functions that run in tasks, so a parse never pays them (issue 16: airloop's share of a parse).
LAZY_AIRLOOP = [
    "airloop.core.intervals",
    "airloop.core.lineage",
    "airloop.core.contracts",
    "airloop.orchestration.lineage",
    "airloop.orchestration.approval",
    "airloop.orchestration.openlineage_facets",
    "airloop.adapters",
    "airloop.stages",
]
# Airflow's ORM models: a parsing process forked from the dag-processor has them only if something named them
# before the fork (test_a_forked_parse_loads_none_of_airflows_orm_models).
ORM = {
    "airflow.models.dag",
    "airflow.models.dagrun",
    "airflow.models.taskinstance",
    "airflow.models.serialized_dag",
    "airflow.api.common.trigger_dag",
}
# A person's answer is never asked twice, and a promotion is never repeated blindly: a retry after a crash
# could find @champion already moved by this very run and record a false conflict.
NO_RETRY_TASKS = {"approve", "promote", "outcome"}


@pytest.fixture(scope="module")
def dagbag():
    from airflow.dag_processing.dagbag import DagBag

    return DagBag(dag_folder=str(DAGS))


def test_no_import_errors(dagbag):
    assert dagbag.import_errors == {}
    assert "bikes_ingest" in dagbag.dag_ids


def test_policy_on_every_dag(dagbag):
    for dag_id, dag in dagbag.dags.items():
        assert "airloop" in dag.tags, dag_id
        assert any(t.startswith("model:") for t in dag.tags), dag_id
        assert dag.doc_md and "## Triage" in dag.doc_md and "**Owner:**" in dag.doc_md, dag_id
        triage = dag.doc_md.split("## Triage", 1)[1]
        assert "is unreachable" in triage and "airloop view" in triage, f"{dag_id}: runbook lacks the common triage"
        for task in dag.tasks:
            assert task.owner not in ("", "airflow"), f"{dag_id}.{task.task_id} has no real owner"
            if task.task_id in NO_RETRY_TASKS:
                assert task.retries == 0, f"{dag_id}.{task.task_id} must not retry"
            else:
                assert task.retries >= 1, f"{dag_id}.{task.task_id} has no retries"


def test_a_task_returns_its_result_as_one_xcom(dagbag):
    """A TaskFlow task annotated ``-> dict`` pushes every key as an XCom of its own (Airflow infers
    ``multiple_outputs``): one execution-API call per key, eight per task instance on average in the demo, a third
    of the api-server's time. airloop's wiring reads whole results only, so every task returns one XCom."""
    checked = 0
    for dag_id, dag in dagbag.dags.items():
        for task in dag.tasks:
            if hasattr(task, "multiple_outputs"):
                assert task.multiple_outputs is False, f"{dag_id}.{task.task_id} pushes a result's keys one by one"
                checked += 1
    assert checked >= 20


def test_ingest_dag_has_real_intervals_and_catchup(dagbag):
    dag = dagbag.dags["bikes_ingest"]
    assert dag.catchup is True
    assert type(dag.timetable).__name__ == "DeltaDataIntervalTimetable"
    assert [t.task_id for t in dag.topological_sort()] == ["extract", "validate", "publish"]
    (outlet,) = dag.get_task("publish").outlets
    assert outlet.name == "bikes.validated"


@pytest.mark.parametrize("dag_file", sorted(p.name for p in DAGS.glob("*.py")))
def test_parse_loads_nothing_heavy_and_touches_no_database(dag_file, tmp_path):
    """Import a DAG file in a fresh process with no metadata DB and no connections: it must not need them."""
    probe = (
        "import importlib.util, json, sys\n"
        f"spec = importlib.util.spec_from_file_location('dagfile', {str(DAGS / dag_file)!r})\n"
        "module = importlib.util.module_from_spec(spec); spec.loader.exec_module(module)\n"
        f"print(json.dumps([m for m in {[*HEAVY, *LAZY_AIRLOOP]!r} if m in sys.modules]))\n"
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("AIRFLOW_CONN_")}
    env["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"] = f"sqlite:///{tmp_path / 'must-not-exist' / 'airflow.db'}"
    env["AIRLOOP_HOME"] = str(tmp_path / "home")
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, env=env, timeout=120)
    assert out.returncode == 0, out.stderr[-3000:]
    assert json.loads(out.stdout.strip().splitlines()[-1]) == []
    assert not (tmp_path / "must-not-exist").exists()
    assert not (tmp_path / "home").exists(), "parsing a DAG file must not create AIRLOOP_HOME"


@pytest.mark.parametrize("dag_file", sorted(p.name for p in DAGS.glob("*.py")))
def test_a_forked_parse_loads_none_of_airflows_orm_models(dag_file):
    """The dag-processor imports the Airflow modules a DAG file names once, before it forks the processes that
    parse it (``[dag_processor] parsing_pre_import_modules``). An operator that loads Airflow's ORM models
    (``TriggerDagRunOperator``) must be named in the DAG file, not imported inside airloop where the pre-import
    cannot see it: there it costs every parse tens to hundreds of ms (issue 16)."""
    probe = (
        "import importlib, importlib.util, json, sys\n"
        "import airflow.sdk\n"
        "from airflow.utils.file import iter_airflow_imports\n"
        f"path = {str(DAGS / dag_file)!r}\n"
        "for name in iter_airflow_imports(path):\n"
        "    importlib.import_module(name)\n"
        "before = set(sys.modules)\n"
        "spec = importlib.util.spec_from_file_location('dagfile', path)\n"
        "module = importlib.util.module_from_spec(spec); spec.loader.exec_module(module)\n"
        f"print(json.dumps(sorted(set(sys.modules) - before & {ORM!r})))\n"
    )
    assert _probe_modules(probe) == []


def test_broken_spec_is_an_import_error_naming_file_and_field(tmp_path, monkeypatch):
    from airflow.dag_processing.dagbag import DagBag

    raw = yaml.safe_load((ROOT / "include" / "models" / "bikes.yaml").read_text())
    raw["schedule"]["every"] = "sometimes"
    (tmp_path / "bikes.yaml").write_text(yaml.safe_dump(raw))
    monkeypatch.setenv("AIRLOOP_MODELS_DIR", str(tmp_path))
    errors = DagBag(dag_folder=str(DAGS / "ingest.py")).import_errors
    (message,) = errors.values()
    assert str(tmp_path / "bikes.yaml") in message
    assert "schedule.every" in message and "Fix:" in message


def test_second_spec_gives_a_second_dag(tmp_path, monkeypatch):
    from airflow.dag_processing.dagbag import DagBag

    raw = yaml.safe_load((ROOT / "include" / "models" / "bikes.yaml").read_text())
    (tmp_path / "bikes.yaml").write_text(yaml.safe_dump(raw))
    (tmp_path / "bikes_daily.yaml").write_text(
        yaml.safe_dump({**raw, "name": "bikes_daily", "schedule": {**raw["schedule"], "every": "1d"}})
    )
    monkeypatch.setenv("AIRLOOP_MODELS_DIR", str(tmp_path))
    bag = DagBag(dag_folder=str(DAGS / "ingest.py"))
    assert bag.import_errors == {}
    assert {"bikes_ingest", "bikes_daily_ingest"} <= set(bag.dag_ids)
    assert json.dumps(sorted(bag.dags["bikes_daily_ingest"].tags)).count("model:bikes_daily") == 1


def test_train_dag_runs_on_retrain_requests_and_the_specs_cron(dagbag, bikes_spec):
    from airflow.sdk import AssetOrTimeSchedule

    from airloop.orchestration import build as dagkit

    train = dagbag.dags["bikes_train"]
    assert train.max_active_runs == 1 and train.catchup is False
    assert [t.task_id for t in train.topological_sort()] == ["check", "train", "gate", "promote", "record", "outcome"]
    assert {a.name for a in train.timetable.asset_condition.objects} == {"bikes.retrain_requested"}
    promote = dagbag.dags["bikes_promote"]
    assert type(promote.timetable).__name__ == "NullTimetable" and promote.max_active_runs == 1

    weekly = bikes_spec.model_copy(update={"training": bikes_spec.training.model_copy(update={"cron": "0 3 * * 1"})})
    schedule = dagkit.train_schedule(weekly)
    assert isinstance(schedule, AssetOrTimeSchedule)
    assert schedule.timetable.expression == "0 3 * * 1"


def test_approval_step_only_when_the_spec_requires_it(bikes_spec):
    from airflow.sdk import DAG

    from airloop.orchestration import build as dagkit

    gate = bikes_spec.gate.model_copy(
        update={"approval": bikes_spec.gate.approval.model_copy(update={"required": True})}
    )
    spec = bikes_spec.model_copy(update={"gate": gate})
    with DAG("approval_wiring", schedule=None) as dag:
        from airflow.sdk import task

        @task.short_circuit(task_id="gate")
        def gated() -> bool:
            return True

        dagkit.decision_tasks(spec, "train", gated())
    approve = dag.get_task("approve")
    assert type(approve).__name__ == "RecordedApproval"
    assert approve.downstream_task_ids == {"promote"} and approve.retries == 0
    assert "xcom_pull(task_ids='gate', key='gate')['markdown']" in approve.body


def test_monitor_dag_runs_on_the_spec_cron_and_announces_requests_on_the_retrain_asset(dagbag, bikes_spec):
    from airloop.orchestration import build as dagkit

    dag = dagbag.dags["bikes_monitor"]
    assert dag.catchup is False and dag.max_active_runs == 1
    assert bikes_spec.monitoring.cron is None  # the demo's replay steps the monitor through data time by API
    assert type(dag.timetable).__name__ == "NullTimetable"
    live = bikes_spec.model_copy(update={"monitoring": bikes_spec.monitoring.model_copy(update={"cron": "@daily"})})
    timetable = dagkit.monitor_schedule(live)
    assert type(timetable).__name__ == "CronTriggerTimetable" and timetable.expression in ("@daily", "0 0 * * *")
    assert [t.task_id for t in dag.topological_sort() if t.task_id != "freshness"] == ["check", "judge", "request"]
    assert not dag.get_task("freshness").upstream_task_ids and not dag.get_task("freshness").outlets
    (outlet,) = dag.get_task("request").outlets
    assert outlet.name == "bikes.retrain_requested"
    assert not dag.get_task("judge").outlets  # no event unless a request is due
    assert set(dag.params.keys()) == {"as_of"}
    # The train DAG listens to the very Asset the monitor announces on.
    assert outlet in dagbag.dags["bikes_train"].timetable.asset_condition.objects


def test_extra_links_on_the_tasks_that_make_something_to_see(dagbag):
    """train → MLflow run, validate → validation report, judge → drift report, request → triggered training."""
    expected = {
        ("bikes_train", "train"): "MLflow run",
        ("bikes_ingest", "validate"): "Validation report",
        ("bikes_monitor", "judge"): "Drift report",
        ("bikes_monitor", "request"): "Triggered training run",
    }
    for (dag_id, task_id), name in expected.items():
        task = dagbag.dags[dag_id].get_task(task_id)
        assert [link.name for link in task.operator_extra_links] == [name], (dag_id, task_id)
    assert not dagbag.dags["bikes_train"].get_task("check").operator_extra_links


def test_extra_links_survive_serialization(dagbag):
    """The api-server sees a serialized DAG: each link must keep its name and XCom key."""
    from airflow.serialization.serialized_objects import DagSerialization

    dag = DagSerialization.from_dict(DagSerialization.to_dict(dagbag.dags["bikes_monitor"]))
    names = {link.name for link in dag.get_task("judge").operator_extra_links}
    assert names == {"Drift report"}


def test_the_plugin_module_is_light():
    """Every task process imports plugins: ours must add no heavy module on top of Airflow itself."""
    probe = (
        "import json, sys\n"
        "import airflow.plugins_manager\n"
        "before = set(sys.modules)\n"
        f"sys.path.insert(0, {str(ROOT / 'plugins')!r})\n"
        "import airloop_view\n"
        "added = sorted(set(sys.modules) - before)\n"
        f"print(json.dumps([m for m in added if m.split('.')[0] in {[*HEAVY, 'fastapi', 'jinja2']!r}]))\n"
    )
    assert _probe_modules(probe) == []


def _probe_modules(probe: str) -> list[str]:
    """Run ``probe`` in a fresh interpreter; the JSON list of module names it prints last."""
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-3000:]
    return json.loads(out.stdout.strip().splitlines()[-1])

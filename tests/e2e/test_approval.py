"""Human approval before promotion, against real servers: the api-server, the scheduler (LocalExecutor) and MLflow.

The bikes spec here requires approval (``gate.approval.required: true``), so ``bikes_train`` waits in task
``approve`` (state ``awaiting_input``) until a person answers through the REST API. The tests run in file order
and build on each other: a bad request refused by ``check``, a first champion approved, a better challenger
rejected, and a rollback refused because the ledger holds no earlier champion.

Validated lake partitions are written directly (ingestion is tested in ``test_backfill.py``). Two trainings in
all: each takes tens of seconds on 2 cores.
"""

from __future__ import annotations

import json
import os
import re
import sqlite3
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from tests.e2e import recipes
from tests.e2e.helpers import free_port, wait_for

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(1500)]

TRAIN = "bikes_train"
PROMOTE = "bikes_promote"
WEAK = {"max_iter": 20, "learning_rate": 0.1}  # passes the absolute thresholds, leaves room to improve
TERMINAL = ("success", "failed")


@dataclass
class Servers:
    home: Path
    models: Path
    api: str  # the api-server's base URL
    mlflow: str
    users: dict[str, httpx.Client]
    token: dict[str, str]
    state: dict[str, Any] = field(default_factory=dict)  # what earlier tests found, for later ones

    @property
    def operator(self) -> httpx.Client:
        return self.users["operator"]


def _write_training_data(home: Path, models: Path) -> list[str]:
    """Seed this home's source and write validated partitions of the newest 14 intervals (the 364-day window)."""
    import sqlalchemy as sa

    from airloop.adapters.datasets import seed
    from airloop.adapters.lake import Lake
    from airloop.core.spec import get_spec
    from tests.conftest import DEMO_CSV
    from tests.support import write_validated_partitions

    spec = get_spec("bikes", models)
    assert spec.gate.approval.required, "the copied spec must require approval"
    engine = sa.create_engine(f"sqlite:///{home / 'source.db'}")
    try:
        seed(engine, DEMO_CSV.parent)
        return write_validated_partitions(engine, Lake(home / "lake"), spec)
    finally:
        engine.dispose()


@pytest.fixture(scope="module")
def servers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Servers]:
    """The runtime on free ports, in its own AIRLOOP_HOME, with a bikes spec that requires approval."""
    from airloop.ops import runtime
    from tests.conftest import ROOT

    mp = pytest.MonkeyPatch()
    home = tmp_path_factory.mktemp("e2e-approval") / "home"
    home.mkdir()
    models = tmp_path_factory.mktemp("approval-models")
    raw = yaml.safe_load((ROOT / "include" / "models" / "bikes.yaml").read_text())
    raw.pop("labels", None)  # labels with the rows: bikes' own label table is filled by the demo only
    raw["gate"]["approval"]["required"] = True
    # bikes.yaml's own train limits are for an unattended run; with a person in the loop the defaults (which add
    # the approval wait) apply, as docs/model-spec.md says under "Timeouts".
    raw.get("timeouts", {}).pop("train", None)
    raw.get("timeouts", {}).pop("promote", None)
    (models / "bikes.yaml").write_text(yaml.safe_dump(raw, sort_keys=False))
    # The runtime's components inherit this process's environment (runtime.airflow_env), so both agree on
    # AIRLOOP_HOME and AIRLOOP_MODELS_DIR.
    mp.setenv("AIRLOOP_HOME", str(home))
    mp.setenv("AIRLOOP_MODELS_DIR", str(models))
    mp.setenv("AIRLOOP_AIRFLOW_PORT", str(free_port()))
    mp.setenv("AIRLOOP_MLFLOW_PORT", str(free_port()))
    mp.delenv("AIRLOOP_USERS", raising=False)
    for var in ("AIRFLOW_HOME", "AIRFLOW__CORE__DAGS_FOLDER", "AIRFLOW__CORE__PLUGINS_FOLDER"):
        mp.delenv(var, raising=False)
    # tests/conftest.py points the connections at the session's databases; here they must come from the
    # metadata DB, where up() registers this home's source.db and warehouse.db.
    for var in [k for k in os.environ if k.startswith("AIRFLOW_CONN_")]:
        mp.delenv(var)
    clients: dict[str, httpx.Client] = {}
    try:
        _write_training_data(home, models)
        start = time.monotonic()
        status = runtime.up(wait_timeout=240)
        print(f"\nup() took {time.monotonic() - start:.1f} s")
        urls = status.to_dict()["urls"]
        creds = runtime.read_credentials()
        tokens = {user: runtime.get_token(user, creds[user]) for user in ("admin", "operator", "steward")}
        for user, token in tokens.items():
            clients[user] = httpx.Client(
                base_url=urls["airflow"], headers={"Authorization": f"Bearer {token}"}, timeout=30, trust_env=False
            )
        yield Servers(home=home, models=models, api=urls["airflow"], mlflow=urls["mlflow"], users=clients, token=tokens)
    finally:
        for client in clients.values():
            client.close()
        runtime.down()
        mp.undo()


# --- helpers ---------------------------------------------------------------------------------------------------


def _wait(what: str, check: Callable[[], Any], explain: Callable[[], str], timeout: float, every: float = 2) -> Any:
    """``wait_for``, with ``explain()`` added to the failure message on a timeout."""
    try:
        return wait_for(what, check, timeout=timeout, every=every)
    except pytest.fail.Exception as exc:
        pytest.fail(f"{exc}\n{explain()}")


def _trigger(client: httpx.Client, dag_id: str, conf: dict[str, Any]) -> str:
    resp = client.post(f"/api/v2/dags/{dag_id}/dagRuns", json={"logical_date": None, "conf": conf})
    assert resp.status_code == 200, f"triggering {dag_id} with {conf}: HTTP {resp.status_code} {resp.text}"
    return resp.json()["dag_run_id"]


def _run(client: httpx.Client, dag_id: str, run_id: str) -> dict[str, Any]:
    resp = client.get(f"/api/v2/dags/{dag_id}/dagRuns/{run_id}")
    assert resp.status_code == 200, resp.text
    return resp.json()


def _task_states(client: httpx.Client, dag_id: str, run_id: str) -> dict[str, str | None]:
    resp = client.get(f"/api/v2/dags/{dag_id}/dagRuns/{run_id}/taskInstances")
    assert resp.status_code == 200, resp.text
    return {ti["task_id"]: ti["state"] for ti in resp.json()["task_instances"]}


def _log(client: httpx.Client, dag_id: str, run_id: str, task_id: str, try_number: int = 1) -> str:
    """A task's log as text: one line per event, with the exception's type and message where there is one."""
    resp = client.get(f"/api/v2/dags/{dag_id}/dagRuns/{run_id}/taskInstances/{task_id}/logs/{try_number}")
    if resp.status_code != 200:
        return f"(no log: HTTP {resp.status_code} {resp.text[:300]})"
    content = resp.json().get("content")
    if not isinstance(content, list):
        return str(content)
    lines = []
    for event in content:
        if not isinstance(event, dict):
            lines.append(str(event))
            continue
        lines.append(f"{event.get('level', '')} {event.get('event', '')}".strip())
        for detail in event.get("error_detail") or []:
            lines.append(f"  {detail.get('exc_type')}: {detail.get('exc_value')}")
    return "\n".join(lines)


def _explain(client: httpx.Client, dag_id: str, run_id: str) -> str:
    """The run's state, its task states and the log of each failed task: for assertion messages."""
    try:
        run = _run(client, dag_id, run_id)
        states = _task_states(client, dag_id, run_id)
    except (AssertionError, httpx.HTTPError) as exc:
        return f"(cannot describe run {run_id} of {dag_id}: {exc})"
    parts = [f"{dag_id} run {run_id}: state {run['state']}; tasks {states}"]
    for task_id, state in states.items():
        if state == "failed":
            tail = "\n".join(_log(client, dag_id, run_id, task_id).splitlines()[-40:])
            parts.append(f"--- log of {task_id} (last lines):\n{tail}")
    return "\n".join(parts)


def _wait_finished(client: httpx.Client, dag_id: str, run_id: str, timeout: float = 420) -> dict[str, Any]:
    def finished() -> dict[str, Any] | None:
        run = _run(client, dag_id, run_id)
        return run if run["state"] in TERMINAL else None

    return _wait(f"{dag_id} run {run_id} to finish", finished, lambda: _explain(client, dag_id, run_id), timeout)


def _wait_for_approval(s: Servers, run_id: str, timeout: float = 420) -> dict[str, Any]:
    """The run's pending approval request, once task ``approve`` waits for an answer (fails fast if the run ends)."""
    client = s.operator

    def pending() -> dict[str, Any] | None:
        resp = client.get("/api/v2/dags/~/dagRuns/~/hitlDetails", params={"response_received": False})
        assert resp.status_code == 200, resp.text
        for detail in resp.json()["hitl_details"]:
            ti = detail["task_instance"]
            if (ti["dag_id"], ti["dag_run_id"], ti["task_id"]) == (TRAIN, run_id, "approve"):
                return detail
        if _run(client, TRAIN, run_id)["state"] in TERMINAL:
            pytest.fail(f"the run ended without asking for approval:\n{_explain(client, TRAIN, run_id)}")
        return None

    return _wait(
        f"task approve of {run_id} to wait for an answer", pending, lambda: _explain(client, TRAIN, run_id), timeout
    )


def _let_the_request_settle(detail: dict[str, Any], seconds: float = 8) -> None:
    """Wait until the request is ``seconds`` old before answering it.

    Airflow 3.3.2 race: the task parks in ``awaiting_input`` and its worker process exits "success" a moment
    later. An answer that arrives before the scheduler has processed that exit re-queues the task first, and the
    late "success" event then makes the scheduler mark the task failed ("finished with state success, but the
    task instance's state attribute is queued"). A person never answers that fast; a test does.
    """
    created = datetime.fromisoformat(detail["created_at"].replace("Z", "+00:00"))
    remaining = seconds - (datetime.now(UTC) - created).total_seconds()
    if remaining > 0:
        time.sleep(remaining)


def _answer_url(run_id: str) -> str:
    return f"/api/v2/dags/{TRAIN}/dagRuns/{run_id}/taskInstances/approve/-1/hitlDetails"


def _answer_with_official_client(s: Servers, run_id: str, option: str) -> Any:
    """Answer as ``operator`` through ``apache-airflow-client`` (the same version as the server)."""
    from airflow_client.client import ApiClient, Configuration
    from airflow_client.client.api.task_instance_api import TaskInstanceApi
    from airflow_client.client.models.update_hitl_detail_payload import UpdateHITLDetailPayload

    config = Configuration(host=s.api, access_token=s.token["operator"])
    with ApiClient(config) as api:
        return TaskInstanceApi(api).update_hitl_detail(
            dag_id=TRAIN,
            dag_run_id=run_id,
            task_id="approve",
            map_index=-1,
            update_hitl_detail_payload=UpdateHITLDetailPayload(chosen_options=[option], params_input={}),
        )


def _alias(s: Servers, alias: str) -> str | None:
    """The version an MLflow alias of model bikes points at, asked of the MLflow server (None when unset)."""
    resp = httpx.get(
        f"{s.mlflow}/api/2.0/mlflow/registered-models/alias",
        params={"name": "bikes", "alias": alias},
        timeout=30,
        trust_env=False,
    )
    if resp.status_code in (400, 404) and "not found" in resp.text:  # MLflow 3.17 answers 400 for a missing alias
        return None
    assert resp.status_code == 200, resp.text
    return str(resp.json()["model_version"]["version"])


def _ledger(s: Servers) -> list[dict[str, Any]]:
    """The decisions in the promotion ledger of bikes in this home's warehouse (not their intents), newest first."""
    path = s.home / "warehouse.db"
    if not path.exists():
        return []
    with sqlite3.connect(path) as db:
        db.row_factory = sqlite3.Row
        try:
            rows = db.execute(
                "SELECT * FROM promotion_ledger WHERE model = 'bikes' AND outcome != 'pending' ORDER BY seq DESC"
            ).fetchall()
        except sqlite3.OperationalError:  # no table yet
            return []
    return [dict(r) for r in rows]


def _train_until_approval(s: Servers, conf: dict[str, Any]) -> tuple[str, dict[str, Any], str]:
    """Trigger a training as operator and wait for its approval request; (run id, request, challenger version)."""
    run_id = _trigger(s.operator, TRAIN, conf)
    detail = _wait_for_approval(s, run_id)
    _let_the_request_settle(detail)
    states = _task_states(s.operator, TRAIN, run_id)
    assert states["approve"] == "awaiting_input", _explain(s.operator, TRAIN, run_id)
    assert (states["promote"], states["record"]) == (None, None), states
    challenger = _alias(s, "challenger")
    assert challenger is not None, "training registers its version as @challenger"
    return run_id, detail, challenger


# --- tests, in file order ------------------------------------------------------------------------------------------


def test_train_dag_is_parsed_and_only_operators_trigger_it(servers: Servers) -> None:
    client = servers.operator

    def parsed() -> bool:
        return all(client.get(f"/api/v2/dags/{d}").status_code == 200 for d in (TRAIN, PROMOTE))

    def import_errors() -> str:
        return f"import errors: {client.get('/api/v2/importErrors').text}"

    _wait("the train and promote DAGs to be parsed", parsed, import_errors, timeout=180)
    tasks = {t["task_id"] for t in client.get(f"/api/v2/dags/{TRAIN}/tasks").json()["tasks"]}
    assert {"check", "train", "gate", "approve", "promote", "record"} <= tasks, tasks

    steward = servers.users["steward"]
    assert steward.patch(f"/api/v2/dags/{TRAIN}", json={"is_paused": False}).status_code == 403
    for dag_id in (TRAIN, PROMOTE):
        resp = client.patch(f"/api/v2/dags/{dag_id}", json={"is_paused": False})
        assert resp.status_code == 200, resp.text
    resp = steward.post(f"/api/v2/dags/{TRAIN}/dagRuns", json={"logical_date": None, "conf": {"reason": "viewer"}})
    assert resp.status_code == 403, resp.text


def test_an_unknown_conf_key_fails_at_check_naming_it(servers: Servers) -> None:
    client = servers.operator
    run_id = _trigger(client, TRAIN, {"reason": "x", "reasn": "y"})  # Airflow itself accepts unknown keys
    run = _wait_finished(client, TRAIN, run_id, timeout=240)
    states = _task_states(client, TRAIN, run_id)
    explained = _explain(client, TRAIN, run_id)
    assert states["check"] == "failed", explained
    assert states["train"] == "upstream_failed" and states["promote"] == "upstream_failed", explained
    log = _log(client, TRAIN, run_id, "check")
    assert "reasn" in log and "does not know the param" in log, log
    assert _ledger(servers) == [], "a refused request decides nothing"
    servers.state["bad_conf_run"] = (run_id, run["state"])


def test_the_first_champion_waits_for_approval_and_is_promoted_once_approved(servers: Servers) -> None:
    client = servers.operator
    conf = {"reason": "e2e: first champion", "overrides": WEAK}
    run_id, detail, version = _train_until_approval(servers, conf)

    # The request names the version and carries the gate's comparison table.
    assert detail["subject"] == f"Promote bikes v{version} to @champion?", detail["subject"]
    body = detail["body"] or ""
    assert "| metric | champion | challenger |" in body and "rmse" in body, body
    assert f"v{version}" in body and "e2e: first champion" in body, body
    assert detail["options"] == ["Approve", "Reject"] and detail["response_received"] is False
    assert _alias(servers, "champion") is None

    # A viewer may look, but not answer.
    steward = servers.users["steward"]
    assert steward.get("/api/v2/dags/~/dagRuns/~/hitlDetails").status_code == 200
    resp = steward.patch(_answer_url(run_id), json={"chosen_options": ["Approve"], "params_input": {}})
    assert resp.status_code == 403, resp.text

    # Answered with the curl recipe of docs/rest-api.md, as written: it lists what waits, then approves this one.
    env = {"AIRFLOW": servers.api, "TOKEN": servers.token["operator"], "DAG_ID": TRAIN, "RUN_ID": run_id}
    out = recipes.run("approvals", "bash", env | {"TASK_ID": "approve"})
    listed, answer = recipes.json_lines(out)[:2]
    assert run_id in {d["task_instance"]["dag_run_id"] for d in listed["hitl_details"]}, listed
    assert answer["chosen_options"] == ["Approve"] and answer["responded_by"]["name"] == "operator", answer
    again = client.patch(_answer_url(run_id), json={"chosen_options": ["Reject"], "params_input": {}})
    assert again.status_code == 409, again.text  # answered once, for good

    run = _wait_finished(client, TRAIN, run_id)
    explained = _explain(client, TRAIN, run_id)
    assert run["state"] == "success", explained
    states = _task_states(client, TRAIN, run_id)
    for task_id in ("check", "train", "gate", "approve", "promote", "record"):
        assert states[task_id] == "success", explained
    assert _alias(servers, "champion") == version, explained
    assert _alias(servers, "challenger") is None, "promotion clears @challenger"

    rows = _ledger(servers)
    assert rows, f"no ledger row in {servers.home / 'warehouse.db'}\n{explained}"
    newest = rows[0]
    assert (newest["action"], newest["outcome"], newest["moved"]) == ("promote", "promoted", 1), newest
    assert (newest["candidate_version"], newest["from_version"], newest["champion_after"]) == (version, None, version)
    assert "approval by operator" in newest["decided_by"], newest["decided_by"]
    assert newest["dag_run_id"] == run_id and "e2e: first champion" in newest["reason"]
    evidence = json.loads(newest["evidence"])
    assert evidence["approval"]["chosen_options"] == ["Approve"], evidence
    servers.state["champion"] = version


def test_a_better_challenger_rejected_in_review_changes_nothing(servers: Servers) -> None:
    client = servers.operator
    champion = servers.state.get("champion")
    assert champion, "needs the champion of the previous test"
    rows_before = len(_ledger(servers))

    run_id, detail, version = _train_until_approval(servers, {"reason": "e2e: spec defaults"})
    assert version != champion and int(version) > int(champion)
    assert detail["subject"] == f"Promote bikes v{version} to @champion?", detail["subject"]
    # The gate passed (default params beat the weak first model): the table compares both versions.
    assert "rmse" in detail["body"] and re.search(rf"champion: v?{champion}\b", detail["body"]), detail["body"]

    # Answered with the client recipe of docs/rest-api.md, as written: it rejects every request still waiting.
    out = recipes.run("approvals", "python", {"AIRFLOW": servers.api, "TOKEN": servers.token["operator"]})
    assert f"{TRAIN} {run_id} approve" in out, out

    run = _wait_finished(client, TRAIN, run_id)
    states = _task_states(client, TRAIN, run_id)
    explained = _explain(client, TRAIN, run_id)
    assert run["state"] == "success", f"a rejection is a decision, not a failure\n{explained}"
    assert states["approve"] == "success" and states["promote"] == "skipped", explained
    assert states["record"] == "success", explained
    assert _alias(servers, "champion") == champion

    rows = _ledger(servers)
    assert len(rows) == rows_before + 1, rows
    newest = rows[0]
    assert (newest["outcome"], newest["moved"]) == ("rejected", 0), newest
    assert (newest["candidate_version"], newest["from_version"], newest["champion_after"]) == (
        version,
        champion,
        champion,
    )
    assert "approval by operator" in newest["decided_by"] and "rejected in review" in newest["reason"], newest
    assert json.loads(newest["evidence"])["approval"]["chosen_options"] == ["Reject"], newest["evidence"]


def test_rollback_through_the_api_is_refused_with_a_single_champion(servers: Servers) -> None:
    client = servers.operator
    champion = servers.state.get("champion")
    assert champion, "needs the champion of the earlier tests"
    rows_before = len(_ledger(servers))

    resp = servers.users["steward"].post(
        f"/api/v2/dags/{PROMOTE}/dagRuns",
        json={"logical_date": None, "conf": {"action": "rollback", "reason": "viewer"}},
    )
    assert resp.status_code == 403, resp.text
    run_id = _trigger(client, PROMOTE, {"action": "rollback", "reason": "e2e rollback"})
    run = _wait_finished(client, PROMOTE, run_id, timeout=240)
    states = _task_states(client, PROMOTE, run_id)
    explained = _explain(client, PROMOTE, run_id)
    assert states["check"] == "failed", explained
    assert states["promote"] == "upstream_failed", explained
    log = _log(client, PROMOTE, run_id, "check")
    assert "no earlier champion" in log and f"champion history: ['{champion}']" in log, log
    assert _alias(servers, "champion") == champion
    assert len(_ledger(servers)) == rows_before, "a refused request decides nothing"
    servers.state["rollback_run"] = (run_id, run["state"])


def test_a_run_whose_check_failed_is_marked_failed(servers: Servers) -> None:
    """A request refused by ``check`` must show as a failed run (red in the UI, on_failure alerts)."""
    found = {key: run for key in ("bad_conf_run", "rollback_run") if (run := servers.state.get(key))}
    assert found, "needs the runs of the earlier tests"
    states = {f"{key} {run_id}": state for key, (run_id, state) in found.items()}
    assert set(states.values()) == {"failed"}, (
        f"runs whose task check failed ended as {states}: the run's state comes from its leaf task `record` "
        "(trigger rule ALL_DONE), which succeeds whatever failed before it"
    )


def test_a_retrain_request_event_starts_training_with_its_reason(servers: Servers) -> None:
    """What monitoring (or any service) does to ask for retraining: an event on Asset ``bikes.retrain_requested``."""
    client = servers.operator
    resp = client.get("/api/v2/assets", params={"name_pattern": "bikes.retrain_requested"})
    assert resp.status_code == 200, resp.text
    (asset,) = [a for a in resp.json()["assets"] if a["name"] == "bikes.retrain_requested"]
    before = {r["dag_run_id"] for r in client.get(f"/api/v2/dags/{TRAIN}/dagRuns").json()["dag_runs"]}

    reason = "e2e drift: 3 of the last 4 windows"
    resp = servers.users["steward"].post("/api/v2/assets/events", json={"asset_id": asset["id"], "extra": {}})
    assert resp.status_code == 403, resp.text
    resp = client.post("/api/v2/assets/events", json={"asset_id": asset["id"], "extra": {"reason": reason}})
    assert resp.status_code in (200, 201), resp.text

    def new_run() -> dict[str, Any] | None:
        runs = client.get(f"/api/v2/dags/{TRAIN}/dagRuns").json()["dag_runs"]
        return next((r for r in runs if r["dag_run_id"] not in before), None)

    run = _wait("the retrain request to start a run", new_run, lambda: "no new run of bikes_train", timeout=180)
    run_id = run["dag_run_id"]
    assert run["run_type"] == "asset_triggered", run
    detail = _wait_for_approval(servers, run_id)
    assert reason in detail["body"], detail["body"]
    _let_the_request_settle(detail)
    _answer_with_official_client(servers, run_id, "Reject")
    assert _wait_finished(client, TRAIN, run_id)["state"] == "success", _explain(client, TRAIN, run_id)
    newest = _ledger(servers)[0]
    assert newest["dag_run_id"] == run_id and f"retrain requested: {reason}" in newest["reason"], newest

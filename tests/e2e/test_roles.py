"""The personas' roles under the FAB auth manager, against a real api-server (docs/operations.md, "Personas").

Airflow's metadata DB is migrated with the FAB auth manager configured, the project's DAGs are serialized
(``airflow dags reserialize``), then ``airloop auth roles`` and ``airloop auth user`` create the roles and one
user per persona, the way the compose stack's ``airflow-init`` does. Each persona then calls the REST API with
its own token: what docs/operations.md says it may do succeeds (or gets past authorisation: a 404 for a
missing approval is Airflow's answer after the permission check) and the rest is 403.

The SQLite run is ``e2e``; the same tests on Postgres (tests/distributed/services.py) are ``distributed``.
No scheduler runs: triggered runs stay queued, which is all the permission checks need.
"""

from __future__ import annotations

import json
import os
import secrets
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from tests.conftest import ROOT
from tests.e2e.helpers import free_port, wait_for

pytestmark = [pytest.mark.timeout(900)]

PERSONAS = ("admin", "operator", "ml_engineer", "data_steward", "viewer")
FAB = "airflow.providers.fab.auth_manager.fab_auth_manager.FabAuthManager"
MODEL = "bikes"
INGEST, TRAIN, PROMOTE, SCORE = (f"{MODEL}_{stage}" for stage in ("ingest", "train", "promote", "score"))
VALIDATE = "validate"
FORBIDDEN = 403

_SETUP = """
import sys
from airloop.ops.cli import main

assert main(["auth", "roles"]) == 0
assert main(["auth", "roles"]) == 0  # idempotent: a second run changes nothing and fails nothing
for persona in sys.argv[1:]:
    assert main(["auth", "user", persona, "--role", persona, "--password-env", "PW_" + persona.upper()]) == 0
"""


@dataclass
class Stack:
    api: str
    passwords: dict[str, str]
    clients: dict[str, httpx.Client]
    runs: dict[str, str]  # dag_id -> a run the admin triggered
    env: dict[str, str]  # the environment of the Airflow processes (for CLI calls)
    log: Path

    def __getitem__(self, persona: str) -> httpx.Client:
        return self.clients[persona]


def _env(folder: Path, db_url: str, passwords: dict[str, str]) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AIRFLOW__", "AIRFLOW_CONN_"))}
    env.update(
        {
            "AIRFLOW_HOME": str(folder / "airflow"),
            "AIRLOOP_HOME": str(folder / "home"),
            "AIRLOOP_PROJECT_DIR": str(ROOT),
            "AIRLOOP_MODELS_DIR": str(ROOT / "include" / "models"),
            "AIRFLOW__CORE__AUTH_MANAGER": FAB,
            "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": db_url,
            "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
            "AIRFLOW__CORE__DAGS_FOLDER": str(ROOT / "dags"),
            "AIRFLOW__CORE__PLUGINS_FOLDER": str(ROOT / "plugins"),
            "AIRFLOW__API__WORKERS": "1",
            "AIRFLOW__API__SECRET_KEY": secrets.token_urlsafe(32),
            "AIRFLOW__API_AUTH__JWT_SECRET": secrets.token_urlsafe(64),
            "AIRFLOW_CONN_AIRLOOP_WAREHOUSE": json.dumps({"conn_type": "sqlite", "host": str(folder / "wh.db")}),
            "AIRFLOW_CONN_AIRLOOP_SOURCE": json.dumps({"conn_type": "sqlite", "host": str(folder / "src.db")}),
            "MLFLOW_TRACKING_URI": f"sqlite:///{folder / 'mlflow.db'}",
            "NO_PROXY": "127.0.0.1,localhost",
            "no_proxy": "127.0.0.1,localhost",
        }
    )
    env.update({f"PW_{p.upper()}": pw for p, pw in passwords.items()})
    return env


def _run(cmd: list[str], env: dict[str, str], log: Path) -> None:
    with log.open("ab") as out:
        done = subprocess.run(cmd, env=env, cwd=ROOT, stdout=out, stderr=out, timeout=600)
    assert done.returncode == 0, f"{' '.join(cmd[:4])} failed:\n{log.read_text(errors='replace')[-3000:]}"


def _healthy(url: str) -> bool:
    try:
        return httpx.get(f"{url}/api/v2/monitor/health", timeout=2, trust_env=False).status_code == 200
    except httpx.HTTPError:
        return False


@pytest.fixture(
    scope="module",
    params=[pytest.param("sqlite", marks=pytest.mark.e2e), pytest.param("postgres", marks=pytest.mark.distributed)],
)
def stack(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    folder = tmp_path_factory.mktemp(f"roles-{request.param}")
    services = None
    if request.param == "postgres":
        from tests.distributed.services import Services

        services = Services(root=Path(tempfile.mkdtemp(prefix="airloop-roles-")))
        services.start_postgres(["airflow"])
        db_url = services.pg_url("airflow")
    else:
        db_url = f"sqlite:///{folder / 'airflow.db'}"
    passwords = {p: secrets.token_urlsafe(16) for p in PERSONAS}
    env = _env(folder, db_url, passwords)
    airflow = str(Path(sys.executable).with_name("airflow"))
    log = folder / "setup.log"
    proc = None
    clients: dict[str, httpx.Client] = {}
    try:
        _run([airflow, "db", "migrate"], env, log)
        _run([airflow, "dags", "reserialize"], env, log)
        _run([sys.executable, "-c", _SETUP, *PERSONAS], env, log)
        port = free_port()
        api = f"http://127.0.0.1:{port}"
        server_log = (folder / "api-server.log").open("wb")
        proc = subprocess.Popen(
            [airflow, "api-server", "--host", "127.0.0.1", "--port", str(port)],
            env=env,
            cwd=folder,
            stdout=server_log,
            stderr=server_log,
            start_new_session=True,
        )
        wait_for("the api-server", lambda: _healthy(api) or proc.poll() is not None, timeout=240)
        assert proc.poll() is None, (folder / "api-server.log").read_text(errors="replace")[-3000:]
        for persona, password in passwords.items():
            answer = httpx.post(
                f"{api}/auth/token", json={"username": persona, "password": password}, timeout=60, trust_env=False
            )
            assert answer.status_code == 201, f"{persona}: {answer.status_code} {answer.text}"
            token = answer.json()["access_token"]
            clients[persona] = httpx.Client(
                base_url=api, headers={"Authorization": f"Bearer {token}"}, timeout=60, trust_env=False
            )
        runs = {}
        for dag_id in (INGEST, TRAIN):
            answer = clients["admin"].post(f"/api/v2/dags/{dag_id}/dagRuns", json={"logical_date": None})
            assert answer.status_code == 200, answer.text
            runs[dag_id] = answer.json()["dag_run_id"]
        yield Stack(api=api, passwords=passwords, clients=clients, runs=runs, env=env, log=log)
    finally:
        for client in clients.values():
            client.close()
        if proc is not None:
            proc.terminate()
            try:
                proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, 9)
                proc.wait()
        if services is not None:
            services.stop()


def _trigger(client: httpx.Client, dag_id: str) -> int:
    body: dict = {"logical_date": None}
    if dag_id == PROMOTE:  # its params want a reason (the run is never executed here)
        body["conf"] = {"action": "rollback", "reason": "roles test"}
    return client.post(f"/api/v2/dags/{dag_id}/dagRuns", json=body).status_code


def _clear(client: httpx.Client, dag_id: str, run_id: str, task_id: str) -> int:
    body = {"dry_run": True, "dag_run_id": run_id, "task_ids": [task_id], "only_failed": False}
    return client.post(f"/api/v2/dags/{dag_id}/clearTaskInstances", json=body).status_code


def _log(client: httpx.Client, dag_id: str, run_id: str, task_id: str) -> int:
    return client.get(f"/api/v2/dags/{dag_id}/dagRuns/{run_id}/taskInstances/{task_id}/logs/1").status_code


def _answer(client: httpx.Client, dag_id: str, run_id: str) -> int:
    body = {"chosen_options": ["Approve"], "params_input": {}}
    url = f"/api/v2/dags/{dag_id}/dagRuns/{run_id}/taskInstances/approve/-1/hitlDetails"
    return client.patch(url, json=body).status_code


def _mark(client: httpx.Client, dag_id: str, run_id: str) -> int:
    return client.patch(f"/api/v2/dags/{dag_id}/dagRuns/{run_id}", json={"state": "queued"}).status_code


def test_every_persona_reads_dags_and_runs(stack: Stack) -> None:
    for persona in PERSONAS:
        dags = stack[persona].get("/api/v2/dags", params={"limit": 100})
        assert dags.status_code == 200, persona
        assert {TRAIN, INGEST} <= {d["dag_id"] for d in dags.json()["dags"]}, persona
        assert stack[persona].get(f"/api/v2/dags/{TRAIN}/dagRuns").status_code == 200, persona
        assert stack[persona].get(f"/api/v2/dags/{INGEST}/dagRuns/~/taskInstances").status_code == 200, persona


def test_operator_triggers_clears_marks_and_reads_logs(stack: Stack) -> None:
    op = stack["operator"]
    assert _trigger(op, INGEST) == 200
    assert _trigger(op, SCORE) == 200
    assert _clear(op, TRAIN, stack.runs[TRAIN], "train") == 200
    assert _clear(op, INGEST, stack.runs[INGEST], VALIDATE) == 200
    assert _mark(op, INGEST, stack.runs[INGEST]) == 200
    assert _log(op, INGEST, stack.runs[INGEST], VALIDATE) != FORBIDDEN
    # ...and nothing more: no approvals, no connections or variables, no users.
    assert _answer(op, TRAIN, stack.runs[TRAIN]) == FORBIDDEN
    assert op.get("/api/v2/connections").status_code == FORBIDDEN
    assert op.get("/api/v2/variables").status_code == FORBIDDEN


def test_ml_engineer_triggers_train_and_promote_and_answers_approvals_only(stack: Stack) -> None:
    ml = stack["ml_engineer"]
    assert _trigger(ml, TRAIN) == 200
    assert _trigger(ml, PROMOTE) == 200
    # Past the permission check: the run has no approval waiting, so Airflow answers 404, not 403.
    assert _answer(ml, TRAIN, stack.runs[TRAIN]) == 404
    assert _log(ml, TRAIN, stack.runs[TRAIN], "train") != FORBIDDEN
    # ...and nothing more: no other DAG, no clearing or marking, no connections.
    assert _trigger(ml, INGEST) == FORBIDDEN
    assert _trigger(ml, SCORE) == FORBIDDEN
    assert _clear(ml, TRAIN, stack.runs[TRAIN], "train") == FORBIDDEN
    assert _mark(ml, TRAIN, stack.runs[TRAIN]) == FORBIDDEN
    assert _answer(ml, INGEST, stack.runs[INGEST]) == FORBIDDEN
    assert ml.get("/api/v2/connections").status_code == FORBIDDEN


def test_data_steward_reads_everything_and_reruns_validation_but_takes_no_model_action(stack: Stack) -> None:
    st = stack["data_steward"]
    assert st.get("/api/v2/connections").status_code == 200
    assert st.get("/api/v2/variables").status_code == 200
    assert _log(st, INGEST, stack.runs[INGEST], VALIDATE) != FORBIDDEN
    assert st.get(f"/api/v2/dags/{INGEST}/dagRuns/{stack.runs[INGEST]}/taskInstances/{VALIDATE}").status_code == 200
    assert _clear(st, INGEST, stack.runs[INGEST], VALIDATE) == 200
    # No model actions: no training, promotion, scoring, no clearing outside ingest, no approvals.
    for dag_id in (TRAIN, PROMOTE, SCORE, INGEST):
        assert _trigger(st, dag_id) == FORBIDDEN, dag_id
    assert _clear(st, TRAIN, stack.runs[TRAIN], "train") == FORBIDDEN
    assert _answer(st, TRAIN, stack.runs[TRAIN]) == FORBIDDEN
    assert st.post("/api/v2/variables", json={"key": "k", "value": "v"}).status_code == FORBIDDEN


def test_viewer_only_reads(stack: Stack) -> None:
    vw = stack["viewer"]
    assert vw.get(f"/api/v2/dags/{TRAIN}").status_code == 200
    for dag_id in (INGEST, TRAIN, PROMOTE):
        assert _trigger(vw, dag_id) == FORBIDDEN, dag_id
    assert _clear(vw, INGEST, stack.runs[INGEST], VALIDATE) == FORBIDDEN
    assert _mark(vw, INGEST, stack.runs[INGEST]) == FORBIDDEN
    assert _answer(vw, TRAIN, stack.runs[TRAIN]) == FORBIDDEN
    assert _log(vw, INGEST, stack.runs[INGEST], VALIDATE) == FORBIDDEN
    assert vw.get("/api/v2/connections").status_code == FORBIDDEN
    assert vw.patch(f"/api/v2/dags/{TRAIN}", json={"is_paused": True}).status_code == FORBIDDEN


def test_admin_may_do_everything(stack: Stack) -> None:
    ad = stack["admin"]
    assert _trigger(ad, PROMOTE) == 200
    assert _clear(ad, INGEST, stack.runs[INGEST], VALIDATE) == 200
    assert ad.get("/api/v2/connections").status_code == 200
    assert ad.post("/api/v2/variables", json={"key": "airloop_roles", "value": "1"}).status_code == 201


def test_the_view_and_its_json_follow_the_roles(stack: Stack) -> None:
    for persona in PERSONAS:
        answer = stack[persona].get("/airloop/api/models")
        assert answer.status_code == 200, f"{persona}: {answer.text}"
        assert answer.json()["models"] == ["bikes", "birds"], persona
    board = stack["viewer"].get(f"/airloop/api/models/{MODEL}")
    assert board.status_code == 200, board.text
    approvals_answerable = board.json()["can_answer_approvals"]
    assert approvals_answerable is False
    assert stack["ml_engineer"].get(f"/airloop/api/models/{MODEL}").json()["can_answer_approvals"] is True
    assert stack["operator"].get(f"/airloop/api/models/{MODEL}").json()["can_answer_approvals"] is False
    anonymous = httpx.get(f"{stack.api}/airloop/api/models", timeout=30, trust_env=False)
    assert anonymous.status_code == 401


_GRANT_EXTRA = """
from airloop.ops import auth

with auth._security_manager() as sm:
    role = sm.find_role("airloop_viewer")
    sm.add_permission_to_role(role, sm.create_permission("can_read", "Connections"))
"""


def test_roles_sync_takes_back_what_the_table_does_not_grant(stack: Stack) -> None:
    """Someone widened the viewer's role by hand: the next ``airloop auth roles`` (each compose start) narrows it."""
    vw = stack["viewer"]
    _run([sys.executable, "-c", _GRANT_EXTRA], stack.env, stack.log)
    wait_for("the widened role to apply", lambda: vw.get("/api/v2/connections").status_code == 200, timeout=120)
    _run([sys.executable, "-m", "airloop.ops.cli", "auth", "roles"], stack.env, stack.log)
    assert "Role airloop_viewer: updated (+0 -1 permissions)." in stack.log.read_text()
    wait_for("the role to be narrowed", lambda: vw.get("/api/v2/connections").status_code == FORBIDDEN, timeout=120)

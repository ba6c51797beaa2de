"""The embedded runtime for real: ``up()`` starts Airflow and MLflow on free ports, ``down()`` leaves nothing.

Slow (about a minute and a half on 2 cores). The tests share one runtime and run in file order; ``down()``
runs in the fixture's teardown whatever happens. The project is a temporary folder holding one DAG of our
own (a task that sleeps, to prove ``down()`` also stops running tasks) and no ``plugins/`` folder.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import sqlite3
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from airloop.ops import runtime
from tests.e2e.helpers import free_port, wait_for

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(900)]

SLEEPER_DAG_ID = "airloop_e2e_sleeper"
SLEEPER_DAG = f"""
import os
import time
from pathlib import Path

import pendulum
from airflow.sdk import dag, task


@dag(dag_id="{SLEEPER_DAG_ID}", schedule=None, start_date=pendulum.datetime(2024, 1, 1, tz="UTC"), catchup=False)
def sleeper():
    @task
    def sleep():
        Path(os.environ["AIRLOOP_HOME"], "sleeper.started").touch()
        time.sleep(600)

    sleep()


sleeper()
"""

_no_proxy = urllib.request.build_opener(urllib.request.ProxyHandler({}))


@dataclass
class Runtime:
    home: Path
    status: runtime.RuntimeStatus
    up_seconds: float
    pgids: dict[str, int]


def _request(
    url: str, token: str | None = None, method: str = "GET", body: dict | None = None
) -> tuple[int, dict[str, str], bytes]:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    data = None
    if body is not None:
        data = json.dumps(body).encode()
        headers["Content-Type"] = "application/json"
    req = urllib.request.Request(url, data=data, headers=headers, method=method)
    try:
        with _no_proxy.open(req, timeout=10) as resp:
            return resp.status, dict(resp.headers), resp.read()
    except urllib.error.HTTPError as err:
        return err.code, dict(err.headers), err.read()


def _live_processes() -> list[tuple[int, str, int, int]]:
    """(pid, state, pgrp, session) of every process, read from /proc independently of the runtime."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            raw = (entry / "stat").read_text()
        except OSError:
            continue
        fields = raw[raw.rindex(")") + 2 :].split()
        found.append((int(entry.name), fields[0], int(fields[2]), int(fields[3])))
    return found


def _survivors(pgids: Iterator[int] | list[int]) -> list[int]:
    """Processes still alive in any of these process groups or sessions (zombies are dead: not counted)."""
    wanted = set(pgids)
    return [pid for pid, state, pgrp, sid in _live_processes() if state != "Z" and (pgrp in wanted or sid in wanted)]


def _listening_inodes(all_interfaces_only: bool) -> set[str]:
    """Socket inodes in LISTEN state (optionally only those bound to 0.0.0.0 or ::)."""
    inodes = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with open(table) as fh:
            next(fh)
            for line in fh:
                parts = line.split()
                local, state, inode = parts[1], parts[3], parts[9]
                if state != "0A":
                    continue
                address = local.split(":")[0]
                if not all_interfaces_only or set(address) == {"0"}:
                    inodes.add(inode)
    return inodes


def _socket_inodes(pid: int) -> set[str]:
    inodes = set()
    with_fds = Path(f"/proc/{pid}/fd")
    try:
        for fd in with_fds.iterdir():
            try:
                target = os.readlink(fd)
            except OSError:
                continue
            if target.startswith("socket:["):
                inodes.add(target[len("socket:[") : -1])
    except OSError:
        pass
    return inodes


def _isolate(mp: pytest.MonkeyPatch, home: Path, project: Path) -> None:
    """Point the runtime at ``home`` and ``project`` on two free ports, with nothing from tests/conftest.py."""
    api_port = free_port()
    mlflow_port = free_port()
    while mlflow_port == api_port:
        mlflow_port = free_port()
    mp.setenv("AIRLOOP_HOME", str(home))
    mp.setenv("AIRLOOP_PROJECT_DIR", str(project))
    mp.setenv("AIRLOOP_AIRFLOW_PORT", str(api_port))
    mp.setenv("AIRLOOP_MLFLOW_PORT", str(mlflow_port))
    mp.delenv("AIRLOOP_USERS", raising=False)
    # tests/conftest.py exports the connections as AIRFLOW_CONN_*; here they must come from the DB.
    for key in [k for k in os.environ if k.startswith(("AIRFLOW_CONN_", "AIRFLOW__"))]:
        mp.delenv(key)


def test_a_failed_start_says_why_and_down_cleans_up(tmp_path: Path) -> None:
    """Runs first, alone: a metadata DB that cannot be created fails up() with the log's words."""
    with pytest.MonkeyPatch.context() as mp:
        _isolate(mp, tmp_path / "home", tmp_path / "project")
        mp.setenv("AIRFLOW__DATABASE__SQL_ALCHEMY_CONN", f"sqlite:///{tmp_path}/no/such/dir/airflow.db")
        groups: list[int] = []
        try:
            with pytest.raises(RuntimeError) as err:
                runtime.up(wait_timeout=120)
            message = str(err.value)
            assert "db migrate" in message
            assert str(tmp_path / "home" / "run" / "airflow-cli.log") in message
            assert "unable to open database file" in message  # the log's last lines are included
            assert "left running for inspection: mlflow" in message
            groups = [c.pid for c in runtime.status().components.values() if c.pid]
            assert len(groups) == 1
        finally:
            assert runtime.down() == ["mlflow"]
        assert _survivors(groups) == []


@pytest.fixture(scope="module")
def rt(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Runtime]:
    home = tmp_path_factory.mktemp("runtime") / "home"
    project = home.parent / "project"  # holds dags/ and no plugins/ folder
    (project / "dags").mkdir(parents=True)
    (project / "dags" / "sleeper.py").write_text(SLEEPER_DAG)
    with pytest.MonkeyPatch.context() as mp:
        _isolate(mp, home, project)
        # A stale scheduler heartbeat shows in /monitor/health after 10 s instead of 30 (the hung-scheduler test).
        mp.setenv("AIRFLOW__SCHEDULER__SCHEDULER_HEALTH_CHECK_THRESHOLD", "10")
        try:
            start = time.monotonic()
            status = runtime.up(wait_timeout=240)
            elapsed = time.monotonic() - start
            print(f"\nup() took {elapsed:.1f} s")
            pgids = {name: os.getpgid(c.pid) for name, c in status.components.items() if c.pid}
            yield Runtime(home=home, status=status, up_seconds=elapsed, pgids=pgids)
        finally:
            runtime.down()


def _admin_token() -> str:
    return runtime.get_token("admin", runtime.read_credentials()["admin"])


def test_up_reports_every_component_healthy(rt: Runtime) -> None:
    status = rt.status
    assert set(status.components) == {"api-server", "scheduler", "dag-processor", "triggerer", "mlflow"}
    for name, component in status.components.items():
        assert component.running and component.healthy, f"{name}: {component}"
        assert component.pid is not None
        # Each component leads its own session and process group.
        assert rt.pgids[name] == component.pid
        assert (rt.home / "run" / f"{name}.pid").read_text().strip() == str(component.pid)
        assert Path(component.log).is_file()
    assert status.healthy
    assert status.to_dict()["healthy"] is True
    port = os.environ["AIRLOOP_AIRFLOW_PORT"]
    assert status.urls["api"] == f"http://127.0.0.1:{port}/api/v2"
    assert status.credentials_file == str(rt.home / "airflow" / "simple_auth_manager_passwords.json.generated")
    assert rt.up_seconds < 240


def test_health_endpoints(rt: Runtime) -> None:
    code, _, body = _request(f"{rt.status.urls['api']}/monitor/health")
    assert code == 200
    health = json.loads(body)
    for key in ("metadatabase", "scheduler", "triggerer", "dag_processor"):
        assert health[key]["status"] == "healthy", health
    code, headers, _ = _request(f"{rt.status.urls['mlflow']}/health")
    assert code == 200
    # Started with --x-frame-options NONE, so the airloop UI can embed MLflow pages.
    code, headers, _ = _request(rt.status.urls["mlflow"] + "/")
    assert code == 200
    assert "x-frame-options" not in {h.lower() for h in headers}


def test_passwords_are_generated_and_private(rt: Runtime) -> None:
    credentials = runtime.read_credentials()
    assert set(credentials) == {"admin", "operator", "steward"}
    assert credentials["admin"] != "admin"
    assert all(len(pw) >= 12 for pw in credentials.values())
    assert os.stat(rt.status.credentials_file).st_mode & 0o077 == 0
    for log in (rt.home / "run").glob("*.log"):  # the api-server prints the passwords it generates
        assert os.stat(log).st_mode & 0o077 == 0, log


def test_api_needs_a_token(rt: Runtime) -> None:
    api = rt.status.urls["api"]
    code, _, _ = _request(f"{api}/dags")
    assert code == 401
    token = _admin_token()
    assert token.count(".") == 2  # a JWT
    code, _, body = _request(f"{api}/dags", token)
    assert code == 200
    assert "dags" in json.loads(body)
    with pytest.raises(PermissionError, match=r"HTTP 40[13]"):
        runtime.get_token("admin", "admin")


def test_viewer_cannot_write(rt: Runtime) -> None:
    token = runtime.get_token("steward", runtime.read_credentials()["steward"])
    code, _, _ = _request(f"{rt.status.urls['api']}/dags", token)
    assert code == 200
    code, _, _ = _request(f"{rt.status.urls['api']}/variables", token, "POST", {"key": "airloop_probe", "value": "1"})
    assert code == 403


def test_connections_are_registered_in_the_metadata_db(rt: Runtime) -> None:
    token = _admin_token()
    for conn_id, db in (("airloop_source", "source.db"), ("airloop_warehouse", "warehouse.db")):
        code, _, body = _request(f"{rt.status.urls['api']}/connections/{conn_id}", token)
        assert code == 200, body
        conn = json.loads(body)
        assert conn["conn_type"] == "sqlite"
        assert conn["host"] == str(rt.home / db)


def test_nothing_listens_on_all_interfaces(rt: Runtime) -> None:
    wildcard = _listening_inodes(all_interfaces_only=True)
    ours = [pid for pid, state, pgrp, sid in _live_processes() if pgrp in rt.pgids.values() and state != "Z"]
    exposed = {pid for pid in ours if _socket_inodes(pid) & wildcard}
    assert not exposed, f"processes listening on 0.0.0.0/[::]: {exposed}"
    listening = _listening_inodes(all_interfaces_only=False)
    assert any(_socket_inodes(pid) & listening for pid in ours), "the check itself must see our servers"


def test_second_up_is_a_no_op(rt: Runtime) -> None:
    before = {name: c.pid for name, c in runtime.status().components.items()}
    start = time.monotonic()
    again = runtime.up(wait_timeout=60)
    assert time.monotonic() - start < 10
    assert {name: c.pid for name, c in again.components.items()} == before
    assert again.healthy


def test_up_restarts_only_what_died_and_keeps_connection_edits(rt: Runtime) -> None:
    token = _admin_token()
    api = rt.status.urls["api"]
    edited = {"connection_id": "airloop_source", "conn_type": "sqlite", "host": "/srv/oncall/edited.db"}
    code, _, body = _request(f"{api}/connections/airloop_source", token, "PATCH", edited)
    assert code == 200, body

    before = {name: c.pid for name, c in runtime.status().components.items()}
    victim = before["dag-processor"]
    os.killpg(victim, signal.SIGTERM)
    deadline = time.monotonic() + 30
    while _survivors([victim]) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not runtime.status().components["dag-processor"].running

    again = runtime.up(wait_timeout=180)
    after = {name: c.pid for name, c in again.components.items()}
    assert after["dag-processor"] != victim
    assert {n: p for n, p in after.items() if n != "dag-processor"} == {
        n: p for n, p in before.items() if n != "dag-processor"
    }
    rt.pgids["dag-processor"] = after["dag-processor"]
    code, _, body = _request(f"{api}/connections/airloop_source", token)
    assert json.loads(body)["host"] == "/srv/oncall/edited.db", "up() must not undo an on-call edit"


def test_up_restarts_a_scheduler_that_stopped_heartbeating(rt: Runtime) -> None:
    """A scheduler process that runs but is frozen (SIGSTOP: no heartbeat, no answer to signals) is replaced."""
    before = {name: c.pid for name, c in runtime.status().components.items()}
    frozen = before["scheduler"]
    os.kill(frozen, signal.SIGSTOP)
    try:
        wait_for("the api-server to see the scheduler unhealthy", lambda: not runtime.status().healthy, timeout=60)
        again = runtime.up(wait_timeout=180, hung_after=3)
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.kill(frozen, signal.SIGCONT)
    after = {name: c.pid for name, c in again.components.items()}
    assert again.healthy
    assert after["scheduler"] != frozen
    assert _survivors([frozen]) == []
    assert {n: p for n, p in after.items() if n != "scheduler"} == {n: p for n, p in before.items() if n != "scheduler"}
    log = (rt.home / "run" / "scheduler.log").read_text()
    assert f"scheduler (pid {frozen}) sent no heartbeat for" in log
    assert "restarting it once" in log
    rt.pgids["scheduler"] = after["scheduler"]


def test_a_task_runs(rt: Runtime) -> None:
    """Start a long task, so that down() below must stop task runners (they have a process group of their own)."""
    token = _admin_token()
    api = rt.status.urls["api"]
    dag_url = f"{api}/dags/{SLEEPER_DAG_ID}"
    wait_for("the DAG to be parsed", lambda: _request(dag_url, token)[0] == 200)
    assert _request(dag_url, token, "PATCH", {"is_paused": False})[0] == 200
    code, _, body = _request(f"{dag_url}/dagRuns", token, "POST", {"logical_date": None})
    assert code == 200, body
    run_id = json.loads(body)["dag_run_id"]
    ti_url = f"{dag_url}/dagRuns/{run_id}/taskInstances/sleep"
    wait_for("the task to run", lambda: json.loads(_request(ti_url, token)[2]).get("state") == "running")
    # Past this point the task runner only calls on_kill() on SIGTERM and goes on sleeping.
    wait_for("the task's code to start", (rt.home / "sleeper.started").exists, timeout=60)
    scheduler = rt.pgids["scheduler"]

    def task_runners() -> list[int]:
        return [p for p, st, pgrp, sid in _live_processes() if sid == scheduler and pgrp != scheduler and st != "Z"]

    assert wait_for("a task runner in its own process group", task_runners, timeout=30)


def test_down_leaves_no_process_and_is_safe_twice(rt: Runtime) -> None:
    groups = dict(rt.pgids)
    assert not set(groups.values()) - {c.pid for c in runtime.status().components.values()}
    start = time.monotonic()
    stopped = runtime.down()
    print(f"\ndown() took {time.monotonic() - start:.1f} s")
    assert set(stopped) == set(groups)
    assert _survivors(list(groups.values())) == []
    assert not list((rt.home / "run").glob("*.pid"))
    current = runtime.status()
    assert not current.running and not current.healthy
    assert runtime.down() == []
    # The sleeping task was killed while the api-server was still up, so it is recorded as failed.
    with sqlite3.connect(rt.home / "airflow" / "airflow.db") as db:
        states = [row[0] for row in db.execute("SELECT state FROM task_instance WHERE dag_id = ?", (SLEEPER_DAG_ID,))]
    assert states == ["failed"]
    # The ports are free again.
    for var in ("AIRLOOP_AIRFLOW_PORT", "AIRLOOP_MLFLOW_PORT"):
        with socket.socket() as sock:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind(("127.0.0.1", int(os.environ[var])))

"""The embedded runtime's environment and guards, without starting any server."""

from __future__ import annotations

import os
import socket
import stat
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from airloop.core.settings import paths
from airloop.ops import runtime
from airloop.ops.runtime import processes


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """A fresh AIRLOOP_HOME; no AIRFLOW__*, AIRFLOW_CONN_* or airloop settings (tests/conftest.py sets some)."""
    for key in list(os.environ):
        if key.startswith(("AIRFLOW__", "AIRFLOW_CONN_")) or key in {
            "AIRFLOW_HOME",
            "AIRLOOP_AIRFLOW_PORT",
            "AIRLOOP_MLFLOW_PORT",
            "AIRLOOP_USERS",
        }:
            monkeypatch.delenv(key)
    monkeypatch.setenv("AIRLOOP_HOME", str(tmp_path / "home"))
    yield tmp_path / "home"


@pytest.fixture
def listener() -> Iterator[int]:
    """A port on 127.0.0.1 held by a listening socket that is not ours."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen(1)
        yield sock.getsockname()[1]


def test_defaults(home: Path) -> None:
    env = runtime.airflow_env()
    airflow_home = home / "airflow"
    assert env["AIRFLOW_HOME"] == str(airflow_home)
    assert env["AIRLOOP_HOME"] == str(home)
    assert Path(env["AIRLOOP_HOME"]).is_absolute()
    assert env["AIRFLOW__CORE__LOAD_EXAMPLES"] == "False"
    assert env["AIRFLOW__CORE__EXECUTOR"] == "LocalExecutor"
    assert env["AIRFLOW__CORE__PARALLELISM"] == "4"
    assert env["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"] == f"sqlite:///{airflow_home}/airflow.db"
    project = paths().project
    assert env["AIRFLOW__CORE__DAGS_FOLDER"] == str(project / "dags")
    assert env["AIRFLOW__CORE__PLUGINS_FOLDER"] == str(project / "plugins")
    assert env["AIRFLOW__CORE__EXECUTION_API_SERVER_URL"] == "http://127.0.0.1:8080/execution/"
    assert env["AIRFLOW__API__BASE_URL"] == "http://127.0.0.1:8080"
    assert env["AIRFLOW__API__WORKERS"] == "1"
    assert int(env["AIRFLOW__DAG_PROCESSOR__REFRESH_INTERVAL"]) <= 30
    # parsing every DAG file every 30 s (Airflow's default) costs the tasks a fifth of a core on 2 cores
    assert 60 <= int(env["AIRFLOW__DAG_PROCESSOR__MIN_FILE_PROCESS_INTERVAL"]) <= 300
    # a chain of short tasks waits a scheduler loop per step: Airflow's 1 s idle sleep doubled the demo's runs
    assert float(env["AIRFLOW__SCHEDULER__SCHEDULER_IDLE_SLEEP_TIME"]) <= 0.5
    # a task's supervisor noticed its process's exit only between 5 s waits: a quarter of the demo's slots idled 5 s
    assert int(env["AIRFLOW__WORKERS__MIN_HEARTBEAT_INTERVAL"]) <= 1
    assert env["AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS"] == "admin:admin,operator:op,steward:viewer"
    assert env["AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE"] == str(
        airflow_home / "simple_auth_manager_passwords.json.generated"
    )
    assert env["MLFLOW_TRACKING_URI"] == "http://127.0.0.1:5000"
    assert env["MLFLOW_DISABLE_TELEMETRY"] == "true"
    assert env["DO_NOT_TRACK"] == "true"
    assert env["GX_ANALYTICS_ENABLED"] == "False"
    assert "127.0.0.1" in env["NO_PROXY"].split(",")
    # Connections live in the metadata DB (editable in the UI), never in the environment.
    assert not [key for key in env if key.startswith("AIRFLOW_CONN_AIRLOOP")]


def test_ports_and_users_from_airloop_variables(home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AIRLOOP_AIRFLOW_PORT", "18123")
    monkeypatch.setenv("AIRLOOP_MLFLOW_PORT", "15123")
    monkeypatch.setenv("AIRLOOP_USERS", "ana:admin,bot:user")
    env = runtime.airflow_env()
    assert env["AIRFLOW__API__BASE_URL"] == "http://127.0.0.1:18123"
    assert env["AIRFLOW__CORE__EXECUTION_API_SERVER_URL"] == "http://127.0.0.1:18123/execution/"
    assert env["MLFLOW_TRACKING_URI"] == "http://127.0.0.1:15123"
    assert env["AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS"] == "ana:admin,bot:user"
    current = runtime.status()
    assert current.urls == {
        "airflow": "http://127.0.0.1:18123",
        "api": "http://127.0.0.1:18123/api/v2",
        "mlflow": "http://127.0.0.1:15123",
    }
    assert current.users == [{"name": "ana", "role": "admin"}, {"name": "bot", "role": "user"}]


def test_caller_overrides_win(home: Path) -> None:
    base = {
        "PATH": os.environ.get("PATH", ""),
        "AIRFLOW__CORE__PARALLELISM": "16",
        "AIRFLOW__SCHEDULER__SCHEDULER_IDLE_SLEEP_TIME": "1",
        "AIRFLOW__CORE__EXECUTOR": "CeleryExecutor",
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": "postgresql+psycopg2://u@db/airflow",
        "AIRFLOW__API_AUTH__JWT_SECRET": "s" * 80,
        "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS": "root:admin",
        "AIRFLOW_HOME": "/somebody/elses/airflow",
        "NO_PROXY": "internal.example",
        "UNRELATED": "kept",
    }
    env = runtime.airflow_env(base)
    assert env["AIRFLOW__CORE__PARALLELISM"] == "16"
    assert env["AIRFLOW__SCHEDULER__SCHEDULER_IDLE_SLEEP_TIME"] == "1"
    assert env["AIRFLOW__CORE__EXECUTOR"] == "CeleryExecutor"
    assert env["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"] == "postgresql+psycopg2://u@db/airflow"
    assert env["AIRFLOW__API_AUTH__JWT_SECRET"] == "s" * 80
    assert env["AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS"] == "root:admin"
    assert env["UNRELATED"] == "kept"
    assert env["NO_PROXY"].split(",")[0] == "internal.example"
    # The runtime's own home is not negotiable: a personal ~/airflow must never be touched.
    assert env["AIRFLOW_HOME"] == str(home / "airflow")
    # An explicit JWT secret means no secret file is generated.
    assert not (home / "run" / "jwt_secret").exists()
    assert base["AIRFLOW__CORE__PARALLELISM"] == "16" and "AIRLOOP_HOME" not in base  # base not mutated


def test_jwt_secret_is_generated_once_private_and_long(home: Path) -> None:
    first = runtime.airflow_env()["AIRFLOW__API_AUTH__JWT_SECRET"]
    second = runtime.airflow_env()["AIRFLOW__API_AUTH__JWT_SECRET"]
    assert first == second
    assert len(first.encode()) >= 64
    secret_file = home / "run" / "jwt_secret"
    assert secret_file.read_text().strip() == first
    assert stat.S_IMODE(secret_file.stat().st_mode) == 0o600
    assert stat.S_IMODE((home / "run").stat().st_mode) == 0o700
    # A fresh process (another component) sees the same secret.
    code = "from airloop.ops import runtime; print(runtime.airflow_env()['AIRFLOW__API_AUTH__JWT_SECRET'])"
    out = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        check=True,
        env={**os.environ},
    )
    assert out.stdout.strip() == first


def test_too_short_secret_is_replaced(home: Path) -> None:
    (home / "run").mkdir(parents=True)
    (home / "run" / "jwt_secret").write_text("short\n")
    secret = runtime.airflow_env()["AIRFLOW__API_AUTH__JWT_SECRET"]
    assert len(secret.encode()) >= 64


@pytest.mark.parametrize(
    ("var", "value", "message"),
    [
        ("AIRLOOP_AIRFLOW_PORT", "eighty", "AIRLOOP_AIRFLOW_PORT='eighty' is not a port number"),
        ("AIRLOOP_MLFLOW_PORT", "70000", "AIRLOOP_MLFLOW_PORT=70000 is out of range"),
        ("AIRLOOP_USERS", "admin:superuser", "AIRLOOP_USERS: 'admin:superuser' is not 'user:role'"),
        ("AIRLOOP_USERS", "admin", "AIRLOOP_USERS: 'admin' is not 'user:role'"),
    ],
)
def test_bad_settings_name_the_variable(
    home: Path, monkeypatch: pytest.MonkeyPatch, var: str, value: str, message: str
) -> None:
    monkeypatch.setenv(var, value)
    with pytest.raises(ValueError, match=message):
        runtime.airflow_env()


def test_port_in_use_names_port_and_variable(home: Path, monkeypatch: pytest.MonkeyPatch, listener: int) -> None:
    monkeypatch.setenv("AIRLOOP_AIRFLOW_PORT", str(listener))
    with pytest.raises(runtime.PortInUseError) as err:
        runtime.up(wait_timeout=5)
    assert str(listener) in str(err.value)
    assert "export AIRLOOP_AIRFLOW_PORT=" in str(err.value)
    assert not list((home / "run").glob("*.pid")), "nothing may start when a port is taken"


def test_mlflow_port_in_use(home: Path, monkeypatch: pytest.MonkeyPatch, listener: int) -> None:
    with socket.socket() as free:
        free.bind(("127.0.0.1", 0))
        monkeypatch.setenv("AIRLOOP_AIRFLOW_PORT", str(free.getsockname()[1]))
    monkeypatch.setenv("AIRLOOP_MLFLOW_PORT", str(listener))
    with pytest.raises(runtime.PortInUseError, match=f"Port {listener} .*export AIRLOOP_MLFLOW_PORT="):
        runtime.up(wait_timeout=5)
    assert not list((home / "run").glob("*.pid"))


def test_status_when_nothing_runs(home: Path) -> None:
    current = runtime.status()
    assert set(current.components) == set(runtime.COMPONENTS)
    assert not current.running and not current.healthy
    assert all(c.pid is None and not c.healthy for c in current.components.values())
    assert current.credentials_file == str(home / "airflow" / "simple_auth_manager_passwords.json.generated")
    assert [u["name"] for u in current.users] == ["admin", "operator", "steward"]
    as_dict = current.to_dict()
    assert as_dict["components"]["scheduler"]["running"] is False
    assert all(set(user) == {"name", "role"} for user in as_dict["users"]), "never a password"
    assert not home.exists(), "status() must not create anything"


def test_stale_or_foreign_pid_file_is_not_ours(home: Path) -> None:
    run = home / "run"
    run.mkdir(parents=True)
    # This very process is alive, but it is not a scheduler we started: status must not claim it.
    (run / "scheduler.pid").write_text(f"{os.getpid()}\n")
    (run / "api-server.pid").write_text("not a pid\n")
    current = runtime.status()
    assert not current.components["scheduler"].running
    assert not (run / "scheduler.pid").exists(), "a stale PID file is cleaned up"
    assert runtime.down() == []


def test_down_is_safe_when_nothing_ever_ran(home: Path) -> None:
    assert runtime.down() == []
    assert runtime.down() == []


def test_read_credentials_before_first_start(home: Path) -> None:
    with pytest.raises(FileNotFoundError, match="run up"):
        runtime.read_credentials()


def test_read_credentials(home: Path) -> None:
    passwords = home / "airflow" / "simple_auth_manager_passwords.json.generated"
    passwords.parent.mkdir(parents=True)
    passwords.write_text('{"admin": "x1", "steward": "y2"}\n')
    assert runtime.read_credentials() == {"admin": "x1", "steward": "y2"}


def test_import_is_cheap() -> None:
    code = (
        "import sys, airloop.ops.runtime; "
        "heavy = [m for m in ('airflow', 'mlflow', 'pandas', 'httpx') if m in sys.modules]; "
        "print(heavy)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_celery_workers_only_with_the_celery_executor(home: Path) -> None:
    assert runtime.workers({"AIRFLOW__CORE__EXECUTOR": "LocalExecutor"}) == ()
    celery = {"AIRFLOW__CORE__EXECUTOR": "CeleryExecutor"}
    assert runtime.workers(celery) == ("worker-1", "worker-2")  # the default: two
    assert runtime.workers({**celery, "AIRLOOP_CELERY_WORKERS": "3"}) == ("worker-1", "worker-2", "worker-3")
    for bad in ("0", "two", "-1"):
        with pytest.raises(ValueError, match=f"AIRLOOP_CELERY_WORKERS={bad!r}"):
            runtime.workers({**celery, "AIRLOOP_CELERY_WORKERS": bad})


def test_a_worker_is_an_airflow_celery_worker_named_after_itself(home: Path) -> None:
    env = {"AIRFLOW__CORE__EXECUTOR": "CeleryExecutor", "AIRLOOP_CELERY_CONCURRENCY": "3"}
    cmd = processes._command("worker-2", 8080, 5000, env)
    at = [Path(w).name for w in cmd].index("airflow")
    assert cmd[at + 1 : at + 4] == ["celery", "worker", "--concurrency"] and cmd[at + 4] == "3"
    assert "airloop-worker-2@%h" in cmd and "--skip-serve-logs" in cmd
    # _is_ours() recognises a running worker by these words of its command line, as started and as Celery
    # retitles it.
    retitled = (
        "[celeryd: airloop-worker-2@vm:MainProcess] -active- (celery worker --celery-hostname airloop-worker-2@%h -c 2)"
    )
    for argv in (cmd, retitled.split()):
        words = {Path(w).name for w in argv}
        assert all(words & choices for choices in processes._signature("worker-2")), argv
    other = {Path(w).name for w in processes._command("worker-1", 8080, 5000, env)}
    assert not all(other & choices for choices in processes._signature("worker-2"))


def test_worker_hostname_names_the_worker(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AIRLOOP_WORKER_NAME", "worker-2")
    assert runtime.worker_hostname() == f"worker-2@{socket.getfqdn()}"
    monkeypatch.delenv("AIRLOOP_WORKER_NAME")
    assert runtime.worker_hostname() == socket.getfqdn()


def test_down_finds_workers_of_an_earlier_configuration(home: Path) -> None:
    """A worker started with CeleryExecutor is still stopped by a shell whose environment says LocalExecutor."""
    run = home / "run"
    run.mkdir(parents=True, exist_ok=True)
    (run / "worker-7.pid").write_text("999999\n")
    try:
        assert "worker-7" in processes._components({"AIRFLOW__CORE__EXECUTOR": "LocalExecutor"})
    finally:
        (run / "worker-7.pid").unlink()


def test_mlflow_server_backend_and_artifacts_are_settings(home: Path) -> None:
    env = {
        "AIRLOOP_MLFLOW_BACKEND_STORE_URI": "postgresql+psycopg2://u:p@127.0.0.1:5432/mlflow",
        "AIRLOOP_MLFLOW_ARTIFACTS_DESTINATION": "s3://artifacts/mlflow",
    }
    cmd = processes._command("mlflow", 8080, 5000, env)
    # The backend URL carries a password: it goes through MLflow's environment variable, not the command line.
    assert "--backend-store-uri" not in cmd and not any("u:p@" in word for word in cmd)
    assert cmd[cmd.index("--artifacts-destination") + 1] == "s3://artifacts/mlflow"
    local = processes._command("mlflow", 8080, 5000, {})
    assert local[local.index("--backend-store-uri") + 1].startswith("sqlite:///")


def test_worker_hostname_callable_resolves_to_the_function(monkeypatch: pytest.MonkeyPatch) -> None:
    """Airflow imports ``[core] hostname_callable`` by its dotted path in each worker: it must name this function."""
    import importlib

    module, _, name = runtime.HOSTNAME_CALLABLE.rpartition(".")
    assert getattr(importlib.import_module(module), name) is runtime.worker_hostname
    monkeypatch.setenv("AIRFLOW__CORE__EXECUTOR", "CeleryExecutor")
    assert processes._command("worker-1", 8080, 5000, {"AIRLOOP_PRELOAD": "0"})[0].endswith("airflow")


def test_up_and_run_demo_stay_short() -> None:
    import inspect

    from airloop.ops import demo

    for function in (runtime.up, demo.run_demo):
        assert len(inspect.getsource(function).splitlines()) <= 60, function.__qualname__


def test_only_the_processes_that_fork_tasks_start_with_the_task_libraries_imported(home: Path) -> None:
    """The scheduler (LocalExecutor) and Celery workers start through the preload module; the dag-processor,
    api-server and triggerer never do (DAG parsing and the UI stay light); AIRLOOP_PRELOAD=0 turns it off."""
    preload = [sys.executable, "-m", "airloop.ops.runtime.preload"]
    celery = {"AIRFLOW__CORE__EXECUTOR": "CeleryExecutor"}
    assert processes._command("scheduler", 8080, 5000, {})[:3] == preload
    assert processes._command("worker-1", 8080, 5000, celery)[:3] == preload
    assert processes._command("scheduler", 8080, 5000, celery)[0].endswith("airflow")  # Celery's workers run tasks
    for name in ("api-server", "triggerer"):
        assert processes._command(name, 8080, 5000, {})[0].endswith("airflow"), name
    # The dag-processor forks a process per DAG file: it preloads airloop's parse-time modules only.
    dag_processor = processes._command("dag-processor", 8080, 5000, {})
    assert dag_processor[:3] == preload
    from airloop.ops.runtime.preload import PARSE_PRELOAD, PRELOAD, modules_for

    assert modules_for(dag_processor[3:]) == PARSE_PRELOAD
    assert modules_for(processes._command("scheduler", 8080, 5000, {})[3:]) == PRELOAD
    assert processes._command("scheduler", 8080, 5000, {"AIRLOOP_PRELOAD": "0"})[0].endswith("airflow")
    with pytest.raises(ValueError, match="AIRLOOP_PRELOAD='maybe'"):
        processes._command("scheduler", 8080, 5000, {"AIRLOOP_PRELOAD": "maybe"})
    # Started this way, the scheduler is still recognised as ours by its command line.
    words = {Path(w).name for w in processes._command("scheduler", 8080, 5000, {})}
    assert all(words & choices for choices in processes._signature("scheduler"))


def test_the_dag_processors_preload_is_light_and_reads_the_specs_ahead() -> None:
    """What parsing processes inherit: airloop's parse-time modules and the validated specs, nothing heavy."""
    code = (
        "import sys, threading; from airloop.ops.runtime.preload import PARSE_PRELOAD, preload, warm_specs; "
        "done = preload(PARSE_PRELOAD); specs = warm_specs(); "
        "heavy = sorted(m for m in ('great_expectations', 'mlflow', 'sklearn', 'pandas', 'evidently', 'pyarrow') "
        "if m in sys.modules); "
        "print(len(done), len(PARSE_PRELOAD), specs, threading.active_count(), ','.join(heavy) or '-')"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=120)
    imported, wanted, specs, threads, heavy = out.stdout.split()[-5:]
    assert (int(imported), int(threads), heavy) == (int(wanted), 1, "-"), out.stderr[-2000:]
    assert int(specs) >= 2  # the shipped specs


def test_preloading_starts_no_thread_and_refuses_a_command_that_is_not_airflow() -> None:
    """Forking copies only the forking thread: importing the task libraries must not start one."""
    code = (
        "import threading; from airloop.ops.runtime.preload import PRELOAD, preload; "
        "done = preload(); print(len(done), len(PRELOAD), threading.active_count())"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=300)
    imported, wanted, threads = map(int, out.stdout.split()[-3:])
    assert (imported, threads) == (wanted, 1), out.stderr[-2000:]
    bad = subprocess.run(
        [sys.executable, "-m", "airloop.ops.runtime.preload", "scheduler"], capture_output=True, text=True, timeout=60
    )
    assert bad.returncode != 0 and "usage: python -m airloop.ops.runtime.preload airflow" in bad.stderr
    # Started with -m, the module runs once: the package does not import it first (runpy warned about that at the
    # top of every preloading component's log).
    assert "RuntimeWarning" not in bad.stderr, bad.stderr


def test_a_preloaded_component_waits_for_the_metadata_database_and_stops_when_it_failed(tmp_path: Path) -> None:
    """up() starts the scheduler's preload while the metadata DB migrates: Airflow starts only on an ``ok`` gate."""
    import threading

    from airloop.ops.runtime.preload import wait_for_gate

    gate = tmp_path / "preload.gate"
    opener = threading.Timer(0.3, lambda: gate.write_text("ok\n"))
    opener.start()
    started = time.monotonic()
    wait_for_gate(gate, timeout=10, poll=0.05)
    assert time.monotonic() - started >= 0.25  # it waited for the gate to appear
    opener.join()

    gate.write_text("failed: airflow db migrate / connections import failed (exit 1)\n")
    with pytest.raises(SystemExit, match=r"not ready \(failed: airflow db migrate"):
        wait_for_gate(gate, timeout=1)
    gate.unlink()
    with pytest.raises(SystemExit, match="did not appear within 0 s; not starting Airflow"):
        wait_for_gate(gate, timeout=0.2, poll=0.05)


def test_the_mlflow_servers_embedded_store_is_put_in_wal_mode_and_a_configured_one_left_alone(home: Path) -> None:
    """Before the MLflow server opens its default SQLite store, the runtime puts the file in WAL mode (it stays with
    the file, for the server's connections too); a configured backend is never touched."""
    import sqlite3
    from contextlib import closing

    from airloop.ops.runtime import control

    store = paths().mlflow / "mlflow.db"
    store.parent.mkdir(parents=True)
    control._write_ahead_log_store({"AIRLOOP_MLFLOW_BACKEND_STORE_URI": "postgresql://u@127.0.0.1/mlflow"})
    assert not store.exists()
    for _ in range(2):  # a new store at the same path (make clean, then make up) in the same process
        store.unlink(missing_ok=True)
        control._write_ahead_log_store({})
        with closing(sqlite3.connect(store)) as conn:
            assert conn.execute("PRAGMA journal_mode").fetchone() == ("wal",)

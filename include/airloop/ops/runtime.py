"""The embedded runtime: Airflow's components and an MLflow server on 127.0.0.1, started and stopped by PID.

``up()`` migrates the metadata database, registers airloop's connections (only where absent) and starts
``api-server``, ``scheduler``, ``dag-processor``, ``triggerer`` and ``mlflow`` as separate processes, each in
its own session, with its log in ``paths().run/<name>.log`` and its PID in ``paths().run/<name>.pid``.
``down()`` stops each process group: SIGTERM, then SIGKILL after a timeout. ``status()`` says what runs and
what is healthy. Every Airflow process and CLI call gets the same environment from ``airflow_env()``.

The module imports nothing heavy (no Airflow, no MLflow): the CLI calls it before deciding what to load.
Linux only: process ownership and process groups are read from ``/proc``.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from airloop.core.settings import default_connections, paths

__all__ = [
    "COMPONENTS",
    "ComponentStatus",
    "PortInUseError",
    "RuntimeStatus",
    "airflow_env",
    "down",
    "get_token",
    "read_credentials",
    "status",
    "up",
]

HOST = "127.0.0.1"
DEFAULT_AIRFLOW_PORT = 8080
DEFAULT_MLFLOW_PORT = 5000
AIRFLOW_PORT_VAR = "AIRLOOP_AIRFLOW_PORT"
MLFLOW_PORT_VAR = "AIRLOOP_MLFLOW_PORT"
#: The MLflow server's backend store and artifact destination (default: SQLite and a folder under AIRLOOP_HOME),
#: e.g. ``postgresql+psycopg2://...`` and ``s3://bucket/mlflow`` (S3 settings from the usual AWS variables).
MLFLOW_BACKEND_VAR = "AIRLOOP_MLFLOW_BACKEND_STORE_URI"
MLFLOW_ARTIFACTS_VAR = "AIRLOOP_MLFLOW_ARTIFACTS_DESTINATION"
USERS_VAR = "AIRLOOP_USERS"
#: ``user:role`` pairs for Airflow's SimpleAuthManager; roles are viewer, user, op, admin.
DEFAULT_USERS = "admin:admin,operator:op,steward:viewer"
SIMPLE_AUTH_ROLES = ("viewer", "user", "op", "admin")
JWT_SECRET_FILE = "jwt_secret"
MIN_JWT_SECRET_BYTES = 64
PASSWORDS_FILE = "simple_auth_manager_passwords.json.generated"

#: Components in start order. ``down()`` stops the workers first, then the servers they report to.
COMPONENTS: tuple[str, ...] = ("mlflow", "api-server", "dag-processor", "triggerer", "scheduler")
_AIRFLOW_COMPONENTS = ("api-server", "dag-processor", "triggerer", "scheduler")
_STOP_FIRST = ("scheduler", "triggerer", "dag-processor")
#: With CeleryExecutor, ``up()`` also starts ``AIRLOOP_CELERY_WORKERS`` workers (default 2) named like this.
WORKER_PREFIX = "worker-"
WORKERS_VAR = "AIRLOOP_CELERY_WORKERS"
WORKER_CONCURRENCY_VAR = "AIRLOOP_CELERY_CONCURRENCY"
#: Set in each worker's environment: its name, which task instances record as their hostname.
WORKER_NAME_VAR = "AIRLOOP_WORKER_NAME"
#: Components the api-server reports healthy by their heartbeat; they print their threads on SIGQUIT.
_HEARTBEATING = ("scheduler", "triggerer", "dag-processor")
#: Key of each Airflow component in the api-server's ``/api/v2/monitor/health`` answer.
_HEALTH_KEYS = {
    "api-server": "metadatabase",
    "scheduler": "scheduler",
    "triggerer": "triggerer",
    "dag-processor": "dag_processor",
}
_HTTP_TIMEOUT = 3.0
_POLL_INTERVAL = 0.5
_LOG_TAIL_LINES = 30

#: Processes this Python process started, kept so they can be reaped (no zombies, no ResourceWarning).
_children: dict[int, subprocess.Popen[bytes]] = {}


class PortInUseError(RuntimeError):
    """A port the runtime needs is taken by a program that is not ours."""


@dataclass(frozen=True)
class ComponentStatus:
    """One process of the runtime."""

    name: str
    pid: int | None
    running: bool
    healthy: bool
    log: str


@dataclass(frozen=True)
class RuntimeStatus:
    """What runs, what is healthy, and where to reach it (never a password)."""

    components: dict[str, ComponentStatus]
    urls: dict[str, str]
    credentials_file: str
    users: list[dict[str, str]] = field(default_factory=list)

    @property
    def healthy(self) -> bool:
        """True when every component runs and answers its health check."""
        return all(c.healthy for c in self.components.values())

    @property
    def running(self) -> list[str]:
        """Names of the components whose process is alive."""
        return [name for name, c in self.components.items() if c.running]

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict (for ``airloop status --json``)."""
        return {
            "healthy": self.healthy,
            "components": {name: asdict(c) for name, c in self.components.items()},
            "urls": dict(self.urls),
            "credentials_file": self.credentials_file,
            "users": [dict(u) for u in self.users],
        }


# ---------------------------------------------------------------------------------------------------------
# Settings and environment
# ---------------------------------------------------------------------------------------------------------


def _port(env: Mapping[str, str], var: str, default: int) -> int:
    raw = env.get(var, "").strip()
    if not raw:
        return default
    try:
        port = int(raw)
    except ValueError:
        raise ValueError(f"{var}={raw!r} is not a port number") from None
    if not 0 < port < 65536:
        raise ValueError(f"{var}={port} is out of range (1-65535)")
    return port


def _ports(env: Mapping[str, str] | None = None) -> tuple[int, int]:
    """(Airflow api-server port, MLflow port) from ``AIRLOOP_AIRFLOW_PORT`` and ``AIRLOOP_MLFLOW_PORT``."""
    env = os.environ if env is None else env
    return (
        _port(env, AIRFLOW_PORT_VAR, DEFAULT_AIRFLOW_PORT),
        _port(env, MLFLOW_PORT_VAR, DEFAULT_MLFLOW_PORT),
    )


def _parse_users(spec: str, source: str) -> list[dict[str, str]]:
    users = []
    for item in (part.strip() for part in spec.split(",")):
        if not item:
            continue
        name, _, role = item.partition(":")
        role = role.split(":")[0].strip().lower()  # a third field (teams) is Airflow's business
        if not name.strip() or role not in SIMPLE_AUTH_ROLES:
            raise ValueError(f"{source}: {item!r} is not 'user:role' with role in {', '.join(SIMPLE_AUTH_ROLES)}")
        users.append({"name": name.strip(), "role": role})
    if not users:
        raise ValueError(f"{source} names no user")
    return users


def _users_spec(env: Mapping[str, str]) -> tuple[str, str]:
    """The SimpleAuthManager users in force and where they came from."""
    if env.get("AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS"):
        return env["AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS"], "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS"
    return env.get(USERS_VAR) or DEFAULT_USERS, USERS_VAR


def _passwords_file(env: Mapping[str, str]) -> Path:
    override = env.get("AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE")
    return Path(override) if override else paths().airflow_home / PASSWORDS_FILE


def _base_url(port: int) -> str:
    return f"http://{HOST}:{port}"


def _ensure_private_dir(path: Path) -> None:
    path.mkdir(parents=True, exist_ok=True, mode=0o700)


def _jwt_secret(run_dir: Path) -> str:
    """The JWT signing secret shared by every component, created once (0600) under ``run_dir``."""
    _ensure_private_dir(run_dir)
    path = run_dir / JWT_SECRET_FILE
    with contextlib.suppress(FileNotFoundError):
        existing = path.read_text().strip()
        if len(existing.encode()) >= MIN_JWT_SECRET_BYTES:
            if path.stat().st_mode & 0o077:
                path.chmod(0o600)
            return existing
        path.unlink()  # too short to be ours: replace it (tokens signed with it stop working)
    secret = secrets.token_urlsafe(MIN_JWT_SECRET_BYTES)  # 86 characters
    tmp = run_dir / f".{JWT_SECRET_FILE}.{os.getpid()}.tmp"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write(secret + "\n")
    try:
        os.link(tmp, path)  # atomic create-if-absent: a concurrent caller's secret wins, never a half file
    except FileExistsError:
        secret = path.read_text().strip()
    finally:
        tmp.unlink()
    return secret


def airflow_env(base: Mapping[str, str] | None = None) -> dict[str, str]:
    """The environment of every Airflow process and Airflow CLI call of the embedded runtime.

    Starts from ``base`` (default: this process's environment). Every ``AIRFLOW__*`` variable already in
    ``base`` wins over airloop's default for it, so a deployment can override any setting. ``AIRFLOW_HOME``,
    ``AIRLOOP_HOME``, ``MLFLOW_TRACKING_URI`` and the telemetry switches always point at the embedded runtime.
    Ports come from ``AIRLOOP_AIRFLOW_PORT`` / ``AIRLOOP_MLFLOW_PORT`` in ``base``; users from ``AIRLOOP_USERS``.

    Side effect: creates ``paths().run`` (0700) and the JWT secret file in it (0600) on first call.
    airloop's connections are not set here (they live in the metadata DB, editable in the UI): see ``up()``.
    """
    env = dict(os.environ if base is None else base)
    p = paths()
    api_port, mlflow_port = _ports(env)
    users, users_source = _users_spec(env)
    _parse_users(users, users_source)  # fail early, naming the variable, on a malformed list
    api_url = _base_url(api_port)

    defaults = {
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "AIRFLOW__CORE__EXECUTOR": "LocalExecutor",
        "AIRFLOW__CORE__PARALLELISM": "4",
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"sqlite:///{p.airflow_home / 'airflow.db'}",
        "AIRFLOW__CORE__DAGS_FOLDER": str(p.project / "dags"),
        "AIRFLOW__CORE__PLUGINS_FOLDER": str(p.project / "plugins"),
        "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"{api_url}/execution/",
        "AIRFLOW__API__BASE_URL": api_url,
        "AIRFLOW__API__HOST": HOST,
        "AIRFLOW__API__PORT": str(api_port),
        "AIRFLOW__API__WORKERS": "1",
        "AIRFLOW__DAG_PROCESSOR__REFRESH_INTERVAL": "20",
        "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS": users,
        "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE": str(p.airflow_home / PASSWORDS_FILE),
    }
    for key, value in defaults.items():
        env.setdefault(key, value)
    if not env.get("AIRFLOW__API_AUTH__JWT_SECRET"):
        env["AIRFLOW__API_AUTH__JWT_SECRET"] = _jwt_secret(p.run)

    env.update(
        {
            "AIRFLOW_HOME": str(p.airflow_home),
            "AIRLOOP_HOME": str(p.home),
            "AIRLOOP_PROJECT_DIR": str(p.project),
            AIRFLOW_PORT_VAR: str(api_port),
            MLFLOW_PORT_VAR: str(mlflow_port),
            "MLFLOW_TRACKING_URI": _base_url(mlflow_port),
            "MLFLOW_DISABLE_TELEMETRY": "true",
            "DO_NOT_TRACK": "true",
            "GX_ANALYTICS_ENABLED": "False",
        }
    )
    # Local calls (task -> execution API, task -> MLflow) must never go through an HTTP proxy.
    for var in ("NO_PROXY", "no_proxy"):
        present = [h for h in env.get(var, "").split(",") if h.strip()]
        env[var] = ",".join(present + [h for h in (HOST, "localhost") if h not in present])
    return env


# ---------------------------------------------------------------------------------------------------------
# Processes
# ---------------------------------------------------------------------------------------------------------


def _celery(env: Mapping[str, str]) -> bool:
    return "CeleryExecutor" in env.get("AIRFLOW__CORE__EXECUTOR", "")


def workers(env: Mapping[str, str] | None = None) -> tuple[str, ...]:
    """The Celery workers the runtime runs: none unless the executor is CeleryExecutor."""
    env = os.environ if env is None else env
    if not _celery(env):
        return ()
    raw = env.get(WORKERS_VAR, "").strip() or "2"
    if not raw.isdigit() or int(raw) < 1:
        raise ValueError(f"{WORKERS_VAR}={raw!r}: expected a whole number of Celery workers, 1 or more")
    return tuple(f"{WORKER_PREFIX}{i}" for i in range(1, int(raw) + 1))


def _components(env: Mapping[str, str] | None = None) -> tuple[str, ...]:
    """Every component to run or report: the fixed ones, the configured workers, and workers still running
    from an earlier configuration (their PID files), so ``down()`` stops them whatever the environment says."""
    names = list(COMPONENTS) + list(workers(env))
    run = paths().run
    if run.is_dir():
        for pid_file in sorted(run.glob(f"{WORKER_PREFIX}*.pid")):
            if pid_file.stem not in names:
                names.append(pid_file.stem)
    return tuple(names)


def _is_worker(name: str) -> bool:
    return name.startswith(WORKER_PREFIX)


def worker_hostname() -> str:
    """The hostname task instances record (``[core] hostname_callable`` of the runtime's Celery workers).

    Several workers on one machine share its name; this adds the worker's, so the UI and the tests can tell
    which worker ran a task. Task logs stay local files that the api-server reads directly.
    """
    import socket as _socket

    name = os.environ.get(WORKER_NAME_VAR)
    host = _socket.getfqdn()
    return f"{name}@{host}" if name else host


def _bin(name: str) -> str:
    """An executable of this virtualenv (next to the running interpreter)."""
    return str(Path(sys.executable).parent / name)


def _command(name: str, api_port: int, mlflow_port: int, env: Mapping[str, str] | None = None) -> list[str]:
    env = os.environ if env is None else env
    if name == "mlflow":
        store = paths().mlflow
        # A configured backend (with its password) reaches MLflow as MLFLOW_BACKEND_STORE_URI in the
        # environment (_start), never on a command line that any user of the machine can read.
        backend = [] if env.get(MLFLOW_BACKEND_VAR) else ["--backend-store-uri", f"sqlite:///{store / 'mlflow.db'}"]
        return [
            _bin("mlflow"),
            "server",
            *backend,
            "--artifacts-destination",
            env.get(MLFLOW_ARTIFACTS_VAR) or str(store / "artifacts"),
            "--host",
            HOST,
            "--port",
            str(mlflow_port),
            "--workers",
            "1",
            "--x-frame-options",
            "NONE",
        ]
    if _is_worker(name):
        concurrency = env.get(WORKER_CONCURRENCY_VAR, "").strip() or "2"
        return [
            _bin("airflow"),
            "celery",
            "worker",
            "--concurrency",
            concurrency,
            "--celery-hostname",
            f"airloop-{name}@%h",
            "--skip-serve-logs",  # logs are files on this host; serve-logs would bind every interface
        ]
    args = {
        "api-server": ["api-server", "--host", HOST, "--port", str(api_port)],
        "scheduler": ["scheduler", "--skip-serve-logs"],
        "dag-processor": ["dag-processor"],
        "triggerer": ["triggerer", "--skip-serve-logs"],
    }[name]
    return [_bin("airflow"), *args]


def _signature(name: str) -> tuple[frozenset[str], ...]:
    """Words the command line of a component's main process contains (one of each set).

    The api-server renames itself (``airflow api_server -- host:... port:...``), hence two spellings.
    """
    if name == "mlflow":
        return frozenset({"mlflow"}), frozenset({"server"})
    if _is_worker(name):
        # Celery retitles its main process ("[celeryd: airloop-worker-1@host:MainProcess] -active- (celery worker
        # ... --celery-hostname airloop-worker-1@%h ...)"): the hostname argument is in both spellings.
        return frozenset({"worker"}), frozenset({f"airloop-{name}@%h"})
    return frozenset({"airflow"}), frozenset({name, name.replace("-", "_")})


def _pid_file(name: str) -> Path:
    return paths().run / f"{name}.pid"


def _log_file(name: str) -> Path:
    return paths().run / f"{name}.log"


def _read_pid(name: str) -> int | None:
    try:
        return int(_pid_file(name).read_text().strip())
    except (FileNotFoundError, ValueError):
        return None


def _proc_stat(pid: int) -> tuple[str, int, int, int] | None:
    """(state, ppid, pgrp, session) of a process from ``/proc``, or None if it is gone."""
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return None
    fields = raw[raw.rindex(")") + 2 :].split()  # the command name may hold spaces and parentheses
    return fields[0], int(fields[1]), int(fields[2]), int(fields[3])


def _reap(pid: int) -> None:
    """Collect the exit status of a child of this process, so it does not linger as a zombie."""
    child = _children.get(pid)
    if child is not None:
        if child.poll() is not None:
            _children.pop(pid, None)
        return
    with contextlib.suppress(ChildProcessError, OSError):
        os.waitpid(pid, os.WNOHANG)


def _alive(pid: int) -> bool:
    _reap(pid)
    stat = _proc_stat(pid)
    return stat is not None and stat[0] not in ("Z", "X")


def _is_ours(name: str, pid: int) -> bool:
    """Whether ``pid`` is the live process we started for ``name`` under this ``AIRLOOP_HOME``.

    Guards against recycled PIDs: it must lead its own session (``start_new_session``), run in
    ``paths().home`` (its working directory; ``/proc/<pid>/environ`` is no help, the api-server's process
    title overwrites it) and have the component's words in its command line.
    """
    if not _alive(pid):
        return False
    stat = _proc_stat(pid)
    if stat is None or stat[3] != pid:
        return False
    try:
        cwd = Path(os.readlink(f"/proc/{pid}/cwd"))
        argv = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return False
    if cwd != paths().home:
        return False
    words = {Path(word).name for word in argv.split()}
    return all(words & choices for choices in _signature(name))


def _running_pid(name: str) -> int | None:
    """The PID of ``name`` if it runs and is ours; a stale PID file is removed."""
    pid = _read_pid(name)
    if pid is None:
        return None
    if _is_ours(name, pid):
        return pid
    with contextlib.suppress(FileNotFoundError):
        _pid_file(name).unlink()
    return None


def _port_free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as the servers do: TIME_WAIT is fine
        try:
            sock.bind((HOST, port))
        except OSError:
            return False
    return True


def _check_port(port: int, component: str, var: str) -> None:
    if not _port_free(port):
        raise PortInUseError(
            f"Port {port} on {HOST} is already in use by another program, so {component} cannot start. "
            f"Stop that program, or pick a free port with: export {var}=<port>"
        )


def _open_private(path: Path, mode: str) -> Any:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | (os.O_APPEND if "a" in mode else os.O_TRUNC), 0o600)
    return os.fdopen(fd, mode)


def _tail(path: Path, lines: int = _LOG_TAIL_LINES) -> str:
    try:
        with path.open("rb") as fh:
            fh.seek(0, os.SEEK_END)
            fh.seek(max(0, fh.tell() - 64 * 1024))
            text = fh.read().decode(errors="replace")
    except FileNotFoundError:
        return "(no log yet)"
    return "\n".join(text.splitlines()[-lines:])


def _start(name: str, env: Mapping[str, str], api_port: int, mlflow_port: int) -> int:
    """Start one component in its own session; its output goes to its log, its PID to its PID file."""
    p = paths()
    cmd = _command(name, api_port, mlflow_port, env)
    if _is_worker(name):
        env = {**env, WORKER_NAME_VAR: name, "AIRFLOW__CORE__HOSTNAME_CALLABLE": "airloop.ops.runtime.worker_hostname"}
    if name == "mlflow" and env.get(MLFLOW_BACKEND_VAR):
        env = {**env, "MLFLOW_BACKEND_STORE_URI": env[MLFLOW_BACKEND_VAR]}
    with _open_private(_log_file(name), "ab") as log:
        stamp = time.strftime("%Y-%m-%dT%H:%M:%S%z")
        log.write(f"\n=== airloop: {stamp} starting {name}: {' '.join(cmd)}\n".encode())
        log.flush()
        proc = subprocess.Popen(
            cmd,
            env=dict(env),
            cwd=p.home,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            close_fds=True,
        )
    _children[proc.pid] = proc
    tmp = _pid_file(name).with_suffix(".pid.tmp")
    tmp.write_text(f"{proc.pid}\n")
    tmp.replace(_pid_file(name))
    return proc.pid


#: One interpreter for both Airflow CLI steps of ``up()``: importing Airflow twice would cost about 5 s more.
_BOOTSTRAP = """
import sys
from airflow.__main__ import main

connections_file = sys.argv[1]
for argv in (["db", "migrate"], ["connections", "import", connections_file]):
    print("=== airloop: airflow " + " ".join(argv), flush=True)
    sys.argv = ["airflow", *argv]
    main()
from airloop.ops.cli import main as airloop  # the warehouse at head before any task runs
sys.exit(airloop(["warehouse", "upgrade"]))
"""


def _bootstrap(env: Mapping[str, str], timeout: float) -> None:
    """``airflow db migrate`` then ``airflow connections import`` (without ``--overwrite``), in one process.

    Both are idempotent: migrating a current database changes nothing, and an existing connection is
    reported and skipped, so an on-call engineer's edit in the UI is never undone. Output is appended to
    ``run/airflow-cli.log``.
    """
    run_dir = paths().run
    log_path = run_dir / "airflow-cli.log"
    conns_path = run_dir / "connections.import.json"
    with _open_private(conns_path, "w") as fh:
        json.dump({cid: json.loads(v) for cid, v in default_connections().items()}, fh, indent=2)
    cmd = [sys.executable, "-c", _BOOTSTRAP, str(conns_path)]
    try:
        with _open_private(log_path, "ab") as log:
            stamp = time.strftime("%Y-%m-%dT%H:%M:%S%z")
            log.write(f"\n=== airloop: {stamp} db migrate + connections import\n".encode())
            log.flush()
            result = subprocess.run(
                cmd,
                env=dict(env),
                cwd=paths().home,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                timeout=timeout,
                check=False,
            )
    except subprocess.TimeoutExpired:
        raise RuntimeError(
            f"airflow db migrate / connections import did not finish in {timeout:.0f} s; "
            f"log {log_path}, last lines:\n{_tail(log_path)}"
        ) from None
    finally:
        conns_path.unlink(missing_ok=True)
    if result.returncode != 0:
        raise RuntimeError(
            f"airflow db migrate / connections import failed (exit {result.returncode}); "
            f"log {log_path}, last lines:\n{_tail(log_path)}"
        )


# ---------------------------------------------------------------------------------------------------------
# Health
# ---------------------------------------------------------------------------------------------------------

# No proxies for 127.0.0.1, whatever the environment says.
_opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def _http(method: str, url: str, body: Any = None, headers: Mapping[str, str] | None = None) -> tuple[int, bytes]:
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(url, data=data, method=method, headers=dict(headers or {}))
    if data is not None:
        req.add_header("Content-Type", "application/json")
    try:
        with _opener.open(req, timeout=_HTTP_TIMEOUT) as resp:
            return resp.status, resp.read()
    except urllib.error.HTTPError as err:
        return err.code, err.read()


def _probe(api_port: int, mlflow_port: int) -> dict[str, bool]:
    """Which components answer healthy right now (not whether their process is ours)."""
    result = dict.fromkeys(COMPONENTS, False)
    try:
        code, body = _http("GET", f"{_base_url(api_port)}/api/v2/monitor/health")
        if code == 200:
            health = json.loads(body)
            for name, key in _HEALTH_KEYS.items():
                result[name] = (health.get(key) or {}).get("status") == "healthy"
    except (OSError, ValueError):
        pass
    try:
        code, _ = _http("GET", f"{_base_url(mlflow_port)}/health")
        result["mlflow"] = code == 200
    except OSError:
        pass
    return result


def _worker_ready(name: str) -> bool:
    """A Celery worker is ready once its log, since its last start, says so (Celery's "celery@... ready.")."""
    text = _tail(_log_file(name), lines=400)
    return " ready." in text.rsplit("=== airloop:", 1)[-1]


def status() -> RuntimeStatus:
    """What runs (PID alive and ours) and what is healthy, with URLs and users (no passwords)."""
    env = os.environ
    api_port, mlflow_port = _ports(env)
    names = _components(env)
    pids = {name: _running_pid(name) for name in names}
    probe = _probe(api_port, mlflow_port) if any(pids.values()) else dict.fromkeys(COMPONENTS, False)
    components = {
        name: ComponentStatus(
            name=name,
            pid=pid,
            running=pid is not None,
            healthy=pid is not None and (_worker_ready(name) if _is_worker(name) else probe[name]),
            log=str(_log_file(name)),
        )
        for name, pid in pids.items()
    }
    api_url = _base_url(api_port)
    spec, source = _users_spec(env)
    return RuntimeStatus(
        components=components,
        urls={"airflow": api_url, "api": f"{api_url}/api/v2", "mlflow": _base_url(mlflow_port)},
        credentials_file=str(_passwords_file(env)),
        users=_parse_users(spec, source),
    )


# ---------------------------------------------------------------------------------------------------------
# up / down
# ---------------------------------------------------------------------------------------------------------


@contextlib.contextmanager
def _locked() -> Iterator[None]:
    """Serialise ``up()``'s starting and ``down()`` across processes (two terminals, CLI and tests)."""
    run_dir = paths().run
    _ensure_private_dir(run_dir)
    with _open_private(run_dir / ".lock", "a") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def _failure(what: str, names: Iterable[str], started: Mapping[str, int]) -> RuntimeError:
    parts = [what]
    for name in names:
        log = _log_file(name)
        parts.append(f"--- {name}: log {log}, last lines:\n{_tail(log, 40)}")
    if started:
        parts.append(f"Started now and left running for inspection: {', '.join(started)}; stop with down().")
    return RuntimeError("\n".join(parts))


def up(wait_timeout: float = 180, hung_after: float = 60) -> RuntimeStatus:
    """Start whatever of the runtime is not running, and wait until every component is healthy.

    Idempotent: a component already running (its PID alive and ours) is left alone; when all run, this
    only checks health. ``airflow db migrate`` and the connection registration run whenever an Airflow
    component has to start. Raises ``PortInUseError`` when a port is taken by another program, and
    ``RuntimeError`` naming the unhealthy component(s), their logs and the logs' last lines when the whole
    call takes longer than ``wait_timeout`` seconds or a component exits (what did start is left running
    for inspection: ``down()`` stops it). A scheduler, triggerer or dag-processor whose process runs but whose
    heartbeat the api-server has not seen for ``hung_after`` seconds is restarted, once per call (its threads
    dumped to its log first), and so is any still unhealthy at the deadline dumped before the error.
    """
    deadline = time.monotonic() + wait_timeout
    p = paths()
    env = airflow_env()
    api_port, mlflow_port = _ports(env)
    _ensure_private_dir(p.run)
    p.airflow_home.mkdir(parents=True, exist_ok=True)
    (p.mlflow / "artifacts").mkdir(parents=True, exist_ok=True)

    started: dict[str, int] = {}
    with _locked():
        missing = [name for name in _components(env) if _running_pid(name) is None]
        if "api-server" in missing:
            _check_port(api_port, "the Airflow api-server", AIRFLOW_PORT_VAR)
        if "mlflow" in missing:
            _check_port(mlflow_port, "the MLflow server", MLFLOW_PORT_VAR)

        if "mlflow" in missing:  # independent of Airflow: it warms up while the metadata DB migrates
            mlflow_env = {**env, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}
            started["mlflow"] = _start("mlflow", mlflow_env, api_port, mlflow_port)
        airflow_missing = [name for name in (*_AIRFLOW_COMPONENTS, *workers(env)) if name in missing]
        if airflow_missing:
            try:
                _bootstrap(env, timeout=max(deadline - time.monotonic(), 1))
            except RuntimeError as err:
                raise _failure(str(err), [], started) from None
            passwords = _passwords_file(env)
            if not passwords.exists():  # Airflow appends generated passwords: make the file private first
                passwords.parent.mkdir(parents=True, exist_ok=True)
                _open_private(passwords, "a").close()
            for name in airflow_missing:
                started[name] = _start(name, env, api_port, mlflow_port)

    silent_since: dict[str, float] = {}
    restarted: set[str] = set()
    while True:
        current = status()
        if current.healthy:
            return current
        dead = [name for name, pid in started.items() if not _alive(pid)]
        if dead:
            raise _failure(f"{', '.join(dead)} exited during start-up.", dead, started)
        now = time.monotonic()
        if now >= deadline:
            unhealthy = [name for name, c in current.components.items() if not c.healthy]
            _dump_threads(current, unhealthy)
            raise _failure(f"Not healthy after {wait_timeout:.0f} s: {', '.join(unhealthy)}.", unhealthy, started)
        for name in _HEARTBEATING:
            component = current.components[name]
            if not (current.components["api-server"].healthy and component.running and not component.healthy):
                silent_since.pop(name, None)
            elif now - silent_since.setdefault(name, now) > hung_after and name not in restarted:
                started[name] = _restart_hung(name, env, api_port, mlflow_port, now - silent_since.pop(name))
                restarted.add(name)
        time.sleep(_POLL_INTERVAL)


def _dump_threads(current: RuntimeStatus, names: Iterable[str]) -> None:
    """Ask running Airflow components to print every thread's stack to their logs (Airflow's SIGQUIT handler)."""
    pids = [c.pid for n in names if n in _HEARTBEATING and (c := current.components[n]).running and c.pid]
    for pid in pids:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, signal.SIGQUIT)
    if pids:
        time.sleep(1)


def _restart_hung(name: str, env: Mapping[str, str], api_port: int, mlflow_port: int, silent: float) -> int:
    """Stop a component whose process runs but sends no heartbeat, and start it once more.

    What a supervisor's liveness probe does (the official Helm chart restarts a scheduler whose heartbeat is
    stale). Seen once on a loaded 2-core machine: a freshly started scheduler that never heartbeat again.
    Its threads are dumped to its log first, so the hang can be diagnosed.
    """
    pid = _running_pid(name)
    if pid is not None:
        _dump_threads(status(), [name])
        with _open_private(_log_file(name), "ab") as log:
            log.write(
                f"\n=== airloop: {name} (pid {pid}) sent no heartbeat for {silent:.0f} s while its process ran "
                "(threads dumped above if it could answer SIGQUIT); restarting it once\n".encode()
            )
        tree = _tree([pid], _process_table())
        _signal_tree(tree, signal.SIGTERM)
        if not _wait_gone([pid], tree, time.monotonic() + 10):
            _signal_tree(_remaining([pid], tree), signal.SIGKILL)
            _wait_gone([pid], tree, time.monotonic() + 10)
    with _locked():
        return _start(name, env, api_port, mlflow_port)


def _process_table() -> dict[int, tuple[str, int, int, int]]:
    """pid -> (state, ppid, pgrp, session) of every live (non-zombie) process."""
    table = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            stat = _proc_stat(int(entry.name))
            if stat and stat[0] not in ("Z", "X"):
                table[int(entry.name)] = stat
    return table


def _tree(leaders: Iterable[int], table: Mapping[int, tuple[str, int, int, int]]) -> set[int]:
    """Live processes belonging to ``leaders``: their sessions and groups, plus every descendant.

    Each component leads its own session (``start_new_session``). Airflow's task runners set up their own
    process group inside the scheduler's session, so a ``killpg`` of the leader's group alone misses them;
    a descendant that started its own session is caught through the parent links.
    """
    roots = set(leaders)
    found = {pid for pid, (_, _, pgrp, sid) in table.items() if sid in roots or pgrp in roots}
    found |= roots & set(table)
    children: dict[int, list[int]] = {}
    for pid, (_, ppid, _, _) in table.items():
        children.setdefault(ppid, []).append(pid)
    todo = list(found)
    while todo:
        for child in children.get(todo.pop(), []):
            if child not in found:
                found.add(child)
                todo.append(child)
    return found


def _pgid(pid: int) -> int | None:
    try:
        return os.getpgid(pid)
    except (ProcessLookupError, PermissionError):
        return None


def _signal_tree(pids: Iterable[int], sig: signal.Signals) -> None:
    """Send ``sig`` exactly once to each of these processes, by group where its group leader is among them.

    Once only: to Airflow a second SIGTERM means "force" (the scheduler stops waiting for its tasks, the
    triggerer SIGKILLs its trigger runner). This process's own group is never signalled as a group.
    """
    targets = set(pids)
    own_group = os.getpgid(0)
    groups = {pid: _pgid(pid) for pid in targets}
    leaders = {g for g in groups.values() if g is not None and g in targets and g != own_group}
    for leader in leaders:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(leader, sig)
    for pid, group in groups.items():
        if group is not None and group not in leaders:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, sig)


def _remaining(leaders: Iterable[int], known: set[int]) -> set[int]:
    """What is still alive of ``leaders``' trees, including processes in ``known`` that were re-parented."""
    leaders = list(leaders)
    for pid in leaders:
        _reap(pid)
    table = _process_table()
    return _tree(leaders, table) | (known & set(table))


def _wait_gone(leaders: Iterable[int], known: set[int], deadline: float) -> bool:
    leaders = list(leaders)
    while _remaining(leaders, known):
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.2)
    return True


def down(timeout: float = 30) -> list[str]:
    """Stop every component ``up()`` started; return the names stopped. Safe to call when nothing runs.

    SIGTERM goes to every process group of each component's session (task runners have groups of their own)
    and to descendants that left it: first the scheduler, triggerer and dag-processor (running tasks still
    report to the api-server while they wind down), then the api-server and MLflow once the scheduler is gone.
    Task runners still alive at half of ``timeout`` get SIGKILL (Airflow tasks do not stop on SIGTERM; this
    way they are recorded as failed), and whatever is alive ``timeout`` seconds after the first signal gets
    SIGKILL. PID files are removed. The triggerer alone takes about 10 s to stop.
    """
    if not paths().run.is_dir():
        return []
    with _locked():
        return _down(timeout)


def _down(timeout: float) -> list[str]:
    names = _components()
    targets = {name: pid for name in names if (pid := _running_pid(name)) is not None}
    start = time.monotonic()
    deadline = start + timeout
    # Record every process now: once a parent dies its children are re-parented and untraceable.
    table = _process_table()
    trees = {name: _tree([pid], table) for name, pid in targets.items()}
    known = set().union(*trees.values())
    first = [name for name in targets if name in _STOP_FIRST or _is_worker(name)]
    later = [name for name in targets if name not in _STOP_FIRST]
    _signal_tree(set().union(*(trees[n] for n in first)), signal.SIGTERM)
    sched = targets.get("scheduler")
    if sched is not None and not _wait_gone([sched], trees["scheduler"], start + timeout / 2):
        # Airflow's task runners only call on_kill() on SIGTERM and go on running, and the scheduler waits for
        # them. Kill them (they have process groups of their own) while the api-server is still up, so their
        # supervisors can record them as failed instead of leaving them "running" in the metadata DB.
        runners = {pid for pid in _remaining([sched], trees["scheduler"]) if _pgid(pid) not in (sched, None)}
        _signal_tree(runners, signal.SIGKILL)
        _wait_gone([sched], trees["scheduler"], start + timeout * 3 / 4)
    later_pids = _remaining([targets[n] for n in later], set().union(*(trees[n] for n in later)))
    _signal_tree(later_pids, signal.SIGTERM)
    if not _wait_gone(targets.values(), known, deadline):
        _signal_tree(_remaining(targets.values(), known), signal.SIGKILL)
        _wait_gone(targets.values(), known, time.monotonic() + 10)
    for name in names:
        _pid_file(name).unlink(missing_ok=True)
    return [name for name in names if name in targets]


# ---------------------------------------------------------------------------------------------------------
# Credentials
# ---------------------------------------------------------------------------------------------------------


def read_credentials() -> dict[str, str]:
    """User -> password, from the file the api-server generates on its first start."""
    path = _passwords_file(os.environ)
    try:
        text = path.read_text().strip()
    except FileNotFoundError:
        raise FileNotFoundError(
            f"No passwords file at {path}: the api-server writes it on its first start (run up() first)"
        ) from None
    return dict(json.loads(text or "{}"))


def get_token(username: str, password: str, base_url: str | None = None) -> str:
    """A JWT for the Airflow REST API (``Authorization: Bearer <token>``) from ``POST /auth/token``."""
    base = (base_url or _base_url(_ports()[0])).rstrip("/")
    code, body = _http("POST", f"{base}/auth/token", {"username": username, "password": password})
    if code not in (200, 201):
        detail = body.decode(errors="replace")[:300]
        raise PermissionError(f"POST {base}/auth/token as {username!r} gave HTTP {code}: {detail}")
    return str(json.loads(body)["access_token"])

"""The runtime's processes: their commands, spawning, PID files, logs, and finding and signalling process trees.

Linux only: process ownership and process groups are read from ``/proc``.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterable, Mapping
from pathlib import Path

from airloop.core import settings
from airloop.core.settings import default_connections, paths
from airloop.ops.runtime.credentials import _open_private
from airloop.ops.runtime.environment import HOST

#: Components in start order. ``down()`` stops the workers first, then the servers they report to.
COMPONENTS: tuple[str, ...] = ("mlflow", "api-server", "dag-processor", "triggerer", "scheduler")
_AIRFLOW_COMPONENTS = ("api-server", "dag-processor", "triggerer", "scheduler")
_STOP_FIRST = ("scheduler", "triggerer", "dag-processor")
#: With CeleryExecutor, ``up()`` also starts ``AIRLOOP_CELERY_WORKERS`` workers (default 2) named like this.
WORKER_PREFIX = "worker-"
WORKERS_VAR = settings.CELERY_WORKERS.name
WORKER_CONCURRENCY_VAR = settings.CELERY_CONCURRENCY.name
#: Set in each worker's environment: its name, which task instances record as their hostname.
WORKER_NAME_VAR = settings.WORKER_NAME.name
#: ``[core] hostname_callable`` of the runtime's Celery workers: :func:`worker_hostname`.
HOSTNAME_CALLABLE = "airloop.ops.runtime.processes.worker_hostname"
_LOG_TAIL_LINES = 30
#: Processes this Python process started, kept so they can be reaped (no zombies, no ResourceWarning).
_children: dict[int, subprocess.Popen[bytes]] = {}


class PortInUseError(RuntimeError):
    """A port the runtime needs is taken by a program that is not ours."""


def _celery(env: Mapping[str, str]) -> bool:
    return "CeleryExecutor" in env.get("AIRFLOW__CORE__EXECUTOR", "")


def workers(env: Mapping[str, str] | None = None) -> tuple[str, ...]:
    """The Celery workers the runtime runs: none unless the executor is CeleryExecutor."""
    env = os.environ if env is None else env
    if not _celery(env):
        return ()
    return tuple(f"{WORKER_PREFIX}{i}" for i in range(1, settings.celery_workers(env) + 1))


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

    name = settings.worker_name()
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
        backend = (
            []
            if settings.mlflow_backend_store_uri(env)
            else ["--backend-store-uri", f"sqlite:///{store / 'mlflow.db'}"]
        )
        return [
            _bin("mlflow"),
            "server",
            *backend,
            "--artifacts-destination",
            settings.mlflow_artifacts_destination(env) or str(store / "artifacts"),
            "--host",
            HOST,
            "--port",
            str(mlflow_port),
            "--workers",
            "1",
            "--x-frame-options",
            "NONE",
        ]
    # The processes that fork task processes start with the task libraries imported, and the dag-processor
    # with airloop's parse-time modules (preload.py says why).
    preload = [sys.executable, "-m", "airloop.ops.runtime.preload"] if settings.preload_enabled(env) else []
    if _is_worker(name):
        concurrency = settings.celery_concurrency(env)
        return [
            *preload,
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
    forks = name == "dag-processor" or (name == "scheduler" and not _celery(env))  # parses, or tasks
    return [*(preload if forks else []), _bin("airflow"), *args]


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


def _tail(path: Path, lines: int = _LOG_TAIL_LINES) -> str:
    try:
        with path.open("rb") as fh:
            fh.seek(0, os.SEEK_END)
            fh.seek(max(0, fh.tell() - 64 * 1024))
            text = fh.read().decode(errors="replace")
    except FileNotFoundError:
        return "(no log yet)"
    return "\n".join(text.splitlines()[-lines:])


#: MLflow's server refuses to register a model version whose source does not match this (MLflow 3's setting).
SOURCE_VALIDATION_VAR = "MLFLOW_CREATE_MODEL_VERSION_SOURCE_VALIDATION_REGEX"


def _component_env(name: str, env: Mapping[str, str]) -> dict[str, str]:
    """The environment one component starts with: the runtime's, plus what only that component needs."""
    extra: dict[str, str] = {}
    if _is_worker(name):
        extra = {WORKER_NAME_VAR: name, "AIRFLOW__CORE__HOSTNAME_CALLABLE": HOSTNAME_CALLABLE}
    if name == "mlflow":
        from airloop.adapters.registry import SOURCE_REGEX

        backend = settings.mlflow_backend_store_uri(env)
        extra = {
            "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false",
            # Only sources of the form airloop's training registers (a logged model) can become a version;
            # loading checks the rest (adapters/registry.py, trusted_source).
            SOURCE_VALIDATION_VAR: SOURCE_REGEX,
            **({"MLFLOW_BACKEND_STORE_URI": backend} if backend else {}),
        }
    return {**env, **extra}


def _start(name: str, env: Mapping[str, str], api_port: int, mlflow_port: int) -> int:
    """Start one component in its own session; its output goes to its log, its PID to its PID file."""
    p = paths()
    cmd = _command(name, api_port, mlflow_port, env)
    env = _component_env(name, env)
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

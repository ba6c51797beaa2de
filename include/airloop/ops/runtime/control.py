"""Start and stop: ``up()`` starts what is missing and waits for health (restarting a hung component once);
``down()`` stops every process tree the runtime started."""

from __future__ import annotations

import contextlib
import fcntl
import signal
import time
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path

from airloop.core import settings
from airloop.core.settings import paths
from airloop.ops.runtime.credentials import _ensure_private_dir, _open_private, _passwords_file
from airloop.ops.runtime.environment import AIRFLOW_PORT_VAR, MLFLOW_PORT_VAR, _ports, airflow_env
from airloop.ops.runtime.health import _HEARTBEATING, RuntimeStatus, _dump_threads, status
from airloop.ops.runtime.processes import (
    _AIRFLOW_COMPONENTS,
    _STOP_FIRST,
    _alive,
    _bootstrap,
    _check_port,
    _command,
    _components,
    _is_worker,
    _log_file,
    _pgid,
    _pid_file,
    _process_table,
    _remaining,
    _running_pid,
    _signal_tree,
    _start,
    _tail,
    _tree,
    _wait_gone,
    workers,
)

_POLL_INTERVAL = 0.5


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
    env = airflow_env()
    p = paths()
    _ensure_private_dir(p.run)
    p.airflow_home.mkdir(parents=True, exist_ok=True)
    (p.mlflow / "artifacts").mkdir(parents=True, exist_ok=True)
    with _locked():
        started = _start_missing(env, deadline)
    return _wait_healthy(env, started, deadline, wait_timeout, hung_after)


def _start_missing(env: Mapping[str, str], deadline: float) -> dict[str, int]:
    """Start every component not running (ports checked first, the metadata DB migrated before Airflow's).

    Returns the PIDs started, by name. Called with the runtime's lock held.
    """
    api_port, mlflow_port = _ports(env)
    started: dict[str, int] = {}
    missing = [name for name in _components(env) if _running_pid(name) is None]
    if "api-server" in missing:
        _check_port(api_port, "the Airflow api-server", AIRFLOW_PORT_VAR)
    if "mlflow" in missing:
        _check_port(mlflow_port, "the MLflow server", MLFLOW_PORT_VAR)

    if "mlflow" in missing:  # independent of Airflow: it warms up while the metadata DB migrates
        _write_ahead_log_store(env)
        started["mlflow"] = _start("mlflow", env, api_port, mlflow_port)  # its own settings: _component_env
    airflow_missing = [name for name in (*_AIRFLOW_COMPONENTS, *workers(env)) if name in missing]
    if airflow_missing:
        # The forking components (tasks, or parses) import their libraries first (seconds for the task ones): they
        # do it while the metadata DB migrates, and wait for the gate before Airflow itself starts (preload.py).
        gate = paths().run / "preload.gate"
        gate.unlink(missing_ok=True)
        gated = {**env, settings.PRELOAD_GATE.name: str(gate)}
        for name in [n for n in airflow_missing if _preloading(n, env)]:
            started[name] = _start(name, gated, api_port, mlflow_port)
        try:
            _bootstrap(env, timeout=max(deadline - time.monotonic(), 1))
        except RuntimeError as err:
            _open_gate(gate, f"failed: {str(err).splitlines()[0]}")
            for name in [n for n in started if n != "mlflow"]:  # nothing of Airflow's ran yet: nothing to inspect
                _stop_gated(name, started.pop(name))
            raise _failure(str(err), [], started) from None
        _open_gate(gate, "ok")
        passwords = _passwords_file(env)
        if not passwords.exists():  # Airflow appends generated passwords: make the file private first
            passwords.parent.mkdir(parents=True, exist_ok=True)
            _open_private(passwords, "a").close()
        for name in [n for n in airflow_missing if n not in started]:
            started[name] = _start(name, env, api_port, mlflow_port)
    return started


def _write_ahead_log_store(env: Mapping[str, str]) -> None:
    """Put the MLflow server's embedded SQLite store in WAL mode before the server opens it (the mode stays with the
    file): every tracking call a task makes is a commit there, and in WAL mode a commit appends to one log instead
    of writing, syncing and deleting a journal (``registry.use_write_ahead_log``, which a local store gets too).
    A configured backend (``AIRLOOP_MLFLOW_BACKEND_STORE_URI``) is left as it is."""
    if settings.mlflow_backend_store_uri(env):
        return
    from airloop.adapters.registry import use_write_ahead_log

    use_write_ahead_log(str(paths().mlflow / "mlflow.db"))


def _preloading(name: str, env: Mapping[str, str]) -> bool:
    """Whether ``name`` starts through ``airloop.ops.runtime.preload`` (scheduler, dag-processor, Celery workers)."""
    return "airloop.ops.runtime.preload" in _command(name, *_ports(env), env)


def _stop_gated(name: str, pid: int) -> None:
    """Stop a component still waiting at the gate (it runs no Airflow code yet): SIGTERM, then SIGKILL."""
    _signal_tree([pid], signal.SIGTERM)
    if not _wait_gone([pid], {pid}, time.monotonic() + 10):
        _signal_tree(_remaining([pid], {pid}), signal.SIGKILL)
        _wait_gone([pid], {pid}, time.monotonic() + 5)
    _pid_file(name).unlink(missing_ok=True)


def _open_gate(gate: Path, verdict: str) -> None:
    """Tell the waiting preloaded components the metadata DB's fate (written whole: they read it at once)."""
    tmp = gate.with_suffix(".tmp")
    tmp.write_text(verdict + "\n")
    tmp.replace(gate)


def _wait_healthy(
    env: Mapping[str, str], started: dict[str, int], deadline: float, wait_timeout: float, hung_after: float
) -> RuntimeStatus:
    """Poll ``status()`` until all is healthy; fail on a component that exited or at the deadline.

    A heartbeating component silent for ``hung_after`` seconds while the api-server answers is restarted once.
    """
    api_port, mlflow_port = _ports(env)
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

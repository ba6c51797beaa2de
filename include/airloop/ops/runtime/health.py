"""What runs and what is healthy: the api-server's and MLflow's health answers, worker readiness, thread dumps."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import time
import urllib.error
import urllib.request
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

from airloop.ops.runtime.credentials import _passwords_file
from airloop.ops.runtime.environment import _base_url, _parse_users, _ports, _users_spec
from airloop.ops.runtime.processes import COMPONENTS, _components, _is_worker, _log_file, _running_pid, _tail

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
# No proxies for 127.0.0.1, whatever the environment says.
_opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))


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


def _dump_threads(current: RuntimeStatus, names: Iterable[str]) -> None:
    """Ask running Airflow components to print every thread's stack to their logs (Airflow's SIGQUIT handler)."""
    pids = [c.pid for n in names if n in _HEARTBEATING and (c := current.components[n]).running and c.pid]
    for pid in pids:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, signal.SIGQUIT)
    if pids:
        time.sleep(1)


def get_token(username: str, password: str, base_url: str | None = None) -> str:
    """A JWT for the Airflow REST API (``Authorization: Bearer <token>``) from ``POST /auth/token``."""
    base = (base_url or _base_url(_ports()[0])).rstrip("/")
    code, body = _http("POST", f"{base}/auth/token", {"username": username, "password": password})
    if code not in (200, 201):
        detail = body.decode(errors="replace")[:300]
        raise PermissionError(f"POST {base}/auth/token as {username!r} gave HTTP {code}: {detail}")
    return str(json.loads(body)["access_token"])

"""The environment of every Airflow process and CLI call of the embedded runtime: ports, users, Airflow settings."""

from __future__ import annotations

import os
from collections.abc import Mapping

from airloop.core import settings
from airloop.core.settings import Paths, paths
from airloop.ops.runtime.credentials import PASSWORDS_FILE, _jwt_secret

HOST = "127.0.0.1"
DEFAULT_AIRFLOW_PORT = int(settings.AIRFLOW_PORT.default)
DEFAULT_MLFLOW_PORT = int(settings.MLFLOW_PORT.default)
AIRFLOW_PORT_VAR = settings.AIRFLOW_PORT.name
MLFLOW_PORT_VAR = settings.MLFLOW_PORT.name
#: The MLflow server's backend store and artifact destination (default: SQLite and a folder under AIRLOOP_HOME),
#: e.g. ``postgresql+psycopg2://...`` and ``s3://bucket/mlflow`` (S3 settings from the usual AWS variables).
MLFLOW_BACKEND_VAR = settings.MLFLOW_BACKEND_STORE_URI.name
MLFLOW_ARTIFACTS_VAR = settings.MLFLOW_ARTIFACTS_DESTINATION.name
USERS_VAR = settings.USERS.name
#: ``user:role`` pairs for Airflow's SimpleAuthManager; roles are viewer, user, op, admin.
DEFAULT_USERS = settings.USERS.default
SIMPLE_AUTH_ROLES = ("viewer", "user", "op", "admin")


def _ports(env: Mapping[str, str] | None = None) -> tuple[int, int]:
    """(Airflow api-server port, MLflow port) from ``AIRLOOP_AIRFLOW_PORT`` and ``AIRLOOP_MLFLOW_PORT``."""
    env = os.environ if env is None else env
    return settings.port(settings.AIRFLOW_PORT, env), settings.port(settings.MLFLOW_PORT, env)


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
    return settings.users_spec(env), USERS_VAR


def _base_url(port: int) -> str:
    return f"http://{HOST}:{port}"


def _checked_users(env: Mapping[str, str]) -> str:
    """The runtime's users (``AIRLOOP_USERS`` or the default), checked: a malformed list fails naming its source."""
    users, users_source = _users_spec(env)
    _parse_users(users, users_source)
    return users


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
    users = _checked_users(env)
    api_url = _base_url(api_port)

    defaults = _airflow_defaults(p, users, api_url, api_port)
    for key, value in defaults.items():
        env.setdefault(key, value)
    if not env.get("AIRFLOW__API_AUTH__JWT_SECRET"):
        env["AIRFLOW__API_AUTH__JWT_SECRET"] = _jwt_secret(p.run)

    env.update(
        {
            "AIRFLOW_HOME": str(p.airflow_home),
            settings.HOME.name: str(p.home),
            settings.PROJECT_DIR.name: str(p.project),
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


def _airflow_defaults(p: Paths, users: str, api_url: str, api_port: int) -> dict[str, str]:
    """airloop's defaults for Airflow's settings in the embedded runtime (an exported ``AIRFLOW__*`` wins)."""
    return {
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
        # When a loop found nothing to do the scheduler sleeps this long (Airflow's default: 1 s). Each step of a
        # run (a task ending, the next one queued, a triggered run starting) waits for the next loop, so at 1 s a
        # chain of short tasks spent more time waiting than working: the demo's train, score and monitor runs
        # took 1.5 to 2 times as long. The price, measured on a 2-core machine: an idle scheduler uses 6 % of a
        # core instead of 2 %.
        "AIRFLOW__SCHEDULER__SCHEDULER_IDLE_SLEEP_TIME": "0.25",
        # A task's supervisor waits for events at most this long (Airflow's default: 5 s), and notices its task
        # process's exit only between waits: when the process closed its sockets a moment before it exited, the
        # worker slot stayed taken 5 s more. That happened to a quarter of the demo's task instances (35 of 146,
        # 191 of 236 worker-seconds). The price: a running task heartbeats every second, not every 5.
        "AIRFLOW__WORKERS__MIN_HEARTBEAT_INTERVAL": "1",
        "AIRFLOW__DAG_PROCESSOR__REFRESH_INTERVAL": "20",
        # Each DAG file is parsed again this often (Airflow's default: 30 s). Six files of about a second each
        # every 30 s took a fifth of a core from the tasks on a 2-core machine; a changed spec or DAG file now
        # shows in the UI within two minutes (`airflow dags reserialize` at once).
        "AIRFLOW__DAG_PROCESSOR__MIN_FILE_PROCESS_INTERVAL": "120",
        "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS": users,
        "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE": str(p.airflow_home / PASSWORDS_FILE),
    }

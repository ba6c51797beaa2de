"""The embedded runtime: Airflow's components and an MLflow server on 127.0.0.1, started and stopped by PID.

``up()`` migrates the metadata database, registers airloop's connections (only where absent) and starts
``api-server``, ``scheduler``, ``dag-processor``, ``triggerer`` and ``mlflow`` as separate processes, each in
its own session, with its log in ``paths().run/<name>.log`` and its PID in ``paths().run/<name>.pid``.
``down()`` stops each process group: SIGTERM, then SIGKILL after a timeout. ``status()`` says what runs and
what is healthy. Every Airflow process and CLI call gets the same environment from ``airflow_env()``.

The sections are modules: :mod:`.environment` (the Airflow environment, ports, users), :mod:`.processes`
(commands, spawning, PID files, process trees), :mod:`.health` (health checks, ``status()``), :mod:`.control`
(``up()``, ``down()``, the hung-component restart) and :mod:`.credentials` (generated passwords, JWT secret).
The package imports nothing heavy (no Airflow, no MLflow): the CLI calls it before deciding what to load.
Linux only: process ownership and process groups are read from ``/proc``.
"""

from __future__ import annotations

from airloop.ops.runtime.control import down, up
from airloop.ops.runtime.credentials import (
    JWT_SECRET_FILE,
    MIN_JWT_SECRET_BYTES,
    PASSWORDS_FILE,
    read_credentials,
)
from airloop.ops.runtime.environment import (
    AIRFLOW_PORT_VAR,
    DEFAULT_AIRFLOW_PORT,
    DEFAULT_MLFLOW_PORT,
    DEFAULT_USERS,
    HOST,
    MLFLOW_ARTIFACTS_VAR,
    MLFLOW_BACKEND_VAR,
    MLFLOW_PORT_VAR,
    SIMPLE_AUTH_ROLES,
    USERS_VAR,
    airflow_env,
)
from airloop.ops.runtime.health import ComponentStatus, RuntimeStatus, get_token, status
from airloop.ops.runtime.processes import (
    COMPONENTS,
    HOSTNAME_CALLABLE,
    WORKER_CONCURRENCY_VAR,
    WORKER_NAME_VAR,
    WORKER_PREFIX,
    WORKERS_VAR,
    PortInUseError,
    worker_hostname,
    workers,
)

__all__ = [
    "AIRFLOW_PORT_VAR",
    "COMPONENTS",
    "DEFAULT_AIRFLOW_PORT",
    "DEFAULT_MLFLOW_PORT",
    "DEFAULT_USERS",
    "HOST",
    "HOSTNAME_CALLABLE",
    "JWT_SECRET_FILE",
    "MIN_JWT_SECRET_BYTES",
    "MLFLOW_ARTIFACTS_VAR",
    "MLFLOW_BACKEND_VAR",
    "MLFLOW_PORT_VAR",
    "PASSWORDS_FILE",
    "SIMPLE_AUTH_ROLES",
    "USERS_VAR",
    "WORKERS_VAR",
    "WORKER_CONCURRENCY_VAR",
    "WORKER_NAME_VAR",
    "WORKER_PREFIX",
    "ComponentStatus",
    "PortInUseError",
    "RuntimeStatus",
    "airflow_env",
    "down",
    "get_token",
    "read_credentials",
    "status",
    "up",
    "worker_hostname",
    "workers",
]

"""airloop's settings: every ``AIRLOOP_*`` environment variable, read here and nowhere else.

:data:`SETTINGS` is the table: each :class:`Setting` has its name, its default and a one-line meaning; the
typed accessors below read them. ``docs/settings.md`` is generated from the table (``python -m
airloop.core.settings > docs/settings.md``) and a unit test keeps the two equal. Variables of other tools that
airloop reads (``MLFLOW_*``, ``AIRFLOW__*``, ``AWS_*``) are listed too, and may be read where they are used.

Nothing here touches the disk or the environment at import time; every value is read when asked for,
so tests and workers can point ``AIRLOOP_HOME`` elsewhere before calling in. Accessors that the embedded
runtime calls with the environment of a process it starts take that mapping as ``env`` (default: this
process's environment).
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import airloop

#: Airflow connection ids for the two databases airloop talks to. On-call changes them in the UI or
#: with ``AIRFLOW_CONN_<ID>`` environment variables; no code changes.
SOURCE_CONN_ID = "airloop_source"
WAREHOUSE_CONN_ID = "airloop_warehouse"


@dataclass(frozen=True)
class Setting:
    """One environment variable airloop reads: its name, its default (``""``: unset) and what it means."""

    name: str
    default: str
    meaning: str
    #: The tool the variable belongs to; ``airloop`` for airloop's own (read only in this module).
    owner: str = "airloop"

    def raw(self, env: Mapping[str, str] | None = None) -> str:
        """The value in ``env`` (default: this process's environment) without surrounding blanks; "" if unset."""
        return ((os.environ if env is None else env).get(self.name) or "").strip()

    def value(self, env: Mapping[str, str] | None = None) -> str:
        """The value, or the default when the variable is unset or blank."""
        return self.raw(env) or self.default

    def is_set(self, env: Mapping[str, str] | None = None) -> bool:
        """Whether the variable has a value (not blank)."""
        return bool(self.raw(env))


SETTINGS: dict[str, Setting] = {}


def _setting(name: str, default: str, meaning: str, owner: str = "airloop") -> Setting:
    setting = Setting(name, default, meaning, owner)
    SETTINGS[name] = setting
    return setting


# --- where things live --------------------------------------------------------------------------------------
HOME = _setting("AIRLOOP_HOME", ".airloop", "Folder of every file airloop writes (relative: to the working directory).")
PROJECT_DIR = _setting(
    "AIRLOOP_PROJECT_DIR", "", "The project checkout holding expectations/ and include/models/ (unset: found)."
)
MODELS_DIR = _setting("AIRLOOP_MODELS_DIR", "", "Folder of the model specs (unset: include/models in the project).")
EXPECTATIONS_DIR = _setting(
    "AIRLOOP_EXPECTATIONS_DIR", "", "Folder of the expectation suites (unset: expectations/ in the project)."
)
LAKE_URL = _setting(
    "AIRLOOP_LAKE_URL", "", "The lake's root as a URL, e.g. s3://bucket/lake (unset: $AIRLOOP_HOME/lake on disk)."
)
LAKE_STORAGE_OPTIONS = _setting(
    "AIRLOOP_LAKE_STORAGE_OPTIONS",
    "",
    'Extra fsspec options of the lake\'s filesystem, a JSON object: {"anon": false}.',
)
# --- MLflow -------------------------------------------------------------------------------------------------
MLFLOW_ARTIFACT_ROOT = _setting(
    "AIRLOOP_MLFLOW_ARTIFACT_ROOT", "", "Artifact root of new experiments, <root>/<model> (unset: the store chooses)."
)
MLFLOW_UI_URL = _setting(
    "AIRLOOP_MLFLOW_UI_URL", "", "The MLflow address people open, for links (unset: the tracking server's)."
)
GIT_COMMIT = _setting(
    "AIRLOOP_GIT_COMMIT", "", "The commit recorded on training runs, for images without .git (unset: git rev-parse)."
)
# --- failure alerts -----------------------------------------------------------------------------------------
ALERTS_CONN_ID = _setting(
    "AIRLOOP_ALERTS_CONN_ID", "", "Airflow connection of failure alerts, type smtp or http (unset: alerts off)."
)
ALERTS_TO = _setting("AIRLOOP_ALERTS_TO", "", "Comma-separated e-mail recipients of alerts (needed for smtp).")
ALERTS_ENDPOINT = _setting("AIRLOOP_ALERTS_ENDPOINT", "", "Path appended to the webhook connection's URL (optional).")
NOTIFY = _setting(
    "AIRLOOP_NOTIFY",
    "none",
    "Event notifications sent through the alert channel: all, none, or a comma list of retrain, promotion, "
    "approval, quarantine, freshness.",
)
FRESHNESS_AFTER = _setting(
    "AIRLOOP_FRESHNESS_AFTER",
    "3",
    "Freshness breach when this many expected intervals (of the spec's schedule) have ended unvalidated.",
)
# --- metrics -----------------------------------------------------------------------------------------------
METRICS_TOKEN = _setting(
    "AIRLOOP_METRICS_TOKEN", "", "Bearer token Prometheus scrapes /airloop/metrics with (unset: the route is off)."
)
# --- the embedded runtime (airloop up) ----------------------------------------------------------------------
AIRFLOW_PORT = _setting("AIRLOOP_AIRFLOW_PORT", "8080", "Port of the embedded Airflow api-server on 127.0.0.1.")
MLFLOW_PORT = _setting("AIRLOOP_MLFLOW_PORT", "5000", "Port of the embedded MLflow server on 127.0.0.1.")
MLFLOW_BACKEND_STORE_URI = _setting(
    "AIRLOOP_MLFLOW_BACKEND_STORE_URI", "", "Backend store of the embedded MLflow server (unset: SQLite in the home)."
)
MLFLOW_ARTIFACTS_DESTINATION = _setting(
    "AIRLOOP_MLFLOW_ARTIFACTS_DESTINATION",
    "",
    "Artifact destination of the embedded MLflow server, e.g. s3://bucket/mlflow (unset: a folder in the home).",
)
USERS = _setting(
    "AIRLOOP_USERS",
    "admin:admin,operator:op,steward:viewer",
    "user:role pairs of Airflow's SimpleAuthManager; roles are viewer, user, op, admin.",
)
CELERY_WORKERS = _setting("AIRLOOP_CELERY_WORKERS", "2", "Celery workers the runtime starts with CeleryExecutor.")
CELERY_CONCURRENCY = _setting("AIRLOOP_CELERY_CONCURRENCY", "2", "Task slots of each of those Celery workers.")
PRELOAD = _setting(
    "AIRLOOP_PRELOAD",
    "1",
    "1: the processes that fork task processes (the scheduler under the LocalExecutor, Celery workers) import the "
    "task libraries (GX, MLflow, scikit-learn, Evidently) once at start, so no task pays their import, and the "
    "dag-processor airloop's parse-time modules and specs; 0: off.",
)
WORKER_NAME = _setting(
    "AIRLOOP_WORKER_NAME", "", "Set by the runtime in each Celery worker: its name, part of the task's hostname."
)
PRELOAD_GATE = _setting(
    "AIRLOOP_PRELOAD_GATE",
    "",
    "Set by the runtime in a preloading component started while the metadata DB migrates: the file saying when "
    "Airflow may start (ok) or why not.",
)
# --- other tools' variables airloop reads -------------------------------------------------------------------
MLFLOW_TRACKING_URI = _setting(
    "MLFLOW_TRACKING_URI", "", "Tracking and registry store (unset: SQLite under $AIRLOOP_HOME/mlflow).", "MLflow"
)
_setting(
    "MLFLOW_ALLOW_PICKLE_DESERIALIZATION",
    "",
    "Set to true while airloop loads a version its own training registered (checked first).",
    "MLflow",
)
_setting(
    "MLFLOW_CREATE_MODEL_VERSION_SOURCE_VALIDATION_REGEX",
    "",
    "Set on the embedded MLflow server: only logged models (models:/m-<id>) can become versions.",
    "MLflow",
)
_setting(
    "MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT",
    "",
    "Set to true by airloop: MLflow would print the tracking URI, password included, after each run.",
    "MLflow",
)
_setting(
    "AIRFLOW__CORE__EXECUTOR", "LocalExecutor", "The runtime starts Celery workers when it names Celery.", "Airflow"
)
_setting("AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS", "", "Wins over AIRLOOP_USERS when set.", "Airflow")
_setting(
    "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE",
    "",
    "Where the api-server writes generated passwords (unset: in $AIRLOOP_HOME/airflow).",
    "Airflow",
)
_setting(
    "AIRFLOW__API_AUTH__JWT_SECRET", "", "Token signing secret (unset: generated once in $AIRLOOP_HOME/run).", "Airflow"
)
_setting(
    "AIRFLOW__OPENLINEAGE__TRANSPORT",
    "",
    'Turns OpenLineage events on: the transport as JSON, e.g. {"type": "http", "url": "..."} (docs/lineage.md).',
    "Airflow",
)
_setting("AIRFLOW_CTX_DAG_ID", "", "Set inside a running task: the connection fallback is logged there.", "Airflow")
_setting("AWS_ENDPOINT_URL_S3", "", "The S3 endpoint, named in the lake's errors (with AWS_ENDPOINT_URL).", "AWS")
_setting("AWS_ENDPOINT_URL", "", "The object store's endpoint, named in the lake's errors.", "AWS")
_setting("AWS_ACCESS_KEY_ID", "", "The lake's key id; its errors say whether it is set (never its value).", "AWS")


# --- paths --------------------------------------------------------------------------------------------------


def project_dir() -> Path:
    """The project checkout: the folder holding ``expectations/`` and ``include/models/``.

    ``AIRLOOP_PROJECT_DIR`` wins; otherwise the package's own checkout (``include/airloop`` two levels up),
    which is right for the editable install that ``make`` sets up; otherwise the working directory.
    """
    explicit = PROJECT_DIR.raw()
    if explicit:
        return Path(explicit).resolve()
    checkout = Path(airloop.__file__).resolve().parents[2]
    if (checkout / "include" / "models").is_dir():
        return checkout
    return Path.cwd()


@dataclass(frozen=True)
class Paths:
    """Every location airloop reads or writes, derived from ``AIRLOOP_HOME`` and the project folder."""

    home: Path
    project: Path

    @property
    def airflow_home(self) -> Path:
        return self.home / "airflow"

    @property
    def lake(self) -> Path:
        return self.home / "lake"

    @property
    def reports(self) -> Path:
        return self.home / "reports"

    @property
    def run(self) -> Path:
        """PID files and server logs of ``airloop up``."""
        return self.home / "run"

    @property
    def mlflow(self) -> Path:
        return self.home / "mlflow"

    @property
    def source_db(self) -> Path:
        return self.home / "source.db"

    @property
    def warehouse_db(self) -> Path:
        return self.home / "warehouse.db"

    @property
    def models_dir(self) -> Path:
        return Path(MODELS_DIR.raw() or self.project / "include" / "models")

    @property
    def expectations_dir(self) -> Path:
        return Path(EXPECTATIONS_DIR.raw() or self.project / "expectations")

    @property
    def data_dir(self) -> Path:
        """The vendored data sets: one folder each, with a ``dataset.yaml`` that ``airloop seed`` loads."""
        return self.project / "include" / "data"


def paths() -> Paths:
    """The paths in force now (``AIRLOOP_HOME`` defaults to ``./.airloop`` under the working directory)."""
    return Paths(home=Path(HOME.value()).resolve(), project=project_dir())


# --- the lake -----------------------------------------------------------------------------------------------

#: The two lake variables' names (kept for callers that name them in messages).
LAKE_URL_ENV = LAKE_URL.name
LAKE_STORAGE_OPTIONS_ENV = LAKE_STORAGE_OPTIONS.name


def lake_url() -> str:
    """The lake's root: ``AIRLOOP_LAKE_URL``, else the embedded default ``$AIRLOOP_HOME/lake`` (a local path)."""
    return LAKE_URL.raw() or str(paths().lake)


def lake_storage_options() -> dict[str, Any]:
    """``AIRLOOP_LAKE_STORAGE_OPTIONS`` parsed (a JSON object), or no options when unset."""
    raw = LAKE_STORAGE_OPTIONS.raw()
    if not raw:
        return {}
    try:
        options = json.loads(raw)
    except ValueError as exc:
        raise ValueError(
            f"{LAKE_STORAGE_OPTIONS_ENV} is not valid JSON ({exc}); give a JSON object or unset it."
        ) from None
    if not isinstance(options, dict):
        raise ValueError(f'{LAKE_STORAGE_OPTIONS_ENV} must be a JSON object, e.g. {{"anon": false}}; got {raw[:80]!r}.')
    return options


# --- MLflow -------------------------------------------------------------------------------------------------


def mlflow_tracking_uri() -> str:
    """``MLFLOW_TRACKING_URI``, else the embedded default: a SQLite store under ``$AIRLOOP_HOME/mlflow``."""
    return MLFLOW_TRACKING_URI.raw() or f"sqlite:///{paths().mlflow / 'mlflow.db'}"


def mlflow_tracking_uri_set() -> bool:
    """Whether ``MLFLOW_TRACKING_URI`` names a store (else the embedded default is used)."""
    return MLFLOW_TRACKING_URI.is_set()


def mlflow_artifact_root() -> str | None:
    """``AIRLOOP_MLFLOW_ARTIFACT_ROOT`` without a trailing slash, or None when unset."""
    return MLFLOW_ARTIFACT_ROOT.raw().rstrip("/") or None


def mlflow_ui_url() -> str | None:
    """``AIRLOOP_MLFLOW_UI_URL`` without a trailing slash, or None when unset."""
    return MLFLOW_UI_URL.raw().rstrip("/") or None


def git_commit_override() -> str | None:
    """``AIRLOOP_GIT_COMMIT``, or None when unset (then the checkout's commit is asked for)."""
    return GIT_COMMIT.raw() or None


# --- failure alerts -----------------------------------------------------------------------------------------


def alerts_conn_id() -> str:
    """``AIRLOOP_ALERTS_CONN_ID``; "" means alerts are off."""
    return ALERTS_CONN_ID.raw()


def alerts_to() -> str:
    """``AIRLOOP_ALERTS_TO`` as given (comma-separated addresses), "" when unset."""
    return ALERTS_TO.raw()


def alerts_endpoint() -> str | None:
    """``AIRLOOP_ALERTS_ENDPOINT``, or None when unset."""
    return ALERTS_ENDPOINT.raw() or None


#: The kinds of event notification (``AIRLOOP_NOTIFY``); failures alert on their own (``FailureAlert``).
NOTIFY_KINDS = ("retrain", "promotion", "approval", "quarantine", "freshness")


def notify_kinds(env: Mapping[str, str] | None = None) -> frozenset[str]:
    """The event kinds ``AIRLOOP_NOTIFY`` turns on: ``all``, ``none`` (the default) or a comma list of kinds.

    A ValueError names the variable, the unknown kinds and the known ones.
    """
    raw = NOTIFY.value(env).lower()
    words = {w.strip() for w in raw.replace(";", ",").split(",") if w.strip()}
    if words == {"all"}:
        return frozenset(NOTIFY_KINDS)
    if words <= {"none"}:
        return frozenset()
    unknown = sorted(words - set(NOTIFY_KINDS) - {"all", "none"})
    if unknown or {"all", "none"} & words:
        bad = f"unknown: {', '.join(unknown)}" if unknown else "all/none mixed with kinds"
        raise ValueError(
            f"{NOTIFY.name}={NOTIFY.raw(env)!r} is not valid ({bad}): give all, none, or a comma-separated list of "
            f"{', '.join(NOTIFY_KINDS)}."
        )
    return frozenset(words)


def freshness_after(env: Mapping[str, str] | None = None) -> int:
    """``AIRLOOP_FRESHNESS_AFTER``: how many expected intervals may end unvalidated before freshness is breached."""
    raw = FRESHNESS_AFTER.value(env)
    try:
        number = int(raw)
    except ValueError:
        number = 0
    if number < 1:
        raise ValueError(
            f"{FRESHNESS_AFTER.name}={raw!r} is not valid: give a whole number of intervals, 1 or more "
            f"(default {FRESHNESS_AFTER.default})."
        )
    return number


def metrics_token() -> str:
    """``AIRLOOP_METRICS_TOKEN``, "" when unset (then ``/airloop/metrics`` is off)."""
    return METRICS_TOKEN.raw()


# --- the embedded runtime -----------------------------------------------------------------------------------


def port(setting: Setting, env: Mapping[str, str] | None = None) -> int:
    """A port setting as a number (its default when unset); a ValueError names the variable otherwise."""
    raw = setting.value(env)
    try:
        number = int(raw)
    except ValueError:
        raise ValueError(f"{setting.name}={raw!r} is not a port number") from None
    if not 0 < number < 65536:
        raise ValueError(f"{setting.name}={number} is out of range (1-65535)")
    return number


def celery_workers(env: Mapping[str, str] | None = None) -> int:
    """How many Celery workers the runtime starts (``AIRLOOP_CELERY_WORKERS``, default 2, at least 1)."""
    raw = CELERY_WORKERS.value(env)
    if not raw.isdigit() or int(raw) < 1:
        raise ValueError(f"{CELERY_WORKERS.name}={raw!r}: expected a whole number of Celery workers, 1 or more")
    return int(raw)


def celery_concurrency(env: Mapping[str, str] | None = None) -> str:
    """Each Celery worker's ``--concurrency`` (``AIRLOOP_CELERY_CONCURRENCY``, default 2), as given."""
    return CELERY_CONCURRENCY.value(env)


def preload_enabled(env: Mapping[str, str] | None = None) -> bool:
    """Whether the runtime starts its task-forking processes with the task libraries imported (``AIRLOOP_PRELOAD``)."""
    raw = PRELOAD.value(env).strip().lower()
    if raw not in ("0", "1", "true", "false"):
        raise ValueError(f"{PRELOAD.name}={raw!r}: expected 1 (preload, the default) or 0 (off)")
    return raw in ("1", "true")


def preload_gate() -> Path | None:
    """The gate file a preloading component waits for before Airflow starts (``AIRLOOP_PRELOAD_GATE``), if any."""
    raw = PRELOAD_GATE.raw()
    return Path(raw) if raw else None


def worker_name() -> str | None:
    """The name the runtime gave this Celery worker process (``AIRLOOP_WORKER_NAME``), None elsewhere."""
    return WORKER_NAME.raw() or None


def mlflow_backend_store_uri(env: Mapping[str, str] | None = None) -> str | None:
    """The embedded MLflow server's backend store, or None for the default SQLite store."""
    return MLFLOW_BACKEND_STORE_URI.raw(env) or None


def mlflow_artifacts_destination(env: Mapping[str, str] | None = None) -> str | None:
    """The embedded MLflow server's artifact destination, or None for the default folder."""
    return MLFLOW_ARTIFACTS_DESTINATION.raw(env) or None


def users_spec(env: Mapping[str, str] | None = None) -> str:
    """``AIRLOOP_USERS``, or its default (admin, operator, steward)."""
    return USERS.value(env)


def default_connections() -> dict[str, str]:
    """The embedded defaults of airloop's connections, as Airflow JSON connection strings.

    Set as ``AIRFLOW_CONN_<ID>`` for the embedded runtime and tests; a deployment sets its own.
    """
    p = paths()
    dbs = {SOURCE_CONN_ID: p.source_db, WAREHOUSE_CONN_ID: p.warehouse_db}
    return {conn_id: json.dumps({"conn_type": "sqlite", "host": str(db)}) for conn_id, db in dbs.items()}


# --- the reference ------------------------------------------------------------------------------------------


def settings_markdown() -> str:
    """``docs/settings.md``: the table above as Markdown (airloop's own variables, then the other tools')."""
    lines = [
        "# Settings",
        "",
        "Every environment variable airloop reads. Generated from `include/airloop/core/settings.py`",
        "(`python -m airloop.core.settings > docs/settings.md`); a unit test keeps the two equal.",
        "",
    ]
    for title, own in (("airloop's own", True), ("Other tools' variables that airloop reads", False)):
        lines += [f"## {title}", "", "| variable | default | meaning |", "| --- | --- | --- |"]
        for s in SETTINGS.values():
            if (s.owner == "airloop") == own:
                default = f"`{s.default}`" if s.default else "(unset)"
                owner = "" if own else f" ({s.owner})"
                meaning = s.meaning.replace("|", r"\|")
                lines.append(f"| `{s.name}`{owner} | {default} | {meaning} |")
        lines.append("")
    return "\n".join(lines)


if __name__ == "__main__":
    print(settings_markdown(), end="")

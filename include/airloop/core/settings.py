"""Where airloop keeps things: one environment switch (``AIRLOOP_HOME``) and paths derived from it.

The lake may live elsewhere: ``AIRLOOP_LAKE_URL`` (object storage, e.g. ``s3://airloop-lake/lake``) and
``AIRLOOP_LAKE_STORAGE_OPTIONS``; see :mod:`airloop.adapters.lake`.

Nothing here touches the disk or the environment at import time; every value is read when asked for,
so tests and workers can point ``AIRLOOP_HOME`` elsewhere before calling in.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import airloop

#: Airflow connection ids for the two databases airloop talks to. On-call changes them in the UI or
#: with ``AIRFLOW_CONN_<ID>`` environment variables; no code changes.
SOURCE_CONN_ID = "airloop_source"
WAREHOUSE_CONN_ID = "airloop_warehouse"


def project_dir() -> Path:
    """The project checkout: the folder holding ``expectations/`` and ``include/models/``.

    ``AIRLOOP_PROJECT_DIR`` wins; otherwise the package's own checkout (``include/airloop`` two levels up),
    which is right for the editable install that ``make`` sets up; otherwise the working directory.
    """
    explicit = os.environ.get("AIRLOOP_PROJECT_DIR")
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
        return Path(os.environ.get("AIRLOOP_MODELS_DIR") or self.project / "include" / "models")

    @property
    def expectations_dir(self) -> Path:
        return Path(os.environ.get("AIRLOOP_EXPECTATIONS_DIR") or self.project / "expectations")

    @property
    def demo_data_dir(self) -> Path:
        return self.project / "include" / "data" / "bike_sharing"


def paths() -> Paths:
    """The paths in force now (``AIRLOOP_HOME`` defaults to ``./.airloop`` under the working directory)."""
    home = Path(os.environ.get("AIRLOOP_HOME") or ".airloop").resolve()
    return Paths(home=home, project=project_dir())


#: The lake's root as a URL (``s3://bucket/prefix``, ``file:///path``); unset: ``$AIRLOOP_HOME/lake``.
LAKE_URL_ENV = "AIRLOOP_LAKE_URL"
#: Extra fsspec options for the lake's filesystem, as a JSON object (optional).
LAKE_STORAGE_OPTIONS_ENV = "AIRLOOP_LAKE_STORAGE_OPTIONS"


def mlflow_tracking_uri() -> str:
    """``MLFLOW_TRACKING_URI``, else the embedded default: a SQLite store under ``$AIRLOOP_HOME/mlflow``."""
    return os.environ.get("MLFLOW_TRACKING_URI") or f"sqlite:///{paths().mlflow / 'mlflow.db'}"


def lake_url() -> str:
    """The lake's root: ``AIRLOOP_LAKE_URL``, else the embedded default ``$AIRLOOP_HOME/lake`` (a local path)."""
    return os.environ.get(LAKE_URL_ENV, "").strip() or str(paths().lake)


def lake_storage_options() -> dict[str, Any]:
    """``AIRLOOP_LAKE_STORAGE_OPTIONS`` parsed (a JSON object), or no options when unset."""
    raw = os.environ.get(LAKE_STORAGE_OPTIONS_ENV, "").strip()
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


def default_connections() -> dict[str, str]:
    """The embedded defaults of airloop's connections, as Airflow JSON connection strings.

    Set as ``AIRFLOW_CONN_<ID>`` for the embedded runtime and tests; a deployment sets its own.
    """
    p = paths()
    dbs = {SOURCE_CONN_ID: p.source_db, WAREHOUSE_CONN_ID: p.warehouse_db}
    return {conn_id: json.dumps({"conn_type": "sqlite", "host": str(db)}) for conn_id, db in dbs.items()}

"""Shared helpers of the end-to-end tests."""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import time
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest


def free_port() -> int:
    """A port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_for(what: str, check: Callable[[], Any], timeout: float = 120, every: float = 1) -> Any:
    """Poll ``check`` until it returns something truthy (returned), or fail the test naming ``what``."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        result = check()
        if result:
            return result
        time.sleep(every)
    pytest.fail(f"timed out after {timeout:.0f} s waiting for {what}")


def _healthy(url: str) -> bool:
    try:
        with urllib.request.urlopen(f"{url}/health", timeout=2) as answer:
            return bool(answer.status == 200)
    except OSError:
        return False


@contextlib.contextmanager
def mlflow_server(folder: Path) -> Iterator[str]:
    """An MLflow server started with the command and environment ``airloop up`` gives it, its store in ``folder``.

    Yields its URL (no credentials); stops it on exit.
    """
    from airloop.ops.runtime import processes

    port = free_port()
    env = {
        **os.environ,
        "AIRLOOP_MLFLOW_BACKEND_STORE_URI": f"sqlite:///{folder / 'mlflow.db'}",
        "AIRLOOP_MLFLOW_ARTIFACTS_DESTINATION": str(folder / "artifacts"),
    }
    env.pop(processes.SOURCE_VALIDATION_VAR, None)
    env.pop("MLFLOW_TRACKING_URI", None)
    cmd = processes._command("mlflow", 0, port, env)
    log_path = folder / "mlflow-server.log"
    with log_path.open("wb") as log:
        proc = subprocess.Popen(cmd, env=processes._component_env("mlflow", env), stdout=log, stderr=log)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_for("the MLflow server", lambda: _healthy(url) or proc.poll() is not None, timeout=90)
        assert proc.poll() is None, log_path.read_text()[-2000:]
        yield url
    finally:
        proc.terminate()
        proc.wait(timeout=30)


@contextlib.contextmanager
def backfill_runtime(tmp_path_factory: Any, label: str) -> Iterator[tuple[httpx.Client, str, Path]]:
    """The runtime on free ports in its own AIRLOOP_HOME, with a bikes spec that does not catch up (so only a
    backfill creates runs); yields an operator's API client, the Airflow URL and the home folder."""
    import yaml

    from airloop.ops import runtime
    from tests.conftest import ROOT

    mp = pytest.MonkeyPatch()
    home = tmp_path_factory.mktemp(label)
    models = tmp_path_factory.mktemp("models")
    raw = yaml.safe_load((ROOT / "include" / "models" / "bikes.yaml").read_text())
    raw["schedule"].update(catchup=False, end="2011-06-11")
    raw.pop("labels", None)  # labels with the rows: bikes' own label table is filled by the demo only
    (models / "bikes.yaml").write_text(yaml.safe_dump(raw))
    mp.setenv("AIRLOOP_HOME", str(home))
    mp.setenv("AIRLOOP_MODELS_DIR", str(models))
    mp.setenv("AIRLOOP_AIRFLOW_PORT", str(free_port()))
    mp.setenv("AIRLOOP_MLFLOW_PORT", str(free_port()))
    for var in ("AIRFLOW_HOME", "AIRFLOW__CORE__DAGS_FOLDER", "AIRFLOW__CORE__PLUGINS_FOLDER"):
        mp.delenv(var, raising=False)
    try:
        base = runtime.up().to_dict()["urls"]["airflow"]
        token = runtime.get_token("operator", runtime.read_credentials()["operator"])
        yield httpx.Client(base_url=base, headers={"Authorization": f"Bearer {token}"}, timeout=30), base, home
    finally:
        runtime.down()
        mp.undo()

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

"""Create or update MLflow's service user for Airflow (the `mlflow-init` service; idempotent).

Logs in to the tracking server as its admin (MLFLOW_ADMIN_USERNAME / MLFLOW_ADMIN_PASSWORD) through the
basic-auth app's REST API and makes sure MLFLOW_SERVICE_USERNAME exists with MLFLOW_SERVICE_PASSWORD: created
when missing, its password set otherwise, so rotating it is editing .env and `docker compose up -d`.
The service user is not an admin (MLFLOW_SERVICE_IS_ADMIN=false, the default): it manages the experiments and
models it creates and reads the rest. MLflow's basic-auth app authorizes a proxied artifact upload through
the experiment id that starts its path (``mlflow-artifacts:/<experiment id>/...``, the server's default
artifact location); an experiment created with another location (``mlflow-artifacts:/<name>``) can only be
written by an admin. Standard library only: it runs in the MLflow image as well as in the airloop image.
"""

from __future__ import annotations

import base64
import json
import os
import sys
import time
import urllib.error
import urllib.parse
import urllib.request


class AuthProblem(RuntimeError):
    """The server refused or did not answer; the message says what to do."""


def _call(base: str, method: str, path: str, auth: tuple[str, str], body: dict | None = None) -> tuple[int, dict]:
    token = base64.b64encode(f"{auth[0]}:{auth[1]}".encode()).decode()
    request = urllib.request.Request(
        f"{base.rstrip('/')}{path}",
        method=method,
        data=None if body is None else json.dumps(body).encode(),
        headers={"Authorization": f"Basic {token}", "Content-Type": "application/json"},
    )
    try:
        with urllib.request.urlopen(request, timeout=15) as response:
            raw = response.read()
            return response.status, json.loads(raw) if raw else {}
    except urllib.error.HTTPError as exc:
        raw = exc.read()
        try:
            payload = json.loads(raw) if raw else {}
        except ValueError:
            payload = {"message": raw.decode(errors="replace")[:300]}
        return exc.code, payload


def wait_healthy(base: str, seconds: float) -> None:
    deadline = time.monotonic() + seconds
    while True:
        try:
            with urllib.request.urlopen(f"{base.rstrip('/')}/health", timeout=5) as response:
                if response.status == 200:
                    return
        except (urllib.error.URLError, OSError):
            pass
        if time.monotonic() > deadline:
            raise AuthProblem(f"MLflow at {base} did not answer /health within {seconds:.0f} s")
        time.sleep(1)


def ensure_user(base: str, admin: tuple[str, str], username: str, password: str, is_admin: bool = False) -> str:
    """Make ``username`` exist with ``password`` (and admin or not); return "created" or "updated"."""
    query = urllib.parse.urlencode({"username": username})
    status, payload = _call(base, "GET", f"/api/2.0/mlflow/users/get?{query}", admin)
    if status == 401:
        raise AuthProblem(
            f"MLflow refused the admin login {admin[0]!r} (401). MLflow keeps the admin password it was first "
            "started with: set MLFLOW_ADMIN_PASSWORD in .env to the current one (or change it through the "
            "update-password API first)."
        )
    if status == 403:
        raise AuthProblem(f"user {admin[0]!r} is not an MLflow admin (403)")
    if status == 200:
        status, payload = _call(
            base, "PATCH", "/api/2.0/mlflow/users/update-password", admin, {"username": username, "password": password}
        )
        action = "updated"
    elif status == 404 or payload.get("error_code") == "RESOURCE_DOES_NOT_EXIST":
        status, payload = _call(
            base, "POST", "/api/2.0/mlflow/users/create", admin, {"username": username, "password": password}
        )
        action = "created"
    else:
        raise AuthProblem(f"looking up user {username!r} failed: HTTP {status} {payload}")
    if status != 200:
        raise AuthProblem(f"{action[:-1]}ing user {username!r} failed: HTTP {status} {payload}")
    status, payload = _call(
        base, "PATCH", "/api/2.0/mlflow/users/update-admin", admin, {"username": username, "is_admin": is_admin}
    )
    if status != 200:
        raise AuthProblem(f"setting is_admin={is_admin} on user {username!r} failed: HTTP {status} {payload}")
    # The service user must now be able to log in by itself.
    status, payload = _call(base, "GET", "/api/2.0/mlflow/experiments/search?max_results=1", (username, password))
    if status != 200:
        raise AuthProblem(f"user {username!r} cannot log in after being {action}: HTTP {status} {payload}")
    return action


def main() -> int:
    names = (
        "MLFLOW_URL",
        "MLFLOW_ADMIN_USERNAME",
        "MLFLOW_ADMIN_PASSWORD",
        "MLFLOW_SERVICE_USERNAME",
        "MLFLOW_SERVICE_PASSWORD",
    )
    missing = [n for n in names if not os.environ.get(n)]
    if missing:
        print(f"mlflow-init: set {', '.join(missing)}", file=sys.stderr)
        return 1
    env = {n: os.environ[n] for n in names}
    if env["MLFLOW_SERVICE_USERNAME"] == env["MLFLOW_ADMIN_USERNAME"]:
        print("mlflow-init: the service user must not be the admin", file=sys.stderr)
        return 1
    try:
        wait_healthy(env["MLFLOW_URL"], float(os.environ.get("MLFLOW_WAIT_SECONDS") or 120))
        action = ensure_user(
            env["MLFLOW_URL"],
            (env["MLFLOW_ADMIN_USERNAME"], env["MLFLOW_ADMIN_PASSWORD"]),
            env["MLFLOW_SERVICE_USERNAME"],
            env["MLFLOW_SERVICE_PASSWORD"],
            is_admin=os.environ.get("MLFLOW_SERVICE_IS_ADMIN", "false").strip().lower() in ("1", "true", "yes"),
        )
    except AuthProblem as exc:
        print(f"mlflow-init: {exc}", file=sys.stderr)
        return 1
    print(f"mlflow-init: service user {env['MLFLOW_SERVICE_USERNAME']!r} {action} at {env['MLFLOW_URL']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Credentials of the embedded runtime: the generated passwords file and the JWT signing secret.

Both are private files (0600) in private folders (0700) under ``AIRLOOP_HOME``; nothing here prints a secret.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from airloop.core.settings import paths

JWT_SECRET_FILE = "jwt_secret"
MIN_JWT_SECRET_BYTES = 64
PASSWORDS_FILE = "simple_auth_manager_passwords.json.generated"


def _passwords_file(env: Mapping[str, str]) -> Path:
    override = env.get("AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE")
    return Path(override) if override else paths().airflow_home / PASSWORDS_FILE


def _ensure_private_dir(path: Path) -> None:
    path.mkdir(parents=True, exist_ok=True, mode=0o700)


def _open_private(path: Path, mode: str) -> Any:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | (os.O_APPEND if "a" in mode else os.O_TRUNC), 0o600)
    return os.fdopen(fd, mode)


def _jwt_secret(run_dir: Path) -> str:
    """The JWT signing secret shared by every component, created once (0600) under ``run_dir``."""
    _ensure_private_dir(run_dir)
    path = run_dir / JWT_SECRET_FILE
    with contextlib.suppress(FileNotFoundError):
        existing = path.read_text().strip()
        if len(existing.encode()) >= MIN_JWT_SECRET_BYTES:
            if path.stat().st_mode & 0o077:
                path.chmod(0o600)
            return existing
        path.unlink()  # too short to be ours: replace it (tokens signed with it stop working)
    secret = secrets.token_urlsafe(MIN_JWT_SECRET_BYTES)  # 86 characters
    tmp = run_dir / f".{JWT_SECRET_FILE}.{os.getpid()}.tmp"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write(secret + "\n")
    try:
        os.link(tmp, path)  # atomic create-if-absent: a concurrent caller's secret wins, never a half file
    except FileExistsError:
        secret = path.read_text().strip()
    finally:
        tmp.unlink()
    return secret


def read_credentials() -> dict[str, str]:
    """User -> password, from the file the api-server generates on its first start."""
    path = _passwords_file(os.environ)
    try:
        text = path.read_text().strip()
    except FileNotFoundError:
        raise FileNotFoundError(
            f"No passwords file at {path}: the api-server writes it on its first start (run up() first)"
        ) from None
    return dict(json.loads(text or "{}"))

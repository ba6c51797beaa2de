"""Refuse to start the stack with a missing, placeholder, weak, malformed or reused secret.

The `preflight` service of docker-compose.yaml runs this first; every other service waits for it to succeed.
It checks every variable of its environment whose name contains PASSWORD, SECRET, KEY or TOKEN (compose
passes it all the secrets of .env) and prints one line per problem, naming the variable, never its value.
Standard library only. `python docker/preflight.py` also works on a host, against the current environment.
"""

from __future__ import annotations

import base64
import binascii
import os
import re
import sys
from collections.abc import Mapping

SECRET_WORDS = ("PASSWORD", "SECRET", "KEY", "TOKEN")
PLACEHOLDER = "change-me"
#: Characters that survive URLs (postgres://, redis://), JSON connections and INI files unescaped.
SAFE = re.compile(r"[A-Za-z0-9._~=-]+")
MIN_LENGTH = 16
MIN_JWT_BYTES = 64  # Airflow warns below this; HS512 wants a 64-byte key
#: Variables of base images that look like secrets and are not (a signing key's fingerprint).
NOT_SECRETS = frozenset({"GPG_KEY"})


def is_secret(name: str) -> bool:
    return name not in NOT_SECRETS and any(word in name.upper() for word in SECRET_WORDS)


def _fernet_ok(value: str) -> bool:
    if len(value) != 44 or not SAFE.fullmatch(value):
        return False
    try:
        return len(base64.urlsafe_b64decode(value.encode())) == 32
    except (binascii.Error, ValueError):
        return False


def _may_repeat(name: str) -> bool:
    """S3 keys: an existing object store may hand out one key pair for the lake and MLflow's artifacts."""
    return "S3_" in name.upper()


def _problem(name: str, value: str) -> str | None:
    upper = name.upper()
    if not value:
        return f"{name} is empty"
    if PLACEHOLDER in value.lower():
        return f"{name} still holds the placeholder of .env.example: generate a value (see .env.example)"
    if "FERNET" in upper:
        # "new,old" while rotating: the first key encrypts, every key decrypts (`airflow rotate-fernet-key`).
        if not all(_fernet_ok(key) for key in value.split(",")):
            return f"{name} is not a Fernet key (32 url-safe base64 bytes) or a comma-separated list of them"
        return None
    if not SAFE.fullmatch(value):
        return f"{name} may only hold A-Z a-z 0-9 . _ ~ = - (it goes into URLs, JSON and INI files)"
    if "JWT" in upper and len(value.encode()) < MIN_JWT_BYTES:
        return f"{name} is shorter than {MIN_JWT_BYTES} bytes"
    if len(value) < MIN_LENGTH:
        return f"{name} is shorter than {MIN_LENGTH} characters"
    return None


def problems(env: Mapping[str, str]) -> list[str]:
    """One message per problem, each naming the variable (never showing its value)."""
    found: list[str] = []
    seen: dict[str, str] = {}
    for name in sorted(n for n in env if is_secret(n)):
        value = env[name]
        if problem := _problem(name, value):
            found.append(problem)
        elif value in seen and not (_may_repeat(name) and _may_repeat(seen[value])):
            found.append(f"{name} has the same value as {seen[value]}: give every secret its own value")
        else:
            seen[value] = name
    return found


def main() -> int:
    names = [n for n in os.environ if is_secret(n)]
    if not names:
        print("preflight: no secret reached this check (is .env there?)", file=sys.stderr)
        return 1
    found = problems(os.environ)
    for line in found:
        print(f"preflight: {line}", file=sys.stderr)
    if found:
        print(f"preflight: {len(found)} problem(s) in .env; nothing was started", file=sys.stderr)
        return 1
    print(f"preflight: {len(names)} secrets present, well-formed and distinct")
    return 0


if __name__ == "__main__":
    sys.exit(main())

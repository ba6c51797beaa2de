"""Write the SimpleAuthManager passwords file from the environment (run by the api-server before it starts).

Every user of AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS (``name:role,...``) needs AIRLOOP_<NAME>_PASSWORD
(``operator`` -> AIRLOOP_OPERATOR_PASSWORD); a missing one stops the api-server with its name, so Airflow
never generates (and prints) a password of its own. The file goes to
AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE with mode 0600 and is rewritten at every start, so
changing a password is editing .env and `docker compose up -d airflow-apiserver`.
"""

from __future__ import annotations

import json
import os
import re
import sys
from pathlib import Path


def password_var(user: str) -> str:
    return "AIRLOOP_" + re.sub(r"[^A-Z0-9]", "_", user.upper()) + "_PASSWORD"


def passwords(env: dict[str, str]) -> dict[str, str]:
    spec = env.get("AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS", "")
    users = [item.split(":")[0].strip() for item in spec.split(",") if item.strip()]
    if not users:
        raise ValueError("AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS names no user")
    missing = [password_var(u) for u in users if not env.get(password_var(u))]
    if missing:
        raise ValueError(f"set {', '.join(missing)} in .env (one password per user of the Airflow UI and API)")
    return {u: env[password_var(u)] for u in users}


def main() -> int:
    target = os.environ.get("AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE")
    if not target:
        print("write_auth_passwords: AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE is not set", file=sys.stderr)
        return 1
    try:
        content = json.dumps(passwords(dict(os.environ))) + "\n"
    except ValueError as exc:
        print(f"write_auth_passwords: {exc}", file=sys.stderr)
        return 1
    path = Path(target)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write(content)
    os.replace(tmp, path)
    print(f"write_auth_passwords: {len(json.loads(content))} users written to {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

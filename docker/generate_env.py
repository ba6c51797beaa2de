"""Write a .env from .env.example with every `change-me` placeholder replaced by a fresh random secret.

    python3 docker/generate_env.py            # writes .env (mode 0600); refuses to overwrite one
    python3 docker/generate_env.py --stdout   # prints it instead

Fernet keys get 32 random bytes in url-safe base64, JWT secrets 86 characters, S3 access key ids 20, every
other secret 40 letters and digits (values that need no escaping in URLs, JSON or INI files). Everything else
of .env.example (comments, non-secret settings) is kept as it is. Standard library only.
"""

from __future__ import annotations

import argparse
import base64
import os
import secrets
import string
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
ALPHABET = string.ascii_letters + string.digits


def _random(length: int, alphabet: str = ALPHABET) -> str:
    return "".join(secrets.choice(alphabet) for _ in range(length))


def secret_for(name: str) -> str:
    upper = name.upper()
    if "FERNET" in upper:
        return base64.urlsafe_b64encode(secrets.token_bytes(32)).decode()
    if "JWT" in upper:
        return _random(86)
    if upper.endswith("ACCESS_KEY_ID"):
        return _random(20, string.ascii_uppercase + string.digits)
    return _random(40)


def render(example: str) -> str:
    out = []
    for line in example.splitlines():
        name, sep, value = line.partition("=")
        if sep and not line.lstrip().startswith("#") and value.strip().startswith("change-me"):
            line = f"{name}={secret_for(name.strip())}"
        out.append(line)
    return "\n".join(out) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--example", type=Path, default=ROOT / ".env.example")
    parser.add_argument("--output", type=Path, default=ROOT / ".env")
    parser.add_argument("--stdout", action="store_true", help="print instead of writing a file")
    args = parser.parse_args(argv)
    content = render(args.example.read_text())
    if args.stdout:
        sys.stdout.write(content)
        return 0
    try:
        fd = os.open(args.output, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        print(f"{args.output} exists; not overwriting it (rotate secrets one by one: docs/running-at-scale.md)")
        return 1
    with os.fdopen(fd, "w") as fh:
        fh.write(content)
    print(f"wrote {args.output} (mode 0600); it is git-ignored: keep it out of commits and images")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""The REST API recipes of ``docs/rest-api.md``, read from that page and run as written (curl, or the Python client).

A recipe is a fenced ``bash`` or ``python`` block right after a ``<!-- recipe: NAME -->`` line. Python recipes
run after the page's client set-up block (the one that builds ``api``), so each is what a reader would paste.
``tests/unit/test_docs.py`` checks, without servers, that every recipe the end-to-end tests ask for is there.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PAGE = ROOT / "docs" / "rest-api.md"
_BLOCK = re.compile(r"<!-- recipe: (?P<name>[\w-]+) -->\n```(?P<lang>bash|python)\n(?P<code>.*?)```", re.S)
_SETUP = re.compile(r"```python\n(?P<code>import os\nimport airflow_client\.client as af\n.*?)```", re.S)


def recipes(page: Path = PAGE) -> dict[tuple[str, str], str]:
    """(name, language) -> code, for every recipe block of the page."""
    text = page.read_text()
    found: dict[tuple[str, str], str] = {}
    for m in _BLOCK.finditer(text):
        key = (m["name"], m["lang"])
        assert key not in found, f"two {m['lang']} blocks for recipe {m['name']!r} in {page.name}"
        found[key] = m["code"]
    return found


def client_setup(page: Path = PAGE) -> str:
    """The page's client set-up block (``import airflow_client.client as af`` ... ``api = ...``)."""
    m = _SETUP.search(page.read_text())
    assert m, f"{page.name} has no client set-up block (import airflow_client.client as af ...)"
    return m["code"]


def run(name: str, lang: str, env: dict[str, str], timeout: float = 120) -> str:
    """Run one recipe with ``env`` added to this process's environment; return its standard output."""
    code = recipes()[(name, lang)]
    full_env = {**os.environ, **env}
    if lang == "bash":
        cmd = ["bash", "-euo", "pipefail", "-c", code]
    else:
        cmd = [sys.executable, "-c", client_setup() + "\n" + code]
    done = subprocess.run(cmd, env=full_env, capture_output=True, text=True, timeout=timeout)
    assert done.returncode == 0, (
        f"{PAGE.name} recipe {name!r} ({lang}) failed with exit code {done.returncode}\n"
        f"--- code\n{code}\n--- stdout\n{done.stdout[-3000:]}\n--- stderr\n{done.stderr[-3000:]}"
    )
    return done.stdout


def json_lines(out: str) -> list[dict]:
    """The JSON objects a curl recipe printed (one per request), in order."""
    decoder = json.JSONDecoder()
    found, i = [], 0
    while i < len(out):
        start = out.find("{", i)
        if start < 0:
            break
        try:
            obj, end = decoder.raw_decode(out, start)
        except json.JSONDecodeError:
            i = start + 1
            continue
        found.append(obj)
        i = end
    return found

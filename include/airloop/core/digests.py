"""sha256 digests, the one way airloop computes them (specs, suites, lake contents and versions, data files).

Digests are stored and compared (lineage, partition versions, checksums), so each caller keeps its exact input:
what it hashes and how much of the hex digest it keeps. Pure and light (safe at DAG parse time).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

#: How many hex digits a short digest keeps (spec, suite and partition-version digests).
SHORT = 16
#: Read size of :func:`file_digest`.
BLOCK = 1 << 20


def hasher() -> Any:
    """A fresh sha256 hasher, for content hashed in pieces (``update()`` each piece, then ``hexdigest()``)."""
    return hashlib.sha256()


def digest(data: bytes) -> str:
    """The hex sha256 of ``data``."""
    return hashlib.sha256(data).hexdigest()


def file_digest(path: Path, block_size: int = BLOCK) -> str:
    """The hex sha256 of a file's bytes, read in blocks (memory stays flat for any size)."""
    h = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(block_size), b""):
            h.update(block)
    return h.hexdigest()


def canonical_json(value: Any, default: Callable[[Any], Any] | None = None) -> str:
    """``value`` as JSON with sorted keys (so key order does not change the digest); ``default`` as in json."""
    return json.dumps(value, sort_keys=True, default=default)


def json_digest(value: Any, default: Callable[[Any], Any] | None = None) -> str:
    """The hex sha256 of :func:`canonical_json` of ``value``."""
    return digest(canonical_json(value, default).encode())


def short(hex_digest: str, length: int = SHORT) -> str:
    """The first ``length`` hex digits of a digest."""
    return hex_digest[:length]

"""sha256 digests: one module computes them, and every digest already stored stays what it was.

The expected values below were computed by the code each caller had before the digests module existed
(spec, suite, lake content and version, data file); lineage compares stored digests, so they must not move.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pandas as pd

from airloop.adapters.expectations import suite_digest
from airloop.adapters.lake import content_digest, version_of
from airloop.adapters.source import sha256_of, verify_checksum
from airloop.core import digests
from airloop.core.settings import paths
from airloop.core.spec import get_spec, spec_digest


def _frame() -> pd.DataFrame:
    times = pd.to_datetime(["2011-01-01", "2011-01-02", "2011-01-03"], utc=True)
    return pd.DataFrame({"a": [1, 2, 3], "b": [0.5, None, 2.0], "t": times})


def test_helpers_are_plain_sha256(tmp_path: Path) -> None:
    assert digests.digest(b"abc") == hashlib.sha256(b"abc").hexdigest()
    data = bytes(range(256)) * 10_000  # several blocks
    (tmp_path / "f").write_bytes(data)
    assert digests.file_digest(tmp_path / "f", block_size=4096) == hashlib.sha256(data).hexdigest()
    value = {"b": 1, "a": [2, {"d": 3, "c": 4}]}
    assert digests.json_digest(value) == hashlib.sha256(json.dumps(value, sort_keys=True).encode()).hexdigest()
    assert digests.json_digest({"a": 1, "b": 2}) == digests.json_digest({"b": 2, "a": 1}), "key order is not content"
    assert digests.short("0123456789abcdef0123") == "0123456789abcdef"


def test_stored_digests_do_not_move() -> None:
    frame = _frame()
    content = content_digest(frame)
    assert content == "d261dbe20bcc04620fc270f734c8fd39164098be9b93f1161cfd25d41ae24a39"
    assert content_digest(frame.iloc[:0]) == "50dc2af3740be0623979424e173a93aef41bec30c9824325a2ea6cbd747b1079"
    assert version_of(content, {"x.json": b"{}", "a.txt": b"hello"}) == "v-ea959109baab0b20"
    suite = {"b": [1, 2], "a": {"z": 1, "y": pd.Timestamp("2011-01-01")}}
    assert suite_digest(suite) == "a0676fb494f9d8ff"
    data_file = paths().data_dir / "bike_sharing" / "hour.csv"
    assert sha256_of(data_file) == "b03a2d02e8c10f435c43c7f0b358b7e34a003afea53dbc37f0183f2763295133"
    assert verify_checksum(data_file) == sha256_of(data_file)


def test_spec_digest_is_the_short_digest_of_its_canonical_json() -> None:
    spec = get_spec("bikes")
    canonical = json.dumps(spec.model_dump(mode="json", by_alias=True), sort_keys=True)
    assert spec_digest(spec) == hashlib.sha256(canonical.encode()).hexdigest()[:16]

from __future__ import annotations

import os

import pandas as pd
import pytest

from airloop.lake import MANIFEST, Lake, PartitionNotFound, content_digest


@pytest.fixture
def frame() -> pd.DataFrame:
    return pd.DataFrame(
        {"ts": pd.date_range("2011-01-01", periods=5, freq="h", tz="UTC"), "cnt": [1, 2, 3, 4, 5], "x": 0.5}
    )


def _files(lake: Lake, stage: str = "raw", key: str = "k1") -> dict[str, bytes]:
    folder = lake.partition_dir("m", stage, key)
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir())}


def test_round_trip(tmp_path, frame):
    lake = Lake(tmp_path)
    manifest = lake.write("m", "raw", "k1", frame, meta={"a": 1})
    assert manifest.rows == 5 and manifest.content_digest == content_digest(frame)
    pd.testing.assert_frame_equal(lake.read("m", "raw", "k1"), frame)
    assert lake.manifest("m", "raw", "k1").meta == {"a": 1}
    assert lake.partitions("m", "raw") == ["k1"]


def test_rewrite_of_same_data_is_byte_identical(tmp_path, frame):
    lake = Lake(tmp_path)
    lake.write("m", "raw", "k1", frame, side_files={"report.json": b"{}"})
    first = _files(lake)
    lake.write("m", "raw", "k1", frame.copy(), side_files={"report.json": b"{}"})
    assert _files(lake) == first


def test_new_version_replaces_old_files(tmp_path, frame):
    lake = Lake(tmp_path)
    lake.write("m", "raw", "k1", frame, side_files={"old.json": b"{}"})
    lake.write("m", "raw", "k1", frame.head(2))
    assert len(lake.read("m", "raw", "k1")) == 2
    names = set(_files(lake))
    assert names == {MANIFEST, lake.manifest("m", "raw", "k1").data_file}


def test_crash_before_manifest_leaves_old_partition_readable(tmp_path, frame, monkeypatch):
    lake = Lake(tmp_path)
    lake.write("m", "raw", "k1", frame)
    real_replace = os.replace

    def crash_on_manifest(src, dst):
        if str(dst).endswith(MANIFEST):
            raise OSError("disk full")
        real_replace(src, dst)

    monkeypatch.setattr(os, "replace", crash_on_manifest)
    with pytest.raises(OSError, match="disk full"):
        lake.write("m", "raw", "k1", frame.head(1))
    monkeypatch.undo()
    pd.testing.assert_frame_equal(lake.read("m", "raw", "k1"), frame)
    assert not [p for p in lake.partition_dir("m", "raw", "k1").iterdir() if ".tmp-" in p.name]


def test_missing_partition_says_what_to_run(tmp_path):
    with pytest.raises(PartitionNotFound, match="run the m_ingest DAG"):
        Lake(tmp_path).read("m", "validated", "k1")


def test_delete_removes_manifest_and_files(tmp_path, frame):
    lake = Lake(tmp_path)
    lake.write("m", "quarantine", "k1", frame)
    assert lake.delete("m", "quarantine", "k1") is True
    assert lake.partitions("m", "quarantine") == []
    assert lake.delete("m", "quarantine", "k1") is False


@pytest.mark.parametrize("key", ["", "../x", ".hidden", "a/b"])
def test_invalid_keys_and_stages(tmp_path, key):
    with pytest.raises(ValueError):
        Lake(tmp_path).partition_dir("m", "raw", key)
    with pytest.raises(ValueError, match="unknown lake stage"):
        Lake(tmp_path).partition_dir("m", "bronze", "k1")


def test_digest_depends_on_values_order_and_dtypes(frame):
    base = content_digest(frame)
    assert content_digest(frame.copy()) == base
    changed = frame.copy()
    changed.loc[2, "cnt"] = 99
    assert content_digest(changed) != base
    assert content_digest(frame.iloc[::-1]) != base
    assert content_digest(frame.astype({"cnt": "float64"})) != base
    assert content_digest(frame.iloc[0:0]) != base


def test_batched_write_equals_whole_write_and_reads_back_in_batches(tmp_path):
    import pandas as pd

    df = pd.DataFrame({"ts": pd.date_range("2012-01-01", periods=1000, freq="h"), "y": range(1000)})
    lake = Lake(tmp_path)
    whole = lake.write("m", "predictions", "p1", df)
    batched = lake.write_batches("m", "predictions", "p2", (df.iloc[i : i + 300] for i in range(0, 1000, 300)))
    assert (batched.content_digest, batched.rows, batched.data_file) == (whole.content_digest, 1000, whole.data_file)
    parts = list(lake.iter_batches("m", "predictions", "p2", batch_rows=256))
    assert [len(p) for p in parts] == [256, 256, 256, 232]
    assert pd.concat(parts, ignore_index=True).equals(df)


def test_batched_write_of_nothing_leaves_no_partition(tmp_path):
    import pytest

    lake = Lake(tmp_path)
    with pytest.raises(ValueError, match="no batches"):
        lake.write_batches("m", "predictions", "p1", iter(()))
    assert lake.partitions("m", "predictions") == []

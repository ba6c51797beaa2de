"""Kept partition versions: a validated partition's replaced or deleted versions stay, on both backends."""

from __future__ import annotations

import pandas as pd
import pytest

from airloop.adapters import lake as lake_module
from airloop.adapters.lake import MANIFEST, Lake, PartitionNotFound
from tests.unit.test_lake import frame, lake  # noqa: F401  (fixtures: both backends)


def test_a_replaced_validated_version_is_kept_and_readers_see_the_new_one(lake, frame):  # noqa: F811
    old = lake.write("m", "validated", "k1", frame, meta={"a": 1})
    new = lake.write("m", "validated", "k1", frame.head(2), meta={"a": 1})
    assert lake.manifest("m", "validated", "k1") == new
    assert len(lake.read("m", "validated", "k1")) == 2
    assert lake.partitions("m", "validated") == ["k1"]
    assert lake.versions("m", "validated", "k1") == [old]
    pd.testing.assert_frame_equal(lake.read_version(old), frame)
    assert lake.kept_partitions("m", "validated") == ["k1"]
    assert lake.version_size(old) > 0


def test_other_stages_still_delete_the_replaced_version(lake, frame):  # noqa: F811
    old = lake.write("m", "raw", "k1", frame)
    lake.write("m", "raw", "k1", frame.head(2))
    assert lake.versions("m", "raw", "k1") == []
    assert not any(f.startswith(old.version) for f in lake.files("m", "raw", "k1"))


def test_deleting_a_validated_partition_keeps_its_version(lake, frame):  # noqa: F811
    old = lake.write("m", "validated", "k1", frame)
    assert lake.delete("m", "validated", "k1") is True
    assert lake.manifest("m", "validated", "k1") is None and lake.partitions("m", "validated") == []
    with pytest.raises(PartitionNotFound):
        lake.read("m", "validated", "k1")
    assert lake.versions("m", "validated", "k1") == [old]
    assert lake.kept_partitions("m", "validated") == ["k1"]
    assert lake.delete("m", "validated", "k1") is False


def test_the_stale_sweep_never_removes_kept_versions(lake, frame, monkeypatch):  # noqa: F811
    old = lake.write("m", "validated", "k1", frame)
    lake.write("m", "validated", "k1", frame.head(2))
    monkeypatch.setattr(lake_module, "STALE_AFTER", lake_module.timedelta(seconds=-60))
    current = lake.write("m", "validated", "k1", frame.head(3))
    assert {m.version for m in lake.versions("m", "validated", "k1")} == {
        old.version,
        lake_module.version_of(lake_module.content_digest(frame.head(2)), {}),
    }
    assert lake.manifest("m", "validated", "k1") == current


def test_remove_version_deletes_a_kept_one_and_refuses_the_current(lake, frame):  # noqa: F811
    old = lake.write("m", "validated", "k1", frame)
    current = lake.write("m", "validated", "k1", frame.head(2))
    with pytest.raises(ValueError, match="current"):
        lake.remove_version(current)
    lake.remove_version(old)
    assert lake.versions("m", "validated", "k1") == []
    assert set(lake.files("m", "validated", "k1")) == {MANIFEST, f"{current.version}/{current.data_file}"}
    with pytest.raises(PartitionNotFound, match="missing"):
        lake.read_version(old)


def test_models_lists_the_lakes_models(tmp_path, frame):  # noqa: F811
    local = Lake(tmp_path / "lake")
    assert local.models() == []
    local.write("a", "raw", "k1", frame)
    local.write("b", "validated", "k1", frame)
    assert local.models() == ["a", "b"]

"""The lake's contract, on a local root (``file://``) and on object storage (``s3://``, a real moto server).

Every test taking the ``lake`` fixture runs on both backends: the same calls, the same results.
"""

from __future__ import annotations

import hashlib
import json
import os
import time

import pandas as pd
import pytest

from airloop.adapters import lake as lake_module
from airloop.adapters.lake import MANIFEST, Lake, LakeUnavailable, PartitionNotFound, content_digest, default_lake


@pytest.fixture
def frame() -> pd.DataFrame:
    return pd.DataFrame(
        {"ts": pd.date_range("2011-01-01", periods=5, freq="h", tz="UTC"), "cnt": [1, 2, 3, 4, 5], "x": 0.5}
    )


def _s3_lake(server, prefix: str = "lake") -> Lake:
    # No fsspec instance cache: each test gets its own client, whatever earlier tests did to theirs.
    return Lake(f"s3://{server.bucket()}/{prefix}", storage_options={"skip_instance_cache": True})


@pytest.fixture(params=["file", "s3"])
def lake(request, tmp_path) -> Lake:
    if request.param == "file":
        return Lake(f"file://{tmp_path}/lake")
    return _s3_lake(request.getfixturevalue("s3_env"))


def _files(lake: Lake, stage: str = "raw", key: str = "k1") -> dict[str, bytes]:
    """Every file under the partition (relative name: bytes), temporary ones included."""
    part = lake.partition_url("m", stage, key)
    return {name: lake.fs.cat_file(f"{part}/{name}") for name in lake.files("m", stage, key)}


def test_round_trip(lake, frame):
    manifest = lake.write("m", "raw", "k1", frame, meta={"a": 1})
    assert manifest.rows == 5 and manifest.content_digest == content_digest(frame)
    pd.testing.assert_frame_equal(lake.read("m", "raw", "k1"), frame)
    pd.testing.assert_frame_equal(lake.read("m", "raw", "k1", columns=["cnt"]), frame[["cnt"]])
    assert lake.manifest("m", "raw", "k1") == manifest and manifest.meta == {"a": 1}
    assert lake.partitions("m", "raw") == ["k1"]
    assert lake.partitions("m", "validated") == [] and lake.partitions("other", "raw") == []
    assert set(_files(lake)) == {MANIFEST, f"{manifest.version}/{manifest.data_file}"}


def test_rewrite_of_same_data_is_byte_identical(lake, frame):
    lake.write("m", "raw", "k1", frame, side_files={"report.json": b"{}"})
    first = _files(lake)
    lake.write("m", "raw", "k1", frame.copy(), side_files={"report.json": b"{}"})
    assert _files(lake) == first


def test_the_same_data_gives_the_same_digests_and_bytes_on_both_backends(tmp_path, s3_env, frame):
    local, remote = Lake(tmp_path / "lake"), _s3_lake(s3_env)
    side = {"validation.json": b'{"ok": true}\n'}
    written = [lake.write("m", "raw", "k1", frame, side_files=side, meta={"a": 1}) for lake in (local, remote)]
    batched = [
        lake.write_batches("m", "predictions", "k1", (frame.iloc[i : i + 2] for i in range(0, 5, 2)))
        for lake in (local, remote)
    ]
    assert written[0] == written[1] and batched[0] == batched[1]
    assert written[0].content_digest == batched[0].content_digest == content_digest(frame)
    assert _files(local) == _files(remote)
    assert _files(local, "predictions") == _files(remote, "predictions")


def test_a_partition_is_invisible_until_its_manifest_is_written(lake, frame, monkeypatch):
    lake.write("m", "raw", "k1", frame)
    put_bytes, seen = lake._put_bytes, []

    def observe_then_put(path, data):
        if path.endswith(MANIFEST):  # every data file of the new version is written by now
            with pytest.raises(PartitionNotFound):
                lake.read("m", "raw", "k2")
            seen.append(
                {
                    "files": lake.files("m", "raw", "k1") + lake.files("m", "raw", "k2"),
                    "partitions": lake.partitions("m", "raw"),
                    "k1": lake.read("m", "raw", "k1"),
                    "k2": lake.manifest("m", "raw", "k2"),
                }
            )
        put_bytes(path, data)

    monkeypatch.setattr(lake, "_put_bytes", observe_then_put)
    lake.write("m", "raw", "k1", frame.head(2))
    lake.write("m", "raw", "k2", frame)
    # Just before each manifest: the new files were all written, and readers still saw the old k1 and no k2.
    assert [sum(name.endswith(".parquet") for name in s["files"]) for s in seen] == [2, 2]
    assert [(s["partitions"], s["k2"]) for s in seen] == [(["k1"], None), (["k1"], None)]
    pd.testing.assert_frame_equal(seen[0]["k1"], frame)
    assert len(lake.read("m", "raw", "k1")) == 2 and lake.partitions("m", "raw") == ["k1", "k2"]


def test_crash_before_manifest_leaves_old_partition_readable(lake, frame, monkeypatch):
    lake.write("m", "raw", "k1", frame)
    put_bytes = lake._put_bytes

    def crash_on_manifest(path, data):
        if path.endswith(MANIFEST):
            raise OSError("disk full")
        put_bytes(path, data)

    monkeypatch.setattr(lake, "_put_bytes", crash_on_manifest)
    with pytest.raises(OSError, match="disk full"):
        lake.write("m", "raw", "k1", frame.head(1))
    with pytest.raises(OSError, match="disk full"):
        lake.write("m", "raw", "k2", frame)
    monkeypatch.undo()
    pd.testing.assert_frame_equal(lake.read("m", "raw", "k1"), frame)
    assert lake.partitions("m", "raw") == ["k1"]
    assert not [name for name in lake.files("m", "raw", "k1") if ".tmp-" in name]


def test_republishing_replaces_the_manifest_then_removes_the_previous_version(lake, frame):
    old = lake.write("m", "raw", "k1", frame, side_files={"old.json": b"{}"})
    new = lake.write("m", "raw", "k1", frame.head(2))
    assert new.version != old.version
    assert len(lake.read("m", "raw", "k1")) == 2
    assert set(_files(lake)) == {MANIFEST, f"{new.version}/{new.data_file}"}
    # Same rows, other side file: another version too (files of different versions never share a name).
    report = lake.write("m", "raw", "k1", frame.head(2), side_files={"report.json": b"[]"})
    assert report.version not in (old.version, new.version)
    assert set(_files(lake)) == {MANIFEST, f"{report.version}/{report.data_file}", f"{report.version}/report.json"}
    assert lake.read_side_file("m", "raw", "k1", "report.json") == b"[]"


def test_leftovers_of_a_crashed_writer_are_swept_once_stale(lake, frame, monkeypatch):
    put_bytes = lake._put_bytes

    def crash_on_manifest(path, data):
        if path.endswith(MANIFEST):
            raise OSError("killed")
        put_bytes(path, data)

    monkeypatch.setattr(lake, "_put_bytes", crash_on_manifest)
    with pytest.raises(OSError, match="killed"):
        lake.write("m", "raw", "k1", frame.head(3))
    monkeypatch.undo()
    orphan = set(lake.files("m", "raw", "k1"))
    assert orphan and lake.partitions("m", "raw") == []
    first = lake.write("m", "raw", "k1", frame)  # a writer may still be uploading those: young files stay
    assert orphan <= set(lake.files("m", "raw", "k1"))
    monkeypatch.setattr(lake_module, "STALE_AFTER", lake_module.timedelta(seconds=-60))
    lake.write("m", "raw", "k1", frame)  # the same version again: nothing rewritten, leftovers swept
    assert set(lake.files("m", "raw", "k1")) == {MANIFEST, f"{first.version}/{first.data_file}"}


def test_republishing_the_same_version_rewrites_nothing(lake, frame, monkeypatch):
    lake.write("m", "raw", "k1", frame, meta={"a": 1})
    writes: list[str] = []
    monkeypatch.setattr(lake, "_put_bytes", lambda path, data: writes.append(path))
    monkeypatch.setattr(lake, "_publish_file", lambda tmp, path: writes.append(path))
    lake.write("m", "raw", "k1", frame.copy(), meta={"a": 1})
    assert writes == []
    lake.write("m", "raw", "k1", frame.copy(), meta={"a": 2})  # new meta: only the manifest is replaced
    assert [os.path.basename(p) for p in writes] == [MANIFEST]


def test_a_reader_racing_a_republication_reads_the_new_version(lake, frame, monkeypatch):
    lake.write("m", "raw", "k1", frame)
    stale = [lake._require("m", "raw", "k1")]  # what a reader saw just before the re-publication
    lake.write("m", "raw", "k1", frame.head(2))  # removes the files stale points at
    require = lake._require
    monkeypatch.setattr(lake, "_require", lambda *a: stale.pop() if stale else require(*a))
    assert len(lake.read("m", "raw", "k1")) == 2
    stale.append(require("m", "raw", "k1"))
    lake.fs.rm(stale[0][1])  # the current version's data file, removed by hand
    with pytest.raises(PartitionNotFound, match="which is missing"):
        list(lake.iter_batches("m", "raw", "k1"))


def test_missing_partition_says_what_to_run(lake):
    with pytest.raises(PartitionNotFound, match="run the m_ingest DAG"):
        lake.read("m", "validated", "k1")
    with pytest.raises(PartitionNotFound):
        list(lake.iter_batches("m", "validated", "k1"))
    assert lake.manifest("m", "validated", "k1") is None


def test_delete_removes_the_manifest_first_then_the_files(lake, frame, monkeypatch):
    lake.write("m", "quarantine", "k1", frame, side_files={"validation.json": b"{}"})
    lake.write("m", "quarantine", "k2", frame)
    removed: list[str] = []
    rm = lake._rm

    def record(path, recursive=False):
        removed.append(path)
        rm(path, recursive=recursive)

    monkeypatch.setattr(lake, "_rm", record)
    assert lake.delete("m", "quarantine", "k1") is True
    assert removed[0].endswith(f"k1/{MANIFEST}")
    assert lake.partitions("m", "quarantine") == ["k2"] and lake.files("m", "quarantine", "k1") == []
    assert lake.delete("m", "quarantine", "k1") is False
    pd.testing.assert_frame_equal(lake.read("m", "quarantine", "k2"), frame)


def test_copy_publishes_the_same_data_file_to_another_stage(lake, frame):
    raw = lake.write("m", "raw", "k1", frame, meta={"source": "db"})
    validated = lake.copy("m", "raw", "validated", "k1", side_files={"validation.json": b"{}"}, meta={"ok": True})
    assert (validated.content_digest, validated.rows, validated.data_file) == (
        raw.content_digest,
        raw.rows,
        raw.data_file,
    )
    assert validated.stage == "validated" and validated.meta == {"ok": True}
    assert validated.side_files == ["validation.json"]
    pd.testing.assert_frame_equal(lake.read("m", "validated", "k1"), frame)
    assert lake.read_side_file("m", "validated", "k1", "validation.json") == b"{}"
    data = {name: blob for name, blob in _files(lake, "validated").items() if name.endswith(".parquet")}
    assert list(data.values()) == [_files(lake)[f"{raw.version}/{raw.data_file}"]]
    with pytest.raises(PartitionNotFound):
        lake.copy("m", "raw", "validated", "nope")


@pytest.mark.parametrize("key", ["", "../x", ".hidden", "a/b"])
def test_invalid_keys_and_stages(tmp_path, key):
    with pytest.raises(ValueError):
        Lake(tmp_path).partition_url("m", "raw", key)
    with pytest.raises(ValueError, match="unknown lake stage"):
        Lake(tmp_path).partition_url("m", "bronze", "k1")
    with pytest.raises(ValueError, match="reserved"):
        Lake(tmp_path).write("m", "raw", "k1", pd.DataFrame({"a": [1]}), side_files={MANIFEST: b""})


def test_digest_depends_on_values_order_and_dtypes(frame):
    base = content_digest(frame)
    assert content_digest(frame.copy()) == base
    changed = frame.copy()
    changed.loc[2, "cnt"] = 99
    assert content_digest(changed) != base
    assert content_digest(frame.iloc[::-1]) != base
    assert content_digest(frame.astype({"cnt": "float64"})) != base
    assert content_digest(frame.iloc[0:0]) != base


def _text_heavy_frame(n: int) -> pd.DataFrame:
    """Every kind of column a lake partition holds, text above all (a scored partition's, a validated one's)."""
    import numpy as np

    keys = [f"2030-01-01T{i // 60:04d}:{i % 60:02d}" for i in range(n)]
    some_null = pd.array([None if i % 7 == 0 else f"c{i % 5}" for i in range(n)], dtype="string")
    return pd.DataFrame(
        {
            "ts": pd.date_range("2030-01-01", periods=n, freq="min", tz="UTC"),
            "row_key": pd.array(keys, dtype="string"),  # unique text
            "object_keys": keys,  # unique text, object dtype
            "prediction": pd.arrays.FloatingArray(np.linspace(0, 1, n), np.arange(n) % 11 == 0),
            "predicted_class": pd.array([None] * n, dtype="string"),  # all null
            "none_object": [None] * n,
            "nan_object": pd.Series([np.nan] * n, dtype=object),
            "season": [("spring", "summer", "fall", "winter")[i % 4] for i in range(n)],  # few values
            "some_null": some_null,
            "mixed_object": [i if i % 2 else str(i) for i in range(n)],  # text and numbers: pandas' own path
            "unique_then_null": [*keys[:-1], None],  # text with one null at the end
            "equal_then_null": ["x"] * (n - 1) + [None],
            "equal_then_na": pd.array(["x"] * (n - 1) + [None], dtype="string"),  # pd.NA after one value
            "object_equal_then_na": pd.Series(["y"] * (n - 1) + [pd.NA], dtype=object),
            "model_version": "3",  # one value in every row (provenance)
            "input_digest": "b" * 64,
            "category": pd.Categorical([("a", "b")[i % 2] for i in range(n)]),
            "count": np.arange(n),
            "flag": np.arange(n) % 3 == 0,
        }
    )


@pytest.mark.parametrize("rows", [1, 2, 3, 1500])
def test_row_hashes_are_exactly_pandas_hash_of_the_rows(rows):
    """The digest's definition holds: row_hashes is hash_pandas_object(index=False), whatever route it takes."""
    frame = _text_heavy_frame(rows)
    expected = pd.util.hash_pandas_object(frame, index=False).to_numpy()
    assert (lake_module.row_hashes(frame) == expected).all()
    for name in frame.columns:  # column by column too (a wrong column could hide in the combination)
        one = frame[[name]]
        assert (lake_module.row_hashes(one) == pd.util.hash_pandas_object(one, index=False).to_numpy()).all(), name
    h = hashlib.sha256(json.dumps([[str(c), str(t)] for c, t in frame.dtypes.items()]).encode())
    h.update(expected.tobytes())
    assert content_digest(frame) == h.hexdigest()
    assert lake_module.row_hashes(frame.iloc[0:0]).tolist() == []


def test_digest_does_not_factorize_unique_or_one_valued_text_row_by_row(monkeypatch):
    """A scored partition's text (unique row keys, provenance of one value, empty class columns) is hashed without
    factorizing it value by value (what made the digest most of scoring's own time); the digest is unchanged."""
    frame = _text_heavy_frame(5000)[["ts", "row_key", "object_keys", "prediction", "predicted_class", "model_version"]]
    expected = content_digest(frame)
    factorized: list[int] = []
    original = pd.factorize

    def counting(values, *args, **kwargs):
        factorized.append(len(values))
        return original(values, *args, **kwargs)

    monkeypatch.setattr(pd, "factorize", counting)
    assert content_digest(frame) == expected
    assert max(factorized, default=0) <= 1, factorized


def test_batched_write_equals_whole_write_and_reads_back_in_batches(lake):
    df = pd.DataFrame({"ts": pd.date_range("2012-01-01", periods=1000, freq="h"), "y": range(1000)})
    whole = lake.write("m", "predictions", "p1", df)
    batched = lake.write_batches("m", "predictions", "p2", (df.iloc[i : i + 300] for i in range(0, 1000, 300)))
    assert (batched.content_digest, batched.rows, batched.data_file, batched.version) == (
        whole.content_digest,
        1000,
        whole.data_file,
        whole.version,
    )
    parts = list(lake.iter_batches("m", "predictions", "p2", batch_rows=256))
    assert [len(p) for p in parts] == [256, 256, 256, 232]
    assert pd.concat(parts, ignore_index=True).equals(df)
    assert next(lake.iter_batches("m", "predictions", "p2", columns=["y"])).columns.tolist() == ["y"]


def test_batched_write_of_nothing_leaves_no_partition(lake):
    with pytest.raises(ValueError, match="no batches"):
        lake.write_batches("m", "predictions", "p1", iter(()))
    assert lake.partitions("m", "predictions") == []


def test_a_failing_batch_publishes_nothing_and_keeps_the_previous_version(lake, frame):
    lake.write_batches("m", "predictions", "p1", [frame])
    before = _files(lake, "predictions", "p1")

    def batches():
        yield frame.head(2)
        raise RuntimeError("model broke")

    with pytest.raises(RuntimeError, match="model broke"):
        lake.write_batches("m", "predictions", "p1", batches())
    assert _files(lake, "predictions", "p1") == before


def test_a_partition_written_before_versions_still_reads_and_is_replaced_cleanly(tmp_path, frame):
    """The layout of earlier releases: data and side files next to the manifest, no ``version`` field."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    folder = tmp_path / "m" / "validated" / "k1"
    folder.mkdir(parents=True)
    digest = content_digest(frame)
    pq.write_table(pa.Table.from_pandas(frame, preserve_index=False), folder / f"part-{digest[:16]}.parquet")
    (folder / "validation.json").write_bytes(b"{}")
    legacy = {
        "model": "m",
        "stage": "validated",
        "partition": "k1",
        "rows": 5,
        "content_digest": digest,
        "data_file": f"part-{digest[:16]}.parquet",
        "columns": {str(c): str(t) for c, t in frame.dtypes.items()},
        "side_files": ["validation.json"],
        "meta": {"interval_start": "2011-01-01T00:00:00+00:00"},
    }
    (folder / MANIFEST).write_text(json.dumps(legacy, indent=2, sort_keys=True) + "\n")

    lake = Lake(tmp_path)
    assert lake.partitions("m", "validated") == ["k1"]
    assert lake.manifest("m", "validated", "k1").version == ""
    pd.testing.assert_frame_equal(lake.read("m", "validated", "k1"), frame)
    assert pd.concat(lake.iter_batches("m", "validated", "k1"), ignore_index=True).equals(frame)
    assert lake.read_side_file("m", "validated", "k1", "validation.json") == b"{}"
    copied = lake.copy("m", "validated", "predictions", "k1")
    pd.testing.assert_frame_equal(lake.read("m", "predictions", "k1"), frame)

    new = lake.write("m", "validated", "k1", frame, side_files={"validation.json": b"{}"})
    assert new.content_digest == digest == copied.content_digest  # digests of old partitions stay valid
    assert set(lake.files("m", "validated", "k1")) == {
        MANIFEST,
        f"{new.version}/{new.data_file}",
        f"{new.version}/validation.json",
    }


def test_local_paths_and_file_urls_are_the_same_lake(tmp_path, frame):
    Lake(tmp_path).write("m", "raw", "k1", frame)
    by_url = Lake(f"file://{tmp_path}")
    assert by_url.root == str(tmp_path) and by_url.partitions("m", "raw") == ["k1"]
    assert by_url.partition_url("m", "raw", "k1") == str(tmp_path / "m" / "raw" / "k1")
    assert (tmp_path / "m" / "raw" / "k1" / MANIFEST).is_file()


def test_urls_for_logs_name_the_backend(lake, frame):
    manifest = lake.write("m", "raw", "k1", frame)
    url = lake.data_url(manifest)
    assert url.endswith(f"/m/raw/k1/{manifest.version}/{manifest.data_file}")
    assert url.startswith("s3://") == lake.url.startswith("s3://")
    assert lake.stage_url("m", "raw") == lake.partition_url("m", "raw", "k1").rsplit("/", 1)[0]


# Settings -----------------------------------------------------------------------------------------------


def test_default_lake_is_airloop_home_unless_a_url_is_set(monkeypatch, home, s3_env, frame):
    monkeypatch.delenv("AIRLOOP_LAKE_URL", raising=False)
    assert default_lake().root == str(home / "lake") and default_lake().local
    bucket = s3_env.bucket()
    monkeypatch.setenv("AIRLOOP_LAKE_URL", f"s3://{bucket}/lake")
    monkeypatch.setenv("AIRLOOP_LAKE_STORAGE_OPTIONS", '{"skip_instance_cache": true}')
    lake = default_lake()
    assert lake.root == f"s3://{bucket}/lake" and not lake.local
    lake.write("m", "raw", "k1", frame)
    keys = [o["Key"] for o in s3_env.client().list_objects_v2(Bucket=bucket)["Contents"]]
    assert f"lake/m/raw/k1/{MANIFEST}" in keys and len(keys) == 2


@pytest.mark.parametrize("raw", ["{not json", "[1, 2]"])
def test_bad_storage_options_name_the_variable(monkeypatch, raw):
    monkeypatch.setenv("AIRLOOP_LAKE_STORAGE_OPTIONS", raw)
    with pytest.raises(ValueError, match="AIRLOOP_LAKE_STORAGE_OPTIONS"):
        default_lake()


# Errors: a clear message naming the lake and what to check, never a bare botocore error -------------------


def test_a_missing_bucket_is_named(s3_env, frame):
    lake = Lake("s3://airloop-no-such-bucket/lake", storage_options={"skip_instance_cache": True})
    for call in (
        lambda: lake.manifest("m", "raw", "k1"),
        lambda: lake.partitions("m", "raw"),
        lambda: lake.read("m", "raw", "k1"),
        lambda: lake.write("m", "raw", "k1", frame),
        lambda: lake.delete("m", "raw", "k1"),
    ):
        with pytest.raises(LakeUnavailable) as caught:
            call()
        message = str(caught.value)
        assert "s3://airloop-no-such-bucket/lake" in message and s3_env.endpoint in message
        assert "bucket `airloop-no-such-bucket` does not exist" in message
        assert "What to check: AIRLOOP_LAKE_URL" in message and "objectstore-init" in message
        assert caught.value.__cause__ is None and caught.value.__suppress_context__


def test_refused_credentials_are_named_without_the_secret(s3_env, frame):
    lake = _s3_lake(s3_env)
    lake.write("m", "raw", "k1", frame)
    with s3_env.refusing_credentials():
        for call in (
            lambda: lake.manifest("m", "raw", "k1"),
            lambda: lake.partitions("m", "raw"),
            lambda: lake.read("m", "raw", "k1"),
            lambda: lake.write("m", "raw", "k2", frame),
        ):
            with pytest.raises(LakeUnavailable, match="refused the credentials") as caught:
                call()
            message = str(caught.value)
            assert lake.url in message and "AWS_ACCESS_KEY_ID (set) and AWS_SECRET_ACCESS_KEY" in message
            assert os.environ["AWS_SECRET_ACCESS_KEY"] not in message
    pd.testing.assert_frame_equal(lake.read("m", "raw", "k1"), frame)  # nothing was half-written meanwhile
    assert lake.partitions("m", "raw") == ["k1"]


def test_an_unreachable_object_store_is_named(s3_env, monkeypatch):
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # nothing listens there once the socket is closed
    monkeypatch.setenv("AWS_ENDPOINT_URL", f"http://127.0.0.1:{port}")
    fast = {"connect_timeout": 2, "retries": {"max_attempts": 1, "mode": "standard"}}
    lake = Lake("s3://airloop-lake/lake", storage_options={"skip_instance_cache": True, "config_kwargs": fast})
    started = time.perf_counter()
    with pytest.raises(LakeUnavailable, match=f"is unreachable .*127.0.0.1:{port}") as caught:
        lake.partitions("m", "raw")
    assert "AWS_ENDPOINT_URL points at it" in str(caught.value) and time.perf_counter() - started < 20

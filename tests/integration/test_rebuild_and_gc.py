"""Training data that can be rebuilt: a real lake (a temporary folder), real training and a real MLflow store.

A model is trained on validated partitions; one of them is re-ingested with other data (its old version is kept),
and the old model's training frame is rebuilt from the versions its lineage names, every digest checked. ``lake
gc`` lists and deletes only kept versions no registered version names; a tampered or missing version is named.
The model has its own name (a copy of the bikes spec) so the session's other tests never see its versions. The
tests run in file order and build on each other, as a lake's life does.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pandas as pd
import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
MODEL = "bikes_rebuild"
WEAK = {"max_iter": 10, "learning_rate": 0.1}


@pytest.fixture(scope="module")
def world(seeded_source, bikes_spec, tmp_path_factory):
    """A lake of its own with 14 validated partitions, and v1 of the model trained on them."""
    from airloop.adapters.db import engine_for
    from airloop.adapters.lake import Lake
    from airloop.core.contracts import RunInfo, TrainRequest
    from airloop.core.settings import SOURCE_CONN_ID
    from airloop.stages.train import runner
    from tests.support import write_validated_partitions

    root, models = tmp_path_factory.mktemp("lake"), tmp_path_factory.mktemp("models")
    raw = yaml.safe_load((ROOT / "include" / "models" / "bikes.yaml").read_text())
    (models / f"{MODEL}.yaml").write_text(yaml.safe_dump({**raw, "name": MODEL}))
    mp = pytest.MonkeyPatch()
    mp.setenv("AIRLOOP_LAKE_URL", str(root))
    mp.setenv("AIRLOOP_MODELS_DIR", str(models))
    spec = bikes_spec.model_copy(update={"name": MODEL})
    lake = Lake(root)
    keys = write_validated_partitions(engine_for(SOURCE_CONN_ID), lake, spec)
    v1 = runner.train(spec, TrainRequest(reason="first", overrides=WEAK), RunInfo())
    yield {"spec": spec, "lake": lake, "keys": keys, "v1": v1.version}
    mp.undo()


def _reingest(lake, key: str, change: float):
    """Publish a partition again with other data, as a re-ingest of a corrected source does."""
    current = lake.manifest(MODEL, "validated", key)
    frame = lake.read(MODEL, "validated", key)
    numeric = next(c for c in frame.columns if frame[c].dtype.kind == "f")
    frame[numeric] = frame[numeric] + change
    return current, lake.write(MODEL, "validated", key, frame, meta=current.meta)


def test_rebuild_after_a_reingest_uses_the_kept_version_and_every_digest_matches(world):
    from airloop.stages.train import rebuild

    lake, key = world["lake"], world["keys"][5]
    before, after = _reingest(lake, key, 0.5)
    assert after.content_digest != before.content_digest
    # Readers of the partition see the new version only; the old one is kept beside it.
    assert lake.manifest(MODEL, "validated", key) == after
    assert lake.partitions(MODEL, "validated") == world["keys"]
    assert [m.content_digest for m in lake.versions(MODEL, "validated", key)] == [before.content_digest]

    found = rebuild.read_lineage(MODEL, world["v1"])
    rebuilt = rebuild.rebuild(lake, found, world["spec"].source.time_column)
    assert rebuilt.frame_digest == found.lineage["content_digest"]
    assert len(rebuilt.frame) == found.lineage["rows"]
    assert key in {p["partition"] for p in found.partitions}
    assert len(rebuilt.checked) == len(found.partitions) > 1
    assert any(line.startswith(f"{key}:") and "kept" in line for line in rebuilt.checked)
    assert "Training frame digest" in "\n".join(rebuilt.lines())


def test_the_rebuild_command_writes_the_frame_and_notes_labels_from_the_warehouse(world, tmp_path, capsys):
    from airloop.ops.cli import main
    from airloop.stages.train import rebuild

    out = tmp_path / "v1.parquet"
    assert main(["lineage", "rebuild", "--model", MODEL, "--version", world["v1"], "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    found = rebuild.read_lineage(MODEL, world["v1"])
    assert f"Training frame digest {found.lineage['content_digest'][:12]} matches" in printed
    assert len(pd.read_parquet(out)) == found.lineage["rows"]
    assert "warehouse" not in printed

    # A run whose labels came from the warehouse table `labels` says so (its frame digest is not checked).
    labelled = replace(found, tags={**found.tags, rebuild.LABELS_DIGEST_TAG: "f" * 64})
    lines = "\n".join(rebuild.rebuild(world["lake"], labelled, world["spec"].source.time_column).lines())
    assert "labels from the warehouse table `labels`" in lines and "ffffffffffff" in lines

    assert main(["lineage", "rebuild", "--model", MODEL, "--version", "999"]) == 1
    assert "has no registered version '999'" in capsys.readouterr().err


def test_gc_dry_run_deletes_nothing_and_apply_deletes_only_unnamed_kept_versions(world, capsys):
    from airloop.ops.cli import main

    lake, key = world["lake"], world["keys"][5]
    named = lake.manifest(MODEL, "validated", key)  # what v1 was trained on is kept already (test above)
    # A second re-ingest: the version in between was never trained on, so nothing names it.
    unnamed, current = _reingest(lake, key, 1.0)
    kept = {m.version for m in lake.versions(MODEL, "validated", key)}
    assert unnamed.version in kept and len(kept) == 2
    files = sorted(lake.files(MODEL, "validated", key))

    assert main(["lake", "gc", "--model", MODEL]) == 0
    out = capsys.readouterr().out
    assert f"would delete {MODEL}/validated/{key}/{unnamed.version}" in out
    assert "bytes" in out and "Dry run" in out
    assert "Registered versions in the MLflow registry at " in out and f"{MODEL} 1." in out
    assert f"keep   {MODEL}/validated/{key}/" in out and f"named by v{world['v1']}" in out
    assert sorted(lake.files(MODEL, "validated", key)) == files  # nothing deleted

    assert main(["lake", "gc", "--model", MODEL, "--apply"]) == 0
    out = capsys.readouterr().out
    assert f"delete {MODEL}/validated/{key}/{unnamed.version}" in out
    left = {m.version for m in lake.versions(MODEL, "validated", key)}
    assert unnamed.version not in left and len(left) == 1  # the named version stays
    assert lake.manifest(MODEL, "validated", key) == current  # the current version stays
    assert not any(f.startswith(unnamed.version) for f in lake.files(MODEL, "validated", key))
    del named

    assert main(["lake", "gc", "--model", MODEL, "--apply"]) == 0
    assert "Nothing to collect" in capsys.readouterr().out


def test_a_tampered_or_missing_version_is_named_with_its_digests(world, capsys):
    from airloop.ops.cli import main
    from airloop.stages.train import rebuild

    lake, key = world["lake"], world["keys"][5]
    found = rebuild.read_lineage(MODEL, world["v1"])
    expected = next(p["content_digest"] for p in found.partitions if p["partition"] == key)
    kept = rebuild.find_version(lake, MODEL, key, expected)
    assert kept is not None and kept != lake.manifest(MODEL, "validated", key)
    path = lake.data_url(kept)
    original = pd.read_parquet(path)
    tampered = original.copy()
    tampered.iloc[0, 0] = tampered.iloc[1, 0]
    tampered.to_parquet(path, index=False)
    with pytest.raises(rebuild.RebuildProblem) as tampered_error:
        rebuild.rebuild(lake, found, world["spec"].source.time_column)
    message = str(tampered_error.value)
    assert key in message and expected in message and "actual" in message

    lake.remove_version(kept)
    with pytest.raises(rebuild.RebuildProblem) as gone:
        rebuild.rebuild(lake, found, world["spec"].source.time_column)
    message = str(gone.value)
    assert key in message and expected in message and "never removes" in message
    assert main(["lineage", "rebuild", "--model", MODEL, "--version", world["v1"]]) == 1
    assert f"FAIL: Cannot rebuild {MODEL} v{world['v1']}: validated partition {key}" in capsys.readouterr().err

"""SIGKILL mid-write: the ingest writer and the scoring writer killed at random moments, then retried.

Each writer runs in a child process doing the real write (``kill_child.py``: ``extract`` + ``publish`` of several
intervals; ``score_partition`` of several partitions) on a real lake folder and SQLite databases in a temporary
folder. The harness first runs it undisturbed twice, with two different inputs A and B (the source changed; a
different model version), which gives the two complete results and how long a write takes. Then, round after
round, the folder holding one complete result is rewritten with the other by a child that is SIGKILLed after a
random delay within the write's duration; after every kill:

- no torn partition: each lake partition's manifest is the old complete one or the new complete one, and reading
  it gives exactly the rows its manifest names (files no manifest lists are a crashed writer's garbage, which no
  reader sees and no listing shows);
- no interval with part of its predictions: each interval's rows in table ``predictions`` are all of the old
  version's or all of the new one's (never a mix, never a part);
- a retry in a fresh process succeeds, and leaves exactly what an undisturbed run of that input left.

The seed of the delays is printed and named in every failure (``AIRLOOP_KILL_SEED=<seed>`` replays the same
delays, as fractions of the write's duration measured on the machine; ``AIRLOOP_KILLS`` changes the number of
kills per writer, 30 by default). Children are forked from a fork server that preloaded the writers' imports, so
they start writing at once. About a minute on 2 cores.
"""

from __future__ import annotations

import hashlib
import json
import multiprocessing
import os
import random
import signal
import sqlite3
import statistics
import time
from collections.abc import Callable, Hashable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(900)]

KILLS = int(os.environ.get("AIRLOOP_KILLS", "30"))
#: A child that neither ends nor gets killed within this many seconds has hung: the test fails.
CHILD_TIMEOUT = 120.0
INTERVALS = 3  # intervals ingested or partitions scored per write (about 650 rows each)
CHUNK_ROWS = 100  # scoring's chunks: 7 per partition, each an INSERT statement and a row group of the lake file

Snapshot = dict[tuple[str, str], Hashable]


@pytest.fixture(scope="module")
def forkserver() -> Iterator[Any]:
    """A ``forkserver`` context whose server has imported ``tests.e2e.kill_child`` (and so the writers)."""
    from multiprocessing import forkserver as server

    context = multiprocessing.get_context("forkserver")
    context.set_forkserver_preload(["tests.e2e.kill_child"])
    server.ensure_running()  # its imports (several seconds) before any write is timed
    yield context
    server._forkserver._stop()  # type: ignore[attr-defined]


@dataclass
class Rounds:
    """Undisturbed runs of A and B, then kill-and-retry rounds until ``KILLS`` children were killed mid-write."""

    name: str
    context: Any
    home: Path
    write: Callable[[str], tuple[Callable[..., None], tuple[Any, ...]]]  # variant -> (child function, its args)
    snapshot: Callable[[], Snapshot]
    seed: int = field(default_factory=lambda: int(os.environ.get("AIRLOOP_KILL_SEED") or random.randrange(2**32)))

    def run(self, variant: str, kill_after: float | None = None) -> tuple[int, float]:
        """Run one child writing ``variant``; SIGKILL it after ``kill_after`` seconds unless it ended by then."""
        target, args = self.write(variant)
        (self.home / "child-error.txt").unlink(missing_ok=True)
        child = self.context.Process(target=target, args=args, daemon=True)
        started = time.monotonic()
        child.start()
        if kill_after is not None:
            child.join(kill_after)
            if child.exitcode is None:
                # Process.kill, not os.kill: the forkserver, not this process, reaps the child, so it can be gone
                # before its exit code reaches us (it ended on its own at that moment); Process.kill allows that.
                child.kill()
        child.join(CHILD_TIMEOUT)
        seconds = time.monotonic() - started
        if child.exitcode is None:
            child.kill()
            pytest.fail(f"{self.where()}: a child writing {variant} hung for {CHILD_TIMEOUT:.0f} s")
        return child.exitcode, seconds

    def where(self, detail: str = "") -> str:
        return f"[{self.name} writer, seed {self.seed} (AIRLOOP_KILL_SEED={self.seed}){detail}]"

    def read(self, where: str) -> Snapshot:
        """What readers see now; any failure to read (a manifest naming a missing file...) fails naming the round."""
        try:
            return self.snapshot()
        except Exception as exc:
            pytest.fail(f"{where}: reading failed: {type(exc).__name__}: {exc}")

    def child_error(self) -> str:
        error = self.home / "child-error.txt"
        return error.read_text() if error.exists() else "(no traceback: the child wrote none)"

    def go(self) -> dict[str, int]:
        rng = random.Random(self.seed)
        refs: dict[str, Snapshot] = {}
        durations = []  # of undisturbed writes replacing one complete result with the other
        for variant in ("A", "B", "A"):  # undisturbed: the two complete results, and how long a write takes
            code, seconds = self.run(variant)
            assert code == 0, f"{self.where()}: the undisturbed write of {variant} failed:\n{self.child_error()}"
            state = self.snapshot()
            assert refs.setdefault(variant, state) == state, f"{self.where()}: two writes of {variant} differ"
            durations.append(seconds)
        del durations[0]  # the first write of all creates the partitions (and finds every cache cold)
        assert refs["A"].keys() == refs["B"].keys()
        assert all(refs["A"][unit] != refs["B"][unit] for unit in refs["A"]), "A and B must differ everywhere"
        stats = {"rounds": 0, "killed": 0, "mid_write": 0}
        current = "A"
        while stats["killed"] < KILLS:
            assert stats["rounds"] < 4 * KILLS, f"{self.where()}: too few kills landed before the write ended: {stats}"
            stats["rounds"] += 1
            new = "A" if current == "B" else "B"
            duration = statistics.median(durations[-9:])  # the recent writes: the machine's load changes
            fraction = rng.random()
            delay = fraction * duration
            where = self.where(
                f", round {stats['rounds']}: {current} -> {new}, killed after {delay:.3f} s "
                f"({fraction:.3f} of the write's {duration:.3f} s)"
            )
            code, _ = self.run(new, kill_after=delay)
            killed = code == -signal.SIGKILL
            assert killed or code == 0, f"{where}: the child failed by itself (exit {code}):\n{self.child_error()}"
            state = self.read(where)  # reads every partition: a torn one fails here, naming it
            assert state.keys() == refs[current].keys(), f"{where}: the units changed: {sorted(state)}"
            for unit, value in state.items():
                assert value in (refs[current][unit], refs[new][unit]), (
                    f"{where}: {unit} is neither the old complete {current} nor the new complete {new}: {value}"
                )
            if killed:
                stats["killed"] += 1
                stats["mid_write"] += state not in (refs[current], refs[new])
            code, seconds = self.run(new)  # the retry, in a fresh process
            durations.append(seconds)
            assert code == 0, f"{where}: the retry failed (exit {code}):\n{self.child_error()}"
            retried = self.read(f"{where}, after the retry")
            differ = {unit: (retried[unit], refs[new][unit]) for unit in retried if retried[unit] != refs[new][unit]}
            assert not differ, f"{where}: the retry's result differs from an undisturbed run of {new}: {differ}"
            current = new
        line = (
            f"{self.where()}: {stats['killed']} kills in {stats['rounds']} rounds (writes take about "
            f"{statistics.median(durations):.2f} s), {stats['mid_write']} left a mix of old and new partitions; "
            "none torn, every retry equal to an undisturbed run"
        )
        print(line)
        return stats


def _manifest_state(lake: Any, model: str, stage: str, key: str) -> Hashable:
    """A partition as its readers see it: its manifest (as JSON) after checking that reading it gives exactly
    the rows and side files that manifest names; None when it has no manifest."""
    from airloop.adapters.lake import content_digest

    manifest = lake.manifest(model, stage, key)
    if manifest is None:
        return None
    frame = lake.read(model, stage, key)
    assert (len(frame), content_digest(frame)) == (manifest.rows, manifest.content_digest), (
        f"torn partition {model}/{stage}/{key}: read {len(frame)} rows of digest {content_digest(frame)[:12]}, "
        f"its manifest names {manifest.rows} rows of digest {manifest.content_digest[:12]}"
    )
    for name in manifest.side_files:
        lake.read_side_file(model, stage, key, name)
    return manifest.to_json()


# --- the ingest writer ---------------------------------------------------------------------------------------------


def _copy_db(source: Path, target: Path) -> None:
    with sqlite3.connect(source) as src, sqlite3.connect(target) as dst:
        src.backup(dst)
    dst.close()
    src.close()


def test_ingest_writer_killed_mid_write(forkserver, tmp_path, seeded_source, bikes_spec):
    from airloop.adapters.lake import Lake
    from airloop.core.intervals import expected_intervals
    from airloop.stages.ingest.runner import REPORT_FILE
    from tests.e2e import kill_child

    spec = bikes_spec
    intervals = list(expected_intervals(spec, until=datetime(2011, 12, 31, tzinfo=UTC)))[:INTERVALS]
    sources = {"A": tmp_path / "source-A.db", "B": tmp_path / "source-B.db"}
    _copy_db(seeded_source, sources["A"])
    _copy_db(seeded_source, sources["B"])
    with sqlite3.connect(sources["B"]) as db:  # the source corrected a column since A was ingested
        db.execute(f'UPDATE "{spec.source.table}" SET temp = temp + 0.01')
    db.close()
    for interval in intervals:  # what validation hands publish (see kill_child.ingest)
        report = tmp_path / "reports" / spec.name / "validation" / interval.key / REPORT_FILE
        report.parent.mkdir(parents=True)
        report.write_text(json.dumps({"partition": interval.key, "success": True}))
    lake = Lake(tmp_path / "lake")
    keys = [i.key for i in intervals]

    def snapshot() -> Snapshot:
        for stage in ("raw", "validated"):  # garbage of killed writers is no partition
            assert set(lake.partitions(spec.name, stage)) <= set(keys), lake.partitions(spec.name, stage)
        assert lake.partitions(spec.name, "quarantine") == []
        return {
            (stage, key): _manifest_state(lake, spec.name, stage, key) for stage in ("raw", "validated") for key in keys
        }

    def write(variant: str) -> tuple[Callable[..., None], tuple[Any, ...]]:
        return kill_child.ingest, (str(tmp_path), str(sources[variant]), spec, intervals)

    stats = Rounds("ingest", forkserver, tmp_path, write, snapshot).go()
    assert stats["killed"] >= KILLS


# --- the scoring writer --------------------------------------------------------------------------------------------


def test_scoring_writer_killed_mid_write(forkserver, tmp_path, seeded_source, bikes_spec):
    import numpy as np
    import sqlalchemy as sa
    from sklearn.linear_model import LinearRegression

    from airloop.adapters.db import engine_for
    from airloop.adapters.lake import Lake
    from airloop.adapters.warehouse import predictions
    from airloop.core.contracts import PinnedChampion
    from airloop.core.settings import SOURCE_CONN_ID
    from tests.e2e import kill_child
    from tests.support import write_validated_partitions

    spec = bikes_spec
    lake = Lake(tmp_path / "lake")
    partitions = write_validated_partitions(engine_for(SOURCE_CONN_ID), lake, spec, last=INTERVALS)
    frames = [lake.read(spec.name, "validated", p) for p in partitions]
    models = {  # two versions: fitted on different intervals, so every prediction differs
        "A": (PinnedChampion("1", "a" * 32), LinearRegression().fit(frames[0][spec.feature_names], frames[0]["cnt"])),
        "B": (PinnedChampion("2", "b" * 32), LinearRegression().fit(frames[1][spec.feature_names], frames[1]["cnt"])),
    }
    assert not np.allclose(models["A"][1].coef_, models["B"][1].coef_)
    warehouse_db = tmp_path / "warehouse.db"
    engine = sa.create_engine(f"sqlite:///{warehouse_db}", poolclass=sa.pool.NullPool)
    t = predictions.c

    def served(partition: str) -> Hashable:
        """An interval's rows in table predictions: their versions, how many, and a digest of every value."""
        # Not the batch's id and time: they differ each time the same variant is written again.
        columns = [c for c in t if c.name not in ("batch_id", "scored_at")]
        query = sa.select(*columns).where(t.model == spec.name, t.partition == partition).order_by(t.row_key)
        with engine.connect() as conn:
            rows = [tuple(str(v) for v in r) for r in conn.execute(query)]
        versions = tuple(sorted({r[[c.name for c in columns].index("model_version")] for r in rows}))
        return versions, len(rows), hashlib.sha256(repr(rows).encode()).hexdigest()

    def snapshot() -> Snapshot:
        assert set(lake.partitions(spec.name, "predictions")) <= set(partitions)
        state: Snapshot = {("lake", p): _manifest_state(lake, spec.name, "predictions", p) for p in partitions}
        return state | {("warehouse", p): served(p) for p in partitions}

    def write(variant: str) -> tuple[Callable[..., None], tuple[Any, ...]]:
        pinned, pipeline = models[variant]
        return kill_child.score, (str(tmp_path), str(warehouse_db), spec, partitions, pinned, pipeline, CHUNK_ROWS)

    stats = Rounds("scoring", forkserver, tmp_path, write, snapshot).go()
    assert stats["killed"] >= KILLS
    with engine.connect() as conn:  # the killed transactions left SQLite's file sound
        assert conn.exec_driver_sql("PRAGMA integrity_check").scalar_one() == "ok"

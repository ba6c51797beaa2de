"""Batch scoring: each validated partition scored by one pinned champion version, with provenance on every row.

The ``champion`` alias is resolved once per DAG run (:func:`pin_champion`) and the concrete version is passed
to every partition's scoring, so a run never mixes two models even if ``@champion`` moves meanwhile.
A partition is read and scored in bounded chunks; its rows in ``predictions`` are replaced (delete, then
insert, in one transaction) and its ``predictions`` lake partition rewritten (atomic, manifest last), so
re-scoring an interval never duplicates a row.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from datetime import datetime
from functools import lru_cache
from typing import TYPE_CHECKING, Any

from airloop import tracking
from airloop.config import WAREHOUSE_CONN_ID, paths
from airloop.intervals import parse_key
from airloop.lake import Lake
from airloop.params import ParamProblem, day

if TYPE_CHECKING:
    import pandas as pd

    from airloop.lifecycle import RunInfo
    from airloop.spec import ModelSpec

log = logging.getLogger(__name__)

DEFAULT_CHUNK_ROWS = 100_000
SCORE_PARAMS = ("start", "end")


class NoChampion(LookupError):
    """No version has the ``champion`` alias yet: there is nothing to score with."""


class ScoringProblem(ParamProblem):
    """A scoring request or input that cannot be used; the message names it and the fix."""


def pin_champion(model: str) -> dict[str, str]:
    """The champion's concrete version and MLflow run, resolved once for the whole run."""
    version = tracking.version_for_alias(model, tracking.CHAMPION)
    if version is None:
        raise NoChampion(
            f"{model} has no @champion yet, so nothing was scored. Train and promote one ({model}_train); "
            f"then re-score the range from {model}_score with params start and end."
        )
    mv = tracking.client().get_model_version(model, version)
    log.info("Scoring with %s v%s (MLflow run %s), pinned for this whole run.", model, version, mv.run_id)
    return {"version": str(version), "run_id": str(mv.run_id)}


def select_partitions(
    spec: ModelSpec, events: list[dict[str, Any]], params: dict[str, Any], conf: dict[str, Any]
) -> list[str]:
    """The validated partitions this run scores: those announced by Asset events, or those in [start, end)."""
    unknown = sorted(set(conf) - set(SCORE_PARAMS))
    if unknown:
        raise ScoringProblem(
            f"{spec.dag_id('score')} does not know the param(s) {unknown}; it takes {list(SCORE_PARAMS)}."
        )
    lake = Lake(paths().lake)
    validated = lake.partitions(spec.name, "validated")
    if events and not (params.get("start") or params.get("end")):
        announced = sorted({e["partition"] for e in events if e.get("partition")})
        missing = [p for p in announced if p not in validated]
        if missing:
            log.warning("Announced partitions no longer validated (skipped): %s", missing)
        return [p for p in announced if p in validated]
    if not params.get("start") or not params.get("end"):
        raise ScoringProblem(
            "To re-score by hand give params `start` and `end` (dates, UTC): every validated partition starting in "
            '[start, end) is scored with today\'s champion, e.g. {"start": "2012-01-01", "end": "2013-01-01"}.'
        )
    start, end = day("start", params["start"]), day("end", params["end"])
    assert start is not None and end is not None  # both checked above
    if start >= end:
        raise ScoringProblem(f"param `start` ({start:%Y-%m-%d}) must be before `end` ({end:%Y-%m-%d}).")
    chosen = [p for p in validated if start <= parse_key(p) < end]
    if not chosen:
        raise ScoringProblem(
            f"No validated partition of {spec.name} starts in [{start:%Y-%m-%d}, {end:%Y-%m-%d}); "
            f"validated ones: {f'{validated[0]} to {validated[-1]}' if validated else 'none'}."
        )
    return chosen


@lru_cache(maxsize=2)
def _load(model: str, version: str) -> tracking.LoadedModel:
    """A pinned version is immutable, so one load serves every partition of the run."""
    return tracking.load_version(model, version)


def score_partition(
    spec: ModelSpec, partition: str, pinned: dict[str, str], run: RunInfo, chunk_rows: int = DEFAULT_CHUNK_ROWS
) -> dict[str, Any]:
    """Score one validated partition with the pinned version; replace its predictions in the warehouse and lake."""
    import numpy as np
    import pandas as pd

    from airloop.db import engine_for
    from airloop.warehouse import ensure_schema, predictions

    started = time.perf_counter()
    lake = Lake(paths().lake)
    manifest = lake.manifest(spec.name, "validated", partition)
    if manifest is None:
        raise ScoringProblem(
            f"Partition {partition} of {spec.name} is not validated (quarantined or never ingested); "
            f"nothing to score. Check {spec.dag_id('ingest')} for that interval."
        )
    model = _load(spec.name, pinned["version"])
    interval_start = datetime.fromisoformat(manifest.meta["interval_start"])
    interval_end = datetime.fromisoformat(manifest.meta["interval_end"])
    time_col = spec.source.time_column
    engine = engine_for(WAREHOUSE_CONN_ID)
    ensure_schema(engine)
    provenance = {
        "model_version": pinned["version"],
        "mlflow_run_id": pinned["run_id"],
        "input_digest": manifest.content_digest,
    }
    rows = 0

    def chunks(conn: Any) -> Iterator[pd.DataFrame]:
        nonlocal rows
        for chunk in lake.iter_batches(spec.name, "validated", partition, [time_col, *spec.feature_names], chunk_rows):
            y = np.asarray(model.predict(chunk[spec.feature_names]), dtype=float)
            bad = ~np.isfinite(y)
            if bad.any():
                examples = chunk.loc[bad, time_col].head(5).tolist()
                raise ScoringProblem(
                    f"{spec.name} v{pinned['version']} gave {int(bad.sum())} non-finite predictions in partition "
                    f"{partition} (rows at {examples}); nothing of this partition was written. Check the model "
                    f"(roll back with {spec.name}_promote) and the partition's validation report."
                )
            out = pd.DataFrame({"ts": pd.to_datetime(chunk[time_col], utc=True), "prediction": y, **provenance})
            records = out.assign(
                model=spec.name,
                partition=partition,
                interval_start=interval_start,
                interval_end=interval_end,
                dag_id=run.dag_id,
                dag_run_id=run.run_id,
            ).to_dict("records")
            conn.execute(predictions.insert(), records)
            rows += len(out)
            yield out

    with engine.begin() as conn:
        conn.execute(predictions.delete().where(predictions.c.model == spec.name, predictions.c.partition == partition))
        written = lake.write_batches(
            spec.name,
            "predictions",
            partition,
            chunks(conn),
            meta={
                "interval_start": interval_start.isoformat(),
                "interval_end": interval_end.isoformat(),
                **provenance,
            },
        )
    seconds = time.perf_counter() - started
    log.info(
        "Scored %d rows of %s partition %s with v%s in %.1f s (%.0f rows/s): warehouse table predictions "
        "(replaced) and %s (digest %s).",
        rows,
        spec.name,
        partition,
        pinned["version"],
        seconds,
        rows / seconds if seconds else 0,
        lake.partition_dir(spec.name, "predictions", partition),
        written.content_digest[:12],
    )
    return {"partition": partition, "rows": rows, "version": pinned["version"], "digest": written.content_digest}

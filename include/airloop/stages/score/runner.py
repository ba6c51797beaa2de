"""Batch scoring: each validated partition scored by one pinned champion version, its provenance stored once.

The champion is resolved once per DAG run (the promotion ledger's, checked against ``@champion``:
:func:`airloop.stages.promote.ledger.served_champion`, called by the run's ``pin`` task) and the
concrete version is passed to every partition's scoring, so a run never mixes two models even if ``@champion``
moves meanwhile. A partition is read and scored in bounded chunks; its predictions in the warehouse are replaced
(its batch in ``prediction_batches`` with the provenance, its rows in ``prediction_rows``: delete by batch id,
then insert, in one transaction; the view ``predictions`` joins them) and its ``predictions`` lake partition
rewritten (atomic, manifest last), so re-scoring an interval never duplicates a row. The warehouse transaction is
the commit point: the lake partition is published only once it has committed (:func:`score_partition`).

The warehouse side (the sinks chosen by dialect and the background thread that runs them while the model
predicts the next chunk) is :mod:`airloop.adapters.prediction_sink`; what is left here is the runner
(:func:`score_partition`) and its pure steps: provenance, the row checks, the lake's rows, the log lines.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from datetime import datetime
from functools import lru_cache
from typing import TYPE_CHECKING, Any

from airloop.adapters import prediction_sink, registry
from airloop.adapters.lake import Stage, default_lake
from airloop.core.contracts import PinnedChampion, ScoredPartition
from airloop.core.intervals import parse_key
from airloop.core.params import ParamProblem, day
from airloop.core.settings import WAREHOUSE_CONN_ID
from airloop.stages.ingest.keys import row_keys
from airloop.stages.score.outputs import Classes, Outputs, bad_probability_rows, classify, positive_index

if TYPE_CHECKING:
    import numpy as np
    import pandas as pd

    from airloop.core.contracts import RunInfo
    from airloop.core.spec import ModelSpec

log = logging.getLogger(__name__)

#: Rows read, predicted and written at a time. Memory depends on this, never on the partition's size.
DEFAULT_CHUNK_ROWS = 100_000
#: Chunks handed to the database thread that may wait for it at once (each holds ``chunk_rows`` rows).
WRITES_IN_FLIGHT = 2
SCORE_PARAMS = ("start", "end")


class ScoringProblem(ParamProblem):
    """A scoring request or input that cannot be used; the message names it and the fix."""


def select_partitions(
    spec: ModelSpec, events: list[dict[str, Any]], params: dict[str, Any], conf: dict[str, Any]
) -> list[str]:
    """The validated partitions this run scores: those announced by Asset events, or those in [start, end)."""
    unknown = sorted(set(conf) - set(SCORE_PARAMS))
    if unknown:
        raise ScoringProblem(
            f"{spec.dag_id('score')} does not know the param(s) {unknown}; it takes {list(SCORE_PARAMS)}."
        )
    lake = default_lake()
    validated = lake.partitions(spec.name, "validated")
    if events and not (params.get("start") or params.get("end")):
        # `partitions`: several in one event (a re-score after @champion moved, stages.score.rescore).
        announced = sorted({p for e in events for p in [e.get("partition"), *(e.get("partitions") or [])] if p})
        missing = [p for p in announced if p not in validated]
        if missing:
            log.warning("Announced partitions no longer validated (skipped): %s", missing)
        chosen = [p for p in announced if p in validated]
        log.info(
            "Selected %d partition(s) of %s announced by %d Asset event(s)%s.",
            len(chosen),
            spec.name,
            len(events),
            f": {chosen[0]} to {chosen[-1]}" if chosen else "",
        )
        return chosen
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
    log.info(
        "Selected %d validated partition(s) of %s starting in [%s, %s) to re-score: %s to %s.",
        len(chosen),
        spec.name,
        f"{start:%Y-%m-%d}",
        f"{end:%Y-%m-%d}",
        chosen[0],
        chosen[-1],
    )
    return chosen


@lru_cache(maxsize=2)
def _load(model: str, version: str) -> registry.LoadedModel:
    """A pinned version is immutable, so one load serves every partition of the run."""
    return registry.load_version(model, version)


def score_partition(
    spec: ModelSpec,
    partition: str,
    pinned: PinnedChampion,
    run: RunInfo,
    chunk_rows: int = DEFAULT_CHUNK_ROWS,
    *,
    shadow: bool = False,
) -> ScoredPartition:
    """Score one validated partition with the pinned version; replace its predictions in the warehouse and lake.

    ``shadow``: the version is the waiting challenger, and the rows go to a batch of role ``shadow`` (the view
    ``shadow_predictions``) and lake stage ``shadow`` instead (never served: :mod:`airloop.stages.score.shadow`).

    Chunk by chunk: read, predict, refuse non-finite predictions, hand the rows to the warehouse sink (a
    background thread, at most :data:`WRITES_IN_FLIGHT` chunks behind) and append them to the lake partition's
    spooled data file. All of it happens inside one transaction that first deletes the partition's old rows; that
    transaction's commit is the commit point, and the lake partition is published only after it. A failure up
    to and including the commit therefore leaves the previous predictions as they were, in the warehouse and in
    the lake; a failure after it leaves the lake behind until the retry re-scores the interval.
    """
    from airloop.adapters.db import engine_for
    from airloop.adapters.warehouse import SERVED, SHADOW

    stage: Stage = "shadow" if shadow else "predictions"
    role, view = (SHADOW, "shadow_predictions") if shadow else (SERVED, "predictions")
    started = time.perf_counter()
    lake = default_lake()
    manifest = lake.manifest(spec.name, "validated", partition)
    if manifest is None:
        raise ScoringProblem(
            f"Partition {partition} of {spec.name} is not validated (quarantined or never ingested); "
            f"nothing to score. Check {spec.dag_id('ingest')} for that interval."
        )
    columns = list(dict.fromkeys([spec.source.time_column, *spec.keys, *spec.feature_names]))
    refuse_missing_columns(spec, partition, columns, list(manifest.columns))
    model = _load(spec.name, pinned.version)
    provenance = provenance_of(pinned, manifest.content_digest)
    constants = row_constants(spec.name, partition, manifest.meta, provenance, run)
    # The warehouse is the commit point; the lake follows it. The lake's rows are spooled (invisible) while the
    # transaction inserts the same rows, and published only after it commits: a failed commit leaves the old
    # predictions in both stores, and a failure between the commit and the publication leaves the lake one
    # version behind until the task's retry (or any re-score of the interval) writes both again. The score DAG
    # runs one at a time per model (max_active_runs=1), so no other writer publishes between the two.
    with lake.staged(spec.name, stage, partition, meta=lake_meta(constants)) as staged:
        engine = engine_for(WAREHOUSE_CONN_ID)
        with prediction_sink.replacing(engine, constants, WRITES_IN_FLIGHT, role=role) as (writes, sink):
            batches = lake.iter_batches(spec.name, "validated", partition, columns, chunk_rows)
            staged.write(_scored(spec, partition, provenance, model, batches, writes))
        written = staged.publish()
    scored = ScoredPartition(
        partition=partition, rows=written.rows, version=pinned.version, digest=written.content_digest
    )
    where = lake.partition_url(spec.name, stage, partition)
    log.info(scored_line(spec.name, scored, time.perf_counter() - started, sink.describe, str(where), view))
    return scored


def _scored(
    spec: ModelSpec,
    partition: str,
    provenance: dict[str, str],
    model: registry.LoadedModel,
    batches: Iterator[pd.DataFrame],
    writes: prediction_sink.BackgroundWrites,
) -> Iterator[pd.DataFrame]:
    """Each chunk predicted and checked, handed to the warehouse sink, then yielded as the lake's rows.

    The lake partition is committed when this generator ends: only once every row is in the transaction.
    """
    classes = model_classes(spec, partition, model)
    for chunk in batches:
        ts = row_times(spec, partition, chunk)
        keys = chunk_row_keys(spec, partition, chunk)
        outputs = _predict(spec, partition, provenance["model_version"], model, chunk, keys, classes)
        # The sink gets arrays of its own (naive UTC times, outputs), never the frame the lake is writing.
        writes.submit(prediction_sink.ScoredRows(ts.dt.tz_localize(None).to_numpy(), keys, **outputs.copy()))
        yield lake_rows(ts, keys, outputs, provenance)
    writes.finish()


def _predict(
    spec: ModelSpec,
    partition: str,
    version: str,
    model: registry.LoadedModel,
    chunk: pd.DataFrame,
    keys: list[str],
    classes: Classes | None,
) -> Outputs:
    """A regression's checked predictions, or a classifier's checked probabilities and the classes they give."""
    import numpy as np

    from airloop.stages.train.threads import few_rows

    features = chunk[spec.feature_names]
    with few_rows(len(features)):  # a small partition: one thread (threads.py says why)
        raw = model.predict(features) if classes is None else model.pipeline.predict_proba(features)
    if classes is None:
        y = np.asarray(raw, dtype=float)
        refuse_non_finite(spec, partition, version, chunk, y)
        return Outputs(prediction=y)
    proba = raw
    refuse_bad_probabilities(spec, partition, version, keys, proba, classes)
    return classify(np.asarray(proba, dtype=float), classes, spec.target.decision_threshold)


# --- pure steps: provenance, row checks, the lake's rows, the log's summaries ------------------------------------


def provenance_of(pinned: PinnedChampion, input_digest: str) -> dict[str, str]:
    """What every prediction row carries about where it came from: the version, its MLflow run, the input."""
    return {"model_version": pinned.version, "mlflow_run_id": pinned.run_id, "input_digest": input_digest}


def row_constants(
    model: str, partition: str, meta: dict[str, Any], provenance: dict[str, str], run: RunInfo
) -> dict[str, Any]:
    """The values every ``predictions`` row of the partition shares (the interval from its manifest's ``meta``)."""
    return {
        "model": model,
        "partition": partition,
        "interval_start": datetime.fromisoformat(meta["interval_start"]),
        "interval_end": datetime.fromisoformat(meta["interval_end"]),
        **provenance,
        "dag_id": run.dag_id,
        "dag_run_id": run.run_id,
    }


def lake_meta(constants: dict[str, Any]) -> dict[str, str]:
    """The ``predictions`` lake partition's manifest meta: its interval and provenance."""
    keys = ("model_version", "mlflow_run_id", "input_digest")
    return {
        "interval_start": constants["interval_start"].isoformat(),
        "interval_end": constants["interval_end"].isoformat(),
        **{k: constants[k] for k in keys},
    }


def refuse_missing_columns(spec: ModelSpec, partition: str, needed: list[str], present: list[str]) -> None:
    """Raise :class:`ScoringProblem` when the validated partition lacks a column scoring reads (keys, features)."""
    missing = [c for c in needed if c not in present]
    if missing:
        raise ScoringProblem(
            f"Validated partition {partition} of {spec.name} has no column(s) {missing} (the time column, "
            f"`source.keys` {spec.keys} and the features are read); nothing of this partition was written. If the "
            f"spec changed since it was ingested, re-ingest the interval ({spec.dag_id('ingest')}); else correct "
            f"the spec's column names (the partition has {present})."
        )


def chunk_row_keys(spec: ModelSpec, partition: str, chunk: pd.DataFrame) -> list[str]:
    """Each row's canonical key text (:mod:`airloop.stages.ingest.keys`); :class:`ScoringProblem` on a null key."""
    null = chunk[spec.keys].isna().any(axis=1)
    if null.any():
        raise ScoringProblem(
            f"Partition {partition} of {spec.name} has {int(null.sum())} rows with a null key ({spec.keys}); "
            "nothing of this partition was written. It was validated before ingestion checked row keys: "
            f"re-ingest the interval ({spec.dag_id('ingest')}), which quarantines such a batch and names its rows."
        )
    return row_keys(chunk, spec.keys)


def model_classes(spec: ModelSpec, partition: str, model: registry.LoadedModel) -> Classes | None:
    """The classifier's classes (None for a regression); :class:`ScoringProblem` when the model and spec disagree."""
    if spec.target.task != "classification":
        return None
    pipeline, version = model.pipeline, model.version
    if not (hasattr(pipeline, "predict_proba") and hasattr(pipeline, "classes_")):
        raise ScoringProblem(
            f"{spec.name} v{version} has no predict_proba/classes_, but the spec's target.task is classification; "
            f"nothing of partition {partition} was written. Promote a classifier ({spec.name}_promote rolls back), "
            "or set target.task to regression if the model predicts numbers."
        )
    raw = list(pipeline.classes_)
    positive = positive_index(raw, spec.target.positive_class) if len(raw) == 2 else None
    if len(raw) < 2 or (len(raw) == 2 and positive is None):
        what = "fewer than two classes" if len(raw) < 2 else f"no class {spec.target.positive_class!r}"
        raise ScoringProblem(
            f"{spec.name} v{version} knows {what} (its classes: {[str(c) for c in raw]}); nothing of partition "
            f"{partition} was written. Correct target.positive_class in {spec.name}.yaml to one of its classes, "
            f"or roll back to a version trained on both classes ({spec.name}_promote)."
        )
    return Classes(labels=tuple(str(c) for c in raw), positive=positive)


def refuse_bad_probabilities(
    spec: ModelSpec, partition: str, version: str, keys: list[str], proba: Any, classes: Classes
) -> None:
    """Raise :class:`ScoringProblem` naming rows by their keys when ``proba`` are not probabilities of ``classes``."""
    from airloop.core.metrics import PROBA_TOLERANCE, check_probabilities

    problem = check_probabilities(proba, classes.labels)
    if problem is None:
        return
    bad = bad_probability_rows(proba, len(classes.labels), PROBA_TOLERANCE)
    shown = [keys[i] for i in bad[:5].tolist()]
    raise ScoringProblem(
        f"{spec.name} v{version} gave unusable class probabilities in partition {partition}: {problem}. "
        f"{len(bad)} row(s) of a {len(keys)}-row chunk, keys {shown}{' ...' if len(bad) > 5 else ''}; nothing of "
        f"this partition was written. Its predict_proba must give one probability per class summing to 1: roll "
        f"back with {spec.name}_promote and fix the estimator (a calibrated classifier, not scores)."
    )


def refuse_non_finite(spec: ModelSpec, partition: str, version: str, chunk: pd.DataFrame, y: np.ndarray) -> None:
    """Raise :class:`ScoringProblem` naming the rows when a prediction is NaN or infinite (nothing is written)."""
    import numpy as np

    bad = ~np.isfinite(y)
    if bad.any():
        examples = chunk.loc[bad, spec.source.time_column].head(5).tolist()
        raise ScoringProblem(
            f"{spec.name} v{version} gave {int(bad.sum())} non-finite predictions in partition "
            f"{partition} (rows at {examples}); nothing of this partition was written. Check the model "
            f"(roll back with {spec.name}_promote) and the partition's validation report."
        )


def row_times(spec: ModelSpec, partition: str, chunk: pd.DataFrame) -> pd.Series:
    """The chunk's time column as UTC times; :class:`ScoringProblem` when one is missing."""
    import pandas as pd

    time_col = spec.source.time_column
    # cache=False: pandas' cache pays off for repeated text; on unique datetime64 values it only costs
    # (it first turns thousands of them into Timestamp objects to decide whether to cache).
    ts = pd.to_datetime(chunk[time_col], utc=True, cache=False)
    if ts.isna().any():
        raise ScoringProblem(
            f"Partition {partition} of {spec.name} has {int(ts.isna().sum())} rows without a time "
            f"({time_col} is null); nothing of this partition was written. Its validation should have "
            "refused them: check the suite and re-ingest the interval."
        )
    return ts


def lake_rows(ts: pd.Series, keys: list[str], outputs: Outputs, provenance: dict[str, str]) -> pd.DataFrame:
    """One chunk of the ``predictions`` lake partition: the warehouse's per-row columns and provenance.

    Every column has one type whatever the task (nullable floats and text), so a partition's chunks agree.
    """
    import numpy as np
    import pandas as pd

    n = len(ts)

    def column(values: Any, dtype: str) -> Any:
        # The arrays pd.array builds from a list of None, or from floats, built directly: pd.array checks every
        # element in Python (about a second per million rows per column); these are the same arrays, same dtype.
        if dtype == "Float64":
            if values is None:
                return pd.arrays.FloatingArray(np.zeros(n), np.ones(n, dtype=bool))
            if isinstance(values, np.ndarray) and values.dtype.kind == "f":
                floats = np.array(values, dtype=np.float64)  # a copy: the lake's frame shares nothing with outputs
                return pd.arrays.FloatingArray(floats, np.isnan(floats))
        if values is None:
            return pd.array(np.full(n, pd.NA, dtype=object), dtype=dtype)
        return pd.array(values, dtype=dtype)

    return pd.DataFrame(
        {
            "ts": ts.reset_index(drop=True),
            "row_key": column(keys, "string"),
            "prediction": column(outputs.prediction, "Float64"),
            "predicted_class": column(outputs.predicted_class, "string"),
            "probability": column(outputs.probability, "Float64"),
            "probabilities": column(outputs.probabilities, "string"),
            **provenance,
        }
    )


def scored_line(
    model: str, scored: ScoredPartition, seconds: float, sink: str, where: str, view: str = "predictions"
) -> str:
    """The log line of one scored partition: rows, version, speed, and where the rows went."""
    return (
        f"Scored {scored.rows} rows of {model} partition {scored.partition} with v{scored.version} in "
        f"{seconds:.1f} s ({scored.rows / seconds if seconds else 0:.0f} rows/s): warehouse view {view} "
        f"(batch and rows replaced, {sink}) and {where} (digest {scored.digest[:12]})."
    )


def run_line(model: str, results: list[ScoredPartition], pinned: PinnedChampion, seconds: float) -> str:
    """The log line of a run's scoring: how many partitions, which, with what, how many rows and how long."""
    if not results:
        return f"Nothing to score for {model}: no partition was selected."
    return (
        f"Scored {len(results)} partition(s) of {model}, {results[0].partition} to {results[-1].partition}, "
        f"with v{pinned.version} (MLflow run {pinned.run_id}): {sum(r.rows for r in results)} rows in "
        f"{seconds:.1f} s; each partition's predictions replaced in the warehouse (view predictions) and the lake."
    )


def score_partitions(
    spec: ModelSpec, partitions: list[str], pinned: PinnedChampion, run: RunInfo
) -> list[ScoredPartition]:
    """Score partitions one after another with the pinned version (loaded once); log the run's summary."""
    started = time.perf_counter()
    results = [score_partition(spec, p, pinned, run) for p in partitions]
    log.info(run_line(spec.name, results, pinned, time.perf_counter() - started))
    return results

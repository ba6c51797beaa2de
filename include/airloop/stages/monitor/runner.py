"""Drift and performance of the champion, one window per run, in data time; and the retraining request.

A monitor run looks at the window ``[as_of - window_days, as_of)`` of validated data, where ``as_of`` is the
run's param, else the end of its data interval, capped at the end of the newest validated data (so a replay of
old data, or a late source, is judged on what has arrived). It compares that window with the champion's
**training data**, found through its MLflow lineage (``lineage/training_data.json``: the lake partitions and
their digests), either whole or, with ``reference: seasonal``, only its rows from the same weeks of the year.

With Evidently (``DataDriftPreset``): drift per monitored feature, and drift of the champion's outputs
(computed by the pinned champion on both sides, so the comparison isolates what the inputs do to the output):
a regressor's predictions; a classifier's scores (the positive class's probability, or each class's) and its
mix of predicted classes (``airloop.stages.monitor.outputs``).

Performance is never re-predicted: it is **realized** from the ``outcomes`` table (the predictions that were served,
joined with their labels once they arrived) whose row time falls in the window, per model version that served
there, in the task's metrics; the champion's performance metric is judged against its holdout figure at training in
its direction (``airloop.stages.monitor.performance``). A version with fewer than ``monitoring.min_labels``
labelled outcomes in the window is shown with its count, not judged. The served rows still without a label are
**estimated** per version (CBPE, ``airloop.stages.monitor.estimate``) from the version's holdout calibration; an
estimated degradation requests retraining only with ``monitoring.act_on_estimate``. Each run also sets earlier
windows' estimates against their realized figures once those labels arrived (``estimate_errors``). Both sides
are sampled down to ``sample_cap`` rows (seeded), so the cost is bounded at any volume. NaN and inf are
counted and named (Evidently drops them silently); an empty window, a window below ``min_rows`` or a column
without a finite value fails the run with a message that says so, instead of an error deep inside Evidently.

The figures go to the ``drift_metrics`` table (one row per window and champion version: re-runs replace it),
the Evidently HTML and JSON to ``AIRLOOP_HOME/reports/<model>/drift/`` and to MLflow (experiment
``<model>-monitoring``). ``airloop.stages.monitor.policy.decide`` then says whether to ask for retraining; a
request is a ``retrain_requests`` row (one per window at most) and an event on Asset
``<model>.retrain_requested``, which starts ``<model>_train`` with the request's reason and window.
"""

from __future__ import annotations

import json
import logging
import math
import time
import warnings
from dataclasses import asdict, dataclass, field, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

from airloop.adapters import registry
from airloop.adapters.lake import default_lake
from airloop.core.contracts import MonitorRequest, MonitorSummary
from airloop.core.numbers import num, pct
from airloop.core.params import ParamProblem, day, refuse_unknown
from airloop.core.settings import WAREHOUSE_CONN_ID, paths
from airloop.core.spec import PREDICTION_COLUMN, ModelSpec, format_duration
from airloop.stages.monitor.estimate import REGRESSION_REASON, Estimate, estimate
from airloop.stages.monitor.outputs import ClassOutputs, class_outputs, prediction_columns, with_predictions
from airloop.stages.monitor.performance import Performance, outcome_frame, performance
from airloop.stages.monitor.policy import RetrainDecision, WindowResult, decide

if TYPE_CHECKING:
    import pandas as pd

    from airloop.core.contracts import PinnedChampion, RunInfo

log = logging.getLogger(__name__)

__all__ = ["Performance", "performance"]  # re-exported: the monitor's steps in one place

MONITOR_PARAMS = ("as_of",)
#: The predictions' column in the frames given to Evidently (the spec refuses a feature of that name).
PREDICTION = PREDICTION_COLUMN
DEFAULT_NUMERIC_METHOD = "wasserstein"
DEFAULT_CATEGORICAL_METHOD = "jensenshannon"


class MonitorProblem(ParamProblem):
    """A window, a reference or a param the monitor cannot judge; the message names it and what to do."""


# ---------------------------------------------------------------------------------------------------------
# Results
# ---------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ColumnDrift:
    """Evidently's verdict on one column: its method, threshold, score and whether it drifted."""

    column: str
    method: str
    threshold: float
    score: float
    drifted: bool


@dataclass(frozen=True)
class DriftResult:
    """Drift of the monitored features and of the champion's outputs (one or more columns), for one window."""

    columns: tuple[ColumnDrift, ...]
    predictions: tuple[ColumnDrift, ...]
    drift_share: float

    @property
    def prediction(self) -> ColumnDrift:
        """The output column that drifted (the highest score among them), else the highest score."""
        return max(self.predictions, key=lambda c: (c.drifted, c.score))

    @property
    def drifted_columns(self) -> tuple[str, ...]:
        """Drifted features, highest score first."""
        return tuple(c.column for c in sorted(self.columns, key=lambda c: -c.score) if c.drifted)

    @property
    def share(self) -> float:
        return len(self.drifted_columns) / len(self.columns) if self.columns else 0.0

    @property
    def drifted(self) -> bool:
        """The window drifted: at least ``drift_share`` of the features did, or an output column did."""
        return self.share >= self.drift_share or any(c.drifted for c in self.predictions)


@dataclass
class Frames:
    """The two sides of a comparison, cleaned, with what was done to them (for the verdict and the report)."""

    reference: pd.DataFrame
    current: pd.DataFrame
    notes: list[str] = field(default_factory=list)
    #: A classifier's classes (None: a regression).
    outputs: ClassOutputs | None = None


# ---------------------------------------------------------------------------------------------------------
# Pure steps (unit-tested without Airflow or MLflow)
# ---------------------------------------------------------------------------------------------------------


def clean(frame: pd.DataFrame, columns: list[str], side: str, min_rows: int) -> tuple[pd.DataFrame, list[str]]:
    """Turn inf into NaN and say how many there were; refuse what Evidently cannot judge, naming it.

    ``side`` names the data in messages (e.g. "the window [2012-01-28, 2012-02-25)"). Raises
    ``MonitorProblem`` on an empty side, fewer than ``min_rows`` rows, or a column without a finite value.
    """
    import numpy as np
    import pandas as pd

    if frame.empty:
        raise MonitorProblem(f"{side} has no rows: nothing to compare. Ingest that range first, or pick another as_of.")
    if len(frame) < min_rows:
        raise MonitorProblem(
            f"{side} has {len(frame)} rows, fewer than monitoring.min_rows ({min_rows}): too few to judge drift. "
            "Wait for more data, widen monitoring.window_days, or lower min_rows in the spec."
        )
    out = frame.copy()
    notes = []
    for column in columns:
        values = out[column]
        if pd.api.types.is_numeric_dtype(values):
            infinite = np.isinf(values.to_numpy(dtype=float, na_value=np.nan))
            if infinite.any():
                out.loc[infinite, column] = np.nan
                notes.append(f"{side}: {int(infinite.sum())} inf value(s) in `{column}` ignored")
        missing = int(out[column].isna().sum())
        if missing == len(out):
            raise MonitorProblem(
                f"Column `{column}` has no finite value in {side} ({len(out)} rows, all NaN or inf): its drift "
                "cannot be measured. Check the source and the validation suite for that column."
            )
        if missing:
            notes.append(f"{side}: {missing} NaN value(s) in `{column}` ignored ({missing / len(out):.1%})")
    return out, notes


def sample(frame: pd.DataFrame, cap: int, seed: int) -> pd.DataFrame:
    """At most ``cap`` rows, drawn uniformly with a fixed seed (the same data gives the same sample)."""
    import numpy as np

    if len(frame) <= cap:
        return frame
    # numpy's Generator draws only the rows it needs; the legacy RandomState (pandas' default for an int
    # seed) shuffles every row number first: 0.4-0.6 s at 10M rows instead of about 20 ms.
    return frame.sample(n=cap, random_state=np.random.default_rng(seed)).sort_index()


def seasonal_rows(times: pd.Series, start: datetime, end: datetime, margin_days: int) -> pd.Series:
    """Which ``times`` fall in the same weeks of the year as ``[start, end)``, widened by ``margin_days``.

    Day-of-year arithmetic wraps around the new year, so a window in early January also takes late December.
    """
    import numpy as np

    first = start - timedelta(days=margin_days)
    days = max((end - start).days + 2 * margin_days, 1)
    if days >= 365:
        return times.notna()
    wanted = {(first + timedelta(days=i)).timetuple().tm_yday for i in range(days)}
    if 366 in wanted or 365 in wanted:  # leap years: 31 December is day 366
        wanted |= {365, 366}
    return times.dt.dayofyear.isin(np.fromiter(wanted, dtype=int))


def _categorical(values: pd.Series) -> pd.Series:
    """Categories as strings (1 and "1" are one category), keeping missing values missing."""
    return values.astype(object).where(values.notna(), None).map(lambda v: v if v is None else str(v))


def drift(spec: ModelSpec, frames: Frames) -> tuple[DriftResult, Any]:
    """Evidently's data drift of the monitored features and of the champion's outputs; the result and snapshot.

    The outputs (``outputs.prediction_columns``): a regressor's ``_prediction`` (numeric); a classifier's
    probability columns (numeric) and its predicted class ``_prediction`` (a category: the class mix).

    Methods: the spec's ``method`` for every column when set; else distance-based at any sample size, normed
    Wasserstein for numbers and Jensen-Shannon for categories (p-value tests flag nearly everything on large
    samples; a category unseen in the reference counts toward the distance, it does not crash). Threshold: the
    spec's ``column_threshold``, else Evidently's 0.1 (a distance; with a p-value method, the p-value below
    which a column drifted).
    """
    from evidently import DataDefinition, Dataset, Report

    m = spec.monitoring
    kinds = {f.name: f.kind for f in spec.features}
    features = spec.monitored_features
    out_numeric, out_categorical = prediction_columns(spec, frames.current)
    numeric = [*(c for c in features if kinds[c] == "numeric"), *out_numeric]
    categorical = [*(c for c in features if kinds[c] == "categorical"), *out_categorical]
    outputs = [*out_numeric, *out_categorical]
    columns = [*features, *outputs]

    def dataset(frame: pd.DataFrame) -> Dataset:
        data = frame[columns].copy()
        for column in categorical:
            data[column] = _categorical(data[column])
        definition = DataDefinition(numerical_columns=numeric, categorical_columns=categorical)
        return Dataset.from_pandas(data, data_definition=definition)

    report = Report(_drift_metrics(spec, out_numeric, out_categorical), include_tests=True)
    with warnings.catch_warnings():
        # numpy's "invalid value encountered in divide" from Evidently's summaries of constant columns (e.g. a
        # reference with one year): noise in the task log, the drift scores are unaffected.
        warnings.simplefilter("ignore", RuntimeWarning)
        snapshot = report.run(current_data=dataset(frames.current), reference_data=dataset(frames.reference))
    found = _column_drifts(snapshot.dict())
    missing = [c for c in columns if c not in found]
    if missing:  # Evidently changed its output: say so rather than judge on part of the columns
        raise RuntimeError(f"Evidently's report has no drift result for {missing}; check the Evidently version.")
    result = DriftResult(
        columns=tuple(found[c] for c in features),
        predictions=tuple(found[c] for c in outputs),
        drift_share=m.drift_share,
    )
    return result, snapshot


def _drift_metrics(spec: ModelSpec, out_numeric: list[str], out_categorical: list[str]) -> list[Any]:
    """Evidently's metrics: the preset over the monitored features, one ``ValueDrift`` per output column."""
    from evidently.metrics import ValueDrift
    from evidently.presets import DataDriftPreset

    m = spec.monitoring
    # Evidently's own default switches to p-value tests when the reference has 1,000 rows or fewer, where the
    # same threshold would mean a p-value: one threshold must keep one meaning, so the default is pinned.
    if m.method:
        methods: dict[str, Any] = {"method": m.method}
    else:
        methods = {"num_method": DEFAULT_NUMERIC_METHOD, "cat_method": DEFAULT_CATEGORICAL_METHOD}
    default = {c: DEFAULT_NUMERIC_METHOD for c in out_numeric} | {
        c: DEFAULT_CATEGORICAL_METHOD for c in out_categorical
    }
    return [
        DataDriftPreset(
            columns=spec.monitored_features, drift_share=m.drift_share, threshold=m.column_threshold, **methods
        ),
        *(ValueDrift(column=c, method=m.method or default[c], threshold=m.column_threshold) for c in default),
    ]


def _column_drifts(report: dict[str, Any]) -> dict[str, ColumnDrift]:
    """Per-column method, threshold and score (metrics) and drifted or not (Evidently's own tests)."""
    failed = {
        test["metric_config"]["params"].get("column")
        for test in report.get("tests", [])
        if test.get("status") == "FAIL" and test["metric_config"]["params"].get("type", "").endswith("ValueDrift")
    }
    out = {}
    for metric in report["metrics"]:
        config = metric["config"]
        if not config.get("type", "").endswith("ValueDrift"):
            continue
        column = config["column"]
        out[column] = ColumnDrift(
            column=column,
            method=str(config.get("method")),
            threshold=float(config.get("threshold")),
            score=float(metric["value"]),
            drifted=column in failed,
        )
    return out


def verdict(
    spec: ModelSpec,
    version: str,
    window: tuple[datetime, datetime],
    frames: Frames,
    result: DriftResult,
    perf: Performance | None,
    decision: RetrainDecision,
    reference_kind: str,
    realized: dict[str, Performance] | None = None,
    estimates: dict[str, Estimate] | None = None,
) -> str:
    """The task log's closing lines: what drifted and by how much, performance, the decision and why."""
    start, end = window
    scores = ", ".join(
        f"{c.column} {c.score:.2f}{'*' if c.drifted else ''}" for c in sorted(result.columns, key=lambda c: -c.score)
    )
    drifted = len(result.drifted_columns)
    lines = [
        f"{spec.name} v{version}, window [{start:%Y-%m-%d}, {end:%Y-%m-%d}) ({len(frames.current)} rows sampled) "
        f"against its {reference_kind} training data ({len(frames.reference)} rows sampled):",
        f"  {'DRIFT' if result.drifted else 'no drift'}: {drifted} of {len(result.columns)} features drifted "
        f"(share {result.share:.2f}, the spec's limit {result.drift_share:.2f}); scores (* drifted): {scores}",
    ]
    lines += output_lines(result, frames.outputs)
    lines += performance_lines(perf, spec.label_latency)
    lines += other_version_lines(version, realized or {})
    lines += [e.line() for _, e in sorted((estimates or {}).items(), key=lambda kv: kv[0] != version)]
    lines.extend(f"  note: {note}" for note in frames.notes)
    lines.append(f"  decision: {'REQUEST RETRAINING' if decision.request else 'no retraining'}: {decision.reason}")
    return "\n".join(lines)


def output_lines(result: DriftResult, outputs: ClassOutputs | None) -> list[str]:
    """One verdict line per output column: a regressor's predictions, a classifier's scores and class mix."""
    lines = []
    for c in result.predictions:
        if outputs is None:
            what = "predictions"
        elif c.column == PREDICTION:
            what = "predicted-class mix"
        else:
            what = f"scores P({outputs.class_of(c.column)!r}) `{c.column}`"
        lines.append(
            f"  {what}: {c.method} {num(c.score)} (threshold {num(c.threshold)}): "
            f"{'drifted' if c.drifted else 'stable'}"
        )
    return lines


def other_version_lines(champion: str, realized: dict[str, Performance]) -> list[str]:
    """One line per other version that served in the window: its realized figures (never judged here)."""
    lines = []
    for version, perf in sorted(realized.items()):
        if version == champion:
            continue
        scores = ", ".join(f"{name} {num(value)}" for name, value in perf.scores.items())
        few = f" ({perf.unjudged})" if perf.rows < perf.min_rows else ""
        lines.append(
            f"  realized v{version} (served in the window too) on {perf.rows} labelled outcomes: {scores}{few}"
        )
    return lines


def performance_lines(perf: Performance | None, latency: timedelta) -> list[str]:
    """The verdict's performance lines: the task's metrics, the judged one against training, NaN and unseen labels."""
    if perf is None:
        return [
            "  realized performance: no labelled outcomes of the champion in the window yet (labels arrive "
            f"{format_duration(latency)} after the fact)"
        ]
    scores = ", ".join(f"{name} {num(value)}" for name, value in perf.scores.items())
    limit = "DEGRADED beyond" if perf.degraded else "within"
    judged = f": {limit} the spec's limit ({pct(perf.max_degradation)})" if perf.degradation is not None else ""
    lines = [
        f"  realized performance on {perf.rows} labelled outcomes ({perf.task}): {scores}",
        f"  judged on {perf.change()}{judged}",
    ]
    lines += [f"  note: {name}: NaN: {why}" for name, why in perf.notes.items() if name in perf.scores]
    if perf.unseen:
        shown = ", ".join(f"{label!r} ({n})" for label, n in list(perf.unseen.items())[:10])
        lines.append(
            f"  note: {sum(perf.unseen.values())} labelled row(s) hold labels the champion never saw in training, "
            f"not scored: {shown}"
        )
    return lines


# ---------------------------------------------------------------------------------------------------------
# The task bodies
# ---------------------------------------------------------------------------------------------------------


def monitor_request(
    spec: ModelSpec, params: dict[str, Any], conf: dict[str, Any], interval_end: datetime | None
) -> MonitorRequest:
    """Check the run's params and resolve ``as_of``: the param, else the run's interval end, capped at the data.

    Only the default is capped: an explicit ``as_of`` past the newest data is judged as asked (and its empty
    window says so).
    """
    refuse_unknown(conf, MONITOR_PARAMS, spec.dag_id("monitor"))
    from airloop.stages.train.steps import newest_validated_end

    explicit = day("as_of", params.get("as_of"))
    newest = newest_validated_end(spec, default_lake())
    if explicit is not None:
        as_of = explicit
    else:
        if newest is None:
            raise MonitorProblem(
                f"{spec.name} has no validated data yet, so there is nothing to monitor. "
                f"Run {spec.dag_id('ingest')} first."
            )
        as_of = min(interval_end, newest) if interval_end is not None else newest
    if explicit is not None:
        source = "param as_of"
    elif interval_end is not None and newest is not None and newest < interval_end:
        source = f"capped at the newest validated data (the run's interval ends {interval_end:%Y-%m-%d})"
    else:
        source = "the run's data interval end" if interval_end is not None else "the newest validated data"
    log.info(
        "%s judges the window [%s, %s) (as_of from %s).",
        spec.dag_id("monitor"),
        f"{as_of - timedelta(days=spec.monitoring.window_days):%Y-%m-%d}",
        f"{as_of:%Y-%m-%d}",
        source,
    )
    return MonitorRequest(as_of=as_of, explicit=explicit is not None)


def _current(spec: ModelSpec, start: datetime, end: datetime) -> tuple[pd.DataFrame, list[str]]:
    from airloop.stages.train import steps as training

    lake = default_lake()
    try:
        data = training.assemble(spec, lake, training.Window(start=start, end=end, holdout_start=end))
    except training.NoValidatedData:
        newest = training.newest_validated_end(spec, lake)
        raise MonitorProblem(
            f"No validated data of {spec.name} in the window [{start:%Y-%m-%d}, {end:%Y-%m-%d}): nothing to judge "
            f"(the newest validated data ends {f'{newest:%Y-%m-%d}' if newest else 'nowhere: none yet'}). "
            f"Ingest that range ({spec.dag_id('ingest')}), or pick another as_of."
        ) from None
    except training.TrainingProblem as exc:  # a partition without a needed column: its message says which
        raise MonitorProblem(str(exc)) from None
    return data.frame, [f"the window has a gap: {gap}" for gap in data.gaps]


def lineage(run_id: str) -> dict[str, Any]:
    """The champion's training lineage (window and partitions with their digests), from its MLflow run."""
    import mlflow.artifacts

    registry.client()
    try:
        return mlflow.artifacts.load_dict(f"runs:/{run_id}/lineage/training_data.json")
    except Exception as exc:  # MLflow raises several types for a missing artifact; all mean the same here
        from airloop.adapters.outages import find

        if find(exc) is not None:  # MLflow did not answer: not a missing lineage, and a retry may pass
            raise
        raise MonitorProblem(
            f"MLflow run {run_id} has no lineage/training_data.json ({exc}); the monitor cannot find the champion's "
            "training data. Retrain the model with airloop (it logs the lineage), then promote it."
        ) from None


def _reference(spec: ModelSpec, trained: dict[str, Any]) -> tuple[pd.DataFrame, list[str]]:
    """The champion's training rows, read back from the lake partitions its lineage names."""
    import pandas as pd

    lake = default_lake()
    time_col = spec.source.time_column
    columns = [*spec.feature_names, spec.target.name, time_col]
    frames, notes, missing = [], [], []
    for part in trained["partitions"]:
        key = part["partition"]
        manifest = lake.manifest(spec.name, "validated", key)
        if manifest is None:
            missing.append(key)
            continue
        if manifest.content_digest != part["content_digest"]:
            notes.append(f"reference partition {key} changed since training (re-ingested); its current rows are used")
        frames.append(lake.read(spec.name, "validated", key, columns=columns))
    if missing:
        notes.append(f"reference partitions no longer validated in the lake (left out): {', '.join(missing)}")
    if not frames:
        raise MonitorProblem(
            f"None of the champion's training partitions ({len(trained['partitions'])}) is in the lake any more, "
            "so there is no reference to compare with. Re-ingest them, or retrain and promote a new champion."
        )
    frame = pd.concat(frames, ignore_index=True)
    times = pd.to_datetime(frame[time_col], utc=True)
    window = trained["window"]
    inside = (times >= pd.Timestamp(window["start"])) & (times < pd.Timestamp(window["end"]))
    return frame.loc[inside].reset_index(drop=True), notes


def monitor(spec: ModelSpec, request: MonitorRequest, run: RunInfo) -> MonitorSummary:
    """Judge one window against the champion's training data; record it; decide on retraining.

    Raises ``NoChampion`` when there is no champion yet (the task skips).
    """
    started = time.perf_counter()
    pinned = registry.pin_champion(spec.name)
    window = window_of(request.as_of, spec.monitoring.window_days)
    trained = lineage(pinned.run_id)
    frames, reference_kind = _compared(spec, pinned, window, trained)
    result, snapshot = drift(spec, frames)
    realized = _realized(spec, frames.outputs, window, pinned)
    perf = realized.get(pinned.version)
    estimates = _estimates(spec, window, pinned)
    report_dir = _save_reports(spec, snapshot, window, pinned.version)
    row = drift_row(spec, pinned.version, window, reference_kind, frames, result, perf, report_dir, run)
    row |= {
        "realized": {v: p.to_dict() for v, p in realized.items()},
        "estimated_performance": {v: e.to_dict() for v, e in estimates.items()},
    }
    decision = _decide(spec, row, datetime.fromisoformat(trained["window"]["end"]))
    _compare_estimates(spec, frames.outputs)
    summary = summary_of(spec, pinned.version, window, frames, result, perf, decision, report_dir)
    summary = replace(summary, realized=row["realized"], estimated=row["estimated_performance"])
    # verdict.json is the summary without what only exists after it is written (MLflow run, seconds).
    verdict_file = {k: v for k, v in summary.to_dict().items() if k not in ("mlflow_run_id", "seconds")}
    verdict_file["outputs"] = {c.column: asdict(c) for c in result.predictions}
    (report_dir / "verdict.json").write_text(json.dumps(verdict_file, indent=2, default=str))
    summary = replace(summary, mlflow_run_id=_log_to_mlflow(spec, summary, report_dir, run, result.predictions))
    summary = replace(summary, seconds=round(time.perf_counter() - started, 2))
    text = verdict(spec, pinned.version, window, frames, result, perf, decision, reference_kind, realized, estimates)
    log.info("%s\n  report: %s (JSON beside it); MLflow run %s", text, summary.report, summary.mlflow_run_id)
    return summary


def _compared(
    spec: ModelSpec, pinned: PinnedChampion, window: tuple[datetime, datetime], trained: dict[str, Any]
) -> tuple[Frames, str]:
    """The window and the champion's training data, chosen, sampled, cleaned and predicted by the champion."""
    start, end = window
    current, notes = _current(spec, start, end)
    reference, ref_notes = _reference(spec, trained)
    reference, reference_kind, chosen_notes = choose_reference(spec, reference, window)
    notes += ref_notes + chosen_notes + overlap_notes(start, datetime.fromisoformat(trained["window"]["end"]))
    label = f"the window [{start:%Y-%m-%d}, {end:%Y-%m-%d}) of {spec.name}"
    cur, ref, clean_notes = prepare(spec, current, reference, label)
    model = registry.load_version(spec.name, pinned.version).pipeline
    outputs = None if spec.target.task == "regression" else class_outputs(spec, model.classes_)
    for frame in (cur, ref):
        with_predictions(frame, model, spec.feature_names, outputs)
    return Frames(reference=ref, current=cur, notes=notes + clean_notes, outputs=outputs), reference_kind


def _warehouse() -> Any:
    from airloop.adapters import warehouse
    from airloop.adapters.db import engine_for

    engine = engine_for(WAREHOUSE_CONN_ID)
    warehouse.ensure_schema(engine)
    return engine


def _run_of(spec: ModelSpec, version: str, pinned: PinnedChampion) -> str | None:
    """The MLflow run that trained ``version`` (the champion's is pinned); None when the registry lacks it."""
    if version == pinned.version:
        return pinned.run_id
    try:
        found = registry.client().get_model_version(spec.name, version)
    except Exception as exc:  # a version deleted from the registry: its figures are shown without a reference
        from airloop.adapters.outages import find

        if find(exc) is not None:
            raise
        return None
    return str(found.run_id) if found.run_id else None


def _run_metrics(run_id: str | None) -> dict[str, float]:
    return dict(registry.client().get_run(run_id).data.metrics) if run_id else {}


def _realized(
    spec: ModelSpec, outputs: ClassOutputs | None, window: tuple[datetime, datetime], pinned: PinnedChampion
) -> dict[str, Performance]:
    """Each version's realized performance from the ``outcomes`` in the window, against its holdout figures."""
    from airloop.adapters import warehouse

    rows = warehouse.outcomes_between(_warehouse(), spec.name, *window)
    return realized_by_version(spec, rows, outputs, lambda v: _run_metrics(_run_of(spec, v, pinned)))


def realized_by_version(
    spec: ModelSpec, rows: list[dict[str, Any]], outputs: ClassOutputs | None, reference: Any
) -> dict[str, Performance]:
    """``outcomes`` rows scored per model version in the task's metrics; ``reference(version)``: its run metrics.

    Every version's classes are read as the champion's (``outputs``): the versions of one spec share its target.
    """
    import pandas as pd

    if not rows:
        return {}
    frame = pd.DataFrame(rows)
    m = spec.monitoring
    out: dict[str, Performance] = {}
    for version, group in frame.groupby("model_version", sort=True):
        perf = performance(
            outcome_frame(group, spec.target.name, outputs),
            spec.target.name,
            reference(str(version)),
            m.max_degradation,
            metric=spec.performance_metric,
            outputs=outputs,
        )
        if perf is not None:
            out[str(version)] = replace(perf, min_rows=m.min_labels, version=str(version))
    return out


def _estimates(spec: ModelSpec, window: tuple[datetime, datetime], pinned: PinnedChampion) -> dict[str, Estimate]:
    """Each version's CBPE estimate on its served, still unlabelled rows of the window (the champion always)."""
    import pandas as pd

    from airloop.adapters import warehouse
    from airloop.stages.train import calibration as calibrations

    served = pd.DataFrame(warehouse.unlabelled_predictions(_warehouse(), spec.name, *window))
    versions = {pinned.version, *(served["model_version"].astype(str) if not served.empty else ())}
    m = spec.monitoring
    out = {}
    for version in sorted(versions):
        mine = served[served["model_version"].astype(str) == version] if not served.empty else served
        if spec.target.task == "regression":
            out[version] = Estimate(version, len(mine), reason=REGRESSION_REASON)
            continue
        run_id = _run_of(spec, version, pinned)
        record = calibrations.load_holdout(run_id) if run_id else None
        calib = None
        if record is not None:
            calib = calibrations.calibration(record, calibrate=m.calibrate_estimates, seed=spec.training.seed)
        out[version] = estimate(
            mine.reset_index(drop=True),
            calib,
            _run_metrics(run_id),
            version=version,
            metric=spec.performance_metric,
            max_degradation=m.max_degradation,
            max_ece=m.max_calibration_error,
            min_rows=m.min_labels,
        )
    return out


def _compare_estimates(spec: ModelSpec, outputs: ClassOutputs | None) -> None:
    """Set earlier windows' estimates against what their rows realized once labelled (``estimate_errors``)."""
    from airloop.adapters import warehouse

    engine = _warehouse()
    for row in compare_estimates(spec, outputs, warehouse.drift_history(engine, spec.name), engine):
        warehouse.record_estimate_error(engine, row)
        log.info(
            "Estimate of v%s for the window ending %s: %s estimated %s, realized %s on %d of its %d rows (error %s).",
            row["model_version"],
            f"{row['window_end']:%Y-%m-%d}",
            row["metric"],
            num(row["estimated"]),
            num(row["realized"]),
            row["labelled_rows"],
            row["estimated_rows"],
            num(row["error"]),
        )


def compare_estimates(
    spec: ModelSpec, outputs: ClassOutputs | None, history: list[dict[str, Any]], engine: Any
) -> list[dict[str, Any]]:
    """The ``estimate_errors`` rows of the judged windows whose estimated rows have labels now.

    The rows an estimate covered are those served in its window whose label arrived after it was made
    (``label_arrived_at`` later than the window's ``measured_at``); once at least ``monitoring.min_labels`` of
    them are labelled, each estimated metric is set against the same metric realized on them.
    """
    from airloop.adapters import warehouse

    out = []
    for h in history:
        estimated = h.get("estimated_performance") or {}
        for version, est in estimated.items():
            perf = (est or {}).get("performance")
            if not perf:
                continue
            rows = [
                r
                for r in warehouse.outcomes_between(
                    engine, spec.name, h["window_start"], h["window_end"], arrived_after=h["measured_at"]
                )
                if str(r["model_version"]) == version
            ]
            if len(rows) < spec.monitoring.min_labels:
                continue
            realized = realized_by_version(spec, rows, outputs, lambda _v: {}).get(version)
            if realized is None:
                continue
            for metric, value in perf["scores"].items():
                got = realized.scores.get(metric)
                if value is None or got is None or not math.isfinite(got):
                    continue
                out.append(
                    {
                        "model": spec.name,
                        "window_end": h["window_end"],
                        "model_version": version,
                        "metric": metric,
                        "window_start": h["window_start"],
                        "estimated": float(value),
                        "realized": float(got),
                        "error": float(value) - float(got),
                        "estimated_rows": int(est.get("rows") or 0),
                        "labelled_rows": realized.rows,
                        "estimated_at": h["measured_at"],
                    }
                )
    return out


def _save_reports(spec: ModelSpec, snapshot: Any, window: tuple[datetime, datetime], version: str) -> Path:
    """Evidently's HTML and JSON in ``reports/<model>/drift/<window end>_v<version>/``; that folder."""
    report_dir = paths().reports / spec.name / "drift" / f"{window[1]:%Y-%m-%d}_v{version}"
    report_dir.mkdir(parents=True, exist_ok=True)
    snapshot.save_html(str(report_dir / "report.html"))
    snapshot.save_json(str(report_dir / "report.json"))
    return report_dir


def _decide(spec: ModelSpec, row: dict[str, Any], train_end: datetime) -> RetrainDecision:
    """Record the window's figures (replacing a re-run's); decide on retraining from this champion's history."""
    from airloop.adapters import warehouse

    engine = _warehouse()
    history = warehouse.record_drift(engine, row)
    end = row["window_end"]
    last_request = warehouse.last_retrain_request(engine, spec.name, until=end)
    return decide(
        window_results(history),
        spec.monitoring,
        last_training_end=train_end,
        last_request_end=last_request["window_end"] if last_request else None,
        already_requested=warehouse.retrain_request_for(engine, spec.name, end) is not None,
    )


# --- pure steps of the run: the window, the reference, the rows compared, what is recorded and returned -----------


def window_of(as_of: datetime, window_days: int) -> tuple[datetime, datetime]:
    """The judged window ``[as_of - window_days, as_of)``."""
    return as_of - timedelta(days=window_days), as_of


def choose_reference(
    spec: ModelSpec, reference: pd.DataFrame, window: tuple[datetime, datetime]
) -> tuple[pd.DataFrame, str, list[str]]:
    """The training rows to compare with: all of them, or (``reference: seasonal``) those from the same weeks.

    Returns the rows, their kind (``whole`` or ``same-weeks``) and a note when the same weeks were too few.
    """
    import pandas as pd

    m = spec.monitoring
    if m.reference != "seasonal":
        return reference, "whole", []
    times = pd.to_datetime(reference[spec.source.time_column], utc=True)
    same_weeks = reference.loc[seasonal_rows(times, window[0], window[1], m.seasonal_margin_days)]
    if len(same_weeks) >= m.min_rows:
        return same_weeks.reset_index(drop=True), "same-weeks", []
    return (
        reference,
        "whole",
        [
            f"the training data has {len(same_weeks)} rows from the same weeks of the year (fewer than "
            f"min_rows {m.min_rows}): compared with the whole training data instead"
        ],
    )


def overlap_notes(start: datetime, train_end: datetime) -> list[str]:
    """A note when the window starts before the champion's training data ends."""
    if start >= train_end:
        return []
    return [
        f"the window overlaps the champion's training data (until {train_end:%Y-%m-%d}): drift and errors "
        "look smaller than they will be on new data"
    ]


def prepare(
    spec: ModelSpec, current: pd.DataFrame, reference: pd.DataFrame, label: str
) -> tuple[pd.DataFrame, pd.DataFrame, list[str]]:
    """Both sides sampled to ``sample_cap`` (seeded) and cleaned; the notes of what cleaning did."""
    m = spec.monitoring
    seed = spec.training.seed
    cur, cur_notes = clean(sample(current, m.sample_cap, seed), spec.feature_names, label, m.min_rows)
    ref, ref_notes = clean(
        sample(reference, m.sample_cap, seed), spec.feature_names, "the champion's training data", m.min_rows
    )
    return cur, ref, cur_notes + ref_notes


def drift_row(
    spec: ModelSpec,
    version: str,
    window: tuple[datetime, datetime],
    reference_kind: str,
    frames: Frames,
    result: DriftResult,
    perf: Performance | None,
    report_dir: Path,
    run: RunInfo,
) -> dict[str, Any]:
    """The window's ``drift_metrics`` row."""
    return {
        "model": spec.name,
        "window_end": window[1],
        "champion_version": version,
        "window_start": window[0],
        "reference": reference_kind,
        "reference_rows": len(frames.reference),
        "current_rows": len(frames.current),
        "drift_share": result.share,
        "drifted": result.drifted,
        "drifted_columns": list(result.drifted_columns),
        "column_scores": {c.column: asdict(c) for c in result.columns},
        "output_scores": {c.column: asdict(c) for c in result.predictions},
        "prediction_score": result.prediction.score,
        "prediction_drifted": any(c.drifted for c in result.predictions),
        "labelled_rows": perf.rows if perf else 0,
        "mae": perf.mae if perf else None,
        "rmse": perf.rmse if perf else None,
        "reference_mae": perf.reference_mae if perf else None,
        "degradation": perf.degradation if perf else None,
        "degraded": perf.degraded if perf else None,
        "performance_metric": spec.performance_metric,
        "performance": perf.to_dict() if perf else None,
        "notes": frames.notes,
        "report_path": str(report_dir / "report.html"),
        "dag_id": run.dag_id,
        "dag_run_id": run.run_id,
    }


def window_results(history: list[dict[str, Any]]) -> list[WindowResult]:
    """The champion's judged windows (``drift_metrics`` rows, oldest first) as the retraining policy reads them."""
    return [
        WindowResult(
            window_end=h["window_end"],
            drifted=bool(h["drifted"]),
            drifted_columns=tuple(h["drifted_columns"] or ()),
            degraded=bool(h["degraded"]),
            estimated_degraded=_estimated_degraded(h),
        )
        for h in history
    ]


def _estimated_degraded(h: dict[str, Any]) -> bool:
    """Whether the window's estimate for its champion (no labels yet) degraded beyond the spec's limit."""
    est = (h.get("estimated_performance") or {}).get(str(h["champion_version"])) or {}
    return bool((est.get("performance") or {}).get("degraded"))


def summary_of(
    spec: ModelSpec,
    version: str,
    window: tuple[datetime, datetime],
    frames: Frames,
    result: DriftResult,
    perf: Performance | None,
    decision: RetrainDecision,
    report_dir: Path,
) -> MonitorSummary:
    """What judge hands request (and the view reads): figures rounded for people, decision, reports, notes."""
    return MonitorSummary(
        model=spec.name,
        champion_version=version,
        window_start=window[0],
        window_end=window[1],
        drifted=result.drifted,
        drift_share=result.share,
        drifted_columns=result.drifted_columns,
        scores={c.column: round(c.score, 4) for c in result.columns},
        prediction_score=round(result.prediction.score, 4),
        prediction_drifted=any(c.drifted for c in result.predictions),
        performance=None if perf is None else perf.to_dict(),
        retrain=decision.request,
        reason=decision.reason,
        report=str(report_dir / "report.html"),
        report_json=str(report_dir / "report.json"),
        notes=tuple(frames.notes),
    )


def _log_to_mlflow(
    spec: ModelSpec, summary: MonitorSummary, report_dir: Path, run: RunInfo, outputs: tuple[ColumnDrift, ...] = ()
) -> str:
    """One run per judged window in experiment ``<model>-monitoring``: figures as metrics, reports as artifacts.

    Metrics: drift share, each feature's drift (``drift.<column>``), the outputs' drift (``prediction_drift``,
    the highest, and ``prediction_drift.<column>`` per output column when there are several), the task's
    performance metrics by name and ``<metric>_degradation``, and its estimated ones as ``estimated.<metric>``.
    """
    import mlflow

    name = f"{spec.name}-monitoring"
    experiment_id = registry.ensure_experiment(name, f"Drift and performance of {spec.name}'s champion, per window.")
    metrics = {
        "drift_share": summary.drift_share,
        "prediction_drift": summary.prediction_score,
        **{f"drift.{column}": score for column, score in summary.scores.items()},
    }
    if len(outputs) > 1:
        metrics.update({f"prediction_drift.{c.column}": c.score for c in outputs})
    perf = summary.performance
    if perf:
        metrics.update({name: value for name, value in perf["scores"].items() if value is not None})
        if perf["degradation"] is not None:
            metrics[f"{perf['metric']}_degradation"] = perf["degradation"]
    estimated = ((summary.estimated or {}).get(summary.champion_version) or {}).get("performance")
    if estimated:  # the champion's CBPE estimate on the window's unlabelled rows
        metrics.update({f"estimated.{n}": v for n, v in estimated["scores"].items() if v is not None})
    window_end = summary.window_end.isoformat()
    tags = {
        **run.tags(),
        "airloop.model": spec.name,
        "airloop.champion_version": summary.champion_version,
        "airloop.window_end": window_end,
        "airloop.drifted": str(summary.drifted).lower(),
        "airloop.decision": "request" if summary.retrain else "none",
    }
    run_name = f"{spec.name}-monitor-{window_end[:10]}-v{summary.champion_version}"
    # A retry of the same Airflow run for the same window and champion continues the run its earlier try started
    # (same metrics and reports, written again) instead of leaving a second run for the window.
    # Outside an Airflow run (no DAG or run id: a call from a shell or a notebook) there is no earlier try.
    earlier = []
    if run.dag_id and run.run_id:
        same = {k: tags[k] for k in ("airflow.dag_id", "airflow.run_id", "airloop.model", "airloop.window_end")}
        earlier = registry.runs_tagged(name, {**same, "airloop.champion_version": summary.champion_version})
    if earlier:
        log.info("Continuing MLflow run %s, which an earlier try of %s started.", earlier[0].info.run_id, run.run_id)
        resumed = mlflow.start_run(run_id=earlier[0].info.run_id, tags=tags)
    else:
        resumed = mlflow.start_run(experiment_id=experiment_id, run_name=run_name, tags=tags)
    with resumed as active:
        mlflow.log_metrics({k: v for k, v in metrics.items() if v is not None and math.isfinite(v)})
        mlflow.log_artifacts(str(report_dir), artifact_path="drift")
        return active.info.run_id


def request_retraining(spec: ModelSpec, summary: MonitorSummary, run: RunInfo) -> dict[str, Any] | None:
    """Record the retrain request the monitor decided on; return the Asset event's ``extra``, None if none.

    At most one request per window: a second run for the window finds the row and asks nothing (its
    ``decide`` already said so). The same run retried finds its own row and announces it again, so a
    failure between the insert and the event never loses the request.
    """
    from airloop.adapters import warehouse
    from airloop.adapters.db import engine_for

    if not summary.retrain:
        return None
    engine = engine_for(WAREHOUSE_CONN_ID)
    warehouse.ensure_schema(engine)
    stored = warehouse.add_retrain_request(engine, request_row(spec, summary, run, datetime.now(UTC)))
    end = summary.window_end
    if stored["dag_run_id"] != run.run_id:
        log.info(
            "Retraining for the window ending %s was already requested by run %s (request %s); nothing more asked.",
            f"{end:%Y-%m-%d}",
            stored["dag_run_id"],
            stored["id"],
        )
        return None
    reason = f"{spec.name} monitor, window ending {end:%Y-%m-%d}: {summary.reason}"
    log.info("Retraining requested (request %s): %s. Report: %s", stored["id"], reason, summary.report)
    return {
        "reason": reason[:500],
        "request_id": stored["id"],
        "window_start": summary.window_start.isoformat(),
        "window_end": end.isoformat(),
        "champion_version": summary.champion_version,
        "drifted_columns": list(summary.drifted_columns),
        "report": summary.report,
    }


def request_row(spec: ModelSpec, summary: MonitorSummary, run: RunInfo, now: datetime) -> dict[str, Any]:
    """The ``retrain_requests`` row of a window the monitor asked to retrain on."""
    return {
        "model": spec.name,
        "window_start": summary.window_start,
        "window_end": summary.window_end,
        "champion_version": summary.champion_version,
        "reason": summary.reason,
        "drifted_columns": list(summary.drifted_columns),
        "figures": {
            "drift_share": summary.drift_share,
            "scores": summary.scores,
            "prediction_score": summary.prediction_score,
            "performance": summary.performance,
        },
        "report_path": summary.report,
        "mlflow_run_id": summary.mlflow_run_id,
        "dag_id": run.dag_id,
        "dag_run_id": run.run_id,
        "requested_at": now,
    }

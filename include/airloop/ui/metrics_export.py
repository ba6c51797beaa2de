"""Prometheus metrics of the loop's ML health, per model, read from the warehouse, MLflow and Airflow on each scrape.

Served by the airloop view at ``/airloop/metrics`` (:mod:`airloop.ui.app`, behind a scrape token); the metric table in
``docs/observability.md`` is checked against :data:`METRICS` by a test.

Nothing is kept between scrapes: :func:`exposition` builds a fresh ``CollectorRegistry`` holding one
:class:`HealthCollector` per request, so values are the warehouse's state at the scrape and nothing piles up in
process-global registries (the api-server may run several workers, which would each hold their own copies).
Counters are row counts of append-only tables (the promotion ledger, retraining requests), so they only grow.

A part that cannot be read (MLflow down, Airflow's metadata DB) does not fail the scrape: its metrics are left out
and ``airloop_source_up{source=...}`` is 0, the usual way to alert on a broken exporter.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from prometheus_client.registry import Collector

from airloop.core.times import as_utc

if TYPE_CHECKING:
    from prometheus_client.metrics_core import Metric as Family
    from sqlalchemy.engine import Connection, Engine

    from airloop.core.spec import ModelSpec

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class MetricDef:
    """One exported metric as the scrape shows it: its name (a counter's with ``_total``), type, labels, meaning."""

    name: str
    type: str  # gauge or counter
    labels: tuple[str, ...]
    help: str

    @property
    def family(self) -> str:
        """The name given to ``prometheus_client`` (a counter's without ``_total``: the client appends it)."""
        return self.name.removesuffix("_total") if self.type == "counter" else self.name


METRICS: tuple[MetricDef, ...] = (
    MetricDef(
        "airloop_source_up",
        "gauge",
        ("source",),
        "1 if the source (warehouse, registry, airflow) was read at this scrape, else 0.",
    ),
    MetricDef("airloop_champion_version", "gauge", ("model",), "The MLflow model version holding @champion."),
    MetricDef(
        "airloop_champion_age_seconds",
        "gauge",
        ("model",),
        "Seconds since the champion took @champion (ledger move; else its registration).",
    ),
    MetricDef(
        "airloop_last_validation_timestamp_seconds",
        "gauge",
        ("model", "outcome"),
        "Unix time of the newest validation that passed or failed (outcome), by when it ran.",
    ),
    MetricDef(
        "airloop_last_validation_success",
        "gauge",
        ("model",),
        "1 if the newest validated interval passed, 0 if it was quarantined.",
    ),
    MetricDef(
        "airloop_quarantined_intervals",
        "gauge",
        ("model",),
        "Intervals whose latest validation failed (quarantined until re-ingested).",
    ),
    MetricDef(
        "airloop_data_freshness_seconds",
        "gauge",
        ("model",),
        "Now minus the end of the newest ingested (validated, pass or fail) interval.",
    ),
    MetricDef(
        "airloop_scoring_lag_seconds",
        "gauge",
        ("model",),
        "End of the newest passed interval minus end of the newest scored one (absent before the first scoring).",
    ),
    MetricDef(
        "airloop_drift_share",
        "gauge",
        ("model",),
        "Share of monitored features that drifted in the latest judged window.",
    ),
    MetricDef(
        "airloop_feature_drift_score",
        "gauge",
        ("model", "feature", "method"),
        "Drift score of a monitored feature in the latest window (method: a p-value or a distance).",
    ),
    MetricDef(
        "airloop_feature_drifted",
        "gauge",
        ("model", "feature"),
        "1 if the feature drifted in the latest window, else 0.",
    ),
    MetricDef(
        "airloop_prediction_drift_score",
        "gauge",
        ("model",),
        "Drift score of the champion's outputs in the latest window.",
    ),
    MetricDef(
        "airloop_drift_window_end_timestamp_seconds",
        "gauge",
        ("model",),
        "Unix time of the end of the latest judged window.",
    ),
    MetricDef(
        "airloop_performance",
        "gauge",
        ("model", "metric", "kind"),
        "The champion's metric: kind=realized on the newest window with labelled outcomes, kind=estimated (CBPE) "
        "on the newest window's rows without labels yet.",
    ),
    MetricDef(
        "airloop_estimate_error",
        "gauge",
        ("model", "metric"),
        "Estimated minus realized metric of the newest window whose estimated rows got their labels.",
    ),
    MetricDef(
        "airloop_pending_approvals",
        "gauge",
        ("model",),
        "Human-in-the-loop tasks of the model's train and promote DAGs waiting for an answer.",
    ),
    MetricDef(
        "airloop_oldest_pending_approval_age_seconds",
        "gauge",
        ("model",),
        "Age of the oldest pending approval (0 when none).",
    ),
    MetricDef("airloop_retrain_requests_total", "counter", ("model",), "Retraining requests the monitor made."),
    MetricDef("airloop_promotions_total", "counter", ("model",), "Promotions that moved @champion (ledger rows)."),
    MetricDef("airloop_rollbacks_total", "counter", ("model",), "Rollbacks that moved @champion (ledger rows)."),
)
BY_NAME = {m.name: m for m in METRICS}

#: Reads a model's champion: (version, registration time), or None without a champion; raises when unreadable.
ChampionReader = Callable[[str], "tuple[str, datetime | None] | None"]


@dataclass
class ModelHealth:
    """One model's figures at one scrape (None: no value yet, the series is left out)."""

    model: str
    champion_version: str | None = None
    champion_since: datetime | None = None
    last_passed_at: datetime | None = None
    last_failed_at: datetime | None = None
    last_success: bool | None = None
    quarantined: int = 0
    newest_ingested_end: datetime | None = None
    newest_passed_end: datetime | None = None
    newest_scored_end: datetime | None = None
    drift_window_end: datetime | None = None
    drift_share: float | None = None
    feature_scores: dict[str, tuple[str, float, bool]] = field(
        default_factory=dict
    )  # feature -> method, score, drifted
    prediction_score: float | None = None
    performance: dict[str, float] = field(default_factory=dict)  # realized, on the newest labelled window
    estimated: dict[str, float] = field(default_factory=dict)  # CBPE, on the newest window's unlabelled rows
    estimate_errors: dict[str, float] = field(default_factory=dict)  # metric -> estimated - realized
    approvals: list[datetime] = field(default_factory=list)  # created_at of each pending approval
    retrain_requests: int = 0
    promotions: int = 0
    rollbacks: int = 0


@dataclass
class Health:
    """Every model's figures and which sources could be read."""

    models: list[ModelHealth]
    sources: dict[str, bool]
    now: datetime


def mlflow_champion(model: str) -> tuple[str, datetime | None] | None:
    """The @champion version of a model in the MLflow registry and when that version was registered."""
    from airloop.adapters import registry

    version = registry.version_for_alias(model, registry.CHAMPION)
    if version is None:
        return None
    created = registry.client().get_model_version(model, version).creation_timestamp
    return version, datetime.fromtimestamp(created / 1000, tz=UTC) if created else None


def read_warehouse(engine: Engine, health: ModelHealth) -> None:
    """Fill in what the warehouse knows of ``health.model`` (validations, scoring, drift, requests, ledger)."""
    with engine.connect() as conn:
        _read_validations(conn, health)
        _read_drift(conn, health)
        _read_decisions(conn, health)


def _read_validations(conn: Connection, health: ModelHealth) -> None:
    """Validation outcomes, quarantine, the newest ingested, passed and scored intervals."""
    import sqlalchemy as sa

    from airloop.adapters import warehouse as w

    model, v, p = health.model, w.validation_results.c, w.predictions.c
    for success, at, end, n in conn.execute(
        sa.select(v.success, sa.func.max(v.validated_at), sa.func.max(v.interval_end), sa.func.count())
        .where(v.model == model)
        .group_by(v.success)
    ):
        if success:
            health.last_passed_at, health.newest_passed_end = as_utc(at), as_utc(end)
        else:
            health.last_failed_at, health.quarantined = as_utc(at), int(n)
        if end is not None and (health.newest_ingested_end is None or as_utc(end) > health.newest_ingested_end):
            health.newest_ingested_end = as_utc(end)
    newest = conn.execute(sa.select(v.success).where(v.model == model).order_by(v.interval_end.desc()).limit(1))
    found = newest.scalar()
    health.last_success = None if found is None else bool(found)
    # The newest row by ts is in the newest scored interval (intervals do not overlap), and (model, ts) is
    # indexed: one index probe instead of max(interval_end) over every prediction of the model.
    scored = conn.execute(sa.select(p.interval_end).where(p.model == model).order_by(p.ts.desc()).limit(1)).scalar()
    health.newest_scored_end = as_utc(scored) if scored is not None else None


def _read_drift(conn: Connection, health: ModelHealth) -> None:
    """The latest judged window's drift, and the realized performance of the newest labelled one."""
    import sqlalchemy as sa

    from airloop.adapters import warehouse as w

    d = w.drift_metrics.c
    newest_first = (d.window_end.desc(), d.measured_at.desc())
    window = conn.execute(
        sa.select(d.window_end, d.drift_share, d.column_scores, d.prediction_score)
        .where(d.model == health.model)
        .order_by(*newest_first)
        .limit(1)
    ).first()
    if window is not None:
        health.drift_window_end = as_utc(window.window_end)
        health.drift_share = float(window.drift_share)
        health.prediction_score = float(window.prediction_score)
        health.feature_scores = {
            str(col): (str(s.get("method", "")), float(s["score"]), bool(s.get("drifted")))
            for col, s in (window.column_scores or {}).items()
            if isinstance(s, dict) and s.get("score") is not None
        }
    # labelled_rows, not ``performance IS NOT NULL``: a JSON column stores None as JSON 'null', not NULL.
    labelled = conn.execute(
        sa.select(d.performance).where(d.model == health.model, d.labelled_rows > 0).order_by(*newest_first).limit(1)
    ).scalar()
    if isinstance(labelled, dict):
        scores = labelled.get("scores") or {}
        health.performance = {str(k): float(x) for k, x in scores.items() if isinstance(x, int | float)}
    _read_estimates(conn, health)


def _read_estimates(conn: Connection, health: ModelHealth) -> None:
    """The champion's estimate in the newest judged window (when it was estimated), and the newest estimate errors."""
    import sqlalchemy as sa

    from airloop.adapters import warehouse as w

    d = w.drift_metrics.c
    newest = conn.execute(
        sa.select(d.champion_version, d.estimated_performance)
        .where(d.model == health.model)
        .order_by(d.window_end.desc(), d.measured_at.desc())
        .limit(1)
    ).first()
    if newest is not None and isinstance(newest.estimated_performance, dict):
        mine = newest.estimated_performance.get(str(newest.champion_version)) or {}
        scores = (mine.get("performance") or {}).get("scores") or {}
        health.estimated = {str(k): float(x) for k, x in scores.items() if isinstance(x, int | float)}
    e = w.estimate_errors.c
    window = conn.execute(sa.select(sa.func.max(e.window_end)).where(e.model == health.model)).scalar()
    if window is not None:
        rows = conn.execute(sa.select(e.metric, e.error).where(e.model == health.model, e.window_end == window))
        health.estimate_errors = {str(r.metric): float(r.error) for r in rows}


def _read_decisions(conn: Connection, health: ModelHealth) -> None:
    """Retraining requests, promotions and rollbacks, and when @champion last moved to its version."""
    import sqlalchemy as sa

    from airloop.adapters import warehouse as w

    model, r, lg = health.model, w.retrain_requests.c, w.promotion_ledger.c
    health.retrain_requests = int(conn.execute(sa.select(sa.func.count()).where(r.model == model)).scalar() or 0)
    for action, n in conn.execute(
        sa.select(lg.action, sa.func.count()).where(lg.model == model, lg.moved.is_(True)).group_by(lg.action)
    ):
        if action == "promote":
            health.promotions = int(n)
        elif action == "rollback":
            health.rollbacks = int(n)
    if health.champion_version is not None:
        moved = conn.execute(
            sa.select(lg.recorded_at)
            .where(lg.model == model, lg.moved.is_(True), lg.champion_after == health.champion_version)
            .order_by(lg.seq.desc())
            .limit(1)
        ).scalar()
        if moved is not None:
            health.champion_since = as_utc(moved)


def read_health(
    specs: Sequence[ModelSpec],
    engine: Engine,
    *,
    champion: ChampionReader = mlflow_champion,
    approvals: Callable[[list[str]], dict[str, list[datetime]]] | None = None,
    now: datetime | None = None,
) -> Health:
    """Every model's figures. ``approvals`` maps DAG ids to the creation times of their pending approvals."""
    from airloop.adapters import warehouse

    health = Health(models=[ModelHealth(s.name) for s in specs], sources={}, now=now or datetime.now(UTC))
    health.sources["registry"] = True
    for h in health.models:
        try:
            found = champion(h.model)
        except Exception as exc:  # MLflow down: the warehouse's figures still go out
            log.warning("airloop metrics: champion of %s unreadable: %s", h.model, exc)
            health.sources["registry"] = False
            continue
        if found is not None:
            h.champion_version, h.champion_since = found[0], found[1]
    try:
        warehouse.ensure_schema(engine)
        for h in health.models:
            read_warehouse(engine, h)
        health.sources["warehouse"] = True
    except Exception as exc:
        log.warning("airloop metrics: warehouse unreadable: %s", exc)
        health.sources["warehouse"] = False
    if approvals is not None:
        dag_ids = {s.name: [s.dag_id(stage) for stage in ("train", "promote")] for s in specs}
        try:
            pending = approvals([d for ids in dag_ids.values() for d in ids])
            for h in health.models:
                h.approvals = sorted(at for d in dag_ids[h.model] for at in pending.get(d, []))
            health.sources["airflow"] = True
        except Exception as exc:
            log.warning("airloop metrics: pending approvals unreadable: %s", exc)
            health.sources["airflow"] = False
    return health


def _seconds(later: datetime, earlier: datetime) -> float:
    return (as_utc(later) - as_utc(earlier)).total_seconds()


def families(health: Health) -> Iterator[Family]:
    """The metric families of ``health``, one per :data:`METRICS` entry, in that order."""
    from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

    samples: dict[str, list[tuple[list[str], float]]] = {m.name: [] for m in METRICS}

    def put(name: str, labels: Iterable[str], value: float) -> None:
        samples[name].append((list(labels), float(value)))

    for source, ok in sorted(health.sources.items()):
        put("airloop_source_up", [source], 1 if ok else 0)
    now = health.now
    for h in health.models:
        m = [h.model]
        if h.champion_version is not None and h.champion_version.isdigit():
            put("airloop_champion_version", m, int(h.champion_version))
        if h.champion_version is not None and h.champion_since is not None:
            put("airloop_champion_age_seconds", m, _seconds(now, h.champion_since))
        for outcome, at in (("passed", h.last_passed_at), ("failed", h.last_failed_at)):
            if at is not None:
                put("airloop_last_validation_timestamp_seconds", [*m, outcome], at.timestamp())
        if h.last_success is not None:
            put("airloop_last_validation_success", m, 1 if h.last_success else 0)
        put("airloop_quarantined_intervals", m, h.quarantined)
        if h.newest_ingested_end is not None:
            put("airloop_data_freshness_seconds", m, _seconds(now, h.newest_ingested_end))
        if h.newest_passed_end is not None and h.newest_scored_end is not None:
            put("airloop_scoring_lag_seconds", m, max(0.0, _seconds(h.newest_passed_end, h.newest_scored_end)))
        if h.drift_share is not None:
            put("airloop_drift_share", m, h.drift_share)
        for feature, (method, score, drifted) in sorted(h.feature_scores.items()):
            put("airloop_feature_drift_score", [*m, feature, method], score)
            put("airloop_feature_drifted", [*m, feature], 1 if drifted else 0)
        if h.prediction_score is not None:
            put("airloop_prediction_drift_score", m, h.prediction_score)
        if h.drift_window_end is not None:
            put("airloop_drift_window_end_timestamp_seconds", m, h.drift_window_end.timestamp())
        for metric, value in sorted(h.performance.items()):
            put("airloop_performance", [*m, metric, "realized"], value)
        for metric, value in sorted(h.estimated.items()):
            put("airloop_performance", [*m, metric, "estimated"], value)
        for metric, value in sorted(h.estimate_errors.items()):
            put("airloop_estimate_error", [*m, metric], value)
        if health.sources.get("airflow"):
            put("airloop_pending_approvals", m, len(h.approvals))
            put("airloop_oldest_pending_approval_age_seconds", m, _seconds(now, h.approvals[0]) if h.approvals else 0)
        if health.sources.get("warehouse"):
            put("airloop_retrain_requests_total", m, h.retrain_requests)
            put("airloop_promotions_total", m, h.promotions)
            put("airloop_rollbacks_total", m, h.rollbacks)
    for d in METRICS:
        kind: Any = CounterMetricFamily if d.type == "counter" else GaugeMetricFamily
        family = kind(d.family, d.help, labels=list(d.labels))
        for labels, value in samples[d.name]:
            family.add_metric(labels, value)
        yield family


class HealthCollector(Collector):
    """A ``prometheus_client`` custom collector: reads the health on each ``collect`` (one per scrape)."""

    def __init__(self, read: Callable[[], Health]) -> None:
        self._read = read

    def collect(self) -> Iterator[Family]:
        yield from families(self._read())

    def describe(self) -> list[Family]:
        return []  # registering must not read the warehouse: the client calls describe() on register


def exposition(read: Callable[[], Health]) -> tuple[bytes, str]:
    """The text exposition of one fresh scrape, and its content type."""
    from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

    registry = CollectorRegistry(auto_describe=False)
    registry.register(HealthCollector(read))
    return generate_latest(registry), CONTENT_TYPE_LATEST


def markdown_table() -> str:
    """The metric table of ``docs/observability.md`` (a test checks that the page holds exactly this)."""
    lines = ["| metric | type | labels | meaning |", "| --- | --- | --- | --- |"]
    for d in METRICS:
        labels = ", ".join(f"`{label}`" for label in d.labels)
        lines.append(f"| `{d.name}` | {d.type} | {labels} | {d.help} |")
    return "\n".join(lines) + "\n"

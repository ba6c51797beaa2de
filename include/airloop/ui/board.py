"""What the airloop view in the Airflow UI shows, per model: read from MLflow and the warehouse, rendered as HTML.

The view (``plugins/airloop_view.py``, served by :mod:`airloop.ui.app`) is one page per model:

- the **champion** and the **challenger** (``@champion`` / ``@challenger`` in the MLflow registry) with their
  holdout metrics, training window and a link to each MLflow run;
- the **quarantined intervals** (all of them: each stays until re-ingested) and the **latest validations** (pass
  or fail, rows, failed expectations, a link to the result or the Data Docs page);
- the **drift trend** of the latest monitored windows, as an SVG chart drawn here (no JavaScript library to
  download: the UI must work on a closed network), each point linking to its Evidently report, with the change of
  the window's ``performance_metric`` (any task's metric, in its direction);
- the **outcome curve**: the realized performance (the gate's metric) of each model version per data interval,
  from the served predictions joined with the labels that arrived (``outcomes``), as an SVG line per version;
- the **latest predictions**: each row's key, time, output (a regression's value; a classifier's class and
  probability) and the model version that made it;
- the **retraining requests**, the **promotion ledger**, and the **pending approvals** with a link to answer them.

Everything here is plain data and HTML so it is unit tested without a server; the FastAPI app adds the
authentication and the Airflow metadata (approvals) around it.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from airloop.core.jsonable import jsonable
from airloop.core.numbers import shown
from airloop.core.spec import STAGES
from airloop.core.urls import MOUNT, report_url

if TYPE_CHECKING:
    from sqlalchemy.engine import Engine

    from airloop.adapters.lake import Lake
    from airloop.core.spec import ModelSpec

log = logging.getLogger(__name__)

#: Shown on a version card after its holdout metrics.
CARD_COUNTS = ("holdout_rows", "train_rows")


def card_metrics(run_metrics: dict[str, float], gate_metric: str) -> dict[str, float]:
    """A version card's numbers: ``holdout_<gate metric>`` first, then the run's other holdout metrics in the
    metric registry's order (those of its task: the others are not on the run), then the row counts."""
    from airloop.core import metrics

    names = [gate_metric] + [m.name for t in metrics.TASKS for m in metrics.metrics_for(t)]
    keys = [*dict.fromkeys(f"holdout_{n}" for n in names), *CARD_COUNTS]
    return {k: run_metrics[k] for k in keys if k in run_metrics}


@dataclass(frozen=True)
class VersionCard:
    """A registered version as the view shows it."""

    alias: str
    version: str
    run_id: str
    metrics: dict[str, float]
    window: str
    created: datetime | None
    url: str | None


@dataclass(frozen=True)
class Approval:
    """A task waiting for a person's answer (Airflow human-in-the-loop)."""

    dag_id: str
    run_id: str
    task_id: str
    subject: str
    created_at: datetime
    url: str


@dataclass
class Board:
    """Everything on one model's page."""

    model: str
    description: str
    owner: str
    dag_ids: dict[str, str]
    champion: VersionCard | None = None
    challenger: VersionCard | None = None
    validations: list[dict[str, Any]] = field(default_factory=list)  # newest first
    quarantined: list[dict[str, Any]] = field(default_factory=list)  # every failed interval, newest first
    drift: list[dict[str, Any]] = field(default_factory=list)  # oldest first
    predictions: list[dict[str, Any]] = field(default_factory=list)  # the newest scored rows, newest first
    requests: list[dict[str, Any]] = field(default_factory=list)  # newest first
    #: Estimates set against what their rows realized once labelled (``estimate_errors``), newest window first.
    estimate_errors: list[dict[str, Any]] = field(default_factory=list)
    ledger: list[dict[str, Any]] = field(default_factory=list)  # newest first
    approvals: list[Approval] = field(default_factory=list)
    #: Whether the user looking may answer this model's approvals (the auth manager's answer); None: not asked.
    can_answer_approvals: bool | None = None
    drift_share_threshold: float = 0.0
    #: Realized performance per data interval and version, from ``outcomes`` (oldest first; see :func:`outcome_chart`).
    outcome_curve: list[dict[str, Any]] = field(default_factory=list)
    outcome_metric: str = ""
    #: Outcomes (served predictions with their label) per version.
    outcome_counts: dict[str, int] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)  # parts that could not be read, said on the page

    def to_dict(self) -> dict[str, Any]:
        """The board as JSON-ready data (the view's ``/api/models/<model>`` answer)."""
        from dataclasses import asdict

        return jsonable(asdict(self))


def _card(model: str, alias: str, mlflow_ui: str | None, gate_metric: str) -> VersionCard | None:
    from airloop.adapters import registry

    version = registry.version_for_alias(model, alias)
    if version is None:
        return None
    c = registry.client()
    mv = c.get_model_version(model, version)
    if not mv.run_id:
        return None  # a version registered outside airloop, with no run: nothing to show
    run = c.get_run(mv.run_id)
    metrics = card_metrics(dict(run.data.metrics), gate_metric)
    url = f"{mlflow_ui}/#/experiments/{run.info.experiment_id}/runs/{mv.run_id}" if mlflow_ui else None
    created = datetime.fromtimestamp(mv.creation_timestamp / 1000, tz=UTC) if mv.creation_timestamp else None
    return VersionCard(alias, version, mv.run_id, metrics, run.data.tags.get("airloop.window", ""), created, url)


def load_board(
    spec: ModelSpec,
    engine: Engine,
    *,
    approvals: list[Approval] | None = None,
    mlflow_ui: str | None = None,
    limit: int = 12,
    lake: Lake | None = None,
) -> Board:
    """Read one model's page. A part that cannot be read (MLflow down, say) is named in ``problems``, not raised."""
    from airloop.adapters import registry, warehouse
    from airloop.stages.promote import ledger as promotion

    board = Board(
        model=spec.name,
        description=spec.description,
        owner=spec.owner,
        dag_ids={stage: spec.dag_id(stage) for stage in STAGES},
        approvals=approvals or [],
        drift_share_threshold=spec.monitoring.drift_share,
    )
    try:
        board.champion = _card(spec.name, registry.CHAMPION, mlflow_ui, spec.gate_metric)
        board.challenger = _card(spec.name, registry.CHALLENGER, mlflow_ui, spec.gate_metric)
        if board.challenger and board.champion and board.challenger.version == board.champion.version:
            board.challenger = None  # promoted: the challenger is the champion now
    except Exception as exc:  # the page must still show the warehouse's story when MLflow is down
        log.warning("airloop view: MLflow registry of %s unreadable: %s", spec.name, exc)
        board.problems.append(f"MLflow registry not readable ({type(exc).__name__}: {exc}); check `airloop status`.")
    try:
        warehouse.ensure_schema(engine)
        board.validations = warehouse.recent_validations(engine, spec.name, limit=limit)
        board.quarantined = warehouse.recent_validations(engine, spec.name, limit=100, failed_only=True)
        _add_retractions(spec.name, board.quarantined, lake)
        board.drift = list(reversed(warehouse.drift_history(engine, spec.name, limit=limit)))
        load_outcome_curve(board, spec, engine)
        board.predictions = latest_predictions(engine, spec.name, limit=limit)
        board.requests = list(reversed(warehouse.retrain_requests_of(engine, spec.name)))[:limit]
        board.estimate_errors = warehouse.estimate_errors_of(engine, spec.name, limit=limit * 4)
        # The decisions, and an intent only while it is open (a promotion cut half way): closed ones are noise.
        board.ledger = promotion.shown(promotion.ledger(engine, spec.name, limit=limit))
    except Exception as exc:
        log.warning("airloop view: warehouse of %s unreadable: %s", spec.name, exc)
        board.problems.append(f"Warehouse not readable ({type(exc).__name__}: {exc}); check the connection.")
    return board


def load_outcome_curve(board: Board, spec: ModelSpec, engine: Engine, windows: int = 24) -> None:
    """The realized gate metric per version over the newest ``windows`` data intervals that have outcomes."""
    from airloop.adapters.outcome_curve import outcome_counts, realized_curve

    board.outcome_metric = spec.gate_metric
    curve = realized_curve(engine, spec.name, task=spec.target.task, metric=spec.gate_metric)
    kept = sorted({c["window"] for c in curve})[-windows:]
    board.outcome_curve = [c for c in curve if c["window"] in kept]
    board.outcome_counts = outcome_counts(engine, spec.name)


def _add_retractions(model: str, quarantined: list[dict[str, Any]], lake: Lake | None) -> None:
    """Each quarantined interval's ``retracted``: what its quarantine recorded about the predictions withdrawn
    (served from the data it held before), or None. An unreadable lake leaves them unset, said in the log."""
    from airloop.adapters.lake import default_lake

    try:
        lake = lake or default_lake()
        for row in quarantined:
            manifest = lake.manifest(model, "quarantine", str(row["partition"]))
            row["retracted"] = manifest.meta.get("retracted") if manifest is not None else None
    except Exception as exc:
        log.warning("airloop view: quarantine records of %s unreadable: %s", model, exc)


def latest_predictions(engine: Engine, model: str, limit: int = 12) -> list[dict[str, Any]]:
    """The newest scored rows of a model (by interval, then time, then key), newest first.

    Batch by batch from the newest interval (``prediction_batches`` is indexed on model and interval end), each
    batch's rows read from the view ``predictions`` by batch id, until ``limit`` rows: never a sort of every row.
    """
    import sqlalchemy as sa

    from airloop.adapters import warehouse

    b, t = warehouse.prediction_batches.c, warehouse.predictions.c
    columns = [t.partition, t.ts, t.row_key, t.prediction, t.predicted_class, t.probability, t.probabilities]
    found: list[dict[str, Any]] = []
    with engine.connect() as conn:
        batches = conn.execute(
            sa.select(b.id).where(b.model == model, b.role == warehouse.SERVED).order_by(b.interval_end.desc())
        ).scalars()
        for batch_id in batches.all():
            query = (
                sa.select(*columns, t.model_version, t.mlflow_run_id)
                .where(t.batch_id == batch_id)
                .order_by(t.ts.desc(), t.row_key.desc())
                .limit(limit - len(found))
            )
            found += [dict(r._mapping) for r in conn.execute(query)]
            if len(found) >= limit:
                break
    return found


def prediction_text(row: dict[str, Any]) -> str:
    """A scored row's output for people: a regression's value, or a classifier's class with its probability
    (binary: of the positive class; multiclass: of the predicted class)."""
    if row.get("predicted_class") is None:
        return shown(row.get("prediction"))
    probability = row.get("probability")
    if probability is None:
        return str(row["predicted_class"])
    which = "P(class)" if row.get("probabilities") else "P(positive)"
    return f"{row['predicted_class']} ({which} {shown(probability)})"


def degradation_text(window: dict[str, Any]) -> str:
    """A judged window's performance against training, in the metric's direction: ``rmse worse by 50%``,
    ``roc_auc better by 3%``; ``no labels`` or ``not judged`` when there is no figure."""
    degradation = window.get("degradation")
    if degradation is None:
        if not window.get("labelled_rows"):
            return "no labels"
        perf = window.get("performance") or {}
        rows, needed = perf.get("rows"), perf.get("min_rows") or 0
        if rows is not None and rows < needed:
            return f"not judged: {rows} labels, fewer than {needed}"
        return "not judged"
    metric = window.get("performance_metric") or "performance"
    way = "worse" if degradation > 0 else "better"
    return f"{metric} {way} by {abs(degradation):.0%}"


def _scores_text(perf: dict[str, Any], metric: str | None) -> str:
    """The judged metric first (else the first two), ``roc_auc 0.81, accuracy 0.74``."""
    scores = {k: v for k, v in (perf.get("scores") or {}).items() if v is not None}
    names = [metric] if metric in scores else list(scores)[:2]
    return ", ".join(f"{n} {shown(scores[n])}" for n in names) or "no figure"


def realized_text(window: dict[str, Any]) -> str:
    """Each version's realized figure in the window from its outcomes: ``v2: roc_auc 0.81 (640 labels)``."""
    realized = window.get("realized") or {}
    metric = window.get("performance_metric")
    parts = []
    for version, perf in sorted(realized.items()):
        few = " too few to judge" if (perf.get("rows") or 0) < (perf.get("min_rows") or 0) else ""
        parts.append(f"v{version}: {_scores_text(perf, metric)} ({perf.get('rows')} labels{few})")
    return "; ".join(parts) or "no labelled outcomes"


def estimated_text(window: dict[str, Any]) -> str:
    """The champion's estimate on the window's unlabelled rows (CBPE), or why it was not estimated."""
    est = (window.get("estimated_performance") or {}).get(str(window.get("champion_version"))) or {}
    if not est:
        return ""
    perf = est.get("performance")
    if not perf:
        return str(est.get("reason") or "not estimated")
    text = (
        f"{_scores_text(perf, window.get('performance_metric'))} ({perf.get('rows')} rows, ECE {shown(est.get('ece'))})"
    )
    return f"{text}, DEGRADED" if perf.get("degraded") else text


# --- the drift chart ---------------------------------------------------------------------------------------------


def drift_chart(
    windows: list[dict[str, Any]], threshold: float, reports_root: Path, width: int = 720, height: int = 220
) -> str:
    """An SVG chart of the drift share per window (oldest left), the threshold as a dashed line.

    Drifted windows are drawn red, others green; each point links to its report and has a tooltip with the
    window, champion version, drifted columns and the change of its performance metric. Returns ``""`` when there
    is no window.
    """
    from markupsafe import escape

    if not windows:
        return ""
    left, right, top, bottom = 48, 40, 16, 40  # room for the last date label
    plot_w, plot_h = width - left - right, height - top - bottom
    ymax = max(1.0, *(float(w["drift_share"]) for w in windows))
    n = len(windows)

    def x(i: int) -> float:
        return left + (plot_w / 2 if n == 1 else plot_w * i / (n - 1))

    def y(value: float) -> float:
        return top + plot_h * (1 - value / ymax)

    parts = [
        f'<svg id="drift-chart" xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
        f'viewBox="0 0 {width} {height}" role="img" aria-label="Drift share per monitored window">',
        f'<line x1="{left}" y1="{top + plot_h}" x2="{left + plot_w}" y2="{top + plot_h}" stroke="#888"/>',
        f'<line x1="{left}" y1="{top}" x2="{left}" y2="{top + plot_h}" stroke="#888"/>',
    ]
    for tick in (0.0, 0.5, 1.0):
        parts.append(f'<text x="{left - 6}" y="{y(tick) + 4:.1f}" font-size="11" text-anchor="end">{tick:.1f}</text>')
    parts.append(
        f'<line class="threshold" x1="{left}" y1="{y(threshold):.1f}" x2="{left + plot_w}" y2="{y(threshold):.1f}" '
        f'stroke="#c60" stroke-dasharray="4 3"><title>drift_share threshold {threshold}</title></line>'
    )
    points = " ".join(f"{x(i):.1f},{y(float(w['drift_share'])):.1f}" for i, w in enumerate(windows))
    parts.append(f'<polyline points="{points}" fill="none" stroke="#468" stroke-width="1.5"/>')
    for i, w in enumerate(windows):
        end = w["window_end"]
        tip = (
            f"window {w['window_start']:%Y-%m-%d}..{end:%Y-%m-%d}, champion v{w['champion_version']}: "
            f"drift share {float(w['drift_share']):.2f}"
            + (f", drifted {', '.join(w['drifted_columns'])}" if w["drifted_columns"] else "")
            + (f", {degradation_text(w)} than at training" if w.get("degradation") is not None else "")
        )
        colour = "#c22" if w["drifted"] else "#2a2"
        dot = (
            f'<circle class="window{" drifted" if w["drifted"] else ""}" cx="{x(i):.1f}" '
            f'cy="{y(float(w["drift_share"])):.1f}" r="5" fill="{colour}"><title>{escape(tip)}</title></circle>'
        )
        url = report_url(w.get("report_path"), reports_root)
        parts.append(f'<a href="{escape(url)}" target="_blank">{dot}</a>' if url else dot)
        if n <= 8 or i % max(1, n // 8) == 0 or i == n - 1:
            label = f'x="{x(i):.1f}" y="{top + plot_h + 16}" font-size="10" text-anchor="middle"'
            parts.append(f"<text {label}>{end:%Y-%m-%d}</text>")
    parts.append("</svg>")
    return "".join(parts)


# --- the outcome curve -------------------------------------------------------------------------------------------

#: One colour per version line (cycled): distinguishable, and none of them the drift chart's red/green.
_LINE_COLOURS = ("#1f5fa8", "#d98200", "#7a3fa0", "#2b8c8c", "#8c5a2b", "#555555")


def outcome_chart(curve: list[dict[str, Any]], metric: str, width: int = 720, height: int = 220) -> str:
    """An SVG chart of the realized ``metric`` per data interval (oldest left), one line per model version.

    Each point has a tooltip with the interval, version, value and the number of outcomes behind it; an interval
    whose metric is undefined (see its note) has no point. Returns ``""`` when no interval has a figure."""
    from markupsafe import escape

    points = [c for c in curve if c.get("value") is not None]
    if not points:
        return ""
    windows = sorted({c["window"] for c in curve})
    versions = sorted({c["version"] for c in points}, key=lambda v: (len(v), v))
    left, right, top, bottom = 56, 90, 16, 40
    plot_w, plot_h = width - left - right, height - top - bottom
    values = [float(c["value"]) for c in points]
    low, high = min(0.0, *values), max(values)
    high = high if high > low else low + 1.0

    def x(window: str) -> float:
        i = windows.index(window)
        return left + (plot_w * i / (len(windows) - 1) if len(windows) > 1 else plot_w / 2)

    def y(value: float) -> float:
        return top + plot_h * (1 - (value - low) / (high - low))

    parts = [
        f'<svg id="outcome-chart" xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
        f'role="img" aria-label="realized {escape(metric)} per interval and model version">',
        f'<line x1="{left}" y1="{top + plot_h}" x2="{left + plot_w}" y2="{top + plot_h}" stroke="#999"/>',
        f'<line x1="{left}" y1="{top}" x2="{left}" y2="{top + plot_h}" stroke="#999"/>',
        f'<text x="4" y="{top + 10}" font-size="11">{escape(shown(high))}</text>',
        f'<text x="4" y="{top + plot_h}" font-size="11">{escape(shown(low))}</text>',
        f'<text x="{left}" y="{height - 8}" font-size="11">{escape(windows[0])}</text>',
        f'<text x="{left + plot_w}" y="{height - 8}" font-size="11" text-anchor="end">{escape(windows[-1])}</text>',
    ]
    for n, version in enumerate(versions):
        colour = _LINE_COLOURS[n % len(_LINE_COLOURS)]
        mine = [c for c in points if c["version"] == version]
        line = " ".join(f"{x(c['window']):.1f},{y(float(c['value'])):.1f}" for c in mine)
        parts.append(f'<polyline class="version" points="{line}" fill="none" stroke="{colour}" stroke-width="2"/>')
        for c in mine:
            tip = f"{c['window']} v{version}: {metric} {shown(c['value'])} on {c['rows']} outcomes"
            parts.append(
                f'<circle class="outcome" cx="{x(c["window"]):.1f}" cy="{y(float(c["value"])):.1f}" r="4" '
                f'fill="{colour}"><title>{escape(tip)}</title></circle>'
            )
        parts.append(
            f'<text x="{left + plot_w + 8}" y="{top + 12 + 14 * n}" font-size="11" fill="{colour}">v{escape(version)}'
            "</text>"
        )
    parts.append("</svg>")
    return "".join(parts)


# --- HTML --------------------------------------------------------------------------------------------------------


def _environment() -> Any:
    import jinja2

    env = jinja2.Environment(
        loader=jinja2.PackageLoader("airloop.ui", "templates"),
        autoescape=jinja2.select_autoescape(default=True),
        undefined=jinja2.StrictUndefined,  # a template typo fails the unit tests, not a user's page
    )
    env.filters["num"] = shown
    env.filters["output"] = prediction_text
    env.filters["degradation"] = degradation_text
    env.filters["realized"] = realized_text
    env.filters["estimated"] = estimated_text
    env.filters["when"] = lambda v: v.strftime("%Y-%m-%d %H:%M") if isinstance(v, datetime) else (v or "")
    env.filters["day"] = lambda v: v.strftime("%Y-%m-%d") if isinstance(v, datetime) else (v or "")
    return env


def render_board(board: Board, *, reports_root: Path, airflow_ui: str, models: list[str], user: str) -> str:
    """The model's page as HTML (every value escaped by Jinja2)."""
    from markupsafe import Markup

    return (
        _environment()
        .get_template("board.html")
        .render(
            b=board,
            models=models,
            user=user,
            mount=MOUNT,
            ui=airflow_ui.rstrip("/"),
            chart=Markup(drift_chart(board.drift, board.drift_share_threshold, reports_root)),
            outcome_chart=Markup(outcome_chart(board.outcome_curve, board.outcome_metric)),
            report=lambda path: report_url(path, reports_root),
        )
    )


def render_message(title: str, message: str, *, status: int) -> str:
    """A short page for a link that leads nowhere yet (it says why and what to do)."""
    return _environment().get_template("message.html").render(title=title, message=message, status=status, mount=MOUNT)

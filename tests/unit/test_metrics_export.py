"""The Prometheus metrics of ML health on a real SQLite warehouse with rows and the session's MLflow store, scraped
with ``prometheus_client``'s own text parser."""

from __future__ import annotations

import itertools
import re
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from airloop.adapters import registry, warehouse
from airloop.ui import metrics_export as mx

ROOT = Path(__file__).resolve().parents[2]
NOW = datetime(2012, 6, 1, 12, tzinfo=UTC)
BASE = datetime(2012, 3, 1, tzinfo=UTC)
DAY = timedelta(days=1)
_models = itertools.count(1)


def scrape(health: mx.Health) -> dict[str, list[Any]]:
    """The exposition of ``health`` parsed back: sample name -> samples."""
    from prometheus_client.parser import text_string_to_metric_families

    body, content_type = mx.exposition(lambda: health)
    assert content_type.startswith("text/plain")
    out: dict[str, list[Any]] = {}
    for family in text_string_to_metric_families(body.decode()):
        for sample in family.samples:
            out.setdefault(sample.name, []).append(sample)
    return out


def value(samples: dict[str, list[Any]], name: str, **labels: str) -> float:
    found = [s.value for s in samples.get(name, []) if all(s.labels.get(k) == v for k, v in labels.items())]
    assert len(found) == 1, (name, labels, samples.get(name))
    return found[0]


@pytest.fixture
def engine(tmp_path: Path) -> sa.Engine:
    engine = sa.create_engine(f"sqlite:///{tmp_path / 'warehouse.db'}")
    warehouse.ensure_schema(engine)
    return engine


@pytest.fixture
def spec(bikes_spec: Any, tmp_path: Path) -> Any:
    """A model of its own (the bikes spec renamed) with three registered versions, @champion on 2."""
    name = f"mx-{next(_models)}-{tmp_path.name}"[:64].lower()
    registry.ensure_registered_model(name, "metrics tests", "tests")
    c = registry.client()
    for _ in range(3):
        c.create_model_version(name, source=tmp_path.as_uri())
    registry.set_alias(name, registry.CHAMPION, "2")
    return bikes_spec.model_copy(update={"name": name})


def _story(engine: sa.Engine, model: str) -> None:
    """Three validated intervals (the newest quarantined), one scored, two judged windows (the newer without
    labels), two retraining requests, and a ledger: promote 1, promote 2, rollback to 1, promote 2, one refusal."""
    common = {"model": model, "content_digest": "d" * 64, "suite_digests": {}, "failures": [], "report_path": "r"}
    rows = [
        (BASE, True, BASE + 2 * DAY),
        (BASE + DAY, True, BASE + 3 * DAY),
        (BASE + 2 * DAY, False, BASE + 4 * DAY),
    ]
    with engine.begin() as conn:
        conn.execute(
            warehouse.validation_results.insert(),
            [
                common
                | {
                    "partition": f"{start:%Y-%m-%d}",
                    "interval_start": start,
                    "interval_end": start + DAY,
                    "success": ok,
                    "rows": 24,
                    "evaluated_expectations": 10,
                    "failed_expectations": 0 if ok else 1,
                    "validated_at": at,
                }
                for start, ok, at in rows
            ],
        )
        conn.execute(
            warehouse.predictions.insert(),
            [
                {
                    "model": model,
                    "partition": f"{BASE:%Y-%m-%d}",
                    "interval_start": BASE,
                    "interval_end": BASE + DAY,
                    "ts": BASE + timedelta(hours=h),
                    "row_key": str(h),
                    "prediction": 1.0,
                    "model_version": "2",
                    "mlflow_run_id": "r",
                    "input_digest": "d",
                }
                for h in range(3)
            ],
        )
        for i, performance in enumerate(({"scores": {"mae": 12.5, "rmse": 20.0}, "metric": "mae"}, None)):
            end = BASE + (i + 1) * 7 * DAY
            conn.execute(
                warehouse.drift_metrics.insert().values(
                    model=model,
                    window_end=end,
                    champion_version="2",
                    window_start=end - 7 * DAY,
                    reference="whole",
                    reference_rows=100,
                    current_rows=100,
                    drift_share=0.25 * (i + 1),
                    drifted=bool(i),
                    drifted_columns=["temp"] if i else [],
                    column_scores={
                        "temp": {
                            "column": "temp",
                            "method": "wasserstein",
                            "threshold": 0.1,
                            "score": 0.3 + i,
                            "drifted": bool(i),
                        },
                        "hum": {"column": "hum", "method": "ks", "threshold": 0.05, "score": 0.5, "drifted": False},
                    },
                    prediction_score=0.04 * (i + 1),
                    prediction_drifted=False,
                    labelled_rows=100 if performance else 0,
                    performance=performance,
                    notes=[],
                    report_path="r",
                    measured_at=end,
                )
            )
        for i in range(2):
            end = BASE + (i + 1) * 7 * DAY
            conn.execute(
                warehouse.retrain_requests.insert().values(
                    model=model,
                    window_start=end - 7 * DAY,
                    window_end=end,
                    champion_version="2",
                    reason="drift",
                    drifted_columns=[],
                    figures={},
                    report_path="r",
                    requested_at=end,
                )
            )
        moves = [("promote", True, "1"), ("promote", True, "2"), ("rollback", True, "1"), ("promote", True, "2")]
        moves.append(("promote", False, "2"))  # refused: @champion did not move
        for seq, (action, moved, after) in enumerate(moves, start=1):
            conn.execute(
                warehouse.promotion_ledger.insert().values(
                    model=model,
                    seq=seq,
                    action=action,
                    outcome="promoted" if moved else "refused",
                    moved=moved,
                    candidate_version=after,
                    champion_after=after,
                    decided_by="gate",
                    reason="r",
                    evidence={},
                    recorded_at=BASE + seq * DAY,
                )
            )


def test_a_scrape_tells_each_models_health(engine: sa.Engine, spec: Any) -> None:
    _story(engine, spec.name)
    approval_at = NOW - timedelta(hours=5)
    asked: list[list[str]] = []

    def approvals(dag_ids: list[str]) -> dict[str, list[datetime]]:
        asked.append(dag_ids)
        return {spec.dag_id("promote"): [NOW - timedelta(hours=1), approval_at], "other_train": [BASE]}

    samples = scrape(mx.read_health([spec], engine, approvals=approvals, now=NOW))
    m = spec.name
    assert asked == [[spec.dag_id("train"), spec.dag_id("promote")]]
    for source in ("warehouse", "registry", "airflow"):
        assert value(samples, "airloop_source_up", source=source) == 1
    assert value(samples, "airloop_champion_version", model=m) == 2
    # Champion since its last move to version 2 (ledger seq 4), not its registration.
    assert value(samples, "airloop_champion_age_seconds", model=m) == (NOW - (BASE + 4 * DAY)).total_seconds()
    passed_at = value(samples, "airloop_last_validation_timestamp_seconds", model=m, outcome="passed")
    assert passed_at == (BASE + 3 * DAY).timestamp()
    failed_at = value(samples, "airloop_last_validation_timestamp_seconds", model=m, outcome="failed")
    assert failed_at == (BASE + 4 * DAY).timestamp()
    assert value(samples, "airloop_last_validation_success", model=m) == 0
    assert value(samples, "airloop_quarantined_intervals", model=m) == 1
    # Newest ingested interval ends BASE + 3 days (the quarantined one counts: it was ingested).
    assert value(samples, "airloop_data_freshness_seconds", model=m) == (NOW - (BASE + 3 * DAY)).total_seconds()
    # Newest passed interval ends BASE + 2 days; the newest scored one BASE + 1 day.
    assert value(samples, "airloop_scoring_lag_seconds", model=m) == DAY.total_seconds()
    # Drift: the latest window (the second); performance: the newest window with labels (the first).
    assert value(samples, "airloop_drift_share", model=m) == 0.5
    assert value(samples, "airloop_feature_drift_score", model=m, feature="temp", method="wasserstein") == 1.3
    assert value(samples, "airloop_feature_drift_score", model=m, feature="hum", method="ks") == 0.5
    assert value(samples, "airloop_feature_drifted", model=m, feature="temp") == 1
    assert value(samples, "airloop_prediction_drift_score", model=m) == 0.08
    assert value(samples, "airloop_drift_window_end_timestamp_seconds", model=m) == (BASE + 14 * DAY).timestamp()
    assert value(samples, "airloop_performance", model=m, metric="mae", kind="realized") == 12.5
    assert value(samples, "airloop_performance", model=m, metric="rmse", kind="realized") == 20.0
    assert value(samples, "airloop_pending_approvals", model=m) == 2
    assert value(samples, "airloop_oldest_pending_approval_age_seconds", model=m) == 5 * 3600
    # Counters: row counts of the append-only tables; only moves of @champion count.
    assert value(samples, "airloop_retrain_requests_total", model=m) == 2
    assert value(samples, "airloop_promotions_total", model=m) == 3
    assert value(samples, "airloop_rollbacks_total", model=m) == 1


def test_realized_and_estimated_performance_are_two_kinds_and_the_estimate_error_its_own_series(
    engine: sa.Engine, spec: Any
) -> None:
    """Realized from the newest labelled window, estimated (CBPE) from the newest window's unlabelled rows of the
    champion (another version's estimate is not the champion's), and the newest window's estimate errors."""
    _story(engine, spec.name)
    end = BASE + 21 * DAY
    estimated = {
        "2": {"status": "estimated", "performance": {"scores": {"accuracy": 0.81, "roc_auc": 0.77, "f1": None}}},
        "1": {"status": "estimated", "performance": {"scores": {"accuracy": 0.5}}},
    }
    with engine.begin() as conn:
        conn.execute(
            warehouse.drift_metrics.insert().values(
                model=spec.name,
                window_end=end,
                champion_version="2",
                window_start=end - 7 * DAY,
                reference="whole",
                reference_rows=100,
                current_rows=100,
                drift_share=0.0,
                drifted=False,
                drifted_columns=[],
                column_scores={},
                prediction_score=0.01,
                prediction_drifted=False,
                labelled_rows=0,
                performance=None,
                estimated_performance=estimated,
                notes=[],
                report_path="r",
                measured_at=end,
            )
        )
    for window_end, error in ((BASE + 7 * DAY, 0.5), (BASE + 14 * DAY, -0.02)):
        warehouse.record_estimate_error(
            conn.engine,
            {
                "model": spec.name,
                "window_end": window_end,
                "model_version": "2",
                "metric": "accuracy",
                "window_start": window_end - 7 * DAY,
                "estimated": 0.8,
                "realized": 0.8 - error,
                "error": error,
                "estimated_rows": 100,
                "labelled_rows": 100,
                "estimated_at": window_end,
            },
        )
    samples = scrape(mx.read_health([spec], engine, approvals=lambda ids: {}, now=NOW))
    m = spec.name
    assert value(samples, "airloop_performance", model=m, metric="mae", kind="realized") == 12.5
    assert value(samples, "airloop_performance", model=m, metric="accuracy", kind="estimated") == 0.81
    assert value(samples, "airloop_performance", model=m, metric="roc_auc", kind="estimated") == 0.77
    assert not [s for s in samples["airloop_performance"] if s.labels["metric"] == "f1"]  # None: no series
    assert value(samples, "airloop_estimate_error", model=m, metric="accuracy") == -0.02  # the newest window's


def test_a_new_model_has_no_made_up_values(engine: sa.Engine, bikes_spec: Any) -> None:
    """Nothing recorded yet: counts are 0, and figures that need a row (a champion, a lag) are absent, not 0."""
    spec = bikes_spec.model_copy(update={"name": f"mx-empty-{next(_models)}"})
    samples = scrape(mx.read_health([spec], engine, approvals=lambda ids: {}, now=NOW))
    m = spec.name
    assert value(samples, "airloop_quarantined_intervals", model=m) == 0
    assert value(samples, "airloop_promotions_total", model=m) == 0
    assert value(samples, "airloop_pending_approvals", model=m) == 0
    assert value(samples, "airloop_oldest_pending_approval_age_seconds", model=m) == 0
    for absent in ("airloop_champion_version", "airloop_scoring_lag_seconds", "airloop_data_freshness_seconds"):
        assert absent not in samples


def test_an_unreadable_source_is_said_and_the_rest_still_goes_out(engine: sa.Engine, spec: Any, tmp_path) -> None:
    _story(engine, spec.name)

    def registry_down(model: str) -> tuple[str, datetime | None] | None:
        raise ConnectionError("MLflow refused the connection")

    def airflow_down(dag_ids: list[str]) -> dict[str, list[datetime]]:
        raise RuntimeError("metadata DB locked")

    samples = scrape(mx.read_health([spec], engine, champion=registry_down, approvals=airflow_down, now=NOW))
    assert value(samples, "airloop_source_up", source="registry") == 0
    assert value(samples, "airloop_source_up", source="airflow") == 0
    assert value(samples, "airloop_source_up", source="warehouse") == 1
    assert "airloop_champion_version" not in samples and "airloop_pending_approvals" not in samples
    assert value(samples, "airloop_quarantined_intervals", model=spec.name) == 1

    broken = sa.create_engine(f"sqlite:///{tmp_path / 'no' / 'such' / 'folder.db'}")
    samples = scrape(mx.read_health([spec], broken, now=NOW))
    assert value(samples, "airloop_source_up", source="warehouse") == 0
    assert value(samples, "airloop_champion_version", model=spec.name) == 2
    assert "airloop_promotions_total" not in samples  # a counter must not drop to 0 when its table is unreadable


def test_each_scrape_is_fresh_and_leaves_no_global_state() -> None:
    from prometheus_client import REGISTRY, generate_latest

    first = scrape(mx.Health([mx.ModelHealth("a", quarantined=3)], {"warehouse": True}, NOW))
    second = scrape(mx.Health([mx.ModelHealth("b", quarantined=1)], {"warehouse": True}, NOW))
    assert value(first, "airloop_quarantined_intervals", model="a") == 3
    assert [s.labels["model"] for s in second["airloop_quarantined_intervals"]] == ["b"]
    assert b"airloop_" not in generate_latest(REGISTRY)


def test_metric_names_follow_prometheus_conventions() -> None:
    """Counters end in ``_total``, gauges do not; times are in seconds and say so; labels are few and bounded."""
    bounded = {"model", "source", "outcome", "feature", "method", "metric", "kind"}
    assert len(mx.BY_NAME) == len(mx.METRICS)
    for d in mx.METRICS:
        assert re.fullmatch(r"airloop_[a-z_]+", d.name), d.name
        assert d.type in ("gauge", "counter")
        assert d.name.endswith("_total") == (d.type == "counter"), d.name
        if any(word in d.name for word in ("age", "lag", "freshness", "timestamp")):
            assert d.name.endswith("_seconds"), d.name
        assert set(d.labels) <= bounded, d.name
        assert d.help.endswith("."), d.name
    # The scrape exposes exactly these names (a counter as <name>_total) and types.
    from prometheus_client.parser import text_string_to_metric_families

    body, _ = mx.exposition(lambda: mx.Health([], {}, NOW))
    exposed = {
        (f.name + "_total" if f.type == "counter" else f.name, f.type)
        for f in text_string_to_metric_families(body.decode())
    }
    assert exposed == {(d.name, d.type) for d in mx.METRICS}

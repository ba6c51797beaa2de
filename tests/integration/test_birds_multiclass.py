"""A multiclass model made the way a user would: a copy of birds.yaml whose target is the strike's effect kind.

The spec (``birdkind``) and its suites are written here to a models and an expectations folder of this module's
own (``AIRLOOP_MODELS_DIR``, ``AIRLOOP_EXPECTATIONS_DIR``), in a home of its own. Its query derives
``effect_kind`` in {none, precautionary, aborted, other, diverted}: no strike of the FAA sample is 'Diverted', so
the source changes some strikes of early 1994 to it, a label the champion (trained on 1991-1993) never saw.
Through the real DAGs: ``birdkind_ingest`` month by month, ``birdkind_train`` and its gate on the multiclass
metrics, ``birdkind_score`` (every row's probabilities sum to 1, its class among the trained ones) and
``birdkind_monitor`` (the unseen label counted and named, never scored).
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
import yaml

ROOT = Path(__file__).resolve().parents[2]
MODEL = "birdkind"
KINDS = ["none", "precautionary", "aborted", "other", "diverted"]
QUERY = """SELECT record_id, date, phase_of_flt, height, speed, sky, time_of_day, ac_mass, num_engs, opid,
birds_seen, birds_struck, effect, remarks,
CASE WHEN effect IS NULL OR TRIM(effect) = '' THEN 'none' WHEN effect = 'Precautionary Landing' THEN 'precautionary'
WHEN effect = 'Aborted Take-off' THEN 'aborted' WHEN effect = 'Diverted' THEN 'diverted' ELSE 'other' END
AS effect_kind FROM birds WHERE date >= :start AND date < :end ORDER BY date, record_id"""


def _spec_and_suites(models: Path, expectations: Path) -> None:
    """birds.yaml with another target (and the gate metric of a multiclass task); its suites with that label."""
    raw = yaml.safe_load((ROOT / "include" / "models" / "birds.yaml").read_text())
    raw["name"] = MODEL
    raw["source"]["query"] = QUERY
    raw["target"] = {"name": "effect_kind", "task": "classification", "class_weight": "balanced"}
    raw["validation"]["suite_dir"] = MODEL
    raw["gate"].update(metric="roc_auc_ovr_macro", thresholds={"roc_auc_ovr_macro": 0.6})
    (models / f"{MODEL}.yaml").write_text(yaml.safe_dump(raw, sort_keys=False))
    (expectations / MODEL).mkdir()
    for path in (ROOT / "expectations" / "birds").glob("*.json"):
        suite = json.loads(path.read_text())
        kept = []
        for e in suite["expectations"]:
            kwargs = e["kwargs"]
            if "column_set" in kwargs:
                kwargs["column_set"] = [c if c != "had_effect" else "effect_kind" for c in kwargs["column_set"]]
            if kwargs.get("column") == "had_effect":
                if e["type"] == "expect_column_values_to_be_in_type_list":
                    continue  # the label is text now
                kwargs["column"] = "effect_kind"
                if "value_set" in kwargs:
                    kwargs["value_set"] = KINDS
            if kwargs.get("column") == "effect" and "value_set" in kwargs:
                kwargs["value_set"] = [*kwargs["value_set"], "Diverted"]  # the steward accepts the new kind
            kept.append(e)
        suite["expectations"] = kept
        suite["name"] = suite.get("name", path.stem).replace("birds", MODEL)
        (expectations / MODEL / path.name).write_text(json.dumps(suite, indent=2))


@pytest.fixture(scope="module")
def world(airflow_db, tmp_path_factory) -> Any:
    """This module's home, models and expectations folders, and source (the bird strikes; some diverted in 1994)."""
    from airloop.adapters.datasets import seed
    from airloop.adapters.db import engine_for
    from airloop.core.settings import SOURCE_CONN_ID

    home = tmp_path_factory.mktemp("birdkind-home")
    models, expectations = home / "models", home / "expectations"
    models.mkdir(), expectations.mkdir()
    _spec_and_suites(models, expectations)
    mp = pytest.MonkeyPatch()
    mp.setenv("AIRLOOP_HOME", str(home))
    mp.setenv("AIRLOOP_MODELS_DIR", str(models))
    mp.setenv("AIRLOOP_EXPECTATIONS_DIR", str(expectations))
    mp.delenv("AIRLOOP_LAKE_URL", raising=False)
    mp.delenv("MLFLOW_TRACKING_URI", raising=False)
    for conn, db in (("SOURCE", "source.db"), ("WAREHOUSE", "warehouse.db")):
        mp.setenv(f"AIRFLOW_CONN_AIRLOOP_{conn}", json.dumps({"conn_type": "sqlite", "host": str(home / db)}))
    engine = engine_for(SOURCE_CONN_ID)
    seed(engine, ROOT / "include" / "data" / "faa_birdstrikes")
    with engine.begin() as conn:
        conn.execute(sa.text("UPDATE birds SET effect = 'Diverted' WHERE effect = 'Other' AND date >= '1994-01-01'"))
    yield home
    mp.undo()


def _dag(kind: str) -> Any:
    from airflow.dag_processing.dagbag import DagBag

    bag = DagBag(dag_folder=str(ROOT / "dags" / f"{kind}.py"))
    assert bag.import_errors == {}
    return bag.dags[f"{MODEL}_{kind}"]


def _states(run: Any) -> dict[str, str]:
    return {ti.task_id: ti.state for ti in run.get_task_instances()}


def _predictions() -> list[dict]:
    from airloop.adapters.db import engine_for
    from airloop.adapters.warehouse import predictions
    from airloop.core.settings import WAREHOUSE_CONN_ID

    with engine_for(WAREHOUSE_CONN_ID).connect() as conn:
        return [dict(r._mapping) for r in conn.execute(sa.select(predictions).where(predictions.c.model == MODEL))]


@pytest.fixture(scope="module")
def champion(world) -> dict:
    """1991-01 to 1994-03 ingested through birdkind_ingest; birdkind_train's first champion on 1991-1993."""
    from airloop.adapters import registry

    ingest = _dag("ingest")
    for i in range(39):
        year, month = 1991 + (i + 1) // 12, (i + 1) % 12 + 1
        run = ingest.test(logical_date=datetime(year, month, 1, tzinfo=UTC))
        assert set(_states(run).values()) == {"success"}, (run.data_interval_start, _states(run))
    run = _dag("train").test(run_conf={"reason": "multiclass", "window_end": "1994-01-01"})
    states = _states(run)
    assert states["gate"] == states["promote"] == "success", states
    version = registry.version_for_alias(MODEL, registry.CHAMPION)
    c = registry.client()
    mlflow_run = c.get_run(c.get_model_version(MODEL, version).run_id)
    return {"version": version, "params": mlflow_run.data.params, "metrics": mlflow_run.data.metrics}


def test_the_champion_knows_the_four_kinds_of_its_training_data_and_passed_the_multiclass_gate(champion):
    from airloop.adapters.db import engine_for
    from airloop.core.settings import WAREHOUSE_CONN_ID
    from airloop.stages.promote.ledger import ledger

    assert champion["params"]["task"] == "multiclass"
    assert json.loads(champion["params"]["classes"]) == ["aborted", "none", "other", "precautionary"]
    assert 0.6 <= champion["metrics"]["holdout_roc_auc_ovr_macro"] <= 1
    assert {"holdout_log_loss", "holdout_accuracy"} <= set(champion["metrics"]) and "holdout_roc_auc" not in (
        champion["metrics"]
    )
    (row,) = [r for r in ledger(engine_for(WAREHOUSE_CONN_ID), MODEL) if r["outcome"] != "pending"]  # not intents
    verdict = row["evidence"]["verdict"]
    checks = {c["name"]: c for c in verdict["checks"]}
    assert row["outcome"] == "promoted" and verdict["metric"] == "roc_auc_ovr_macro"
    assert checks["threshold:roc_auc_ovr_macro"]["passed"] and checks["sanity:probabilities"]["passed"]


def test_every_row_gets_probabilities_of_the_trained_classes_summing_to_one(champion):
    from airloop.adapters.lake import default_lake

    run = _dag("score").test(run_conf={"start": "1993-10-01", "end": "1994-04-01"})
    assert _states(run)["score"] == "success", _states(run)
    rows = _predictions()
    lake = default_lake()
    validated = [p for p in lake.partitions(MODEL, "validated") if "1993-10" <= p < "1994-04"]
    assert (
        len(rows)
        == sum(lake.manifest(MODEL, "validated", p).rows for p in validated)
        == len({r["row_key"] for r in rows})
    )
    trained = {"aborted", "none", "other", "precautionary"}
    for r in rows:
        probabilities = json.loads(r["probabilities"])
        assert set(probabilities) == trained and sum(probabilities.values()) == pytest.approx(1, abs=1e-6)
        assert r["predicted_class"] in trained and r["probability"] == pytest.approx(max(probabilities.values()))
        assert probabilities[r["predicted_class"]] == pytest.approx(r["probability"])
    assert len({r["predicted_class"] for r in rows}) >= 2  # balanced weights: not only 'none'


def _label() -> None:
    """What the labels stage does (until it is merged): every served prediction joined with its strike's true kind
    (the source's, 'diverted' included) into ``outcomes``, the table realized performance is computed from."""
    from airloop.adapters import warehouse
    from airloop.adapters.db import engine_for
    from airloop.core.settings import SOURCE_CONN_ID, WAREHOUSE_CONN_ID

    kind = QUERY.split("CASE", 1)[1].split("AS effect_kind", 1)[0]
    with engine_for(SOURCE_CONN_ID).connect() as conn:
        truth = {str(rid): k for rid, k in conn.execute(sa.text(f"SELECT record_id, CASE {kind} FROM birds"))}
    now = datetime.now(UTC)
    keep = ("partition", "row_key", "ts", "model_version", "predicted_class", "probability", "probabilities")
    rows = [
        {"model": MODEL, **{k: r[k] for k in keep}, "label": truth[r["row_key"]], "label_revision": 1}
        | {"label_arrived_at": now, "joined_at": now}
        for r in _predictions()
    ]
    with engine_for(WAREHOUSE_CONN_ID).begin() as conn:
        conn.execute(warehouse.outcomes.insert(), rows)


def test_a_label_the_champion_never_saw_is_counted_and_named_by_the_monitor(champion, capfd, caplog):
    from airloop.adapters.db import engine_for
    from airloop.adapters.warehouse import drift_metrics
    from airloop.core.settings import WAREHOUSE_CONN_ID

    _label()
    run = _dag("monitor").test(run_conf={"as_of": "1994-04-01"})
    assert _states(run)["judge"] == "success", _states(run)
    with engine_for(WAREHOUSE_CONN_ID).connect() as conn:
        (row,) = conn.execute(sa.select(drift_metrics).where(drift_metrics.c.model == MODEL)).mappings().all()
    performance = row["performance"]
    unseen = performance["unseen_labels"]
    assert set(unseen) == {"diverted"} and unseen["diverted"] > 0
    assert performance["task"] == "multiclass" and performance["metric"] == "roc_auc_ovr_macro"
    # every strike has its kind: the window's rows are the scored ones plus the unseen ones, never scored
    assert performance["rows"] == row["labelled_rows"] == row["current_rows"] - unseen["diverted"]
    assert {f"_proba_{k}" for k in ("aborted", "none", "other", "precautionary")} | {"_prediction"} <= set(
        row["output_scores"]
    )
    log = "".join(capfd.readouterr()) + caplog.text
    assert f"{unseen['diverted']} labelled row(s) hold labels the champion never saw in training" in log
    assert "'diverted'" in log

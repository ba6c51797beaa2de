"""`make demo` end to end, in a home of its own: the README's promise that the loop closes on the real data.

Ingest replays the timeline, the first champion is trained on 2011 through the REST API, every interval is
scored, the monitor judges 2012 window by window in data time, asks for retraining once drift or degradation
holds, the request's Asset event starts training, and the challenger goes through the gate.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa

from tests.e2e.helpers import free_port

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def demo_home(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    mp = pytest.MonkeyPatch()
    home = tmp_path_factory.mktemp("e2e-demo") / "home"
    mp.setenv("AIRLOOP_HOME", str(home))
    mp.setenv("AIRLOOP_AIRFLOW_PORT", str(free_port()))
    mp.setenv("AIRLOOP_MLFLOW_PORT", str(free_port()))
    mp.setenv("MLFLOW_TRACKING_URI", "")  # the demo points it at its MLflow server; undone afterwards
    for var in ("AIRLOOP_USERS", "AIRLOOP_MODELS_DIR", "AIRFLOW_HOME", "AIRFLOW__CORE__DAGS_FOLDER"):
        mp.delenv(var, raising=False)
    mp.delenv("AIRFLOW__CORE__PLUGINS_FOLDER", raising=False)
    for var in [k for k in os.environ if k.startswith("AIRFLOW_CONN_")]:  # the demo's own source and warehouse
        mp.delenv(var)
    try:
        yield home
    finally:
        from airloop import runtime

        runtime.down()
        mp.undo()


def test_demo_closes_the_loop_on_real_data(demo_home: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from airloop import demo
    from airloop.warehouse import drift_metrics, predictions, promotion_ledger, retrain_requests

    assert demo.run_demo(keep_running=False) == 0
    out = capsys.readouterr().out
    print(out)  # shown when the test fails
    assert "[7/7]" not in out and "[8/8]" in out
    assert "RETRAINING REQUESTED" in out and "started by the request" in out

    engine = sa.create_engine(f"sqlite:///{demo_home / 'warehouse.db'}")
    with engine.connect() as conn:
        requests = conn.execute(sa.select(retrain_requests)).mappings().all()
        windows = conn.execute(sa.select(drift_metrics).order_by(drift_metrics.c.window_end)).mappings().all()
        ledger = conn.execute(sa.select(promotion_ledger).order_by(promotion_ledger.c.seq)).mappings().all()
        version = predictions.c.model_version
        by_version = dict(conn.execute(sa.select(version, sa.func.count()).group_by(version)).all())
        unstamped = conn.execute(
            sa.select(sa.func.count())
            .select_from(predictions)
            .where(sa.or_(predictions.c.model_version.is_(None), predictions.c.mlflow_run_id.is_(None)))
        ).scalar_one()
    assert len(requests) == 1  # hysteresis and cooldown: one request for the whole replay
    assert len(windows) >= 2 and any(w["drifted"] for w in windows)
    assert str(requests[0]["window_end"])[:10] in {str(w["window_end"])[:10] for w in windows}
    # The first champion, then the challenger the request trained, judged by the gate (promoted or refused).
    assert [row["candidate_version"] for row in ledger][:2] == ["1", "2"]
    assert ledger[0]["outcome"] == "promoted" and ledger[1]["outcome"] in {"promoted", "refused"}
    assert "retrain requested" in ledger[1]["reason"]
    assert unstamped == 0 and sum(by_version.values()) > 0
    assert set(by_version) <= {"1", "2"}

"""Two runs recording the same interval's labels at once (a labels catch-up runs several, and each reads its
earlier intervals again): the second waits for the first and appends nothing it already wrote.

Real SQLite warehouse (WAL, as the runtime's), two threads on the runner's own ``record``; the library's revision
step is wrapped only to let the second run try while the first is between its read and its write.
"""

from __future__ import annotations

import json
import threading
from datetime import UTC, datetime
from typing import Any

import pandas as pd
import sqlalchemy as sa

from airloop.core.contracts import RunInfo
from airloop.core.intervals import Interval
from airloop.core.spec import get_spec
from airloop.stages.labels import runner, steps


def test_a_second_run_recording_the_same_labels_waits_and_appends_nothing(tmp_path, monkeypatch):
    warehouse = json.dumps({"conn_type": "sqlite", "host": str(tmp_path / "wh.db")})
    race_two_runs_recording_the_same_labels(warehouse, monkeypatch)


def race_two_runs_recording_the_same_labels(warehouse: str, monkeypatch: Any) -> None:
    """Two runs record one interval's labels at once, the second while the first is between its read and its
    write, into the warehouse of connection ``warehouse`` (Airflow's JSON form); both succeed, once."""
    from airloop.adapters.db import engine_for
    from airloop.core.settings import WAREHOUSE_CONN_ID

    monkeypatch.setenv("AIRFLOW_CONN_AIRLOOP_WAREHOUSE", warehouse)
    spec = get_spec("bikes")
    interval = Interval(datetime(2011, 1, 1, tzinfo=UTC), datetime(2011, 1, 2, tzinfo=UTC))
    ts = pd.date_range("2011-01-01", periods=24, freq="h")
    accepted = pd.DataFrame({"row_key": [f"{t:%Y-%m-%dT%H:%M:%S}Z" for t in ts], "ts": ts, "label": "1.0"})
    checked = steps.Checked(accepted=accepted, read=len(accepted))

    revise = steps.revise
    first_read = threading.Event()
    second_done = threading.Event()

    def between_read_and_write(*args: Any, **kwargs: Any) -> Any:
        revised = revise(*args, **kwargs)
        if not first_read.is_set():  # the first run: let the second run try now, before this one writes
            first_read.set()
            second_done.wait(timeout=3)
        return revised

    monkeypatch.setattr(steps, "revise", between_read_and_write)
    results: dict[str, Any] = {}

    def second() -> None:
        first_read.wait(timeout=30)
        try:
            results["second"] = runner.record(spec, interval, checked, RunInfo(run_id="second"), datetime.now(UTC))
        except Exception as error:  # the assertion below shows it
            results["second"] = error
        finally:
            second_done.set()

    other = threading.Thread(target=second)
    other.start()
    results["first"] = runner.record(spec, interval, checked, RunInfo(run_id="first"), datetime.now(UTC))
    other.join(timeout=90)

    assert not isinstance(results["second"], Exception), results["second"]
    assert len(results["first"][1].rows) == 24 and results["second"][1].rows == []  # the second read the first's
    with engine_for(WAREHOUSE_CONN_ID).connect() as conn:
        rows = conn.execute(sa.text("SELECT row_key, revision, dag_run_id FROM labels")).fetchall()
    assert len(rows) == 24 and {(r.revision, r.dag_run_id) for r in rows} == {(1, "first")}

"""Interval edges on a real Postgres whose session time zone is not UTC (started here by ``services.py``).

The source holds one row an hour around one UTC day, in a ``timestamptz`` and in a naive ``timestamp`` column (UTC
wall time). The engine's sessions run in America/New_York (UTC-5 in January). The day must come back exactly:
24 rows, the first at 00:00 UTC and none at the next midnight, for a ``query:`` source on either column and for a
``table:`` source. Before the extraction pinned its transaction to UTC, a ``query:`` source's naive bounds were
read in New York time on the ``timestamptz`` column: the day came back shifted by five hours. Only Postgres is
started (no Airflow): ``make test-distributed`` runs it.
"""

from __future__ import annotations

import tempfile
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import sqlalchemy as sa

from airloop.adapters.source import extract_interval
from airloop.core.intervals import Interval
from airloop.core.spec import ModelSpec
from tests.distributed.services import Services

pytestmark = [pytest.mark.distributed, pytest.mark.timeout(300)]

DAY = Interval(datetime(2012, 1, 1, tzinfo=UTC), datetime(2012, 1, 2, tzinfo=UTC))
SESSION_TZ = "America/New_York"


@pytest.fixture(scope="module")
def engine() -> Iterator[sa.Engine]:
    services = Services(root=Path(tempfile.mkdtemp(prefix="airloop-source-tz-")))
    try:
        services.start_postgres(["source"])
        url = services.pg_url("source")
        hours = [datetime(2011, 12, 31, 12, tzinfo=UTC) + timedelta(hours=h) for h in range(49)]
        setup = sa.create_engine(url)
        with setup.begin() as conn:
            conn.execute(sa.text("CREATE TABLE readings (ts timestamptz NOT NULL, ts_naive timestamp NOT NULL, n int)"))
            conn.execute(
                sa.text("INSERT INTO readings VALUES (:ts, :naive, :n)"),
                [{"ts": t, "naive": t.replace(tzinfo=None), "n": i} for i, t in enumerate(hours)],
            )
        setup.dispose()
        eng = sa.create_engine(url, connect_args={"options": f"-c timezone={SESSION_TZ}"})
        yield eng
        eng.dispose()
    finally:
        services.stop()


def _spec(bikes_spec, **source) -> ModelSpec:
    raw = bikes_spec.model_dump(mode="json")
    raw["source"] = {"connection": "airloop_source", **source}
    return ModelSpec.model_validate(raw)


def _session_tz(engine: sa.Engine) -> str:
    with engine.connect() as conn:
        return conn.execute(sa.text("SHOW TIME ZONE")).scalar_one()


@pytest.mark.parametrize(
    "source",
    [
        {"time_column": "ts", "query": "SELECT ts, n FROM readings WHERE ts >= :start AND ts < :end ORDER BY ts"},
        {
            "time_column": "ts_naive",
            "query": "SELECT ts_naive, n FROM readings WHERE ts_naive >= :start AND ts_naive < :end ORDER BY 1",
        },
        {"time_column": "ts", "table": "readings"},
    ],
    ids=["query-timestamptz", "query-timestamp", "table-timestamptz"],
)
def test_interval_edges_are_exact_in_a_non_utc_session(engine, bikes_spec, source):
    assert _session_tz(engine) == SESSION_TZ  # the premise: the connection's own sessions are not in UTC
    frame = extract_interval(engine, _spec(bikes_spec, **source), DAY).frame
    times = frame[source["time_column"]]
    assert len(frame) == 24
    assert times.min() == DAY.start
    assert times.max() == DAY.end - timedelta(hours=1)
    assert sorted(frame["n"]) == list(range(12, 36))  # rows 12..35 are 2012-01-01 00:00..23:00 UTC
    assert _session_tz(engine) == SESSION_TZ  # SET LOCAL ended with the extraction: the pool keeps its setting

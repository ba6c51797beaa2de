from __future__ import annotations

import shutil
from datetime import UTC, datetime

import pytest
import sqlalchemy as sa
import yaml

from airloop.adapters.source import (
    ChecksumMismatch,
    SourceProblem,
    SourceUnavailable,
    extract_interval,
    load_demo_frame,
    seed,
    verify_checksum,
)
from airloop.core.errors import ExpectedFailure, ServiceUnavailable
from airloop.core.intervals import Interval
from airloop.core.spec import ModelSpec

UTC = UTC
DAY = Interval(datetime(2011, 1, 2, tzinfo=UTC), datetime(2011, 1, 3, tzinfo=UTC))


@pytest.fixture(scope="module")
def engine(tmp_path_factory):
    from tests.conftest import DEMO_CSV

    eng = sa.create_engine(f"sqlite:///{tmp_path_factory.mktemp('src') / 'source.db'}")
    seed(eng, DEMO_CSV)
    return eng


def test_seed_is_idempotent(engine):
    from tests.conftest import DEMO_CSV

    assert seed(engine, DEMO_CSV) == 17379
    with engine.connect() as conn:
        assert conn.execute(sa.text("select count(*), count(distinct ts) from bike_rentals")).one() == (17379, 17379)


def test_extract_takes_exactly_the_half_open_interval(engine, bikes_spec):
    df = extract_interval(engine, bikes_spec, DAY).frame
    assert len(df) == 23  # 2011-01-02 misses one hour in the real data
    assert df["ts"].min() == datetime(2011, 1, 2, tzinfo=UTC)
    assert df["ts"].max() < DAY.end
    assert str(df["ts"].dt.tz) == "UTC"
    assert df["ts"].is_monotonic_increasing


def test_adjacent_intervals_neither_overlap_nor_drop_rows(engine, bikes_spec, demo_frame):
    a = Interval(datetime(2011, 1, 1, tzinfo=UTC), datetime(2011, 1, 8, tzinfo=UTC))
    b = Interval(a.end, datetime(2011, 1, 15, tzinfo=UTC))
    got = len(extract_interval(engine, bikes_spec, a).frame) + len(extract_interval(engine, bikes_spec, b).frame)
    expected = ((demo_frame["ts"] >= "2011-01-01") & (demo_frame["ts"] < "2011-01-15")).sum()
    assert got == expected


def test_query_source_binds_parameters(engine, bikes_spec):
    raw = bikes_spec.model_dump(mode="json")
    raw["source"] = {
        "connection": "x",
        "time_column": "ts",
        "query": "SELECT ts, cnt FROM bike_rentals WHERE ts >= :start AND ts < :end ORDER BY ts",
    }
    df = extract_interval(engine, ModelSpec.model_validate(raw), DAY).frame
    assert list(df.columns) == ["ts", "cnt"] and len(df) == 23


def test_missing_table_says_seed(tmp_path, bikes_spec):
    eng = sa.create_engine(f"sqlite:///{tmp_path / 'empty.db'}")
    with pytest.raises(SourceProblem, match=r"does not exist.*airloop seed") as err:
        extract_interval(eng, bikes_spec, DAY)
    assert isinstance(err.value, ExpectedFailure) and not isinstance(err.value, ServiceUnavailable)


def test_wrong_time_column_is_named(engine, bikes_spec):
    raw = bikes_spec.model_dump(mode="json")
    raw["source"]["time_column"] = "when"
    with pytest.raises(SourceProblem, match="no time column 'when'") as err:
        extract_interval(engine, ModelSpec.model_validate(yaml.safe_load(yaml.safe_dump(raw))), DAY)
    assert isinstance(err.value, ExpectedFailure) and not isinstance(err.value, ServiceUnavailable)


def test_unreachable_database_is_retryable(tmp_path, bikes_spec):
    eng = sa.create_engine(f"sqlite:///{tmp_path / 'no' / 'such' / 'dir.db'}")
    with pytest.raises(SourceUnavailable, match="Check the connection") as err:
        extract_interval(eng, bikes_spec, DAY)
    assert isinstance(err.value, ServiceUnavailable) and not isinstance(err.value, ExpectedFailure)


def test_checksum_is_verified(tmp_path):
    from tests.conftest import DEMO_CSV

    copy = tmp_path / "hour.csv"
    shutil.copy(DEMO_CSV, copy)
    shutil.copy(DEMO_CSV.with_name("hour.csv.sha256"), tmp_path / "hour.csv.sha256")
    assert verify_checksum(copy) == "b03a2d02e8c10f435c43c7f0b358b7e34a003afea53dbc37f0183f2763295133"
    data = bytearray(copy.read_bytes())
    data[-3] = ord("9") if data[-3] != ord("9") else ord("8")
    copy.write_bytes(bytes(data))
    with pytest.raises(ChecksumMismatch, match="git checkout"):
        load_demo_frame(copy)
    (tmp_path / "hour.csv.sha256").unlink()
    with pytest.raises(ChecksumMismatch, match="missing"):
        verify_checksum(copy)

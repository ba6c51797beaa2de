from __future__ import annotations

import hashlib
import shutil
import sqlite3
from datetime import UTC, datetime
from pathlib import Path

import pytest
import sqlalchemy as sa
import yaml

from airloop.adapters.csv_load import CsvProblem
from airloop.adapters.datasets import DatasetProblem, dataset_frame, find_datasets, read_dataset, seed
from airloop.adapters.source import (
    ChecksumMismatch,
    SourceProblem,
    SourceUnavailable,
    extract_interval,
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
    seed(eng, DEMO_CSV.parent)
    return eng


def test_seed_is_idempotent(engine):
    from tests.conftest import DEMO_CSV

    assert seed(engine, DEMO_CSV.parent).rows == 17379
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

    folder = _copy_dataset(tmp_path, DEMO_CSV.parent)
    copy = folder / "hour.csv"
    assert verify_checksum(copy) == "b03a2d02e8c10f435c43c7f0b358b7e34a003afea53dbc37f0183f2763295133"
    data = bytearray(copy.read_bytes())
    data[-3] = ord("9") if data[-3] != ord("9") else ord("8")
    copy.write_bytes(bytes(data))
    with pytest.raises(ChecksumMismatch, match="git checkout"):
        dataset_frame(folder)
    (folder / "hour.csv.sha256").unlink()
    with pytest.raises(ChecksumMismatch, match="missing"):
        verify_checksum(copy)
    with pytest.raises(DatasetProblem, match=r"`checksum` names hour.csv.sha256, which is not in"):
        read_dataset(folder)


# ---- data set manifests -------------------------------------------------------------------------------------------

#: The bikes table as the seed wrote it before manifests (the ``ts`` column built in code from ``dteday`` and ``hr``):
#: every value with its SQLite storage class, in row order, hashed. The manifest must reproduce it exactly.
BIKES_TABLE_SHA256 = "51a7ba0bed687bd07012fa683a27a4e6de30173cf12aab8d8336c99fcd59e723"
BIKES_FRAME_HASH = 5626154797712250965  # pandas.util.hash_pandas_object(frame).sum() of that frame, index included
BIKES_COLUMNS = [
    ("ts", "DATETIME"),
    ("instant", "BIGINT"),
    ("dteday", "TEXT"),
    *((c, "BIGINT") for c in ("season", "yr", "mnth", "hr", "holiday", "weekday", "workingday", "weathersit")),
    *((c, "FLOAT") for c in ("temp", "atemp", "hum", "windspeed")),
    *((c, "BIGINT") for c in ("casual", "registered", "cnt")),
]


def _table_digest(db: Path, table: str) -> tuple[int, str]:
    """Rows and a sha256 of every value with its storage class (``typeof``), in row order."""
    con = sqlite3.connect(db)
    try:
        columns = [r[1] for r in con.execute(f'pragma table_info("{table}")')]
        select = ", ".join(f'typeof("{c}"), "{c}"' for c in columns)
        digest, rows = hashlib.sha256(), 0
        for row in con.execute(f'select {select} from "{table}" order by rowid'):
            digest.update(repr(row).encode())
            rows += 1
        return rows, digest.hexdigest()
    finally:
        con.close()


def _copy_dataset(tmp_path: Path, folder: Path) -> Path:
    target = tmp_path / folder.name
    shutil.copytree(folder, target, ignore=shutil.ignore_patterns("README.md"))
    return target


def test_bikes_table_is_exactly_as_before_manifests(tmp_path):
    from pandas.util import hash_pandas_object

    from tests.conftest import DEMO_CSV

    db = tmp_path / "source.db"
    eng = sa.create_engine(f"sqlite:///{db}")
    report = seed(eng, DEMO_CSV.parent)
    assert _table_digest(db, "bike_rentals") == (17379, BIKES_TABLE_SHA256)
    inspector = sa.inspect(eng)
    assert [(c["name"], str(c["type"])) for c in inspector.get_columns("bike_rentals")] == BIKES_COLUMNS
    (index,) = inspector.get_indexes("bike_rentals")
    assert (index["name"], index["column_names"], bool(index["unique"])) == ("ix_bike_rentals_ts", ["ts"], True)
    frame = dataset_frame(DEMO_CSV.parent)
    assert int(hash_pandas_object(frame, index=True).sum()) == BIKES_FRAME_HASH
    assert frame["ts"].dtype == "datetime64[ns]" and frame["cnt"].dtype == "int64"
    assert report.rows == 17379 and report.time_column == "ts" and report.repairs == []


def test_every_vendored_data_set_has_a_manifest(home):
    from airloop.core.settings import paths

    datasets = find_datasets(paths().data_dir)
    folders = sorted(p.parent.name for p in paths().data_dir.glob("*/*.csv"))
    assert [d.name for d in datasets] == folders and len(folders) >= 2
    assert {d.table for d in datasets} >= {"bike_rentals", "birds"}
    assert [d.name for d in find_datasets(paths().data_dir, "faa_birdstrikes")] == ["faa_birdstrikes"]
    with pytest.raises(DatasetProblem, match=r"no data set 'nope'.*known: bike_sharing, faa_birdstrikes"):
        find_datasets(paths().data_dir, "nope")


def test_parsed_time_and_keys_get_their_indexes(tmp_path):
    birds = Path(__file__).resolve().parents[2] / "include" / "data" / "faa_birdstrikes"
    db = tmp_path / "source.db"
    eng = sa.create_engine(f"sqlite:///{db}")
    report = seed(eng, birds)
    assert report.rows == 19302 and report.table == "birds" and report.time_column == "date"
    indexes = {i["name"]: (i["column_names"], bool(i["unique"])) for i in sa.inspect(eng).get_indexes("birds")}
    assert indexes == {"ix_birds_date": (["date"], False), "ux_birds_record_id": (["record_id"], True)}
    with eng.connect() as conn:
        got = conn.execute(sa.text("select count(distinct record_id), min(date), max(date) from birds")).one()
        kinds = conn.execute(sa.text("select typeof(birds_struck), typeof(height) from birds where record_id = 1"))
        assert kinds.one() == ("text", "real")
    assert got == (19302, "1990-01-08 00:00:00.000000", "1999-10-16 00:00:00.000000")


def _write_dataset(tmp_path: Path, manifest: str, rows: list[str]) -> Path:
    folder = tmp_path / "events"
    folder.mkdir(exist_ok=True)
    csv = folder / "events.csv"
    csv.write_text("\n".join(["event_id,day,hour,value", *rows]) + "\n")
    (folder / "events.csv.sha256").write_text(f"{hashlib.sha256(csv.read_bytes()).hexdigest()}  events.csv\n")
    (folder / "dataset.yaml").write_text(manifest)
    return folder


COMPOSED = "file: events.csv\ntable: events\ntime: {column: ts, compose: {date: day, hours: hour}}\nkeys: [event_id]\n"


def test_composed_time_and_a_refused_seed_keeps_the_table(tmp_path):
    eng = sa.create_engine(f"sqlite:///{tmp_path / 'source.db'}")
    good = _write_dataset(tmp_path, COMPOSED, ["1,2020-01-01,0,1.5", "2,2020-01-01,5,2.5", "3,2020-01-02,23,3"])
    seed(eng, good)
    with eng.connect() as conn:
        ts = [r[0] for r in conn.execute(sa.text("select ts from events order by event_id"))]
    assert ts == ["2020-01-01 00:00:00.000000", "2020-01-01 05:00:00.000000", "2020-01-02 23:00:00.000000"]
    repeated = _write_dataset(tmp_path, COMPOSED, ["1,2020-01-01,0,1.5", "1,2020-01-01,1,2"])
    with pytest.raises(
        DatasetProblem, match=r"`keys` \['event_id'\] must be filled and unique.*2 rows.*row 1 \(1\), row 2 \(1\)"
    ):
        seed(eng, repeated)
    no_time = _write_dataset(tmp_path, COMPOSED, ["1,2020-01-01,0,1.5", "2,not a day,3,2"])
    with pytest.raises(DatasetProblem, match=r"1 rows have no date in 'day'.*row 2 \(not a day, 3\)"):
        seed(eng, no_time)
    with eng.connect() as conn:
        assert conn.execute(sa.text("select count(*) from events")).scalar() == 3, "a refused seed changed the table"


@pytest.mark.parametrize(
    ("manifest", "message"),
    [
        (COMPOSED + "colour: red\n", r"`colour`: Extra inputs are not permitted"),
        (COMPOSED.replace("table: events\n", ""), r"`table`: Field required"),
        (
            COMPOSED.replace("hours: hour", "hours: hr"),
            r"`time.compose.hours` names \['hr'\], which events.csv does not",
        ),
        (COMPOSED.replace("column: ts", "column: day"), r"`time.column` 'day' is composed, but events.csv already has"),
        (COMPOSED.replace("compose:", "format: '%Y', compose:"), r"give `format` .* or `compose` .*, not both"),
        ("file: events.csv\ntable: events\ntime: {column: when}\n", r"`time.column` names \['when'\]"),
        ("file: other.csv\ntable: events\ntime: {column: day}\n", r"`file` names other.csv, which is not in"),
        ("- just\n- a list\n", r"must be a mapping of fields"),
        ("name: other\n" + COMPOSED, r"remove `name` and `folder`: a data set is named by its folder"),
    ],
)
def test_a_wrong_manifest_is_named(tmp_path, manifest, message):
    folder = _write_dataset(tmp_path, manifest, ["1,2020-01-01,0,1.5"])
    eng = sa.create_engine(f"sqlite:///{tmp_path / 'source.db'}")
    with pytest.raises(DatasetProblem, match=message) as err:
        seed(eng, folder)
    assert "dataset.yaml" in str(err.value)
    assert not sa.inspect(eng).has_table("events")


def test_parsed_time_that_does_not_parse_is_named(tmp_path):
    manifest = "file: events.csv\ntable: events\ntime: {column: day, format: '%Y-%m-%d'}\n"
    folder = _write_dataset(tmp_path, manifest, ["1,2020-01-01,0,1.5", "2,01/02/2020,0,2"])
    with pytest.raises(CsvProblem, match=r"time column 'day' has 1 values .* line 3 '01/02/2020'"):
        seed(sa.create_engine(f"sqlite:///{tmp_path / 'source.db'}"), folder)


def test_bounds_are_naive_utc_for_a_query_or_naive_column_and_aware_for_a_timezone_column():
    from datetime import timedelta, timezone

    from airloop.adapters.source import _bounds_for

    plus5 = timezone(timedelta(hours=5))
    interval = Interval(datetime(2011, 1, 2, 5, tzinfo=plus5), datetime(2011, 1, 3, 5, tzinfo=plus5))
    for column_type in (None, sa.DateTime()):
        start, end = _bounds_for(column_type, interval)
        assert (start, end) == (datetime(2011, 1, 2), datetime(2011, 1, 3))
        assert start.tzinfo is None and end.tzinfo is None
    start, end = _bounds_for(sa.DateTime(timezone=True), interval)
    assert start.utcoffset() is not None and (start, end) == (DAY.start, DAY.end)


def test_a_query_source_on_sqlite_takes_the_same_rows_whatever_the_intervals_offset(engine, bikes_spec):
    from datetime import timedelta, timezone

    raw = bikes_spec.model_dump(mode="json")
    raw["source"] = {
        "connection": "x",
        "time_column": "ts",
        "query": "SELECT ts, cnt FROM bike_rentals WHERE ts >= :start AND ts < :end ORDER BY ts",
    }
    spec = ModelSpec.model_validate(raw)
    minus5 = timezone(timedelta(hours=-5))
    shifted = Interval(DAY.start.astimezone(minus5), DAY.end.astimezone(minus5))
    utc_rows = extract_interval(engine, spec, DAY).frame
    shifted_rows = extract_interval(engine, spec, shifted).frame
    assert len(utc_rows) == 23 and utc_rows.equals(shifted_rows)
    assert shifted_rows["ts"].min() == DAY.start

"""Loading a user's CSV into a source table (airloop.adapters.csv_load, ``airloop source load``): the real bird-strike
file, and dirty copies of it made here. Every repair is reported, every refusal names file, line and column, and a
refused or failed load leaves the database exactly as it was. Real SQLite throughout."""

from __future__ import annotations

import csv
import io
import json
import shutil
from collections.abc import Callable
from pathlib import Path

import pandas as pd
import pytest
import sqlalchemy as sa

from airloop.adapters.csv_load import CsvProblem, load_csv
from airloop.adapters.source import ChecksumMismatch, verify_checksum
from airloop.ops.cli import main

ROOT = Path(__file__).resolve().parents[2]
BIRDS = ROOT / "include" / "data" / "faa_birdstrikes" / "birds.csv"
FORMAT = "%m/%d/%Y %H:%M:%S"
HEIGHT, SPEED, DATE, REMARKS = 11, 12, 8, 4  # column positions in birds.csv


@pytest.fixture
def engine(tmp_path: Path) -> sa.Engine:
    return sa.create_engine(f"sqlite:///{tmp_path / 'source.db'}")


def _snapshot(engine: sa.Engine) -> dict[str, list[tuple]]:
    """Every table's rows: to prove a refused load changed nothing."""
    with engine.connect() as conn:
        names = sa.inspect(conn).get_table_names()
        return {n: [tuple(r) for r in conn.execute(sa.text(f'SELECT * FROM "{n}"'))] for n in names}


def _sample(tmp_path: Path, edit: Callable[[list[list[str]]], None] | None = None, records: int = 30) -> Path:
    """The header and first records of birds.csv (one line each: record k is on line k + 1), edited, as a file."""
    lines = BIRDS.read_text(encoding="utf-8").split("\n")[: records + 1]
    rows = list(csv.reader(lines))
    if edit is not None:
        edit(rows)
    out = io.StringIO()
    csv.writer(out, lineterminator="\n").writerows(rows)
    path = tmp_path / "sample.csv"
    path.write_text(out.getvalue(), encoding="utf-8")
    return path


def _set(record: int, column: int, value: str) -> Callable[[list[list[str]]], None]:
    def edit(rows: list[list[str]]) -> None:
        rows[record][column] = value

    return edit


def _load(engine: sa.Engine, path: Path, table: str = "birds", **kwargs):
    return load_csv(engine, path, table, time_column="date", time_format=FORMAT, **kwargs)


# ---- the real file ----------------------------------------------------------------------------------------------


def test_vendored_birds_file_matches_its_checksum():
    assert verify_checksum(BIRDS) == (BIRDS.parent / "birds.csv.sha256").read_text().split()[0]


def test_the_real_birds_file_loads_whole(engine):
    report = _load(engine, BIRDS)
    assert report.rows == 19302 and report.repairs == [] and report.checksum is not None
    assert report.types["record_id"] == "integer" and report.types["height"] == "float"
    assert report.types["date"] == "timestamp (UTC)" and report.types["effect"] == "text"
    assert [str(t) for t in report.time_range] == ["1990-01-08 00:00:00", "1999-10-16 00:00:00"]
    text = "\n".join(report.lines())
    assert "Loaded 19302 rows" in text and "(sha256 verified)" in text and "Repairs: none" in text
    assert "Time range (date): 1990-01-08 00:00:00 to 1999-10-16 00:00:00 UTC" in text
    frame = pd.read_sql("SELECT * FROM birds ORDER BY record_id", engine)
    assert len(frame) == 19302 and frame["effect"].notna().sum() == 1973  # 10 % have an effect
    assert frame["remarks"].str.contains("\r\n").sum() == 2  # line breaks inside quoted remarks kept
    columns = {c["name"]: c["type"] for c in sa.inspect(engine).get_columns("birds")}
    assert isinstance(columns["date"], sa.DateTime)
    assert [i["column_names"] for i in sa.inspect(engine).get_indexes("birds")] == [["date"]]


def test_the_time_format_is_inferred_when_not_given(engine, tmp_path):
    path = _sample(tmp_path)
    report = load_csv(engine, path, "birds", time_column="date")
    expected = pd.to_datetime(pd.read_csv(path)["date"], format=FORMAT)
    assert report.time_range == (expected.min().to_pydatetime(), expected.max().to_pydatetime())
    assert pd.read_sql("SELECT date FROM birds WHERE record_id = 1", engine)["date"][0].startswith("1990-09-30")


# ---- repairs: made and reported ---------------------------------------------------------------------------------


def _bytes(transform: Callable[[bytes], bytes]) -> Callable[[Path], None]:
    def apply(path: Path) -> None:
        path.write_bytes(transform(path.read_bytes()))

    return apply


def _latin1_remark(rows: list[list[str]]) -> None:
    rows[3][REMARKS] = "CAFÉ NEAR RUNWAY"


def _blank_lines(data: bytes) -> bytes:
    """A blank line 2, a row of empty cells on line 4, a line of spaces at the end (line 34)."""
    lines = data.rstrip(b"\n").split(b"\n")
    lines = [lines[0], b"", lines[1], b"," * 17, *lines[2:], b"   "]
    return b"\n".join(lines) + b"\n"


REPAIRS = [
    ("bom", None, _bytes(lambda b: b"\xef\xbb\xbf" + b), "removed a UTF-8 byte-order mark"),
    ("crlf", None, _bytes(lambda b: b.replace(b"\n", b"\r\n")), "CRLF (Windows) line endings read as line ends"),
    ("blank lines", None, _bytes(_blank_lines), "skipped 3 blank or empty lines (lines 2, 4, 34)"),
    (
        "thousands",
        _set(2, HEIGHT, "1,234"),
        None,
        "column 'height': removed thousands separators from 1 numbers (line 3 '1,234')",
    ),
    (
        "spaces",
        _set(2, HEIGHT, " 7000.0 "),
        None,
        "column 'height': stripped spaces around 1 numbers (line 3 ' 7000.0 ')",
    ),
    (
        "latin-1",
        _latin1_remark,
        _bytes(lambda b: b.decode("utf-8").encode("latin-1")),
        "not UTF-8 (byte 0xc9 on line 4)",
    ),
]


@pytest.mark.parametrize(("edit", "transform", "repair"), [r[1:] for r in REPAIRS], ids=[r[0] for r in REPAIRS])
def test_dirty_copies_are_repaired_and_the_repair_reported(engine, tmp_path, edit, transform, repair):
    path = _sample(tmp_path, edit)
    if transform is not None:
        transform(path)
    report = _load(engine, path)
    assert report.rows == 30
    assert any(repair in r for r in report.repairs), report.repairs
    assert any(repair in line for line in report.lines())
    frame = pd.read_sql("SELECT * FROM birds ORDER BY record_id", engine)
    assert frame.columns[0] == "record_id" and list(frame["record_id"]) == list(range(1, 31))
    assert not frame["remarks"].dropna().str.contains("\r").any()
    assert frame["height"].dtype == float


@pytest.mark.parametrize(
    ("value", "stored"), [("1,234", 1234.0), (" 7000.0 ", 7000.0), ('"12,345,678.5"', None)], ids=str
)
def test_repaired_numbers_are_stored_as_numbers(engine, tmp_path, value, stored):
    _load(engine, _sample(tmp_path, _set(2, HEIGHT, value.strip('"'))))
    height = pd.read_sql("SELECT height FROM birds WHERE record_id = 2", engine)["height"][0]
    assert height == (stored if stored is not None else 12345678.5)


def test_latin1_text_is_read_right(engine, tmp_path):
    path = _sample(tmp_path, _latin1_remark)
    path.write_bytes(path.read_bytes().decode("utf-8").encode("latin-1"))
    _load(engine, path)
    assert pd.read_sql("SELECT remarks FROM birds WHERE record_id = 3", engine)["remarks"][0] == "CAFÉ NEAR RUNWAY"


def test_coerce_sets_non_numbers_to_null_and_names_their_lines(engine, tmp_path):
    report = _load(engine, _sample(tmp_path, _set(6, HEIGHT, "low"), records=200), coerce=True)
    assert "column 'height': 1 cells that are not numbers set to null (--coerce): line 7 'low'" in report.repairs
    assert report.types["height"] == "float"
    assert pd.read_sql("SELECT height FROM birds WHERE record_id = 6", engine)["height"].isna().all()


def test_a_column_named_with_text_stays_text(engine, tmp_path):
    report = _load(engine, _sample(tmp_path, _set(6, HEIGHT, "low"), records=200), text_columns=frozenset({"height"}))
    assert report.types["height"] == "text" and report.repairs == []
    assert pd.read_sql("SELECT height FROM birds WHERE record_id = 6", engine)["height"][0] == "low"
    with pytest.raises(CsvProblem, match="no column 'hieght' for --text"):
        _load(engine, _sample(tmp_path), text_columns=frozenset({"hieght"}), replace=True)


def test_a_banded_count_that_is_mostly_one_stays_text(engine, tmp_path):
    report = _load(engine, _sample(tmp_path, records=20))  # birds_struck: eighteen "1", two "2-10"
    assert report.types["birds_struck"] == "text" and report.rows == 20


def test_a_mostly_text_column_stays_text(engine, tmp_path):
    report = _load(engine, _sample(tmp_path, _set(2, REMARKS, "42")))
    assert report.types["remarks"] == "text" and report.repairs == []


# ---- refusals: named, and the database unchanged ----------------------------------------------------------------


def _ragged(rows: list[list[str]]) -> None:
    rows[9].append("extra")


REFUSALS = [
    (
        "bad date",
        _set(8, DATE, "13/45/1993 0:00:00"),
        {},
        "time column 'date' has 1 values",
        "line 9 '13/45/1993 0:00:00'",
    ),
    ("empty date", _set(4, DATE, ""), {}, "empty or not times in the format '%m/%d/%Y %H:%M:%S'", "line 5 ''"),
    ("text in numbers", _set(6, HEIGHT, "low"), {}, "column 'height' holds numbers in 99.", "line 7 'low'"),
    ("ragged row", _ragged, {}, "rows do not have the header's 18 cells", "line 10 '19 cells'"),
    ("no such column", None, {"time_column": "when"}, "no column 'when' for --time-column", "record_id, opid"),
    ("format alone", None, {"time_column": None}, "--time-format needs --time-column", ""),
]


@pytest.mark.parametrize(
    ("edit", "kwargs", "problem", "where"), [r[1:] for r in REFUSALS], ids=[r[0] for r in REFUSALS]
)
def test_dirty_copies_are_refused_naming_line_and_column(engine, tmp_path, edit, kwargs, problem, where):
    clean = _sample(tmp_path)
    _load(engine, clean)
    before = _snapshot(engine)
    dirty = clean.with_name("dirty.csv")
    shutil.copy(_sample(tmp_path, edit, records=200), dirty)
    options = {"time_column": "date", "time_format": FORMAT, **kwargs}
    with pytest.raises(CsvProblem) as err:
        load_csv(engine, dirty, "birds", replace=True, **options)
    message = str(err.value)
    assert problem in message and where in message
    if edit is not None:
        assert str(dirty) in message
    assert _snapshot(engine) == before  # even with --replace, nothing changed


def test_text_in_numbers_without_coerce_says_how_to_proceed(engine, tmp_path):
    with pytest.raises(CsvProblem, match="Fix them, load with --coerce to set them to null, or with --text height"):
        _load(engine, _sample(tmp_path, _set(6, HEIGHT, "low"), records=200))
    assert _snapshot(engine) == {}


def test_an_existing_table_is_kept_without_replace(engine, tmp_path):
    _load(engine, _sample(tmp_path, records=5))
    before = _snapshot(engine)
    with pytest.raises(CsvProblem, match=r"table 'birds' already exists in sqlite:///.*: load with --replace"):
        _load(engine, _sample(tmp_path, records=10))
    assert _snapshot(engine) == before
    assert _load(engine, _sample(tmp_path, records=10), replace=True).rows == 10
    assert len(_snapshot(engine)["birds"]) == 10


def test_a_load_that_fails_while_writing_leaves_the_old_table(engine, tmp_path):
    load_csv(engine, _sample(tmp_path, records=5), "birds")  # no time column: no time index
    with engine.begin() as conn:  # an index already holding the name the load gives its time index
        conn.execute(sa.text("CREATE TABLE other (x INTEGER)"))
        conn.execute(sa.text("CREATE INDEX ix_birds_date ON other (x)"))
    before = _snapshot(engine)
    with pytest.raises(sa.exc.OperationalError, match="ix_birds_date already exists"):
        _load(engine, _sample(tmp_path, records=20), replace=True)  # fails after the rows are written
    assert _snapshot(engine) == before and len(before["birds"]) == 5


def test_a_changed_file_with_a_checksum_beside_it_is_refused(engine, tmp_path):
    copy = tmp_path / "birds.csv"
    shutil.copy(BIRDS, copy)
    shutil.copy(BIRDS.with_name("birds.csv.sha256"), tmp_path / "birds.csv.sha256")
    copy.write_bytes(copy.read_bytes().replace(b"NO DAMAGE", b"NO DAMAGF", 1))
    with pytest.raises(ChecksumMismatch, match=r"birds\.csv has sha256"):
        _load(engine, copy)
    assert _snapshot(engine) == {}


@pytest.mark.parametrize(
    ("content", "problem"),
    [(b"", "is empty: expected a header line"), (b"a,,c\n1,2,3\n", "line 1: column 2 has no name")],
    ids=["empty", "unnamed column"],
)
def test_files_without_a_usable_header_are_refused(engine, tmp_path, content, problem):
    path = tmp_path / "bad.csv"
    path.write_bytes(content)
    with pytest.raises(CsvProblem, match=problem):
        load_csv(engine, path, "t")
    with pytest.raises(CsvProblem, match="no such file"):
        load_csv(engine, tmp_path / "missing.csv", "t")


# ---- the command ------------------------------------------------------------------------------------------------


def test_airloop_source_load_prints_the_report_and_refuses_a_second_load(tmp_path, monkeypatch, capsys):
    database = tmp_path / "cli.db"
    monkeypatch.setenv("AIRFLOW_CONN_CSVLOAD_TEST", json.dumps({"conn_type": "sqlite", "host": str(database)}))
    path = _sample(tmp_path, _set(2, HEIGHT, "1,234"))
    args = ["source", "load", str(path), "--table", "strikes", "--connection", "csvload_test", "--time-column", "date"]
    assert main(args) == 0
    out = capsys.readouterr().out
    assert "Loaded 30 rows from" in out and "into table 'strikes'" in out and str(database) in out
    assert "date timestamp (UTC)" in out and "removed thousands separators" in out
    assert main(args) == 2
    assert "table 'strikes' already exists" in capsys.readouterr().err
    assert main([*args, "--replace"]) == 0
    bad = _sample(tmp_path, _set(8, DATE, "soon"))
    assert (
        main(
            [
                "source",
                "load",
                str(bad),
                "--table",
                "strikes",
                "--connection",
                "csvload_test",
                "--time-column",
                "date",
                "--replace",
            ]
        )
        == 2
    )
    assert "line 9 'soon'" in capsys.readouterr().err

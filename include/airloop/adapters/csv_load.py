"""Loading a user's CSV file into a table of a source database (``airloop source load``).

A dirty file gets either an explicit repair, listed in the report, or a refusal that names the file, the line and
the column. Nothing is loaded half: every check runs before the first write, and the table is written in one
transaction (on SQLite with an explicit ``BEGIN``, since its Python driver would otherwise commit the ``DROP`` and
``CREATE`` of a replaced table on their own). An existing table is kept unless ``replace`` is asked for.

Repairs (reported): a UTF-8 byte-order mark; a file that is not UTF-8, read as Latin-1; CRLF or CR line endings;
blank lines and rows of empty cells (skipped); spaces around column names; spaces around numbers and thousands
separators (``1,234``) in a numeric column; with ``coerce``, cells that are not numbers in a column that mostly is
(set to null, lines named); ``text_columns`` are kept as text whatever they hold. Refusals: a row with more or
fewer cells than the header; an empty or repeated column name; such non-number cells without ``coerce`` (a
column is numeric when at least :data:`NUMERIC_SHARE` of its filled cells are numbers; otherwise it is text and
nothing is changed); a time column value that is empty or not
a time in the given (or inferred) format. Times are stored as naive UTC timestamps (times without a zone are taken
as UTC), as the extraction of intervals expects. Line numbers are the physical lines of the file (the header is
line 1), so an editor's "go to line" finds them. A ``<file>.sha256`` beside the file is verified first.
"""

from __future__ import annotations

import csv
import io
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING

from airloop.core.errors import ExpectedFailure

if TYPE_CHECKING:
    import pandas as pd
    from sqlalchemy.engine import Engine

#: Cells read as missing in numeric and time columns (in text columns only the empty cell is missing).
MISSING = frozenset({"", "NA", "N/A", "NaN", "nan", "null", "NULL", "None"})
#: A column whose filled cells are numbers at least this often is numeric; its other cells are errors. High, so that
#: a banded category that is mostly "1" (with "2-10") stays text; ``text_columns`` (--text) forces text anyway.
NUMERIC_SHARE = 0.99
_PLAIN = re.compile(r"[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?")
_GROUPED = re.compile(r"[+-]?\d{1,3}(,\d{3})+(\.\d+)?")
_SHOWN = 5  # lines named in one message


class CsvProblem(ExpectedFailure, ValueError):
    """A CSV file that cannot be loaded as it is, or a table that may not be overwritten; the message names the file,
    line and column, and what to do."""


@dataclass
class Prepared:
    """A CSV file read, checked and typed: ready to write."""

    frame: pd.DataFrame
    types: dict[str, str]
    repairs: list[str] = field(default_factory=list)
    checksum: str | None = None


@dataclass(frozen=True)
class LoadReport:
    """What ``load_csv`` did: for the person who ran it."""

    file: str
    table: str
    database: str
    rows: int
    types: dict[str, str]
    time_column: str | None
    time_range: tuple[datetime, datetime] | None
    repairs: list[str]
    checksum: str | None = None

    def lines(self) -> list[str]:
        verified = " (sha256 verified)" if self.checksum else ""
        out = [f"Loaded {self.rows} rows from {self.file}{verified} into table {self.table!r} of {self.database}."]
        out.append(f"Columns ({len(self.types)}): " + ", ".join(f"{n} {t}" for n, t in self.types.items()))
        if self.time_range is not None:
            start, end = self.time_range
            out.append(f"Time range ({self.time_column}): {start:%Y-%m-%d %H:%M:%S} to {end:%Y-%m-%d %H:%M:%S} UTC")
        out.append(f"Repairs ({len(self.repairs)}):" if self.repairs else "Repairs: none")
        out.extend(f"  - {r}" for r in self.repairs)
        return out


def _shown(items: list[tuple[int, str]]) -> str:
    """``line 5 'x', line 9 'y'`` for the first few (line, cell) pairs, with how many more."""
    text = ", ".join(f"line {line} {cell!r}" for line, cell in items[:_SHOWN])
    return text + (f" and {len(items) - _SHOWN} more" if len(items) > _SHOWN else "")


# ---- text and records -------------------------------------------------------------------------------------------


def _decode(path: Path) -> tuple[str, list[str]]:
    """The file's text and the repairs made to read it (byte-order mark, Latin-1, line endings)."""
    raw = path.read_bytes()
    repairs = []
    if raw.startswith(b"\xef\xbb\xbf"):
        raw = raw[3:]
        repairs.append("removed a UTF-8 byte-order mark at the start of the file")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = raw[: exc.start].count(b"\n") + 1
        repairs.append(
            f"not UTF-8 (byte 0x{raw[exc.start]:02x} on line {line}): read as Latin-1; check accented text, "
            "or save the file as UTF-8"
        )
        text = raw.decode("latin-1")
    if text.split("\n", 1)[0].endswith("\r"):
        repairs.append("CRLF (Windows) line endings read as line ends")
    elif "\n" not in text and "\r" in text:
        text = text.replace("\r", "\n")
        repairs.append("CR (old Mac) line endings read as line ends")
    return text, repairs


def _records(path: Path, text: str) -> tuple[list[str], list[list[str]], list[int], list[str]]:
    """Header, records, the line each record starts on, and repairs; blank lines skipped, ragged rows refused."""
    reader = csv.reader(io.StringIO(text, newline=""))
    try:
        header = next(reader)
    except StopIteration:
        raise CsvProblem(f"{path} is empty: expected a header line of column names, then rows") from None
    header, repairs = _header(path, header)
    records, starts, blank, ragged = [], [], [], []
    last = reader.line_num
    try:
        for row in reader:
            start, last = last + 1, reader.line_num
            if not row or all(not cell.strip() for cell in row):
                blank.append(start)
            elif len(row) != len(header):
                ragged.append((start, f"{len(row)} cells"))
            else:
                records.append(row)
                starts.append(start)
    except csv.Error as exc:
        raise CsvProblem(f"{path}, line {reader.line_num}: not readable as CSV ({exc})") from exc
    if ragged:
        raise CsvProblem(
            f"{path}: {len(ragged)} rows do not have the header's {len(header)} cells: {_shown(ragged)}. "
            "A comma inside a value needs the value in double quotes; fix those lines"
        )
    if blank:
        repairs.append(
            f"skipped {len(blank)} blank or empty lines (lines {', '.join(map(str, blank[:_SHOWN]))}"
            + (" ...)" if len(blank) > _SHOWN else ")")
        )
    return header, records, starts, repairs


def _header(path: Path, names: list[str]) -> tuple[list[str], list[str]]:
    """Column names with spaces stripped; an empty or repeated name is refused."""
    stripped = [n.strip() for n in names]
    empty = [i + 1 for i, n in enumerate(stripped) if not n]
    if empty:
        raise CsvProblem(f"{path}, line 1: column {empty[0]} has no name; every column needs one")
    repeated = sorted({n for n in stripped if stripped.count(n) > 1})
    if repeated:
        raise CsvProblem(f"{path}, line 1: column names {repeated!r} appear more than once; rename them")
    changed = [n for n, s in zip(names, stripped, strict=True) if n != s]
    return stripped, [f"stripped spaces around column names {changed!r}"] if changed else []


# ---- types ------------------------------------------------------------------------------------------------------


def _numeric(
    path: Path, name: str, cells: list[str], starts: list[int], coerce: bool
) -> tuple[pd.Series | None, str, list[str]]:
    """The column as numbers (type ``integer`` or ``float``) with its repairs, or None if it is text."""
    import pandas as pd

    raw = pd.Series(cells, dtype="object")
    text = raw.str.strip()
    filled = ~text.isin(MISSING)
    plain = text.str.fullmatch(_PLAIN.pattern) & filled
    grouped = text.str.fullmatch(_GROUPED.pattern) & filled & ~plain
    bad = filled & ~plain & ~grouped
    if not filled.any() or (plain | grouped).sum() / filled.sum() < NUMERIC_SHARE:
        return None, "text", []

    def lines(mask: pd.Series) -> list[tuple[int, str]]:
        return [(starts[i], cells[i]) for i in mask[mask].index]

    if bad.any() and not coerce:
        raise CsvProblem(
            f"{path}: column {name!r} holds numbers in {1 - bad.sum() / filled.sum():.1%} of its filled cells, but "
            f"{bad.sum()} are not numbers: {_shown(lines(bad))}. Fix them, load with --coerce to set them to null, "
            f"or with --text {name} to keep the column as text"
        )
    repairs = []
    spaced = (plain | grouped) & (raw != text)
    for mask, what in ((spaced, "stripped spaces around"), (grouped, "removed thousands separators from")):
        if mask.any():
            repairs.append(f"column {name!r}: {what} {mask.sum()} numbers ({_shown(lines(mask))})")
    if bad.any():
        repairs.append(
            f"column {name!r}: {bad.sum()} cells that are not numbers set to null (--coerce): {_shown(lines(bad))}"
        )
    kept = text.where(plain | grouped).str.replace(",", "", regex=False)
    numbers = pd.to_numeric(kept)
    if not kept.dropna().str.contains(r"[.eE]").any():
        return numbers.astype("Int64"), "integer", repairs
    return numbers.astype(float), "float", repairs


def _times(path: Path, name: str, cells: list[str], starts: list[int], fmt: str | None) -> pd.Series:
    """The time column as naive UTC timestamps; an empty or unparseable value is refused, naming its lines."""
    import warnings

    import pandas as pd

    stripped = pd.Series(cells, dtype="object").str.strip()
    present = stripped.where(~stripped.isin(MISSING))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "could not infer format": unparseable values are named below
        try:
            parsed = pd.to_datetime(present, format=fmt, errors="coerce", utc=True)
        except ValueError as exc:
            raise CsvProblem(f"--time-format {fmt!r} is not a strptime format ({exc}); e.g. %m/%d/%Y %H:%M:%S") from exc
    bad = [(starts[i], cells[i]) for i in range(len(cells)) if pd.isna(parsed.iloc[i])]
    if bad:
        how = f"in the format {fmt!r}" if fmt else "(format inferred from the first value; pass --time-format)"
        raise CsvProblem(
            f"{path}: time column {name!r} has {len(bad)} values that are empty or not times {how}: {_shown(bad)}. "
            "Every row needs a time: fix those lines"
        )
    return parsed.dt.tz_convert("UTC").dt.tz_localize(None)


def read_csv(
    path: Path,
    *,
    time_column: str | None = None,
    time_format: str | None = None,
    coerce: bool = False,
    text_columns: frozenset[str] = frozenset(),
) -> Prepared:
    """Read, repair (reported) and type a CSV file, or refuse it with a :class:`CsvProblem` naming line and column."""
    import pandas as pd

    from airloop.adapters.source import verify_checksum

    if not path.is_file():
        raise CsvProblem(f"{path}: no such file")
    if time_format and not time_column:
        raise CsvProblem("--time-format needs --time-column: which column holds the times?")
    checksum = verify_checksum(path) if path.with_name(path.name + ".sha256").exists() else None
    text, repairs = _decode(path)
    header, records, starts, more = _records(path, text)
    repairs += more
    for option, name in [("--time-column", time_column), *(("--text", n) for n in sorted(text_columns))]:
        if name is not None and name not in header:
            raise CsvProblem(f"{path}: no column {name!r} for {option}; the columns are {', '.join(header)}")
    frame, types = pd.DataFrame(index=range(len(records))), {}
    for j, name in enumerate(header):
        cells = [r[j] for r in records]
        if name == time_column:
            frame[name], types[name] = _times(path, name, cells, starts, time_format), "timestamp (UTC)"
            continue
        if name in text_columns:
            series, types[name], fixes = None, "text", list[str]()
        else:
            series, types[name], fixes = _numeric(path, name, cells, starts, coerce)
        repairs += fixes
        frame[name] = series if series is not None else pd.Series([c if c != "" else None for c in cells], dtype=object)
    return Prepared(frame=frame, types=types, repairs=repairs, checksum=checksum)


# ---- writing ----------------------------------------------------------------------------------------------------


def write_table(
    engine: Engine,
    frame: pd.DataFrame,
    table: str,
    *,
    time_column: str | None,
    replace: bool,
    keys: Sequence[str] = (),
) -> None:
    """Write ``frame`` as ``table`` in one transaction (all rows or none); an existing table needs ``replace``.

    The time column gets an index; ``keys`` (columns unique together) a unique one (the time index, when the time
    column alone is the key)."""
    import sqlalchemy as sa

    from airloop.adapters.db import describe

    with engine.begin() as conn:
        if conn.dialect.name == "sqlite":
            conn.exec_driver_sql("BEGIN")  # pysqlite would commit DROP/CREATE TABLE on their own
        if sa.inspect(conn).has_table(table) and not replace:
            raise CsvProblem(
                f"table {table!r} already exists in {describe(engine)}: load with --replace to overwrite it, "
                "or choose another --table"
            )
        dtype = {time_column: sa.DateTime()} if time_column else None
        frame.to_sql(table, conn, if_exists="replace", index=False, dtype=dtype, chunksize=10_000)
        written = sa.Table(table, sa.MetaData(), autoload_with=conn)
        time_is_key = list(keys) == [time_column]
        if time_column:
            sa.Index(f"ix_{table}_{time_column}", written.c[time_column], unique=time_is_key).create(conn)
        if keys and not time_is_key:
            sa.Index(f"ux_{table}_{'_'.join(keys)}", *(written.c[k] for k in keys), unique=True).create(conn)


def load_csv(
    engine: Engine,
    path: Path,
    table: str,
    *,
    time_column: str | None = None,
    time_format: str | None = None,
    replace: bool = False,
    coerce: bool = False,
    text_columns: frozenset[str] = frozenset(),
) -> LoadReport:
    """Read ``path`` (see the module's docstring for repairs and refusals) and write it as ``table``."""
    from airloop.adapters.db import describe

    if not table.strip():
        raise CsvProblem("--table is empty: name the table to write")
    prepared = read_csv(
        path, time_column=time_column, time_format=time_format, coerce=coerce, text_columns=text_columns
    )
    write_table(engine, prepared.frame, table, time_column=time_column, replace=replace)
    span = None
    if time_column and len(prepared.frame):
        times = prepared.frame[time_column]
        span = (times.min().to_pydatetime(), times.max().to_pydatetime())
    return LoadReport(
        file=str(path),
        table=table,
        database=describe(engine),
        rows=len(prepared.frame),
        types=prepared.types,
        time_column=time_column,
        time_range=span,
        repairs=prepared.repairs,
        checksum=prepared.checksum,
    )

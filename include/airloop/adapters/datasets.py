"""Vendored data sets: loading ``include/data/<name>/`` into the source database as its ``dataset.yaml`` says.

Each folder of :attr:`airloop.core.settings.Paths.data_dir` holds a CSV file, its recorded sha256 and a manifest
(:class:`Dataset`): which file, into which table, how the time column is made (parsed from one column with a format,
or composed from a date column plus a column of hours), which columns are keys (unique) or text.
``airloop seed`` loads every manifest, or one (:func:`find_datasets`, :func:`seed`), through the checked CSV reader
of :mod:`airloop.adapters.csv_load`: the checksum is verified, repairs are reported, and the table is replaced in one
transaction (all rows or none). ``include/data/README.md`` documents the manifest's fields. Nothing here names a
data set, table or column.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from airloop.adapters.csv_load import LoadReport, Prepared
from airloop.adapters.source import verify_checksum
from airloop.core.errors import ExpectedFailure

if TYPE_CHECKING:
    import pandas as pd
    from sqlalchemy.engine import Engine

log = logging.getLogger(__name__)

#: The manifest file of a vendored data set folder.
MANIFEST = "dataset.yaml"


class DatasetProblem(ExpectedFailure, ValueError):
    """A data set manifest that cannot be used, or data that does not fit it; the message names the file and field."""


class _Manifest(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Compose(_Manifest):
    """A time column built from a date column plus a column of hours after that date's midnight."""

    date: str = Field(description="The file's column holding the date (the day's midnight, UTC).")
    date_format: str | None = Field(default=None, description="strptime format of `date`, e.g. %Y-%m-%d.")
    hours: str = Field(description="The file's column of hours added to the date (numbers, e.g. hour of day 0-23).")


class TimeColumn(_Manifest):
    """The table's time column: a column of the file parsed with ``format``, or a new column composed."""

    column: str = Field(description="The time column's name in the table (what a model spec's time_column names).")
    format: str | None = Field(default=None, description="strptime format of the file's column (default: inferred).")
    compose: Compose | None = Field(default=None, description="Build the column instead of parsing one.")

    @model_validator(mode="after")
    def _parse_or_compose(self) -> TimeColumn:
        if self.compose is not None and self.format is not None:
            raise ValueError("give `format` (parse the file's column) or `compose` (build a new column), not both")
        return self


class Dataset(_Manifest):
    """One vendored data set: ``include/data/<name>/dataset.yaml`` (see ``include/data/README.md``)."""

    name: str = Field(description="The data set's name (`airloop seed --dataset NAME`): its folder's name.")
    folder: Path
    description: str = ""
    file: str = Field(description="The CSV file, in the manifest's folder.")
    checksum: str | None = Field(default=None, description="File recording the CSV's sha256 (default <file>.sha256).")
    table: str = Field(description="The source table to write (replaced on every seed).")
    time: TimeColumn
    keys: list[str] = Field(default=[], description="Columns unique together: checked, and given a unique index.")
    text: list[str] = Field(default=[], description="Columns kept as text whatever they hold (csv_load --text).")
    coerce: bool = Field(default=False, description="Set non-numbers in numeric columns to null (reported).")

    @property
    def csv_path(self) -> Path:
        return self.folder / self.file

    @property
    def checksum_path(self) -> Path:
        return self.folder / (self.checksum or self.file + ".sha256")


def read_dataset(path: Path) -> Dataset:
    """The manifest of a data set folder (or the manifest file itself), validated; its files must exist."""
    import yaml

    manifest = path / MANIFEST if path.is_dir() else path
    try:
        raw = yaml.safe_load(manifest.read_text(encoding="utf-8"))
    except OSError as exc:
        raise DatasetProblem(
            f"{manifest} cannot be read ({exc.strerror}): every data folder needs a {MANIFEST}"
        ) from None
    except yaml.YAMLError as exc:
        raise DatasetProblem(f"{manifest} is not valid YAML: {exc}") from None
    if not isinstance(raw, dict):
        raise DatasetProblem(f"{manifest} must be a mapping of fields (file, table, time, ...)")
    if {"name", "folder"} & set(raw):
        raise DatasetProblem(f"{manifest}: remove `name` and `folder`: a data set is named by its folder")
    try:
        dataset = Dataset.model_validate({**raw, "name": manifest.parent.name, "folder": manifest.parent})
    except ValidationError as exc:
        problems = "; ".join(f"`{'.'.join(map(str, e['loc']))}`: {e['msg']}" for e in exc.errors())
        raise DatasetProblem(
            f"{manifest} is not a valid data set manifest: {problems}. See include/data/README.md"
        ) from None
    for what, file in (("file", dataset.csv_path), ("checksum", dataset.checksum_path)):
        if not file.is_file():
            raise DatasetProblem(f"{manifest}: `{what}` names {file.name}, which is not in {dataset.folder}")
    return dataset


def find_datasets(data_dir: Path, name: str | None = None) -> list[Dataset]:
    """Every data set with a manifest in ``data_dir`` (sorted by name), or only the one called ``name``."""
    found = sorted(p.parent.name for p in data_dir.glob(f"*/{MANIFEST}"))
    if name is not None:
        if name not in found:
            raise DatasetProblem(
                f"no data set {name!r} in {data_dir} (a folder with a {MANIFEST}); known: {', '.join(found) or 'none'}"
            )
        found = [name]
    if not found:
        raise DatasetProblem(f"no data set in {data_dir}: expected folders holding a {MANIFEST}")
    return [read_dataset(data_dir / n) for n in found]


def _header(dataset: Dataset) -> list[str]:
    """The CSV file's column names (first line), to check the manifest's columns before reading the rows."""
    import csv

    with dataset.csv_path.open(encoding="utf-8-sig", errors="replace", newline="") as handle:
        return [name.strip() for name in next(csv.reader(handle), [])]


def _check_columns(dataset: Dataset, header: list[str]) -> None:
    """Every column the manifest names must be in the file (a composed time column must not be)."""
    time, manifest = dataset.time, dataset.folder / MANIFEST
    named = {"time.column": [time.column] if time.compose is None else [], "text": dataset.text}
    if time.compose is not None:
        named |= {"time.compose.date": [time.compose.date], "time.compose.hours": [time.compose.hours]}
        if time.column in header:
            raise DatasetProblem(
                f"{manifest}: `time.column` {time.column!r} is composed, but {dataset.file} already has a column of "
                "that name: name the new column differently, or parse that column with `time.format` instead"
            )
    named["keys"] = [k for k in dataset.keys if k != time.column]
    for field, columns in named.items():
        missing = [c for c in columns if c not in header]
        if missing:
            raise DatasetProblem(
                f"{manifest}: `{field}` names {missing}, which {dataset.file} does not have; its columns are "
                f"{', '.join(header)}"
            )


def _composed(dataset: Dataset, frame: pd.DataFrame) -> pd.Series:
    """The composed time column: the date column's day plus the hours column's hours (naive, taken as UTC)."""
    import pandas as pd

    compose = dataset.time.compose
    assert compose is not None
    dates = pd.to_datetime(frame[compose.date].astype("string"), format=compose.date_format, errors="coerce")
    hours = pd.to_numeric(frame[compose.hours], errors="coerce")
    bad = frame.index[dates.isna() | hours.isna()]
    if len(bad):
        shown = ", ".join(
            f"row {i + 1} ({frame.at[i, compose.date]!s}, {frame.at[i, compose.hours]!s})" for i in bad[:5]
        )
        raise DatasetProblem(
            f"{dataset.csv_path}: {len(bad)} rows have no date in {compose.date!r} (format "
            f"{compose.date_format or 'inferred'}) or no number in {compose.hours!r}: {shown} (rows counted after the "
            "header). Every row needs a time: fix those rows, or `time.compose` in the manifest"
        )
    return dates + pd.to_timedelta(hours.astype(float), unit="h")


def _check_keys(dataset: Dataset, frame: pd.DataFrame) -> None:
    """The manifest's keys must identify each row: no missing value, no repeated combination."""
    if not dataset.keys:
        return
    keys = frame[dataset.keys]
    bad = keys.isna().any(axis=1) | keys.duplicated(keep=False)
    if bad.any():
        shown = ", ".join(f"row {i + 1} ({', '.join(map(str, keys.loc[i]))})" for i in frame.index[bad][:5])
        raise DatasetProblem(
            f"{dataset.csv_path}: the manifest's `keys` {dataset.keys} must be filled and unique together, but "
            f"{int(bad.sum())} rows are missing or repeat them: {shown}. Fix the file, or the manifest's `keys`"
        )


def prepare_dataset(dataset: Dataset) -> Prepared:
    """Read a data set's CSV as its manifest says: checksum verified, repairs reported, time column made, keys
    checked. Integer columns without missing values are plain ``int64`` (as pandas reads them)."""
    from airloop.adapters.csv_load import read_csv

    checksum = verify_checksum(dataset.csv_path, dataset.checksum_path)
    _check_columns(dataset, _header(dataset))
    time = dataset.time
    prepared = read_csv(
        dataset.csv_path,
        time_column=time.column if time.compose is None else None,
        time_format=time.format,
        coerce=dataset.coerce,
        text_columns=frozenset(dataset.text),
    )
    frame = prepared.frame
    if time.compose is not None:
        frame.insert(0, time.column, _composed(dataset, frame))
        prepared.types = {time.column: "timestamp (UTC)", **prepared.types}
    for column in frame.columns:
        if str(frame[column].dtype) == "Int64" and not frame[column].isna().any():
            frame[column] = frame[column].astype("int64")
    _check_keys(dataset, frame)
    prepared.checksum = checksum
    return prepared


def dataset_frame(dataset: Dataset | Path) -> pd.DataFrame:
    """A data set's rows as :func:`seed` writes them (``dataset``: a manifest, or its folder or file)."""
    return prepare_dataset(dataset if isinstance(dataset, Dataset) else read_dataset(dataset)).frame


def seed(engine: Engine, dataset: Dataset | Path) -> LoadReport:
    """Load a data set into its table, replacing it in one transaction (all rows or none). Safe to run twice."""
    from airloop.adapters.csv_load import write_table
    from airloop.adapters.db import describe

    dataset = dataset if isinstance(dataset, Dataset) else read_dataset(dataset)
    prepared = prepare_dataset(dataset)
    frame, column = prepared.frame, dataset.time.column
    write_table(engine, frame, dataset.table, time_column=column, replace=True, keys=dataset.keys)
    times = frame[column]
    log.info("seeded %d rows of data set %s into %s", len(frame), dataset.name, dataset.table)
    return LoadReport(
        file=str(dataset.csv_path),
        table=dataset.table,
        database=describe(engine),
        rows=len(frame),
        types=prepared.types,
        time_column=column,
        time_range=(times.min().to_pydatetime(), times.max().to_pydatetime()) if len(frame) else None,
        repairs=prepared.repairs,
        checksum=prepared.checksum,
    )

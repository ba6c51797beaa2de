"""The source database: extracting exactly one data interval, and verifying the checksum of a data file.

(Loading data into the source: :mod:`airloop.adapters.csv_load` for a user's CSV file, and
:mod:`airloop.adapters.datasets` for the vendored data sets that ``airloop seed`` loads from their manifests.)

Extraction binds the interval bounds as SQL parameters (never formats them into SQL) and selects
``start <= time < end``, so adjacent intervals never share or drop a row. On PostgreSQL the extraction's
transaction runs with ``TIME ZONE 'UTC'`` whatever the connection's own setting, so the bounds compare exactly
with both ``timestamp`` and ``timestamptz`` columns (see :func:`_pin_session_to_utc`).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from airloop.core.digests import file_digest
from airloop.core.errors import ExpectedFailure, ServiceUnavailable
from airloop.core.intervals import Interval
from airloop.core.spec import ModelSpec
from airloop.core.urls import mask_url

if TYPE_CHECKING:
    from collections.abc import Collection

    import pandas as pd
    from sqlalchemy.engine import Engine


log = logging.getLogger(__name__)


class SourceProblem(ExpectedFailure, RuntimeError):
    """The source cannot give the interval's rows as configured (a missing table or column, values that are not
    timestamps): a person must act, so retrying only delays the alert. The message says why and what to do."""


class SourceUnavailable(ServiceUnavailable):
    """Reading the source failed in a way that may pass on its own (the database unreachable or busy): retried."""


class ChecksumMismatch(ExpectedFailure, ValueError):
    """A vendored data file does not match its recorded sha256."""


def sha256_of(path: Path) -> str:
    """The hex sha256 of a data file (:func:`airloop.core.digests.file_digest`)."""
    return file_digest(path)


def verify_checksum(csv_path: Path, recorded_file: Path | None = None) -> str:
    """Check a data file against its recorded sha256 (default ``<file>.sha256`` beside it); return the digest."""
    recorded_file = recorded_file or csv_path.with_name(csv_path.name + ".sha256")
    try:
        expected = recorded_file.read_text().split()[0]
    except (FileNotFoundError, IndexError) as exc:
        raise ChecksumMismatch(f"{recorded_file} is missing or empty: cannot verify {csv_path}") from exc
    actual = sha256_of(csv_path)
    if actual != expected:
        raise ChecksumMismatch(
            f"{csv_path} has sha256 {actual}, but {recorded_file.name} records {expected}. "
            "The file was changed or truncated: restore it with `git checkout -- include/data`."
        )
    return actual


@dataclass(frozen=True)
class Extract:
    frame: pd.DataFrame
    statement: str


def _bounds_for(column_type: object, interval: Interval) -> tuple[datetime, datetime]:
    """Interval bounds in the form the column stores: naive UTC for columns without a time zone."""
    if getattr(column_type, "timezone", False):
        return interval.start, interval.end
    return (
        interval.start.astimezone(UTC).replace(tzinfo=None),
        interval.end.astimezone(UTC).replace(tzinfo=None),
    )


def _pin_session_to_utc(conn: Any) -> None:
    """Run this connection's current transaction in UTC where the database has a session time zone (PostgreSQL).

    PostgreSQL reads a naive bound compared with a ``timestamptz`` column in the session's ``TimeZone``, and
    casts a naive ``timestamp`` column compared with an aware bound in it too. A ``query:`` source gives no column
    type to choose the bound's form from, so with a session in, say, America/New_York either form shifts the
    interval's edges by the offset for one of the two column kinds. In UTC both compare exactly (naive times are
    UTC throughout airloop). ``SET LOCAL`` ends with the transaction, so the pooled connection keeps its setting.
    """
    import sqlalchemy as sa

    if conn.dialect.name == "postgresql":
        conn.execute(sa.text("SET LOCAL TIME ZONE 'UTC'"))


def extract_interval(engine: Engine, spec: ModelSpec, interval: Interval, *, withhold: Collection[str] = ()) -> Extract:
    """Rows of ``[interval.start, interval.end)`` from the spec's source, ordered by time, time column in UTC,
    without the columns in ``withhold`` (ingestion passes :func:`withheld_columns`)."""
    import pandas as pd
    import sqlalchemy as sa

    src = spec.source
    withheld = set(withhold)
    try:
        with engine.connect() as conn:
            _pin_session_to_utc(conn)
            if src.table is not None:
                table = sa.Table(src.table, sa.MetaData(), autoload_with=conn)
                if src.time_column not in table.c:
                    raise SourceProblem(
                        f"source table {src.table!r} has no time column {src.time_column!r} "
                        f"(columns: {', '.join(table.c.keys())}). Fix `source.time_column` in the {spec.name} spec."
                    )
                ts = table.c[src.time_column]
                start, end = _bounds_for(ts.type, interval)
                kept = [c for c in table.c if c.name not in withheld]
                stmt: Any = sa.select(*kept).where(ts >= start, ts < end).order_by(ts)
            else:
                assert src.query is not None
                start, end = _bounds_for(None, interval)
                stmt = sa.text(src.query).bindparams(start=start, end=end)
            frame = pd.read_sql(stmt, conn)
            frame.columns = [str(c) for c in frame.columns]  # plain names, not SQLAlchemy's quoted_name
    except (SourceProblem, SourceUnavailable):
        raise
    except sa.exc.NoSuchTableError as exc:
        where = mask_url(engine.url.render_as_string(hide_password=True))
        raise SourceProblem(
            f"source table {src.table!r} does not exist in {where}. "
            "For the demo run `airloop seed`; otherwise fix `source.table` or the connection "
            f"{src.connection!r}."
        ) from exc
    except sa.exc.SQLAlchemyError as exc:
        raise SourceUnavailable(
            f"reading interval {interval} from connection {src.connection!r} failed: {exc.__class__.__name__}: "
            f"{str(exc).splitlines()[0]}. Check the connection in Airflow (Admin > Connections) and retry."
        ) from exc
    frame = frame.drop(columns=[c for c in frame.columns if c in withheld])  # a query's own target column
    if src.time_column in frame.columns:
        frame[src.time_column] = _to_utc(frame[src.time_column], src.time_column)
    return Extract(frame=frame, statement=str(stmt))


def withheld_columns(spec: ModelSpec) -> set[str]:
    """Source columns ingestion never extracts: the target, when labels come from a label source of their own
    (``labels.source``; the labels step reads them there). The features source need not have it at all; a
    value it does have is not the label (it may be a placeholder written before the outcome was known)."""
    return {spec.target.name} if spec.labels.source is not None else set()


def _to_utc(values: pd.Series, column: str) -> pd.Series:
    import pandas as pd

    try:
        converted = pd.to_datetime(values)
    except (ValueError, TypeError) as exc:
        raise SourceProblem(f"time column {column!r} holds values that are not timestamps: {exc}") from exc
    if converted.dt.tz is None:
        return converted.dt.tz_localize("UTC")
    return converted.dt.tz_convert("UTC")

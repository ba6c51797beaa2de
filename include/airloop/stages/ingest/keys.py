"""Row keys: the columns that identify a row (``spec.keys``), checked at ingestion and written with every prediction.

Pure steps on frames, no I/O. :func:`key_problems` is the ingest check (a missing key column, a null key value or
two rows with the same key values quarantine the batch); :func:`row_keys` is the canonical text of each row's
key that the ``predictions`` table and lake partition carry.

The canonical form of a row key is
- one key column: the value's own text. A time is ISO 8601 in UTC with a ``Z``, to the second
  (``2012-11-03T05:00:00Z``), or to the microsecond when it has a fraction (``2012-11-03T05:00:00.250000Z``); a
  whole number is its digits (also when the column arrived as floats, ``7.0`` -> ``7``); any other value ``str``.
- several key columns: a compact JSON array of those values in key order (``["2012-11-03T05:00:00Z",17]``):
  numbers as JSON numbers, everything else as JSON strings.
It is stable (the same row gives the same text whatever chunk or batch it is in, and whatever integer or time
resolution the frame holds), readable, sorts by time for a single time key, and a JSON array cannot be
confused by a value that contains a separator.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import pandas as pd

#: How many offending key values a problem quotes (its count is always the full number).
SAMPLE = 10


@dataclass(frozen=True)
class KeyProblem:
    """One reason a batch's rows are not identified by their keys: what, how many rows, which key values."""

    kind: str  # "missing" | "null" | "duplicate"
    keys: tuple[str, ...]
    rows: int
    examples: list[str] = field(default_factory=list)
    detail: str = ""
    capped: bool = False

    def describe(self) -> str:
        """One line for the quarantine summary and the task log."""
        shown = f"; {self.examples}" if self.examples else ""
        more = f" (first {len(self.examples)} shown)" if self.capped else ""
        return f"row keys {list(self.keys)}: {self.detail}{shown}{more}"


def key_problems(frame: pd.DataFrame, keys: list[str], sample: int = SAMPLE) -> list[KeyProblem]:
    """What stops ``keys`` identifying each row of ``frame`` (empty: every row has its own non-null key values).

    A missing column makes the other checks moot; otherwise rows with a null in any key column, then rows whose
    (non-null) key values another row of the batch shares, each with their count and a sample of key values.
    """
    import numpy as np

    names = tuple(keys)
    missing = [k for k in keys if k not in frame.columns]
    if missing:
        return [
            KeyProblem(
                "missing",
                names,
                len(frame),
                detail=f"column(s) {missing} are not in the batch (its columns: {sorted(map(str, frame.columns))})",
            )
        ]
    problems = []
    null = frame[keys].isna().any(axis=1)
    if null.any():
        positions = np.flatnonzero(null.to_numpy())
        examples = [f"row {p}: {_with_nulls(frame.iloc[p][keys])}" for p in positions[:sample].tolist()]
        detail = f"{len(positions)} of {len(frame)} rows have a null key value (rows 0-based in the batch)"
        problems.append(KeyProblem("null", names, len(positions), examples, detail, len(positions) > sample))
    present = frame.loc[~null, keys]
    repeated = present.duplicated(keep=False)
    if repeated.any():
        texts = row_keys(present.loc[repeated], keys)
        counts: dict[str, int] = {}
        for text in texts:
            counts[text] = counts.get(text, 0) + 1
        examples = [f"{text} x{n}" for text, n in list(counts.items())[:sample]]
        detail = (
            f"{int(repeated.sum())} of {len(frame)} rows share their key values with another row "
            f"({len(counts)} key values repeated; each shown with how many rows have it)"
        )
        problems.append(KeyProblem("duplicate", names, int(repeated.sum()), examples, detail, len(counts) > sample))
    return problems


def advice(spec_name: str, keys: list[str], kinds: set[str]) -> str:
    """What to do about key problems of these kinds (``missing``, ``null``, ``duplicate``), one clause each."""
    lines = []
    if "missing" in kinds:
        lines.append(
            f"the source no longer sends key column(s) of {keys}: restore them at the source, or change "
            f"`source.keys` in the model spec {spec_name}.yaml to columns the source has"
        )
    if "null" in kinds:
        lines.append("rows without a key cannot be scored or joined back: fix them at the source")
    if "duplicate" in kinds:
        lines.append(
            f"if several rows legitimately share {keys} (e.g. many events per timestamp), set `source.keys` in "
            f"{spec_name}.yaml to columns that identify one row (such as a record id); if the source sends a row "
            "twice, remove the duplicates there"
        )
    return "; ".join(lines)


def row_keys(frame: pd.DataFrame, keys: list[str]) -> list[str]:
    """The canonical key text of every row (see the module docstring); the key columns must have no nulls."""
    if len(keys) == 1:
        return _texts(frame[keys[0]])
    columns = [_json_values(frame[k]) for k in keys]
    return [
        json.dumps(list(values), separators=(",", ":"), ensure_ascii=False) for values in zip(*columns, strict=True)
    ]


def _texts(values: pd.Series) -> list[str]:
    """One key column's values as canonical text."""
    import numpy as np
    import pandas as pd

    if pd.api.types.is_datetime64_any_dtype(values):
        return _time_texts(values)
    if pd.api.types.is_bool_dtype(values):
        return [str(bool(v)) for v in values.tolist()]
    if pd.api.types.is_integer_dtype(values):
        return [str(int(v)) for v in values.tolist()]
    if pd.api.types.is_float_dtype(values):
        arr = values.to_numpy(dtype=float)
        whole = np.isfinite(arr) & (arr == np.round(arr)) & (np.abs(arr) < 2**53)
        return [str(int(v)) if w else repr(v) for v, w in zip(arr.tolist(), whole.tolist(), strict=True)]
    return [_text(v) for v in values.tolist()]


def _time_texts(values: pd.Series) -> list[str]:
    """Times as ISO 8601 UTC text with ``Z``: seconds, or microseconds for a time with a fraction of a second."""
    import numpy as np

    if getattr(values.dt, "tz", None) is not None:
        values = values.dt.tz_convert("UTC").dt.tz_localize(None)  # a naive time is UTC already (the convention)
    arr = values.to_numpy(dtype="datetime64[us]")
    fraction = (arr - arr.astype("datetime64[s]")).astype(np.int64) != 0
    # timezone="UTC" writes the "Z" in numpy, so no Python string is built per row beyond tolist()'s
    texts = np.datetime_as_string(arr, unit="s", timezone="UTC")
    if fraction.any():
        texts = texts.astype(object)  # the fractions are longer than the fixed-width strings
        texts[fraction] = np.datetime_as_string(arr[fraction], unit="us", timezone="UTC")
    result: list[str] = texts.tolist()
    return result


def _text(value: Any) -> str:
    """One value of an object column as key text (times as :func:`_time_texts` writes them)."""
    from datetime import date, datetime

    import pandas as pd

    if isinstance(value, datetime):
        return _time_texts(pd.Series(pd.to_datetime([value], utc=value.tzinfo is not None)))[0]
    if isinstance(value, date):
        return value.isoformat()
    if isinstance(value, bool):
        return str(value)
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def _json_values(values: pd.Series) -> list[Any]:
    """One key column's values for the JSON array: numbers as numbers, everything else as its key text."""
    import pandas as pd

    if pd.api.types.is_bool_dtype(values) or not pd.api.types.is_numeric_dtype(values):
        return _texts(values)
    return [int(t) if t.lstrip("-").isdigit() else float(t) for t in _texts(values)]


def _with_nulls(row: pd.Series) -> str:
    """A row's key values for a message, a null shown as ``null``."""
    import pandas as pd

    values = [None if pd.isna(v) else _text(v) for v in row.tolist()]
    return json.dumps(values[0] if len(values) == 1 else values, ensure_ascii=False)

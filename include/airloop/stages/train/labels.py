"""The training frame's labels: from the warehouse ``labels`` table where a label arrived there, else the row's own.

Labels that arrive after their interval was ingested (``labels.after``, or a label source of their own) are written
by the labels step to table ``labels``, keyed by partition and row key (:func:`airloop.stages.ingest.keys.row_keys`),
one revision per value that arrived. A row's target in training is its current label there (the highest
revision: a correction wins), else the value its validated partition holds, when that is not null. Rows with
neither keep a null target: :func:`airloop.stages.train.steps.split` leaves them out of training and the holdout
and the run counts them (``unlabelled_rows``).

The labels taken from the table are digested (:attr:`LabelsUsed.digest`) next to the partitions' content digests,
so a model's training data stays checkable when the table changes later.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from airloop.core.digests import json_digest
from airloop.core.errors import ServiceUnavailable

if TYPE_CHECKING:
    import pandas as pd

    from airloop.core.spec import ModelSpec

#: Reads the current labels of a model's partitions: a frame of ``partition``, ``row_key``, ``label`` (text),
#: ``revision`` (:func:`airloop.adapters.warehouse.current_labels_of_partitions`, or a test's own).
LabelReader = Callable[[list[str]], "pd.DataFrame"]


@dataclass(frozen=True)
class LabelsUsed:
    """Where the window's labels came from: counts over the rows inside the window, and the table's digest."""

    rows: int = 0
    from_table: int = 0
    corrected: int = 0
    overriding: int = 0
    from_partitions: int = 0
    unlabelled: int = 0
    digest: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "rows": self.rows,
            "labelled_from_table": self.from_table,
            "corrected": self.corrected,
            "overriding_partition_values": self.overriding,
            "labelled_from_partitions": self.from_partitions,
            "unlabelled_rows": self.unlabelled,
            "labels_digest": self.digest,
        }

    def describe(self) -> str:
        """One line for the log: how many rows are labelled from where, and how many are not."""
        return (
            f"{self.rows - self.unlabelled} of {self.rows} rows labelled: {self.from_table} from table labels "
            f"({self.corrected} corrected, {self.overriding} replacing the partition's value), "
            f"{self.from_partitions} from the partitions; {self.unlabelled} without a label"
        )


class LabelsUnavailable(ServiceUnavailable):
    """The warehouse's ``labels`` table could not be read (retried like any unreachable service)."""


def warehouse_reader(model: str) -> LabelReader:
    """The labels of ``model`` in the warehouse (its schema brought up to date first)."""

    def read(partitions: list[str]) -> pd.DataFrame:
        import sqlalchemy as sa

        from airloop.adapters.db import describe, engine_for
        from airloop.adapters.warehouse import current_labels_of_partitions, ensure_schema
        from airloop.core.settings import WAREHOUSE_CONN_ID

        engine = engine_for(WAREHOUSE_CONN_ID)
        try:
            ensure_schema(engine)
            return current_labels_of_partitions(engine, model, partitions)
        except sa.exc.SQLAlchemyError as exc:
            raise LabelsUnavailable(
                f"Reading the labels of {model} from the warehouse ({WAREHOUSE_CONN_ID}, {describe(engine)}) failed: "
                f"{type(exc).__name__}: {str(exc).splitlines()[0]}. The training data needs them (labels that "
                "arrived after their interval was ingested): check the connection and the database, then retry."
            ) from exc

    return read


def join_labels(
    spec: ModelSpec, frame: pd.DataFrame, partitions: pd.Series, table: pd.DataFrame
) -> tuple[pd.DataFrame, LabelsUsed]:
    """``frame`` with its target column taken from ``table`` where it holds the row's label (joined by partition
    and row key), else left as the partition had it (a null where the partition has no target column).

    ``partitions`` names each row's partition (aligned with ``frame``); ``table`` is what a :data:`LabelReader`
    gives. The frame must hold the key columns.
    """
    import pandas as pd

    from airloop.stages.ingest.keys import row_keys

    target = spec.target.name
    own = frame[target] if target in frame.columns else pd.Series(None, index=frame.index, dtype=object)
    if len(table) == 0 or len(frame) == 0:
        known = int(own.notna().sum())
        out = frame if target in frame.columns else frame.assign(**{target: own})
        return out, LabelsUsed(rows=len(frame), from_partitions=known, unlabelled=len(frame) - known)
    keys = pd.DataFrame({"partition": partitions.to_numpy(), "row_key": row_keys(frame, spec.keys)})
    joined = keys.merge(table, how="left", on=["partition", "row_key"], validate="many_to_one")
    joined.index = frame.index
    found = joined["label"].notna()
    values = label_values(spec, joined["label"], own)
    merged = _settled(spec, own.astype(object).where(~found, values.astype(object)), own)
    used = table.merge(keys, on=["partition", "row_key"]).sort_values(["partition", "row_key"], kind="stable")
    labelled = merged.notna()
    result = LabelsUsed(
        rows=len(frame),
        from_table=int((found & labelled).sum()),
        corrected=int((found & (joined["revision"].fillna(0) > 1)).sum()),
        overriding=int((found & own.notna() & ~values.astype(object).eq(own.astype(object))).sum()),
        from_partitions=int((labelled & ~found).sum()),
        unlabelled=int((~labelled).sum()),
        digest=json_digest(used[["partition", "row_key", "label", "revision"]].values.tolist(), default=str),
    )
    out = frame.copy()
    out[target] = merged
    return out, result


def _settled(spec: ModelSpec, merged: pd.Series, own: pd.Series) -> pd.Series:
    """The merged target (object) in one type: the partition's own where every value fits it (an integer count
    or class stays an integer when every row is labelled), numbers as floats, else the values as they are."""
    import numpy as np
    import pandas as pd

    present = merged.dropna()
    numeric = pd.to_numeric(present, errors="coerce")
    if len(present) and present.map(lambda v: isinstance(v, bool | np.bool_)).all():  # booleans stay booleans
        return merged if merged.isna().any() else merged.astype(bool)
    if spec.target.task == "regression" or (numeric.notna().all() and not present.map(type).eq(str).any()):
        floats = pd.to_numeric(merged, errors="coerce").astype(float)
        whole = bool((numeric == numeric.round()).all())
        if pd.api.types.is_integer_dtype(own.dtype) and not floats.isna().any() and whole:
            return floats.astype(own.dtype)
        return floats
    return merged


def label_values(spec: ModelSpec, texts: pd.Series, like: pd.Series) -> pd.Series:
    """Labels stored as text, as values of the target: numbers for a regression; for a classifier the kind of the
    partition's own target column (``like``: booleans, numbers or text), or numbers when every label reads as one
    and the partition has no target values to go by, else text. A label that does not read as such is null.
    """
    import pandas as pd

    texts = pd.Series(texts.to_numpy(), index=like.index, dtype=object)
    numbers = pd.to_numeric(texts, errors="coerce").astype(float)
    if spec.target.task == "regression":
        return numbers
    known = like.dropna()
    written = texts.dropna()
    as_booleans = len(known) == 0 and len(written) > 0 and written.isin(["True", "False"]).all()  # label_text's
    if as_booleans or pd.api.types.is_bool_dtype(like.dtype) or (len(known) and known.map(type).eq(bool).all()):
        truth = {"true": True, "false": False, "1": True, "0": False}
        return texts.map(lambda t: truth.get(str(t).strip().lower()) if isinstance(t, str) else None)
    if len(known):
        return numbers if pd.api.types.is_numeric_dtype(like.dtype) else texts
    return numbers if bool(numbers[texts.notna()].notna().all()) else texts

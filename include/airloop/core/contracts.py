"""What one task hands the next: frozen dataclasses with ``to_dict``/``from_dict``.

XCom carries JSON, so each contract says exactly which fields travel and of which type; a task that reads a
missing or mistyped field fails naming it (:class:`ContractError`) instead of a ``KeyError`` deep in a stage.
Pure and light: safe at DAG parse time.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from airloop.core.errors import ExpectedFailure
from airloop.core.numbers import as_float, json_number, number_in


@dataclass(frozen=True)
class RunInfo:
    """Who and what started a task: the Airflow link every MLflow run and ledger row carries."""

    dag_id: str | None = None
    run_id: str | None = None
    try_number: int | None = None
    run_type: str | None = None
    triggered_by: str | None = None

    def tags(self) -> dict[str, str]:
        values = {
            "airflow.dag_id": self.dag_id,
            "airflow.run_id": self.run_id,
            "airflow.try_number": self.try_number,
            "airflow.run_type": self.run_type,
            "airflow.triggered_by": self.triggered_by,
        }
        return {k: str(v) for k, v in values.items() if v is not None}


@dataclass(frozen=True)
class Evaluation:
    """One model's scores on the holdout (both models are scored on the same rows)."""

    metrics: dict[str, float]
    slices: dict[str, dict[str, float]]
    predictions: int
    nan_predictions: int
    min_prediction: float
    max_prediction: float
    signature: dict[str, str] | None = None
    version: str | None = None

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe: NaN and infinities become None, numpy numbers become plain ones."""
        return {
            "metrics": {str(k): json_number(v) for k, v in self.metrics.items()},
            "slices": {
                str(key): {str(k): json_number(v) for k, v in scores.items()} for key, scores in self.slices.items()
            },
            "predictions": int(self.predictions),
            "nan_predictions": int(self.nan_predictions),
            "min_prediction": json_number(self.min_prediction),
            "max_prediction": json_number(self.max_prediction),
            "signature": None if self.signature is None else {str(k): str(v) for k, v in self.signature.items()},
            "version": self.version,
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Evaluation:
        """The inverse of :meth:`to_dict` (None becomes NaN where a number is expected)."""
        signature = d.get("signature")
        version = d.get("version")
        return cls(
            metrics={str(k): number_in(v) for k, v in (d.get("metrics") or {}).items()},
            slices={
                str(key): {str(k): number_in(v) for k, v in (scores or {}).items()}
                for key, scores in (d.get("slices") or {}).items()
            },
            predictions=int(d.get("predictions") or 0),
            nan_predictions=int(d.get("nan_predictions") or 0),
            min_prediction=number_in(d.get("min_prediction")),
            max_prediction=number_in(d.get("max_prediction")),
            signature=None if signature is None else {str(k): str(v) for k, v in signature.items()},
            version=None if version is None else str(version),
        )

    def metric(self, name: str) -> float:
        """One overall metric as a float; NaN when missing or not a number."""
        return as_float(self.metrics.get(name))


# --- ingest, score and monitor ---


class ContractError(ExpectedFailure, ValueError):
    """A task's input does not match its contract: the message names the contract, the field and what it got."""


def _fields(contract: str, d: Any) -> dict[str, Any]:
    if not isinstance(d, dict):
        raise ContractError(
            f"{contract} must be a JSON object (a dict), got {type(d).__name__} {_shown(d)}: the upstream task "
            f"returns {contract}.to_dict(); clear it to run it again."
        )
    return d


def _shown(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


_KINDS = {str: "a string", int: "an integer", float: "a number", bool: "true or false", dict: "an object"}


def _field(contract: str, d: Any, name: str, kind: type, *, optional: bool = False) -> Any:
    """Field ``name`` of ``d``, of type ``kind`` (an int is a number; a bool is never an int or a number).

    Raises :class:`ContractError` naming the contract, the field and what it got; ``optional`` accepts a
    missing field or None (both give None).
    """
    fields = _fields(contract, d)
    if name not in fields and not optional:
        raise ContractError(f"{contract} has no field `{name}` (its fields: {sorted(fields)}).")
    value = fields.get(name)
    if value is None and optional:
        return None
    if value is None and kind is float:
        return math.nan  # what to_dict wrote for NaN (JSON has none)
    kinds: tuple[type, ...] = (int, float) if kind is float else (kind,)
    if not isinstance(value, kinds) or (isinstance(value, bool) and kind is not bool):
        raise ContractError(
            f"{contract}.{name} must be {_KINDS.get(kind, kind.__name__)}, got {type(value).__name__} {_shown(value)}."
        )
    return float(fields[name]) if kind is float else value  # fields[name]: the value, not narrowed to object


def _strings(contract: str, d: Any, name: str) -> tuple[str, ...]:
    """A list of strings (JSON has no tuple)."""
    value = _fields(contract, d).get(name)
    if not isinstance(value, list | tuple) or not all(isinstance(v, str) for v in value):
        raise ContractError(f"{contract}.{name} must be a list of strings, got {type(value).__name__} {_shown(value)}.")
    return tuple(value)


def _mapping(contract: str, d: Any, name: str, kind: type) -> dict[str, Any]:
    """An object whose values are of ``kind`` (numbers: an int is one)."""
    value = _field(contract, d, name, dict)
    if kind is float:  # None is NaN, as in a number field
        value = {k: math.nan if v is None else v for k, v in value.items()}
    kinds: tuple[type, ...] = (int, float) if kind is float else (kind,)
    bad = {k: v for k, v in value.items() if not isinstance(v, kinds) or isinstance(v, bool)}
    if bad:
        plural = "numbers" if kind is float else "strings" if kind is str else f"{kind.__name__} values"
        raise ContractError(f"{contract}.{name} must map names to {plural}, got {_shown(bad)}.")
    return {str(k): float(v) if kind is float else v for k, v in value.items()}


def _when(contract: str, d: Any, name: str) -> datetime:
    """An ISO 8601 time (what ``datetime.isoformat`` writes)."""
    text = _field(contract, d, name, str)
    try:
        return datetime.fromisoformat(text)
    except ValueError:
        raise ContractError(f"{contract}.{name} must be an ISO 8601 time, got {_shown(text)}.") from None


def _iso(contract: str, d: Any, name: str) -> str:
    """An ISO 8601 time, checked and kept as the text it is."""
    _when(contract, d, name)
    return str(d[name])


@dataclass(frozen=True)
class PinnedChampion:
    """The ``@champion`` version resolved once for a whole run, and its MLflow run."""

    version: str
    run_id: str

    def to_dict(self) -> dict[str, Any]:
        return {"version": self.version, "run_id": self.run_id}

    @classmethod
    def from_dict(cls, d: Any) -> PinnedChampion:
        name = cls.__name__
        return cls(version=_field(name, d, "version", str), run_id=_field(name, d, "run_id", str))


@dataclass(frozen=True)
class Extracted:
    """What extract hands validate: the interval's ``raw`` partition, its rows and content digest."""

    partition: str
    rows: int
    content_digest: str

    def to_dict(self) -> dict[str, Any]:
        return {"partition": self.partition, "rows": self.rows, "content_digest": self.content_digest}

    @classmethod
    def from_dict(cls, d: Any) -> Extracted:
        name = cls.__name__
        return cls(
            partition=_field(name, d, "partition", str),
            rows=_field(name, d, "rows", int),
            content_digest=_field(name, d, "content_digest", str),
        )


@dataclass(frozen=True)
class Validated:
    """What validate hands publish: the raw partition that passed, the suites it passed and the report's path."""

    partition: str
    rows: int
    content_digest: str
    suite_digests: dict[str, str]
    report: str

    def to_dict(self) -> dict[str, Any]:
        return {
            "partition": self.partition,
            "rows": self.rows,
            "content_digest": self.content_digest,
            "suite_digests": dict(self.suite_digests),
            "report": self.report,
        }

    @classmethod
    def from_dict(cls, d: Any) -> Validated:
        name = cls.__name__
        return cls(
            partition=_field(name, d, "partition", str),
            rows=_field(name, d, "rows", int),
            content_digest=_field(name, d, "content_digest", str),
            suite_digests=_mapping(name, d, "suite_digests", str),
            report=_field(name, d, "report", str),
        )


@dataclass(frozen=True)
class Published:
    """What publish emits as the ``validated`` Asset event's extra (read by the score DAG and outside services)."""

    model: str
    partition: str
    interval_start: str
    interval_end: str
    rows: int
    content_digest: str
    suite_digests: dict[str, str]
    path: str

    def to_dict(self) -> dict[str, Any]:
        return {
            "model": self.model,
            "partition": self.partition,
            "interval_start": self.interval_start,
            "interval_end": self.interval_end,
            "rows": self.rows,
            "content_digest": self.content_digest,
            "suite_digests": dict(self.suite_digests),
            "path": self.path,
        }

    @classmethod
    def from_dict(cls, d: Any) -> Published:
        name = cls.__name__
        return cls(
            model=_field(name, d, "model", str),
            partition=_field(name, d, "partition", str),
            interval_start=_iso(name, d, "interval_start"),
            interval_end=_iso(name, d, "interval_end"),
            rows=_field(name, d, "rows", int),
            content_digest=_field(name, d, "content_digest", str),
            suite_digests=_mapping(name, d, "suite_digests", str),
            path=_field(name, d, "path", str),
        )


@dataclass(frozen=True)
class ScoredPartition:
    """What scoring returns per partition: rows written, the version that scored them, the lake digest."""

    partition: str
    rows: int
    version: str
    digest: str

    def to_dict(self) -> dict[str, Any]:
        return {"partition": self.partition, "rows": self.rows, "version": self.version, "digest": self.digest}

    @classmethod
    def from_dict(cls, d: Any) -> ScoredPartition:
        name = cls.__name__
        return cls(
            partition=_field(name, d, "partition", str),
            rows=_field(name, d, "rows", int),
            version=_field(name, d, "version", str),
            digest=_field(name, d, "digest", str),
        )


@dataclass(frozen=True)
class MonitorRequest:
    """What the monitor's check hands judge: the window's end, and whether a person asked for it (``as_of``)."""

    as_of: datetime
    explicit: bool

    def to_dict(self) -> dict[str, Any]:
        return {"as_of": self.as_of.isoformat(), "explicit": self.explicit}

    @classmethod
    def from_dict(cls, d: Any) -> MonitorRequest:
        name = cls.__name__
        return cls(as_of=_when(name, d, "as_of"), explicit=_field(name, d, "explicit", bool))


@dataclass(frozen=True)
class MonitorSummary:
    """What judge hands request: one window's drift, performance and retraining decision, with its reports."""

    model: str
    champion_version: str
    window_start: datetime
    window_end: datetime
    drifted: bool
    drift_share: float
    drifted_columns: tuple[str, ...]
    scores: dict[str, float]
    prediction_score: float
    prediction_drifted: bool
    performance: dict[str, Any] | None
    retrain: bool
    reason: str
    report: str
    report_json: str
    notes: tuple[str, ...] = ()
    mlflow_run_id: str | None = None
    seconds: float | None = None

    def to_dict(self) -> dict[str, Any]:
        """The judge task's XCom (and, without the MLflow run and seconds, the window's ``verdict.json``)."""
        return {
            "model": self.model,
            "champion_version": self.champion_version,
            "window_start": self.window_start.isoformat(),
            "window_end": self.window_end.isoformat(),
            "drifted": self.drifted,
            "drift_share": json_number(self.drift_share),
            "drifted_columns": list(self.drifted_columns),
            "scores": {k: json_number(v) for k, v in self.scores.items()},
            "prediction_score": json_number(self.prediction_score),
            "prediction_drifted": self.prediction_drifted,
            "performance": None if self.performance is None else dict(self.performance),
            "decision": {"request": self.retrain, "reason": self.reason},
            "report": self.report,
            "report_json": self.report_json,
            "notes": list(self.notes),
            "mlflow_run_id": self.mlflow_run_id,
            "seconds": self.seconds,
        }

    @classmethod
    def from_dict(cls, d: Any) -> MonitorSummary:
        name = cls.__name__
        decision = _field(name, d, "decision", dict)
        return cls(
            model=_field(name, d, "model", str),
            champion_version=_field(name, d, "champion_version", str),
            window_start=_when(name, d, "window_start"),
            window_end=_when(name, d, "window_end"),
            drifted=_field(name, d, "drifted", bool),
            drift_share=_field(name, d, "drift_share", float),
            drifted_columns=_strings(name, d, "drifted_columns"),
            scores=_mapping(name, d, "scores", float),
            prediction_score=_field(name, d, "prediction_score", float),
            prediction_drifted=_field(name, d, "prediction_drifted", bool),
            performance=_field(name, d, "performance", dict, optional=True),
            retrain=_field(f"{name}.decision", decision, "request", bool),
            reason=_field(f"{name}.decision", decision, "reason", str),
            report=_field(name, d, "report", str),
            report_json=_field(name, d, "report_json", str),
            notes=_strings(name, d, "notes") if "notes" in d else (),
            mlflow_run_id=_field(name, d, "mlflow_run_id", str, optional=True),
            seconds=_field(name, d, "seconds", float, optional=True),
        )

"""What one task hands the next: frozen dataclasses with ``to_dict``/``from_dict``.

XCom carries JSON, so each contract says exactly which fields travel and of which type; a task that reads a
missing or mistyped field fails naming it (:class:`ContractError`) instead of a ``KeyError`` deep in a stage.
Pure and light: safe at DAG parse time.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
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


def _label(value: Any) -> Any:
    """A class label as JSON keeps it: numpy scalars become plain Python values; other types become text."""
    item = getattr(value, "item", None)
    plain = item() if callable(item) else value
    return plain if isinstance(plain, str | int | float | bool) else str(plain)


@dataclass(frozen=True)
class Evaluation:
    """One model's scores on the holdout (both models are scored on the same rows).

    ``task`` is ``regression``, ``binary`` or ``multiclass`` (from the model's classes). A regression carries the
    range of its predictions (``min_prediction``, ``max_prediction``); a classifier its ``classes`` (binary: the
    positive class last), the share of holdout rows predicted as each class, the range of its probabilities and,
    when they are not valid probabilities, why (``proba_problem``). ``nan_predictions`` counts rows without a
    finite prediction (a classifier: a probability row with NaN). ``notes`` say why a metric is NaN.
    """

    metrics: dict[str, float]
    slices: dict[str, dict[str, float]]
    predictions: int
    nan_predictions: int
    min_prediction: float = math.nan
    max_prediction: float = math.nan
    signature: dict[str, str] | None = None
    version: str | None = None
    task: str = "regression"
    classes: list[Any] = field(default_factory=list)
    predicted_shares: dict[str, float] = field(default_factory=dict)
    proba_min: float = math.nan
    proba_max: float = math.nan
    proba_problem: str | None = None
    notes: dict[str, str] = field(default_factory=dict)

    @property
    def is_classifier(self) -> bool:
        return self.task != "regression"

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe: NaN and infinities become None, numpy numbers become plain ones.

        The regression fields keep their names (the view and the ledger's evidence read them); a classifier's
        fields are added only for classifiers.
        """
        data: dict[str, Any] = {
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
            "task": self.task,
            "notes": {str(k): str(v) for k, v in self.notes.items()},
        }
        if self.is_classifier:
            data.update(
                classes=[_label(c) for c in self.classes],
                predicted_shares={str(k): json_number(v) for k, v in self.predicted_shares.items()},
                proba_min=json_number(self.proba_min),
                proba_max=json_number(self.proba_max),
                proba_problem=self.proba_problem,
            )
        return data

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Evaluation:
        """The inverse of :meth:`to_dict` (None becomes NaN where a number is expected; an evaluation stored
        before classifiers existed reads as a regression)."""
        signature = d.get("signature")
        version = d.get("version")
        problem = d.get("proba_problem")
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
            task=str(d.get("task") or "regression"),
            classes=[_label(c) for c in d.get("classes") or []],
            predicted_shares={str(k): number_in(v) for k, v in (d.get("predicted_shares") or {}).items()},
            proba_min=number_in(d.get("proba_min")),
            proba_max=number_in(d.get("proba_max")),
            proba_problem=None if problem is None else str(problem),
            notes={str(k): str(v) for k, v in (d.get("notes") or {}).items()},
        )

    def metric(self, name: str) -> float:
        """One overall metric as a float; NaN when missing or not a number."""
        return as_float(self.metrics.get(name))


# --- train and promote ---------------------------------------------------------------------------------------
# check -> train: TrainRequest; train -> gate: TrainedVersion; check -> gate (promote DAG): PromoteRequest;
# gate -> approve/promote/record (XCom key "gate"): GateResult; promote/record -> XCom: PromotionOutcome.


class ContractError(ExpectedFailure, TypeError, ValueError):
    """A task was handed a dict that is not the contract it expects: the message names contract, field and value."""


_ABSENT = object()
_FIX = (
    "The task that wrote it and the task that read it disagree on the contract (a run started before an "
    "upgrade of airloop, or a hand-made XCom): clear the upstream task so that it writes the value again."
)


def _kind_name(kind: type | tuple[type, ...]) -> str:
    kinds = kind if isinstance(kind, tuple) else (kind,)
    names = {bool: "true or false", int: "a whole number", float: "a number", str: "a string", dict: "an object"}
    names |= {list: "a list", tuple: "a list", type(None): "null", datetime: "a timestamp"}
    return " or ".join(dict.fromkeys(names.get(k, k.__name__) for k in kinds))


def _is(value: Any, kind: type | tuple[type, ...]) -> bool:
    """``isinstance`` where a bool is no number and an int is a float."""
    kinds = kind if isinstance(kind, tuple) else (kind,)
    if isinstance(value, bool):
        return bool in kinds
    if isinstance(value, int) and float in kinds:
        return True
    return isinstance(value, kinds)


class _Fields:
    """Reads one contract's fields from a dict; a missing or mistyped field is a :class:`ContractError` whose message
    names the contract, the field, what it got and what to do."""

    def __init__(self, contract: str, data: Any) -> None:
        if not isinstance(data, Mapping):
            raise ContractError(
                f"{contract}: expected an object of fields, got {type(data).__name__} {data!r:.200}. {_FIX}"
            )
        self.contract, self.data = contract, data

    def fail(self, name: str, expected: str, value: Any) -> ContractError:
        return ContractError(
            f"{self.contract}: field `{name}` must be {expected}, got {type(value).__name__} {value!r:.200}. {_FIX}"
        )

    def get(
        self,
        name: str,
        kind: type | tuple[type, ...],
        *,
        nullable: bool = False,
        default: Any = _ABSENT,
        items: type | tuple[type, ...] | None = None,
    ) -> Any:
        """The field's value; ``items`` checks a list's elements or a dict's values (and its keys are strings)."""
        if name not in self.data:
            if default is not _ABSENT:
                return default
            raise ContractError(
                f"{self.contract}: field `{name}` is missing (got the fields {sorted(map(str, self.data))}). {_FIX}"
            )
        value = self.data[name]
        if value is None and (nullable or default is None):
            return None
        if not _is(value, kind):
            raise self.fail(name, _kind_name(kind) + (" or null" if nullable else ""), value)
        if items is not None:
            pairs = value.items() if isinstance(value, Mapping) else enumerate(value)
            for key, item in pairs:
                if (isinstance(value, Mapping) and not isinstance(key, str)) or not _is(item, items):
                    raise self.fail(f"{name}[{key!r}]", _kind_name(items), item)
        return value

    def text(self, name: str, *, nullable: bool = False, default: Any = _ABSENT) -> Any:
        return self.get(name, str, nullable=nullable, default=default)

    def number(self, name: str, *, default: Any = _ABSENT) -> Any:
        """A number as a float; null is NaN (what ``json_number`` writes for it). With ``default=None`` the field is
        optional: missing or null gives None."""
        value = self.get(name, float, nullable=True, default=default)
        if value is None:
            return None if default is None else math.nan
        return float(value)

    def numbers(self, name: str) -> dict[str, float]:
        """An object of numbers (null values are NaN), as floats."""
        value = self.get(name, dict, items=(float, type(None)))
        return {str(k): math.nan if v is None else float(v) for k, v in value.items()}

    def strings(self, name: str, *, default: Any = _ABSENT) -> tuple[str, ...]:
        """A list of strings, as a tuple (JSON has none)."""
        return tuple(self.get(name, (list, tuple), items=str, default=default))

    def moment(self, name: str, *, nullable: bool = False, default: Any = _ABSENT) -> datetime | None:
        """A datetime, or its ISO 8601 text."""
        value = self.get(name, (str, datetime), nullable=nullable, default=default)
        if value is None or isinstance(value, datetime):
            return value
        try:
            return datetime.fromisoformat(value)
        except ValueError:
            raise self.fail(name, "an ISO 8601 timestamp", value) from None

    def when(self, name: str) -> datetime:
        """A required time (a datetime or its ISO 8601 text)."""
        value = self.moment(name)
        assert value is not None  # required and not nullable: get() raised otherwise
        return value

    def iso_text(self, name: str) -> str:
        """An ISO 8601 timestamp, checked and kept as the text it is."""
        text = self.text(name)
        self.moment(name)
        return str(text)

    def choice(self, name: str, allowed: tuple[str, ...]) -> str:
        value = self.text(name)
        if value not in allowed:
            raise self.fail(name, " or ".join(allowed), value)
        return value

    def section(self, name: str) -> _Fields:
        """A nested object, read with its own fields (errors name it ``Contract.section``)."""
        return _Fields(f"{self.contract}.{name}", self.get(name, dict))


def _iso(value: datetime | None) -> str | None:
    return None if value is None else value.isoformat()


ACTIONS = ("promote", "rollback")
#: What a model predicts (the metric registry's tasks; classification is binary or multiclass).
TASKS = ("regression", "binary", "multiclass")


@dataclass(frozen=True)
class TrainRequest:
    """A checked train request (check -> train): why, which window (None: the spec's default) and overrides."""

    reason: str
    window_start: datetime | None = None
    window_end: datetime | None = None
    overrides: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {
            "reason": self.reason,
            "window_start": _iso(self.window_start),
            "window_end": _iso(self.window_end),
            "overrides": dict(self.overrides),
        }

    @classmethod
    def from_dict(cls, d: Any) -> TrainRequest:
        f = _Fields("TrainRequest", d)
        return cls(
            reason=f.text("reason"),
            window_start=f.moment("window_start", nullable=True, default=None),
            window_end=f.moment("window_end", nullable=True, default=None),
            overrides=dict(f.get("overrides", dict, nullable=True, default={}) or {}),
        )


@dataclass(frozen=True)
class TrainedVersion:
    """A trained, registered ``@challenger`` (train -> gate), with what the run logged to MLflow.

    ``window`` holds ISO timestamps ``start``, ``end`` and ``holdout_start``; ``metrics`` the holdout's overall
    metrics as JSON numbers (None for NaN).
    """

    model: str
    version: str
    mlflow_run_id: str
    window: dict[str, str]
    reason: str
    run_url: str | None = None
    version_url: str | None = None
    partitions: int = 0
    gaps: list[str] = field(default_factory=list)
    train_rows: int = 0
    holdout_rows: int = 0
    metrics: dict[str, float | None] = field(default_factory=dict)
    params: dict[str, Any] = field(default_factory=dict)
    timings: dict[str, float] = field(default_factory=dict)
    task: str = "regression"
    classes: list[Any] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {
            "model": self.model,
            "version": self.version,
            "mlflow_run_id": self.mlflow_run_id,
            "run_url": self.run_url,
            "version_url": self.version_url,
            "window": dict(self.window),
            "partitions": int(self.partitions),
            "gaps": list(self.gaps),
            "train_rows": int(self.train_rows),
            "holdout_rows": int(self.holdout_rows),
            "metrics": {str(k): json_number(v) for k, v in self.metrics.items()},
            "params": dict(self.params),
            "reason": self.reason,
            "timings": {str(k): float(v) for k, v in self.timings.items()},
            "task": self.task,
            "classes": [_label(c) for c in self.classes],
        }

    @classmethod
    def from_dict(cls, d: Any) -> TrainedVersion:
        f = _Fields("TrainedVersion", d)
        window = f.get("window", dict, items=str)
        missing = [k for k in ("start", "end", "holdout_start") if k not in window]
        if missing:
            raise f.fail("window", "an object with start, end and holdout_start", window)
        return cls(
            model=f.text("model"),
            version=f.text("version"),
            mlflow_run_id=f.text("mlflow_run_id"),
            window=dict(window),
            reason=f.text("reason"),
            run_url=f.text("run_url", nullable=True, default=None),
            version_url=f.text("version_url", nullable=True, default=None),
            partitions=f.get("partitions", int, default=0),
            gaps=list(f.get("gaps", list, items=str, default=[])),
            train_rows=f.get("train_rows", int, default=0),
            holdout_rows=f.get("holdout_rows", int, default=0),
            metrics=dict(f.get("metrics", dict, items=(float, type(None)), default={})),
            params=dict(f.get("params", dict, default={})),
            timings=dict(f.get("timings", dict, items=float, default={})),
            task=f.choice("task", TASKS) if "task" in d else "regression",
            classes=list(f.get("classes", list, items=(str, int, float, bool), default=[])),
        )


@dataclass(frozen=True)
class PromoteRequest:
    """A checked promote request (check -> gate): promote a named version, or roll back to the previous champion."""

    action: str
    candidate: str
    reason: str
    override: bool = False

    def to_dict(self) -> dict[str, Any]:
        return {"action": self.action, "candidate": self.candidate, "reason": self.reason, "override": self.override}

    @classmethod
    def from_dict(cls, d: Any) -> PromoteRequest:
        f = _Fields("PromoteRequest", d)
        return cls(
            action=f.choice("action", ACTIONS),
            candidate=f.text("candidate"),
            reason=f.text("reason"),
            override=f.get("override", bool, default=False),
        )


@dataclass(frozen=True)
class GateResult:
    """The gate's verdict on one candidate (XCom key ``gate``), read by approve, promote and record.

    ``verdict`` is :meth:`airloop.stages.promote.rules.Verdict.to_dict` (the evidence the ledger keeps);
    ``expected_champion`` is the ``@champion`` the gate compared against (None: there was none). ``live`` is the
    live comparison on labelled shadow intervals (``gate.shadow``; None without it): its ``status`` is
    ``waiting`` when too few intervals are labelled yet, and the challenger then keeps waiting.
    """

    model: str
    action: str
    candidate: str
    expected_champion: str | None
    reason: str
    promote: bool
    summary: str
    verdict: dict[str, Any]
    holdout: str
    override: bool = False
    mlflow_run_id: str | None = None
    markdown: str = ""
    notes: list[str] = field(default_factory=list)
    live: dict[str, Any] | None = None

    @property
    def shadowing(self) -> bool:
        """The challenger passed the offline gate and waits for labelled shadow intervals (``gate.shadow``)."""
        return self.live is not None and self.live.get("status") == "waiting"

    @property
    def mode(self) -> str | None:
        """The gate's mode when it judged (``enabled``, ``dry_run``)."""
        mode = self.verdict.get("mode")
        return None if mode is None else str(mode)

    def to_dict(self) -> dict[str, Any]:
        return {
            "model": self.model,
            "action": self.action,
            "candidate": self.candidate,
            "expected_champion": self.expected_champion,
            "mlflow_run_id": self.mlflow_run_id,
            "reason": self.reason,
            "override": self.override,
            "promote": self.promote,
            "summary": self.summary,
            "markdown": self.markdown,
            "verdict": dict(self.verdict),
            "holdout": self.holdout,
            "notes": list(self.notes),
            "live": None if self.live is None else dict(self.live),
        }

    @classmethod
    def from_dict(cls, d: Any) -> GateResult:
        f = _Fields("GateResult", d)
        return cls(
            model=f.text("model"),
            action=f.choice("action", ACTIONS),
            candidate=f.text("candidate"),
            expected_champion=f.text("expected_champion", nullable=True),
            reason=f.text("reason"),
            promote=f.get("promote", bool),
            summary=f.text("summary"),
            verdict=dict(f.get("verdict", dict)),
            holdout=f.text("holdout"),
            override=f.get("override", bool, default=False),
            mlflow_run_id=f.text("mlflow_run_id", nullable=True, default=None),
            markdown=f.text("markdown", default=""),
            notes=list(f.get("notes", list, items=str, default=[])),
            live=f.get("live", dict, nullable=True, default=None),
        )


@dataclass(frozen=True)
class PromotionOutcome:
    """One promotion-ledger row as promote and record hand it on: what was decided, by whom, and what moved."""

    model: str
    seq: int
    action: str
    outcome: str
    moved: bool
    candidate_version: str | None
    from_version: str | None
    champion_after: str | None
    decided_by: str
    reason: str
    evidence: dict[str, Any] = field(default_factory=dict)
    dag_id: str | None = None
    dag_run_id: str | None = None
    mlflow_run_id: str | None = None
    recorded_at: datetime | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "model": self.model,
            "seq": self.seq,
            "action": self.action,
            "outcome": self.outcome,
            "moved": self.moved,
            "candidate_version": self.candidate_version,
            "from_version": self.from_version,
            "champion_after": self.champion_after,
            "decided_by": self.decided_by,
            "reason": self.reason,
            "evidence": dict(self.evidence),
            "dag_id": self.dag_id,
            "dag_run_id": self.dag_run_id,
            "mlflow_run_id": self.mlflow_run_id,
            "recorded_at": _iso(self.recorded_at),
        }

    @classmethod
    def from_dict(cls, d: Any) -> PromotionOutcome:
        """From :meth:`to_dict`, or from a ledger row as the warehouse returns it (``recorded_at`` a datetime)."""
        f = _Fields("PromotionOutcome", d)
        return cls(
            model=f.text("model"),
            seq=f.get("seq", int),
            action=f.choice("action", ACTIONS),
            outcome=f.text("outcome"),
            moved=f.get("moved", bool),
            candidate_version=f.text("candidate_version", nullable=True),
            from_version=f.text("from_version", nullable=True),
            champion_after=f.text("champion_after", nullable=True),
            decided_by=f.text("decided_by"),
            reason=f.text("reason"),
            evidence=dict(f.get("evidence", dict, nullable=True, default={}) or {}),
            dag_id=f.text("dag_id", nullable=True, default=None),
            dag_run_id=f.text("dag_run_id", nullable=True, default=None),
            mlflow_run_id=f.text("mlflow_run_id", nullable=True, default=None),
            recorded_at=f.moment("recorded_at", nullable=True, default=None),
        )


# --- ingest, score and monitor ---


@dataclass(frozen=True)
class PinnedChampion:
    """The ``@champion`` version resolved once for a whole run, and its MLflow run."""

    version: str
    run_id: str

    def to_dict(self) -> dict[str, Any]:
        return {"version": self.version, "run_id": self.run_id}

    @classmethod
    def from_dict(cls, d: Any) -> PinnedChampion:
        f = _Fields(cls.__name__, d)
        return cls(version=f.text("version"), run_id=f.text("run_id"))


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
        f = _Fields(cls.__name__, d)
        return cls(
            partition=f.text("partition"),
            rows=f.get("rows", int),
            content_digest=f.text("content_digest"),
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
        f = _Fields(cls.__name__, d)
        return cls(
            partition=f.text("partition"),
            rows=f.get("rows", int),
            content_digest=f.text("content_digest"),
            suite_digests=dict(f.get("suite_digests", dict, items=str)),
            report=f.text("report"),
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
        f = _Fields(cls.__name__, d)
        return cls(
            model=f.text("model"),
            partition=f.text("partition"),
            interval_start=f.iso_text("interval_start"),
            interval_end=f.iso_text("interval_end"),
            rows=f.get("rows", int),
            content_digest=f.text("content_digest"),
            suite_digests=dict(f.get("suite_digests", dict, items=str)),
            path=f.text("path"),
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
        f = _Fields(cls.__name__, d)
        return cls(
            partition=f.text("partition"),
            rows=f.get("rows", int),
            version=f.text("version"),
            digest=f.text("digest"),
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
        f = _Fields(cls.__name__, d)
        return cls(as_of=f.when("as_of"), explicit=f.get("explicit", bool))


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
    #: Model version -> its realized performance from ``outcomes`` in the window (every version that served).
    realized: dict[str, Any] | None = None
    #: Model version -> its estimated performance (CBPE) on the window's unlabelled rows, or why not estimated.
    estimated: dict[str, Any] | None = None

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
            "realized": None if self.realized is None else dict(self.realized),
            "estimated": None if self.estimated is None else dict(self.estimated),
        }

    @classmethod
    def from_dict(cls, d: Any) -> MonitorSummary:
        f = _Fields(cls.__name__, d)
        decision = f.section("decision")
        return cls(
            model=f.text("model"),
            champion_version=f.text("champion_version"),
            window_start=f.when("window_start"),
            window_end=f.when("window_end"),
            drifted=f.get("drifted", bool),
            drift_share=f.number("drift_share"),
            drifted_columns=f.strings("drifted_columns"),
            scores=f.numbers("scores"),
            prediction_score=f.number("prediction_score"),
            prediction_drifted=f.get("prediction_drifted", bool),
            performance=f.get("performance", dict, nullable=True, default=None),
            retrain=decision.get("request", bool),
            reason=decision.text("reason"),
            report=f.text("report"),
            report_json=f.text("report_json"),
            notes=f.strings("notes", default=()),
            mlflow_run_id=f.text("mlflow_run_id", nullable=True, default=None),
            seconds=f.number("seconds", default=None),
            realized=f.get("realized", dict, nullable=True, default=None),
            estimated=f.get("estimated", dict, nullable=True, default=None),
        )

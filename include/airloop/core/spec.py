"""Model specs: one YAML file per model in ``include/models/``, validated with pydantic.

A spec is read at DAG parse time, so this module stays light (pydantic and PyYAML are already loaded by
``airflow.sdk``). A wrong spec raises :class:`SpecError`, whose message names the file, the field, what was
expected and how to fix it; in a DAG file that becomes the DAG import error an engineer sees in the UI.

Parse-time cost (issue 16): no ``from __future__ import annotations`` here, so pydantic gets real annotation
objects instead of strings it would compile and evaluate one by one (that halved this module's import); the
models defer building their validators to the first validation (``defer_build``), so importing the module builds
nothing (a spec is still validated completely when it is read). A section left out defaults to ``{}`` validated
by the spec's own validator (``validate_default``), as if written empty: a factory (``default_factory=Labels``)
would call the section's model, which builds a second validator of its own on first use (about 4 ms per parse).
"""

import re
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    PlainSerializer,
    ValidationError,
    field_validator,
    model_validator,
)

from airloop.core.digests import json_digest, short
from airloop.core.errors import ExpectedFailure

#: The column the monitor gives the champion's predictions (beside the features): the predicted value, or the
#: predicted class of a classifier.
PREDICTION_COLUMN = "_prediction"
#: The prefix of the monitor's class-probability columns (``_proba_<class>``, one per class it watches).
PROBA_PREFIX = "_proba_"


def reserved_column(name: str) -> bool:
    """True if ``name`` is one of the monitor's own columns (``_prediction``, ``_proba_...``), which no data
    column (feature, target, time column or key) may take."""
    return name == PREDICTION_COLUMN or name.startswith(PROBA_PREFIX)


_NAME = re.compile(r"^[a-z][a-z0-9_]{0,39}$")
_EVERY = re.compile(r"^(\d+)\s*([dhm])$")
_UNITS = {"d": "days", "h": "hours", "m": "minutes"}
_DURATION = re.compile(r"^(\d+)\s*([smhd])$")
_DURATION_UNITS = {"s": "seconds", **_UNITS}
#: The shortest and the longest time limit a spec may set: below a minute no task even starts; a limit of more
#: than a month is no limit.
MIN_DURATION, MAX_DURATION = timedelta(minutes=1), timedelta(days=31)
# Every DAG file parses the specs on every parse: libyaml's safe loader is about 10x faster than pure Python.
_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


class SpecError(ExpectedFailure, ValueError):
    """A model spec that cannot be used; the message says where, what and how to fix it."""


class _Strict(BaseModel):
    # protected_namespaces=(): no field here starts with `model_`, and pydantic's check of each field name against
    # its namespaces is part of every parse (issue 16).
    model_config = ConfigDict(extra="forbid", frozen=True, defer_build=True, protected_namespaces=())


def parse_duration(value: Any) -> timedelta:
    """``"90s"``, ``"30m"``, ``"2h"`` or ``"1d"`` as a :class:`timedelta` (between a minute and 31 days).

    A ``timedelta`` is taken as it is (a spec built in code); anything else is refused saying what is expected.
    """
    if isinstance(value, timedelta):
        duration = value
    else:
        match = _DURATION.match(value.strip()) if isinstance(value, str) else None
        if match is None:
            raise ValueError(
                f"a duration is a whole number and a unit s, m, h or d, written like `30m`, `2h` or `1d`; got {value!r}"
            )
        duration = timedelta(**{_DURATION_UNITS[match.group(2)]: int(match.group(1))})
    if not MIN_DURATION <= duration <= MAX_DURATION:
        raise ValueError(f"a duration must be between 1m and 31d, not {format_duration(duration)}")
    return duration


def format_duration(value: timedelta) -> str:
    """The shortest spec spelling of a duration (``2h``, ``90m``, ``45s``)."""
    seconds = int(value.total_seconds())
    if seconds == 0:
        return "0s"
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds % size == 0:
            return f"{seconds // size}{unit}"
    return f"{seconds}s"


#: A time limit in a spec: written ``30m``/``2h``/``1d`` in YAML, a ``timedelta`` in code, dumped as written.
Duration = Annotated[timedelta, BeforeValidator(parse_duration), PlainSerializer(format_duration, return_type=str)]

#: The DAG stages, each with its own time limits.
STAGES = ("ingest", "train", "promote", "score", "monitor", "labels")


class StageTimeouts(_Strict):
    """One stage's time limits; a limit left out takes the stage's default (:data:`DEFAULT_TIMEOUTS`)."""

    task: Duration | None = Field(
        default=None, description="Each try of each task (its `execution_timeout`): a hung call fails the try."
    )
    run: Duration | None = Field(
        default=None, description="A whole DAG run (its `dagrun_timeout`): the run fails and frees its slot."
    )
    deadline: Duration | None = Field(
        default=None,
        description="Alert (through the failure alert channel) when a run has not finished this long after it "
        "was queued; shorter than `run`, so on-call hears before the run is failed.",
    )


@dataclass(frozen=True)
class ResolvedTimeouts:
    """A stage's effective limits: the spec's, or the defaults (plus a required approval's wait).

    A plain dataclass, not a model: it is computed from limits the spec already validated, six times per spec
    while the spec is validated and again by every DAG file, and a model would build its own validator at the
    first one (parse time, issue 16).
    """

    task: timedelta
    run: timedelta
    deadline: timedelta


#: Default limits per stage, ``(task, run, deadline)``: each several times what the demo takes on two cores,
#: so only a hung or runaway run meets them. Train and promote add ``gate.approval.timeout_hours`` to ``run``
#: and ``deadline`` when approval is required (a person may take that long); labels adds ``labels.after`` (each
#: run first waits until its interval's labels are due).
DEFAULT_TIMEOUTS: dict[str, tuple[timedelta, timedelta, timedelta]] = {
    "ingest": (timedelta(minutes=30), timedelta(hours=2), timedelta(hours=1)),
    "train": (timedelta(hours=2), timedelta(hours=6), timedelta(hours=4)),
    "promote": (timedelta(minutes=15), timedelta(hours=1), timedelta(minutes=30)),
    "score": (timedelta(hours=1), timedelta(hours=3), timedelta(hours=2)),
    "monitor": (timedelta(minutes=30), timedelta(hours=2), timedelta(hours=1)),
    "labels": (timedelta(minutes=30), timedelta(hours=2), timedelta(hours=1)),
}


class Timeouts(_Strict):
    """Time limits per DAG stage: every task's, every run's, and when a late run alerts."""

    ingest: StageTimeouts = Field(default={}, validate_default=True)
    train: StageTimeouts = Field(default={}, validate_default=True)
    promote: StageTimeouts = Field(default={}, validate_default=True)
    score: StageTimeouts = Field(default={}, validate_default=True)
    monitor: StageTimeouts = Field(default={}, validate_default=True)
    labels: StageTimeouts = Field(default={}, validate_default=True)


class OverrideRange(_Strict):
    """What a run may set one overridable estimator parameter to: a number in ``[min, max]``, or one of ``choices``."""

    min: float | None = None
    max: float | None = None
    choices: list[str | int | float | bool | None] | None = None

    @model_validator(mode="after")
    def _one_kind(self) -> "OverrideRange":
        bounded = self.min is not None and self.max is not None
        if self.choices is not None:
            if self.min is not None or self.max is not None:
                raise ValueError("give `min` and `max` (a number), or `choices` (a list of values), not both")
            if not self.choices:
                raise ValueError("`choices` needs at least one value")
        elif not bounded:
            raise ValueError(
                "give both `min` and `max` (a number), or `choices` (a list of values), e.g. "
                "`{min: 10, max: 500}` or `{choices: [squared_error, poisson]}`"
            )
        elif self.min > self.max:  # type: ignore[operator]
            raise ValueError(f"`min` ({self.min:g}) is above `max` ({self.max:g})")
        return self

    def describe(self) -> str:
        """The range in words, e.g. ``[10, 500]`` or ``one of ['a', 'b']``."""
        if self.choices is not None:
            return f"one of {self.choices}"
        return f"[{self.min:g}, {self.max:g}]"

    def problem(self, value: Any) -> str | None:
        """Why ``value`` is outside this range, or None when it is inside."""
        if self.choices is not None:
            chosen = any(value == c and type(value) is type(c) for c in self.choices)  # 1 is not True
            return None if chosen else "is not one of the choices"
        if isinstance(value, bool) or not isinstance(value, int | float):
            return f"is not a number (got {type(value).__name__})"
        assert self.min is not None and self.max is not None  # checked by the validator
        return None if self.min <= value <= self.max else "is out of range"


def _overridable_mapping(value: Any) -> Any:
    """A plain list of names (the old form) is refused saying how to give each one its range."""
    if isinstance(value, list):
        example = ", ".join(f"{name}: {{min: ..., max: ...}}" for name in value[:2]) or "max_iter: {min: 10, max: 500}"
        raise ValueError(
            "`overridable` maps each estimator parameter a run may override to its range (a list of names is "
            f"not enough: a run could set any value); write e.g. `{{{example}}}`, or `{{choices: [...]}}` for "
            "non-numbers"
        )
    return value


class Source(_Strict):
    """Where an interval's rows come from: a table (or a query) with a time column, behind an Airflow connection."""

    connection: str = "airloop_source"
    table: str | None = None
    query: str | None = Field(
        default=None,
        description="SQL binding :start and :end, e.g. `SELECT * FROM t WHERE ts >= :start AND ts < :end`.",
    )
    time_column: str
    keys: list[str] | None = Field(
        default=None,
        description="Columns that identify a row (unique in an interval); default: the time column alone. "
        "Many rows per timestamp need a key such as a record id.",
    )

    @model_validator(mode="after")
    def _table_or_query(self) -> "Source":
        if (self.table is None) == (self.query is None):
            raise ValueError("give exactly one of `table` or `query`")
        if self.query is not None and not (":start" in self.query and ":end" in self.query):
            raise ValueError("`query` must use the bound parameters :start and :end (never format dates into SQL)")
        return self


class Schedule(_Strict):
    """The ingestion timetable. Each run covers one real data interval ``[start, end)``."""

    every: str | None = Field(default=None, description="A fixed interval such as `1d`, `7d` or `6h`.")
    cron: str | None = Field(
        default=None, description="A cron expression; the interval runs from one tick to the next."
    )
    start: date
    end: date | None = Field(default=None, description="No interval starts after this date (e.g. the end of a replay).")
    catchup: bool = True
    max_active_runs: Annotated[int, Field(ge=1, le=64)] = 4

    @field_validator("every")
    @classmethod
    def _every_format(cls, value: str | None) -> str | None:
        if value is not None and not _EVERY.match(value.strip()):
            raise ValueError("`every` must be a number and a unit d, h or m, e.g. `1d`, `7d`, `6h`")
        return value

    @model_validator(mode="after")
    def _one_kind(self) -> "Schedule":
        if self.every is not None and self.cron is not None:
            raise ValueError("give `every` or `cron`, not both")
        if self.end is not None and self.end < self.start:
            raise ValueError(f"`end` ({self.end}) is before `start` ({self.start})")
        return self

    @property
    def interval(self) -> timedelta | None:
        """The fixed interval length, or None for a cron schedule. With neither given, one day."""
        if self.cron is not None:
            return None
        match = _EVERY.match((self.every or "1d").strip())
        assert match is not None  # checked by the validator
        return timedelta(**{_UNITS[match.group(2)]: int(match.group(1))})

    @property
    def start_datetime(self) -> datetime:
        return datetime(self.start.year, self.start.month, self.start.day, tzinfo=UTC)

    @property
    def end_datetime(self) -> datetime | None:
        if self.end is None:
            return None
        return datetime(self.end.year, self.end.month, self.end.day, tzinfo=UTC)


class Feature(_Strict):
    name: str
    kind: Literal["numeric", "categorical"]


class Target(_Strict):
    """What the model predicts, and how: a number (regression) or a class (classification, binary or multiclass)."""

    name: str
    task: Literal["regression", "classification"] = "regression"
    positive_class: str | int | bool | None = Field(
        default=None,
        description="Binary classification: the class whose probability is scored and thresholded (default: the "
        "second of the sorted classes, e.g. 1 of 0/1, True of False).",
    )
    decision_threshold: Annotated[float, Field(gt=0, lt=1)] = Field(
        default=0.5,
        description="Binary classification: predict the positive class when its probability is at least this.",
    )
    class_weight: Literal["balanced"] | None = Field(
        default=None, description="Classification: `balanced` weighs each class inversely to its frequency in training."
    )

    @model_validator(mode="after")
    def _fits_task(self) -> "Target":
        if self.task == "regression":
            given = [f for f in ("positive_class", "class_weight") if getattr(self, f) is not None] + (
                ["decision_threshold"] if self.decision_threshold != 0.5 else []
            )
            if given:
                raise ValueError(f"{given} apply to classification only; this target's task is regression")
        return self

    @property
    def metric_tasks(self) -> tuple[str, ...]:
        """The metric registry's tasks this target may be: regression, or binary and multiclass."""
        return ("regression",) if self.task == "regression" else ("binary", "multiclass")


class Validation(_Strict):
    """Which Great Expectations suites apply: the files in ``expectations/<suite_dir>/`` (default: the model name)."""

    suite_dir: str | None = None
    suites: list[str] | None = Field(default=None, description="Suite file names to apply; default every *.json.")


class Estimator(_Strict):
    """The scikit-learn estimator at the end of the pipeline, by its import path, with its parameters."""

    class_path: str | None = Field(
        default=None,
        alias="class",
        description="Import path of a scikit-learn estimator (only `sklearn.` classes are allowed); default by task: "
        "`sklearn.ensemble.HistGradientBoostingRegressor` or `...HistGradientBoostingClassifier`.",
    )
    params: dict[str, Any] = {}

    model_config = ConfigDict(
        extra="forbid", frozen=True, populate_by_name=True, defer_build=True, protected_namespaces=()
    )

    @field_validator("class_path")
    @classmethod
    def _sklearn_only(cls, value: str | None) -> str | None:
        if value is not None and not re.match(r"^sklearn(\.[A-Za-z_][A-Za-z0-9_]*)+$", value):
            raise ValueError(
                "`class` must be the import path of a scikit-learn estimator, e.g. "
                "`sklearn.ensemble.HistGradientBoostingRegressor`"
            )
        return value


class Search(_Strict):
    """An optional, bounded hyperparameter search over the estimator's parameters (time-series folds)."""

    space: dict[str, list[Any]] = Field(description="Estimator parameter -> candidate values.")
    max_trials: Annotated[int, Field(ge=1, le=50)] = 8
    folds: Annotated[int, Field(ge=2, le=10)] = 3

    @field_validator("space")
    @classmethod
    def _non_empty(cls, value: dict[str, list[Any]]) -> dict[str, list[Any]]:
        empty = sorted(k for k, v in value.items() if not v)
        if not value or empty:
            raise ValueError(f"`space` needs at least one parameter with candidate values (empty: {empty})")
        return value


class Slice(_Strict):
    """A slice of the holdout whose metrics are reported and gated: by value of a column, or by bins of it."""

    name: str
    column: str
    bins: list[float] | None = Field(default=None, description="Bin edges [a, b, c] give slices [a, b) and [b, c).")
    labels: list[str] | None = None

    @model_validator(mode="after")
    def _bins_and_labels(self) -> "Slice":
        if self.labels is not None and (self.bins is None or len(self.labels) != len(self.bins) - 1):
            raise ValueError("`labels` needs `bins` and one label per bin (len(bins) - 1)")
        if self.bins is not None and list(self.bins) != sorted(set(self.bins)):
            raise ValueError("`bins` must be strictly increasing")
        return self


class Training(_Strict):
    """How a model is trained: the window, the holdout, the estimator and what a run may override."""

    cron: str | None = Field(default=None, description="Retrain on this cron (UTC); none: on demand and on drift.")
    window_days: Annotated[int, Field(ge=1)] = 365
    holdout_days: Annotated[int, Field(ge=1)] = 56
    min_rows: Annotated[int, Field(ge=1)] = 1000
    seed: int = 42
    estimator: Estimator = Field(default={}, validate_default=True)
    search: Search | None = None
    overridable: Annotated[dict[str, OverrideRange], BeforeValidator(_overridable_mapping)] = Field(
        default={},
        description="Estimator parameters a run may override (param `overrides` of the train DAG), each with the "
        "range a run may set it to: `{max_iter: {min: 10, max: 500}}`, or `{loss: {choices: [a, b]}}`.",
    )
    slices: list[Slice] = []

    @model_validator(mode="after")
    def _holdout_inside_window(self) -> "Training":
        if self.holdout_days >= self.window_days:
            raise ValueError(
                f"`holdout_days` ({self.holdout_days}) must be less than `window_days` ({self.window_days})"
            )
        for name, allowed in self.overridable.items():
            if name in self.estimator.params and allowed.problem(self.estimator.params[name]) is not None:
                raise ValueError(
                    f"estimator.params.{name} ({self.estimator.params[name]!r}) is outside its overridable range "
                    f"{allowed.describe()}: widen the range or change the parameter"
                )
        return self

    def override_problems(self, overrides: dict[str, Any], spec_file: str) -> list[str]:
        """Why each of a run's ``overrides`` is refused (an undeclared name, or a value outside its range);
        empty when all are allowed. Each names the param, what the spec allows, and ``spec_file``."""
        allowed = ", ".join(f"{k} {r.describe()}" for k, r in self.overridable.items()) or "none"
        problems = []
        for name, value in sorted(overrides.items()):
            declared = self.overridable.get(name)
            if declared is None:
                problems.append(
                    f"`{name}` is not allowed (not declared overridable); training.overridable in {spec_file} "
                    f"allows: {allowed}"
                )
            elif (why := declared.problem(value)) is not None:
                problems.append(
                    f"`{name}` = {value!r} {why}: training.overridable in {spec_file} allows {declared.describe()}"
                )
        return problems


#: The estimator each task gets when the spec names none.
DEFAULT_ESTIMATORS = {
    "regression": "sklearn.ensemble.HistGradientBoostingRegressor",
    "classification": "sklearn.ensemble.HistGradientBoostingClassifier",
}
#: The gate's metric when the spec names none: one that fits every classification (binary and multiclass).
DEFAULT_GATE_METRICS = {"regression": "rmse", "classification": "log_loss"}


class Sanity(_Strict):
    """Predictions a model may give at all. Always: no NaN; for classifiers, probabilities in [0, 1] summing to 1,
    only trained classes, and not one class for every row. Regression may bound the values too."""

    min_prediction: float | None = Field(default=None, description="Regression: no prediction below this.")
    max_prediction: float | None = Field(default=None, description="Regression: no prediction above this.")


class Approval(_Strict):
    """A person's approval before `@champion` moves (the standard provider's HITL approval)."""

    required: bool = False
    timeout_hours: Annotated[float, Field(gt=0)] = 24


class Shadow(_Strict):
    """Live evidence before promotion: the challenger is scored beside the champion on new intervals (never served).

    After the offline gate passes, the challenger stays `@challenger` and each new interval the score DAG scores is
    also scored with it (``shadow_predictions``); once ``intervals`` of those intervals have labels, the gate judges
    it again on them (docs/training-and-promotion.md, "Shadow scoring").
    """

    intervals: Annotated[int, Field(ge=1, le=100)] = Field(
        description="How many shadow-scored intervals with labels the live comparison needs."
    )
    require_better: bool = Field(
        default=True,
        description="The challenger must beat the served predictions on the gate metric (by `min_improvement`, in "
        "the metric's direction) over those intervals; false: the live figures are shown, not judged.",
    )


class Gate(_Strict):
    """The promotion gate: what a challenger must show before it becomes `@champion`."""

    mode: Literal["enabled", "dry_run"] = "enabled"
    metric: str | None = Field(
        default=None,
        description="The metric the challenger must beat the champion on (and the search's objective); any metric "
        "that fits the task (docs/model-spec.md lists them); default: rmse (regression), log_loss (classification).",
    )
    thresholds: dict[str, float] = Field(
        default={},
        description="Absolute bounds per metric, in its direction: a lower-is-better metric at most this "
        "(rmse, log_loss), a higher-is-better one at least this (r2, roc_auc).",
    )
    min_improvement: Annotated[float, Field(ge=0, le=1)] = Field(
        default=0.01, description="Relative improvement of `metric` over the champion, e.g. 0.01 = 1 %."
    )
    slice_tolerance: Annotated[float, Field(ge=0, le=1)] = Field(
        default=0.05, description="How much worse (relative) than the champion any slice may be."
    )
    sanity: Sanity = Field(default={}, validate_default=True)
    approval: Approval = Field(default={}, validate_default=True)
    shadow: Shadow | None = Field(
        default=None,
        description="`{intervals: N, require_better: true}`: shadow-score the challenger on N labelled intervals "
        "and judge it on them before it is promoted; null (default): promote on the offline gate alone.",
    )


class Hysteresis(_Strict):
    """Drift must hold in ``n`` of the last ``m`` windows, the latest among them, before retraining is asked."""

    n: Annotated[int, Field(ge=1)] = 2
    m: Annotated[int, Field(ge=1)] = 3

    @model_validator(mode="after")
    def _n_within_m(self) -> "Hysteresis":
        if self.n > self.m:
            raise ValueError(f"`n` ({self.n}) cannot exceed `m` ({self.m}): drift in n of the last m windows")
        return self


class Monitoring(_Strict):
    """How drift and performance are watched, and when they may ask for retraining."""

    @model_validator(mode="before")
    @classmethod
    def _moved_fields(cls, data: Any) -> Any:
        if isinstance(data, dict) and "labels_after_days" in data:
            days = data["labels_after_days"]
            raise ValueError(
                "`monitoring.labels_after_days` moved to the spec's own `labels` section: write "
                f"`labels: {{after: {days}d}}` at the top level (or leave `labels` out when the label comes with "
                "the rows)"
            )
        return data

    cron: str | None = Field(default="@daily", description="When the monitor runs (UTC); null: manual and API only.")
    window_days: Annotated[int, Field(ge=1)] = 28
    drift_share: Annotated[float, Field(gt=0, le=1)] = Field(
        default=0.5, description="A window has drifted when at least this share of features drifted."
    )
    column_threshold: Annotated[float, Field(gt=0)] | None = Field(
        default=None,
        description="Per-column drift threshold: a distance for the default methods (Evidently's default 0.1); "
        "the p-value below which a column drifted if `method` is a p-value test.",
    )
    method: str | None = Field(
        default=None,
        description="Evidently drift method for every column (e.g. `psi`, `ks`); default: normed Wasserstein for "
        "numbers and Jensen-Shannon for categories, distance-based at any sample size.",
    )
    reference: Literal["training", "seasonal"] = Field(
        default="training",
        description="Compare with the champion's whole training data, or (seasonal) with its rows from the same "
        "weeks of the year (within `seasonal_margin_days`): a June window is then compared with last June.",
    )
    seasonal_margin_days: Annotated[int, Field(ge=0, le=90)] = 14
    exclude: list[str] = Field(
        default=[],
        description="Features not tested for drift (e.g. calendar columns a window fixes by construction); "
        "they still feed the predictions whose drift is tested.",
    )
    min_rows: Annotated[int, Field(ge=1)] = Field(
        default=100, description="A window (or a reference) with fewer rows is not judged: the run fails and says so."
    )
    sample_cap: Annotated[int, Field(ge=1000)] = 50_000
    performance_metric: str | None = Field(
        default=None,
        description="The metric whose degradation (from labelled windows) may request retraining; default: the "
        "gate's metric. Judged in the metric's direction.",
    )
    max_degradation: Annotated[float, Field(gt=0)] = Field(
        default=0.25,
        description="Retrain when `performance_metric` is this much worse (relative) than at training.",
    )
    hysteresis: Hysteresis = Field(default={}, validate_default=True)
    cooldown_days: Annotated[int, Field(ge=0)] = 28
    min_labels: Annotated[int, Field(ge=1)] = Field(
        default=100,
        description="A version's realized performance in a window (from `outcomes`) with fewer labelled rows is "
        "shown with that count but not judged: a proportion over 100 rows is still +-0.1 at 95 %.",
    )
    max_calibration_error: Annotated[float, Field(gt=0, le=1)] = Field(
        default=0.05,
        description="A classifier's performance is estimated without labels (CBPE) only when its probabilities' "
        "expected calibration error on the holdout (after calibration) is at most this; else it says so.",
    )
    calibrate_estimates: bool = Field(
        default=True,
        description="Calibrate the probabilities on the holdout (isotonic) before estimating; false: trust them as "
        "they are (a model trained with class weights is then usually refused as poorly calibrated).",
    )
    act_on_estimate: bool = Field(
        default=False,
        description="Let an estimated degradation (no labels yet) request retraining, through the same "
        "hysteresis and cooldown; default: only realized performance (from labels) does.",
    )


class LabelSource(_Strict):
    """A table or query of labels of their own (labels that arrive apart from the features), behind a connection.

    Each label row names its row by the spec's keys (``keys``, default ``source.keys``) and carries a time
    (``time_column``, default ``source.time_column``) that puts it in its data interval."""

    connection: str | None = Field(default=None, description="Airflow connection; default: `source.connection`.")
    table: str | None = None
    query: str | None = Field(
        default=None,
        description="SQL binding :start and :end over the labelled rows' time, e.g. `SELECT id, ts, late FROM "
        "outcomes WHERE ts >= :start AND ts < :end`.",
    )
    time_column: str | None = Field(default=None, description="The labelled row's time; default: the source's.")
    keys: list[str] | None = Field(default=None, description="The row's key columns; default: `source.keys`.")
    column: str | None = Field(default=None, description="The label column; default: the target's name.")

    @model_validator(mode="after")
    def _table_or_query(self) -> "LabelSource":
        if (self.table is None) == (self.query is None):
            raise ValueError("labels.source: give exactly one of `table` or `query`")
        if self.query is not None and not (":start" in self.query and ":end" in self.query):
            raise ValueError(
                "labels.source.query must use the bound parameters :start and :end (never format dates into SQL)"
            )
        return self


class Labels(_Strict):
    """When an interval's labels (the target) are known, and where they come from.

    Until an interval's labels are due (``after`` past its end), a missing label is not a fault: the interval is
    ingested, validated without its label rules and scored; the labels step reads the labels once they are due and
    joins them with the predictions that were served (``outcomes``)."""

    after: Duration | None = Field(
        default=None,
        description="How long after an interval ends its labels are expected, e.g. `2d`; default: with the rows "
        "(the label is in the source when the interval is ingested).",
    )
    source: LabelSource | None = Field(
        default=None, description="A label table or query of its own; default: the target column of `source`."
    )
    max_lag: Duration | None = Field(
        default=None,
        description="Labels still missing this long after they were due raise a freshness alert; default: "
        "as long again as `after` (at least 1d).",
    )


class RescoreOnPromotion(_Strict):
    """Re-score the newest validated intervals when ``@champion`` moves (a promotion or a rollback)."""

    intervals: Annotated[int, Field(ge=1, le=1000)] = Field(
        description="How many of the newest validated intervals the new champion re-scores (1 to 1000)."
    )


class Scoring(_Strict):
    """Batch scoring beyond the champion scoring each new interval."""

    rescore_on_promotion: RescoreOnPromotion | None = Field(
        default=None,
        description="`{intervals: N}`: after a promotion or rollback moves `@champion`, `<name>_score` re-scores "
        "the newest N validated intervals with the new champion; default: off (only new intervals are scored).",
    )


class ModelSpec(_Strict):
    """One model: its data, its schedule, its features and target, and how its batches are validated."""

    name: str = Field(description="Lower-case identifier; DAG ids are `<name>_<stage>`.")
    description: str
    owner: str
    tags: list[str] = []
    source: Source
    schedule: Schedule
    features: list[Feature] = Field(min_length=1)
    target: Target
    leakage_columns: list[str] = Field(
        default=[], description="Source columns that must never be features (e.g. parts of the target)."
    )
    validation: Validation = Field(default={}, validate_default=True)
    training: Training = Field(default={}, validate_default=True)
    gate: Gate = Field(default={}, validate_default=True)
    monitoring: Monitoring = Field(default={}, validate_default=True)
    labels: Labels = Field(
        default={},
        validate_default=True,
        description="When labels arrive (`after`) and where from (`source`); default: with the rows.",
    )
    scoring: Scoring = Field(
        default={},
        validate_default=True,
        description="Re-scoring when `@champion` moves (`rescore_on_promotion: {intervals: N}`); default: off.",
    )
    timeouts: Timeouts = Field(
        default={},
        validate_default=True,
        description="Time limits per stage (`ingest`, `train`, `promote`, `score`, `monitor`, `labels`): `{task, run, "
        "deadline}`, each like `30m` or `2h`; defaults in docs/model-spec.md.",
    )

    @field_validator("name")
    @classmethod
    def _name_format(cls, value: str) -> str:
        if not _NAME.match(value):
            raise ValueError("`name` must be lower-case letters, digits and `_`, starting with a letter (max 40)")
        return value

    @model_validator(mode="after")
    def _columns_consistent(self) -> "ModelSpec":
        names = [f.name for f in self.features]
        duplicated = sorted({n for n in names if names.count(n) > 1})
        if duplicated:
            raise ValueError(f"features listed twice: {duplicated}")
        self._check_reserved()
        clash = sorted(set(names) & ({self.target.name, self.source.time_column} | set(self.leakage_columns)))
        if clash:
            raise ValueError(
                f"{clash} cannot be features: the target, the time column and leakage columns are never model inputs"
            )
        slice_columns = {sl.column for sl in self.training.slices}
        unknown = sorted(slice_columns - set(names))
        if unknown:
            raise ValueError(f"training.slices name columns that are not features: {unknown}")
        for key in self.training.overridable:
            if self.training.search is not None and key in self.training.search.space:
                raise ValueError(f"`{key}` is both searched and overridable; choose one")
        self._check_keys()
        self._check_task_fields()
        excluded = set(self.monitoring.exclude)
        if excluded - set(names):
            raise ValueError(f"monitoring.exclude names columns that are not features: {sorted(excluded - set(names))}")
        if excluded >= set(names):
            raise ValueError("monitoring.exclude leaves no feature to test for drift; keep at least one")
        self._check_timeouts()
        return self

    def _check_timeouts(self) -> None:
        """Every stage's limits fit together: a try within the run, the deadline before the run's limit, and a
        required approval's wait within train's and promote's runs."""
        for stage in STAGES:
            limits = self.stage_timeouts(stage)
            where = f"timeouts.{stage}"
            if limits.task > limits.run:
                raise ValueError(
                    f"{where}.task ({format_duration(limits.task)}) is longer than {where}.run "
                    f"({format_duration(limits.run)}): a run cannot outlast its limit; lengthen `run` or shorten `task`"
                )
            if limits.deadline >= limits.run:
                raise ValueError(
                    f"{where}.deadline ({format_duration(limits.deadline)}) must be shorter than {where}.run "
                    f"({format_duration(limits.run)}): a run failed by its limit is never late"
                )
            wait = self.stage_wait(stage)
            if stage == "labels" and limits.run <= wait:
                raise ValueError(
                    f"{where}.run ({format_duration(limits.run)}) must be longer than labels.after "
                    f"({format_duration(wait)}): each run first waits until its interval's labels are due"
                )
            if stage in ("train", "promote") and wait and limits.run <= wait:
                raise ValueError(
                    f"{where}.run ({format_duration(limits.run)}) must be longer than gate.approval.timeout_hours "
                    f"({self.gate.approval.timeout_hours:g}h): the run would fail while a person may still approve"
                )

    @property
    def label_latency(self) -> timedelta:
        """How long after an interval ends its labels are due (zero: they come with the rows)."""
        return self.labels.after or timedelta(0)

    @property
    def label_max_lag(self) -> timedelta:
        """How long after they were due missing labels may stay missing before a freshness alert."""
        return self.labels.max_lag or max(self.label_latency, timedelta(days=1))

    @property
    def approval_wait(self) -> timedelta:
        """How long a run may wait for a person's approval (zero when approval is not required)."""
        approval = self.gate.approval
        return timedelta(hours=approval.timeout_hours) if approval.required else timedelta(0)

    def stage_wait(self, stage: str) -> timedelta:
        """How long a run of ``stage`` may wait before its work: a required approval (train, promote), or until
        its interval's labels are due (labels: ``labels.after``); zero for the others."""
        if stage in ("train", "promote"):
            return self.approval_wait
        return self.label_latency if stage == "labels" else timedelta(0)

    def stage_timeouts(self, stage: str) -> ResolvedTimeouts:
        """The effective limits of one stage's DAG: the spec's, else the defaults, whose ``run`` and ``deadline``
        include the stage's wait (:meth:`stage_wait`; a limit the spec sets is taken as written)."""
        given: StageTimeouts = getattr(self.timeouts, stage)
        task, run, deadline = DEFAULT_TIMEOUTS[stage]
        wait = self.stage_wait(stage)
        run = given.run or run + wait
        # A run limit set shorter than the defaults pulls the unset limits in with it (a try at most the run, the
        # deadline at three quarters of the run after the approval's wait), so setting `run` alone is never an error.
        return ResolvedTimeouts(
            task=given.task or min(task, run),
            run=run,
            deadline=given.deadline or min(deadline + wait, run - (run - wait) / 4),
        )

    def _check_reserved(self) -> None:
        """No data column may take a name the monitor gives its predictions (it adds them beside the data)."""
        columns = {
            **{n: "feature" for n in self.feature_names},
            self.target.name: "target",
            self.source.time_column: "time column",
            **{k: "key" for k in self.source.keys or ()},
        }
        clash = sorted(f"{what} `{name}`" for name, what in columns.items() if reserved_column(name))
        if clash:
            raise ValueError(
                f"{', '.join(clash)}: `{PREDICTION_COLUMN}` and names starting with `{PROBA_PREFIX}` are reserved "
                "for the monitor's predictions and class probabilities; rename the column (e.g. with an alias in "
                "source.query)"
            )

    def _check_keys(self) -> None:
        keys = self.keys
        if len(set(keys)) != len(keys):
            raise ValueError(f"source.keys lists a column twice: {keys}")
        if self.target.name in keys:
            raise ValueError(
                f"source.keys cannot hold the target `{self.target.name}`: keys identify a row, not its label"
            )

    def _check_task_fields(self) -> None:
        """Metrics, thresholds, sanity bounds and the estimator must fit the target's task (errors list what fits)."""
        from airloop.core import metrics

        tasks, task = self.target.metric_tasks, self.target.task
        fitting = sorted({m.name for t in tasks for m in metrics.metrics_for(t)})

        def check(field: str, name: str) -> None:
            metric = metrics.find(name)
            if metric is None or not any(metric.fits(t) for t in tasks):
                what = "is not a metric" if metric is None else f"does not fit a {task} model"
                raise ValueError(f"{field} `{name}` {what}; metrics that fit {task}: {', '.join(fitting)}")

        check("gate.metric", self.gate_metric)
        for name in self.gate.thresholds:
            check("gate.thresholds", name)
        check("monitoring.performance_metric", self.performance_metric)
        if task != "regression" and (
            self.gate.sanity.min_prediction is not None or self.gate.sanity.max_prediction is not None
        ):
            raise ValueError(
                "gate.sanity.min_prediction / max_prediction bound a regression's values; a classifier's sanity "
                "(probabilities, classes) is always checked: remove them"
            )
        name = self.estimator_class.rsplit(".", 1)[-1]
        wrong = "Regressor" if task == "classification" else "Classifier"
        if name.endswith(wrong):
            raise ValueError(
                f"training.estimator.class `{self.estimator_class}` is a {wrong.lower()}, but the target's task is "
                f"{task}: use e.g. `{DEFAULT_ESTIMATORS[task]}` or omit `class` for that default"
            )

    @property
    def keys(self) -> list[str]:
        """The columns that identify a row: ``source.keys``, or the time column alone."""
        return list(self.source.keys) if self.source.keys else [self.source.time_column]

    @property
    def gate_metric(self) -> str:
        """The gate's metric: the spec's, or the task's default."""
        return self.gate.metric or DEFAULT_GATE_METRICS[self.target.task]

    @property
    def performance_metric(self) -> str:
        """The metric the monitor judges degradation on: the spec's, or the gate's."""
        return self.monitoring.performance_metric or self.gate_metric

    @property
    def estimator_class(self) -> str:
        """The estimator's import path: the spec's, or the task's default."""
        return self.training.estimator.class_path or DEFAULT_ESTIMATORS[self.target.task]

    @property
    def monitored_features(self) -> list[str]:
        """The features tested for drift (all but ``monitoring.exclude``), in spec order."""
        return [n for n in self.feature_names if n not in self.monitoring.exclude]

    @property
    def feature_names(self) -> list[str]:
        return [f.name for f in self.features]

    @property
    def known_columns(self) -> set[str]:
        """Columns a suite may name: features, target, time column and declared leakage columns."""
        return {*self.feature_names, self.target.name, self.source.time_column, *self.leakage_columns, *self.keys}

    @property
    def suite_dir(self) -> str:
        return self.validation.suite_dir or self.name

    def dag_id(self, stage: str) -> str:
        return f"{self.name}_{stage}"


def _fix_hint(error_type: str, loc: str, allowed: list[str]) -> str:
    if error_type == "extra_forbidden":
        return f"remove `{loc}` or correct its spelling; allowed here: {', '.join(allowed)}"
    if error_type == "missing":
        return f"add `{loc}` to the file"
    return "correct the value (see the model spec reference in docs/model-spec.md)"


def _allowed_fields(loc: tuple[int | str, ...]) -> list[str]:
    model: type[BaseModel] = ModelSpec
    for part in loc[:-1]:
        if isinstance(part, int):
            continue
        annotation = model.model_fields[str(part)].annotation if str(part) in model.model_fields else None
        candidates = [a for a in getattr(annotation, "__args__", (annotation,)) if isinstance(a, type)]
        nested = [a for a in candidates if issubclass(a, BaseModel)]
        if not nested:
            return []
        model = nested[0]
    return sorted(model.model_fields)


def _describe(path: Path, exc: ValidationError) -> str:
    lines = [f"Model spec {path} is not valid ({exc.error_count()} problem(s)):"]
    for err in exc.errors():
        loc = ".".join(str(p) for p in err["loc"]) or "(top level)"
        hint = _fix_hint(err["type"], loc, _allowed_fields(err["loc"]))
        # A check over the whole spec names its fields in its message: repeating the spec as "got" only hides it.
        got = repr(err["input"])
        shown = (
            "" if err["type"] == "missing" or not err["loc"] else f" (got {got[:200]}{'...' if len(got) > 200 else ''})"
        )
        lines.append(f"  - field `{loc}`: {err['msg']}{shown}. Fix: {hint}.")
    return "\n".join(lines)


#: Validated specs of this process by file (absolute path): the file's text and the spec it gave. A DAG file
#: parse reads every spec; a task process parses its DAG file and then reads its model's spec again, and a
#: ``DagBag`` of the folder reads them once per DAG file: with this they are parsed and validated once per process.
#: The key is the text, not ``(mtime_ns, size)``: file times tick in jiffies, so a spec rewritten at the same size
#: within a few ms would look unchanged; reading a small file costs microseconds, validating it a millisecond.
#: (The dag-processor parses each file in a fresh fork, where this cache starts empty and changes nothing.)
_LOADED: dict[str, tuple[str, ModelSpec]] = {}


def load_spec(path: Path) -> ModelSpec:
    """Read and validate one spec file; the file's stem must equal the spec's ``name``.

    The same text of the same file gives the same (frozen) :class:`ModelSpec` object for the rest of the process
    (see :data:`_LOADED`); a changed file is read and validated again.
    """
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise SpecError(f"Model spec {path} cannot be read: {exc.strerror}.") from exc
    key = str(path.absolute())
    cached = _LOADED.get(key)
    if cached is not None and cached[0] == text:
        return cached[1]
    spec = _validate_text(path, text)
    _LOADED[key] = (text, spec)
    return spec


def _validate_text(path: Path, text: str) -> ModelSpec:
    try:
        raw = yaml.load(text, Loader=_LOADER)
    except yaml.YAMLError as exc:
        raise SpecError(f"Model spec {path} is not valid YAML: {exc}. Fix the syntax at the line shown.") from exc
    if not isinstance(raw, dict):
        raise SpecError(f"Model spec {path} must be a YAML mapping of fields (name, source, schedule, ...).")
    try:
        spec = ModelSpec.model_validate(raw)
    except ValidationError as exc:
        raise SpecError(_describe(path, exc)) from None
    if spec.name != path.stem:
        raise SpecError(
            f"Model spec {path}: field `name` is {spec.name!r} but the file is {path.name}. "
            f"Fix: rename the file to {spec.name}.yaml or set `name: {path.stem}`."
        )
    return spec


def load_specs(directory: Path) -> list[ModelSpec]:
    """Every ``*.yaml`` spec in a folder, sorted by name. All problems are reported together."""
    specs: list[ModelSpec] = []
    problems: list[str] = []
    for path in sorted(directory.glob("*.yaml")):
        try:
            specs.append(load_spec(path))
        except SpecError as exc:
            problems.append(str(exc))
    if problems:
        raise SpecError("\n".join(problems))
    return specs


def get_spec(name: str, directory: Path | None = None) -> ModelSpec:
    """The spec of one model by name, from the configured models folder."""
    if directory is None:
        from airloop.core.settings import paths

        directory = paths().models_dir
    path = directory / f"{name}.yaml"
    if not path.is_file():
        known = sorted(p.stem for p in directory.glob("*.yaml"))
        raise SpecError(f"No model spec {path}. Known models: {', '.join(known) or 'none'}.")
    return load_spec(path)


def spec_digest(spec: ModelSpec) -> str:
    """A short, stable digest of a spec's content (field order and comments do not matter)."""
    return short(json_digest(spec.model_dump(mode="json", by_alias=True)))

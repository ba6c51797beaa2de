"""The checks of a train request, as pure steps: the reason, the window, the estimator overrides.

Each step takes what the run knows (its params, its type, the Asset events that started it) and returns a value
or raises :class:`~airloop.core.params.RequestProblem` naming the parameter and the fix; the train runner
composes them into a :class:`~airloop.core.contracts.TrainRequest`.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from airloop.core.contracts import RunInfo
from airloop.core.params import RequestProblem, day
from airloop.core.spec import ModelSpec
from airloop.stages.train.steps import TrainingProblem


def request_reason(spec: ModelSpec, params: dict[str, Any], run: RunInfo, asset_extras: list[dict[str, Any]]) -> str:
    """Why this run trains: the ``reason`` param; by hand it is required, otherwise the run says why itself."""
    reason = (params.get("reason") or "").strip()
    if reason:
        return reason
    if run.run_type == "manual":
        raise RequestProblem(
            f"param `reason` is required when {spec.dag_id('train')} is triggered by hand or through the API: "
            'say why (e.g. {"reason": "new holiday features"}); it is recorded in MLflow and the ledger.'
        )
    if asset_extras:
        reasons = [str(extra.get("reason") or f"asset event {extra or ''}".strip()) for extra in asset_extras]
        return "retrain requested: " + "; ".join(reasons)
    return f"scheduled retraining ({spec.training.cron or run.run_type})"


def requested_window(
    params: dict[str, Any], asset_extras: list[dict[str, Any]]
) -> tuple[datetime | None, datetime | None]:
    """``(start, end)`` of the training window; None leaves it to the spec (end: the newest validated data).

    Without a ``window_end`` param, a retrain request's window end is used (merged events: the latest one).
    """
    start, end = day("window_start", params.get("window_start")), day("window_end", params.get("window_end"))
    requested_ends = [day("window_end", e["window_end"]) for e in asset_extras if e.get("window_end")]
    if end is None and requested_ends:
        end = max(d for d in requested_ends if d is not None)
    if start and end and start >= end:
        raise RequestProblem(f"param `window_start` ({start:%Y-%m-%d}) must be before `window_end` ({end:%Y-%m-%d}).")
    return start, end


def checked_overrides(spec: ModelSpec, overrides: Any) -> dict[str, Any]:
    """The ``overrides`` param, refused now (not after training) when the estimator would refuse it."""
    from airloop.stages.train.steps import build_pipeline, estimator_params

    overrides = overrides or {}
    if not isinstance(overrides, dict):
        raise RequestProblem(f"param `overrides` must be an object of estimator parameters, got {overrides!r}.")
    try:
        estimator = build_pipeline(spec, estimator_params(spec, overrides)).named_steps["model"]
    except TrainingProblem as exc:
        raise RequestProblem(f"param `overrides`: {exc}") from None
    # scikit-learn checks parameter values only when fitting; its own constraint check (private, but the one
    # fit() calls) refuses a bad value now instead of minutes later. Estimators without it are checked by fit.
    validate = getattr(estimator, "_validate_params", None)
    if callable(validate):
        try:
            validate()
        except (TypeError, ValueError) as exc:
            raise RequestProblem(f"param `overrides`: {exc}") from None
    return overrides


def describe_window(start: datetime | None, end: datetime | None, window_days: int) -> str:
    """The requested window in words, for the log (``from 2012-01-01 up to the newest validated data``)."""
    until = f"{end:%Y-%m-%d}" if end else "the newest validated data"
    return f"from {start:%Y-%m-%d} up to {until}" if start else f"the {window_days} days up to {until}"

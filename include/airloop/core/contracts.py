"""What one task hands the next: frozen dataclasses with ``to_dict``/``from_dict``.

XCom carries JSON, so each contract says exactly which fields travel and of which type; a task that reads a
missing or mistyped field fails naming it (:class:`ContractError`) instead of a ``KeyError`` deep in a stage.
Pure and light: safe at DAG parse time.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

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

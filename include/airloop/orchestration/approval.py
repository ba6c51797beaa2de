"""The human approval step: the standard provider's ``ApprovalOperator``, with its answer kept for the ledger.

The stock operator returns the answer only when it is "Approve" (a rejection skips downstream and returns
nothing), and the answer holds a ``datetime``. The ledger must say who decided either way, so this subclass
stores a JSON-safe copy of every answer under the XCom key ``answer`` before the operator acts on it.

When the wait ends without an answer, the trigger's event names why (``error_type``: ``timeout`` when the
response deadline passed, ``validation`` or ``unknown`` otherwise); that is stored under the same key, so the
ledger can tell a timeout from a failure (:func:`airloop.stages.promote.steps.nothing_moved`). A task that fails
before any event (it crashed, was stopped or marked failed) stores nothing, and the ledger says it failed.
Imported only by DAGs whose spec requires approval (it loads the HITL operator module).
"""

from __future__ import annotations

from typing import Any

from airflow.providers.standard.operators.hitl import ApprovalOperator

ANSWER_KEY = "answer"


def answer_record(event: dict[str, Any]) -> dict[str, Any]:
    """What the ledger keeps of the trigger's event: the answer, or why there is none (JSON-safe)."""
    if "error" in event:
        return {"error_type": str(event.get("error_type") or "unknown"), "error": str(event.get("error") or "")}
    at: Any = event.get("responded_at")
    user = event.get("responded_by_user")
    return {
        "chosen_options": list(event.get("chosen_options") or []),
        "params_input": dict(event.get("params_input") or {}),
        "responded_at": at.isoformat() if hasattr(at, "isoformat") else at,
        "responded_by_user": dict(user) if user else None,
    }


class RecordedApproval(ApprovalOperator):
    """``ApprovalOperator`` that records the answer (options, user, time), or the reason for none, for the ledger."""

    def execute_complete(self, context: Any, event: dict[str, Any]) -> Any:
        context["ti"].xcom_push(key=ANSWER_KEY, value=answer_record(event))
        return super().execute_complete(context, event)

"""The human approval step: the standard provider's ``ApprovalOperator``, with its answer kept for the ledger.

The stock operator returns the answer only when it is "Approve" (a rejection skips downstream and returns
nothing), and the answer holds a ``datetime``. The ledger must say who decided either way, so this subclass
stores a JSON-safe copy of every answer under the XCom key ``answer`` before the operator acts on it.
Imported only by DAGs whose spec requires approval (it loads the HITL operator module).
"""

from __future__ import annotations

from typing import Any

from airflow.providers.standard.operators.hitl import ApprovalOperator

ANSWER_KEY = "answer"


class RecordedApproval(ApprovalOperator):
    """``ApprovalOperator`` that records the answer (options, user, time) for the promotion ledger."""

    def execute_complete(self, context: Any, event: dict[str, Any]) -> Any:
        if "error" not in event:
            at: Any = event.get("responded_at")
            user = event.get("responded_by_user")
            context["ti"].xcom_push(
                key=ANSWER_KEY,
                value={
                    "chosen_options": list(event.get("chosen_options") or []),
                    "params_input": dict(event.get("params_input") or {}),
                    "responded_at": at.isoformat() if hasattr(at, "isoformat") else at,
                    "responded_by_user": dict(user) if user else None,
                },
            )
        return super().execute_complete(context, event)

"""What the approval step leaves for the ledger: the answer, or why there is none (timeout vs. another error)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest
from airflow.providers.standard.exceptions import HITLTimeoutError, HITLTriggerEventError

from airloop.orchestration.approval import ANSWER_KEY, RecordedApproval, answer_record


class _TaskInstance:
    """Only what ``execute_complete`` uses of the running task: ``xcom_push``."""

    def __init__(self) -> None:
        self.pushed: dict[str, Any] = {}

    def xcom_push(self, key: str, value: Any) -> None:
        self.pushed[key] = value


def _operator() -> RecordedApproval:
    return RecordedApproval(task_id="approve", subject="Promote m v2 to @champion?")


@pytest.mark.parametrize(
    ("error_type", "raised"),
    [("timeout", HITLTimeoutError), ("validation", HITLTriggerEventError), ("unknown", HITLTriggerEventError)],
)
def test_a_wait_without_an_answer_is_recorded_with_its_reason_before_the_task_fails(error_type, raised):
    ti = _TaskInstance()
    event = {"error": f"the wait ended: {error_type}", "error_type": error_type}
    with pytest.raises(raised):
        _operator().execute_complete({"ti": ti}, event)
    assert ti.pushed[ANSWER_KEY] == {"error_type": error_type, "error": f"the wait ended: {error_type}"}


def test_an_answer_is_recorded_json_safe():
    at = datetime(2026, 12, 7, 12, tzinfo=UTC)
    event = {
        "chosen_options": ["Reject"],
        "params_input": {},
        "responded_at": at,
        "responded_by_user": {"id": "op", "name": "operator"},
    }
    assert answer_record(event) == {
        "chosen_options": ["Reject"],
        "params_input": {},
        "responded_at": at.isoformat(),
        "responded_by_user": {"id": "op", "name": "operator"},
    }

"""Shadow scoring: when a challenger waits, and when it has waited long enough. Pure decisions on plain values.

A challenger *waits* while ``@challenger`` names a version that is not ``@champion`` and

- a person has yet to approve it: the gate that last judged it said promote (its version tag ``gate.promote`` is
  ``true``) and the ledger holds no decision of that gate's Airflow run (tag ``gate.airflow_run_id``) yet; or
- the spec's ``gate.shadow`` holds it back: the ledger's newest decision on it is :data:`SHADOWING` (it passed the
  offline gate and waits for labelled shadow intervals).

Any other newest decision on it (refused, rejected, timed out, dry run, ...) ends the wait: the challenger is no
longer scored. The score DAG scores every interval it scores with a waiting challenger too, into
``shadow_predictions`` and the lake's ``shadow`` stage: never served, never read by what reads predictions.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

#: The ledger outcome of a challenger that passed the offline gate and waits for live (shadow) evidence.
SHADOWING = "shadowing"
#: Why a challenger waits: a person's approval, or the spec's ``gate.shadow``.
APPROVAL, GATE_SHADOW = "approval", "gate.shadow"


@dataclass(frozen=True)
class Waiting:
    """The challenger being shadowed: its version, why it waits, and the sentence the log says."""

    version: str
    why: str
    detail: str

    def to_dict(self) -> dict[str, str]:
        return {"version": self.version, "why": self.why, "detail": self.detail}


def waiting_challenger(
    *,
    champion: str | None,
    challenger: str | None,
    tags: dict[str, str],
    decisions: list[dict[str, Any]],
) -> Waiting | str:
    """The waiting challenger, or why none waits (a sentence for the log).

    ``tags`` are the challenger version's tags (its ``gate.*`` verdict); ``decisions`` the ledger's decisions on
    it (rows naming it as candidate, intents excluded), newest first.
    """
    if challenger is None:
        return "no @challenger"
    if challenger == champion:
        return f"@challenger v{challenger} is @champion"
    if champion is None:
        return f"no @champion to shadow v{challenger} beside"
    gate_run = tags.get("gate.airflow_run_id") or ""
    if tags.get("gate.promote") == "true" and gate_run and all(d.get("dag_run_id") != gate_run for d in decisions):
        return Waiting(challenger, APPROVAL, f"v{challenger} passed the gate and waits for a decision (run {gate_run})")
    newest = decisions[0]["outcome"] if decisions else None
    if newest == SHADOWING:
        return Waiting(challenger, GATE_SHADOW, f"v{challenger} passed the offline gate and waits for gate.shadow")
    if newest is None:
        return f"@challenger v{challenger} has no gate decision that keeps it waiting"
    return f"@challenger v{challenger} was decided on ({newest}): it no longer waits"


def live_gate_due(waiting: Waiting, labelled: int, needed: int | None) -> bool:
    """True when the spec's ``gate.shadow`` waits for ``needed`` labelled intervals and ``labelled`` reach it."""
    return waiting.why == GATE_SHADOW and needed is not None and labelled >= needed


def live_gate_run_id(model: str, version: str, labelled: int) -> str:
    """The promote run the score DAG triggers for a live gate: one per version and count of labelled intervals, so
    a later score run does not trigger it again until more intervals are labelled."""
    return f"shadow_gate__{model}_v{version}__{labelled}_labelled_intervals"

"""Shadow scoring: the score DAG scores each interval with the waiting challenger too, never serving it.

Which challenger waits is :func:`airloop.core.shadow.waiting_challenger` (a pending approval, or the spec's
``gate.shadow``); its rows go to ``shadow_predictions`` and the lake's ``shadow`` stage through the same
:func:`~airloop.stages.score.runner.score_partition` as the champion's, so re-scoring an interval replaces its
shadow rows. Afterwards, when ``gate.shadow`` waits and enough shadow intervals have labels,
:func:`shadow_partitions` says so, and the DAG triggers ``<model>_promote`` for that version: the live gate runs
through the promote path (serialised, ledgered, with approval when the spec asks for it).
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from airloop.adapters import registry
from airloop.adapters import shadow as store
from airloop.core.contracts import PinnedChampion
from airloop.core.settings import WAREHOUSE_CONN_ID
from airloop.core.shadow import Waiting, live_gate_due, live_gate_run_id, waiting_challenger
from airloop.stages.score.runner import score_partition

if TYPE_CHECKING:
    from airloop.core.contracts import RunInfo
    from airloop.core.spec import ModelSpec

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Shadowed:
    """What a shadow step did: the challenger (None: none waits, and why), the partitions and the live gate's due."""

    version: str | None
    why: str
    partitions: list[str] = field(default_factory=list)
    rows: int = 0
    labelled: dict[str, int] = field(default_factory=dict)
    needed: int | None = None
    trigger: dict[str, Any] | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "version": self.version,
            "why": self.why,
            "partitions": list(self.partitions),
            "rows": self.rows,
            "labelled": dict(self.labelled),
            "needed": self.needed,
            "trigger": self.trigger,
        }


def find_waiting(spec: ModelSpec) -> Waiting | str:
    """The challenger waiting now (registry aliases and tags, ledger decisions), or why none waits."""
    from airloop.adapters.db import engine_for

    champion = registry.version_for_alias(spec.name, registry.CHAMPION)
    challenger = registry.version_for_alias(spec.name, registry.CHALLENGER)
    if challenger is None or challenger == champion:
        return waiting_challenger(champion=champion, challenger=challenger, tags={}, decisions=[])
    tags = dict(registry.client().get_model_version(spec.name, challenger).tags or {})
    decisions = store.decisions_on(engine_for(WAREHOUSE_CONN_ID), spec.name, challenger)
    return waiting_challenger(champion=champion, challenger=challenger, tags=tags, decisions=decisions)


def shadow_partitions(spec: ModelSpec, partitions: list[str], run: RunInfo) -> Shadowed:
    """Score ``partitions`` with the waiting challenger into the shadow table and lake stage (none waits: nothing).

    Returns what was done and, when ``gate.shadow`` has enough labelled shadow intervals of that challenger, the
    promote run to trigger (its run id and conf) for the live gate.
    """
    from airloop.adapters.db import engine_for

    waiting = find_waiting(spec)
    if isinstance(waiting, str):
        log.info("No shadow scoring of %s: %s.", spec.name, waiting)
        return Shadowed(version=None, why=waiting)
    started = time.perf_counter()
    mv = registry.client().get_model_version(spec.name, waiting.version)
    pinned = PinnedChampion(version=waiting.version, run_id=str(mv.run_id))
    results = [score_partition(spec, p, pinned, run, shadow=True) for p in partitions]
    rows = sum(r.rows for r in results)
    log.info(
        "Shadowed %d partition(s) of %s with @challenger v%s (%s): %d rows in %.1f s into table shadow_predictions "
        "and lake stage shadow; never served.",
        len(results),
        spec.name,
        waiting.version,
        waiting.detail,
        rows,
        time.perf_counter() - started,
    )
    shadow = spec.gate.shadow
    labelled = store.labelled_intervals(engine_for(WAREHOUSE_CONN_ID), spec.name, waiting.version)
    needed = None if shadow is None else shadow.intervals
    trigger = None
    if live_gate_due(waiting, len(labelled), needed):
        trigger = {
            "run_id": live_gate_run_id(spec.name, waiting.version, len(labelled)),
            "conf": live_gate_conf(spec, waiting.version, len(labelled)),
        }
        log.info(
            "%d of v%s's shadow intervals have labels (gate.shadow needs %s): triggering %s for the live gate.",
            len(labelled),
            waiting.version,
            needed,
            spec.dag_id("promote"),
        )
    elif needed is not None and waiting.why == "gate.shadow":
        log.info("%d of the %d labelled shadow intervals gate.shadow needs so far.", len(labelled), needed)
    return Shadowed(
        version=waiting.version,
        why=waiting.detail,
        partitions=[r.partition for r in results],
        rows=rows,
        labelled=labelled,
        needed=needed,
        trigger=trigger,
    )


def live_gate_conf(spec: ModelSpec, version: str, labelled: int) -> dict[str, Any]:
    """The conf of the promote run that judges ``version`` on its labelled shadow intervals."""
    return {
        "action": "promote",
        "version": str(version),
        "reason": f"live gate: {labelled} shadow-scored interval(s) of v{version} have labels (gate.shadow)",
    }

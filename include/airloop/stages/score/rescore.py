"""Re-scoring when ``@champion`` moves: which intervals the new champion re-scores (``scoring.rescore_on_promotion``).

A promotion or a rollback that moves ``@champion`` announces the newest N validated intervals to ``<model>_score``
(an event on the model's ``validated`` Asset whose ``extra.partitions`` names them; see
:func:`airloop.stages.score.runner.select_partitions`). The score DAG then scores them with the champion it pins,
one scoring run per model at a time as always, so re-scoring never races a scheduled scoring of the same interval.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from airloop.adapters.lake import Lake
    from airloop.core.contracts import PromotionOutcome
    from airloop.core.spec import ModelSpec

log = logging.getLogger(__name__)


def rescore_request(spec: ModelSpec, promoted: PromotionOutcome, lake: Lake) -> dict[str, Any] | None:
    """The Asset event ``extra`` that asks ``<model>_score`` to re-score the newest intervals, or None (with the
    reason logged) when the spec does not ask for it, ``@champion`` did not move, or nothing is validated yet."""
    wanted = spec.scoring.rescore_on_promotion
    if wanted is None:
        return None
    if not promoted.moved or not promoted.champion_after:
        log.info("@champion of %s did not move (%s): nothing to re-score.", spec.name, promoted.outcome)
        return None
    newest = lake.partitions(spec.name, "validated")[-wanted.intervals :]
    if not newest:
        log.info("%s has no validated interval yet: nothing to re-score.", spec.name)
        return None
    log.info(
        "@champion of %s moved from %s to v%s (%s): asking %s to re-score the newest %d validated interval(s), "
        "%s to %s (scoring.rescore_on_promotion: intervals %d).",
        spec.name,
        f"v{promoted.from_version}" if promoted.from_version else "none",
        promoted.champion_after,
        promoted.action,
        spec.dag_id("score"),
        len(newest),
        newest[0],
        newest[-1],
        wanted.intervals,
    )
    return {
        "partitions": newest,
        "rescore": {
            "champion": promoted.champion_after,
            "from_version": promoted.from_version,
            "action": promoted.action,
            "ledger_seq": promoted.seq,
        },
    }

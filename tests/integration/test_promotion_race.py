"""Two promotions started at the same moment: exactly one moves @champion, the ledger stays consistent.

Real MLflow store (the session's SQLite) and real warehouse; the two decisions run in two threads with their
own database connections, released together by a barrier, so only the promotion lock keeps them apart.
"""

from __future__ import annotations

import itertools
import threading

import pytest

MODEL = "race"


@pytest.fixture(scope="module")
def versions(tmp_path_factory) -> list[str]:
    from airloop.adapters import registry as tracking

    c = tracking.client()
    tracking.ensure_registered_model(MODEL, "promotion race test", "tests")
    source = tmp_path_factory.mktemp("race-model")
    return [str(c.create_model_version(MODEL, source=source.as_uri()).version) for _ in range(3)]


def _decision(candidate: str, reason: str):
    from airloop.stages.promote.ledger import Decision

    return Decision(
        model=MODEL,
        action="promote",
        candidate=candidate,
        reason=reason,
        decided_by="gate",
        evidence={"test": True},
        dag_run_id=f"run-{candidate}",
    )


def test_concurrent_promotions_leave_one_champion_and_a_consistent_ledger(versions):
    from airloop.adapters import registry as tracking
    from airloop.adapters.db import engine_for
    from airloop.core.settings import WAREHOUSE_CONN_ID
    from airloop.stages.promote.ledger import PENDING, PromotionConflict, apply, ledger, open_intents

    engine = engine_for(WAREHOUSE_CONN_ID)
    first = apply(engine, _decision(versions[0], "setup"), expected_champion=None)
    assert first["champion_after"] == versions[0]

    barrier = threading.Barrier(2)
    outcomes: dict[str, str] = {}

    def promote(candidate: str) -> None:
        barrier.wait()
        try:
            apply(engine, _decision(candidate, "race"), expected_champion=versions[0])
            outcomes[candidate] = "promoted"
        except PromotionConflict as exc:
            outcomes[candidate] = f"conflict: {exc}"

    threads = [threading.Thread(target=promote, args=(v,)) for v in versions[1:]]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)

    winners = [v for v, o in outcomes.items() if o == "promoted"]
    assert len(winners) == 1, outcomes
    (loser,) = set(versions[1:]) - set(winners)
    assert "another decision moved it first" in outcomes[loser]
    assert tracking.version_for_alias(MODEL, tracking.CHAMPION) == winners[0]

    every = list(reversed(ledger(engine, MODEL)))
    assert [r["seq"] for r in every] == [1, 2, 3, 4, 5, 6]
    assert open_intents(every) == []  # each decision's intent was closed by its outcome
    rows = [r for r in every if r["outcome"] != PENDING]
    assert [r["outcome"] for r in rows] == ["promoted", "promoted", "conflict"]
    # Consistent: each row starts from the champion the previous row left.
    for before, after in itertools.pairwise(rows):
        assert after["from_version"] == before["champion_after"]
    assert rows[1]["candidate_version"] == winners[0] and rows[2]["candidate_version"] == loser
    assert rows[2]["champion_after"] == winners[0] and rows[2]["moved"] is False


def test_rollback_target_follows_the_champion_history(versions):
    from airloop.adapters.db import engine_for
    from airloop.core.settings import WAREHOUSE_CONN_ID
    from airloop.stages.promote.ledger import NothingToRollBack, apply, champion_history, previous_champion

    engine = engine_for(WAREHOUSE_CONN_ID)
    current = champion_history(engine, MODEL)[-1]
    target = previous_champion(engine, MODEL)
    assert target == versions[0]
    from airloop.stages.promote.ledger import Decision

    apply(
        engine,
        Decision(model=MODEL, action="rollback", candidate=target, reason="back", decided_by="test"),
        expected_champion=current,
    )
    assert champion_history(engine, MODEL) == [versions[0]]
    with pytest.raises(NothingToRollBack, match="no earlier champion"):
        previous_champion(engine, MODEL)

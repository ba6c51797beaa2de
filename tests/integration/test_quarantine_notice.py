"""A quarantine in a real bikes_ingest run (dag.test()) reaches a local webhook as a ``quarantine`` notification.

A module of its own: the ingest fixture points the source connection at a copy with bad rows for the whole module.
"""

from __future__ import annotations

import json
from datetime import timedelta
from urllib.parse import urlencode

from tests.integration.test_alerts import webhook_server  # noqa: F401
from tests.integration.test_event_notifications import BASE_URL, _webhook_conn, env  # noqa: F401
from tests.integration.test_ingest_dag import BAD, ingest_dag  # noqa: F401


def test_a_quarantine_in_a_real_ingest_run_reaches_the_webhook(ingest_dag, env, webhook_server):  # noqa: F811
    _webhook_conn(env, webhook_server)
    env.setenv("AIRLOOP_NOTIFY", "quarantine")

    run = ingest_dag.test(logical_date=BAD + timedelta(days=28))

    states = {ti.task_id: ti.state for ti in run.get_task_instances()}
    assert states["validate"] == "failed" and states["publish"] == "upstream_failed"
    bodies = [json.loads(b) for _, _, b in webhook_server.received]
    # The failure alert (same channel) and the quarantine notification.
    quarantined = [b for b in bodies if b.get("kind") == "quarantine"]
    assert len(quarantined) == 1, bodies
    sent = quarantined[0]
    assert sent["model"] == "bikes" and sent["run_id"] == run.run_id
    assert sent["data"]["partition"] == "2011-03-26T000000Z"
    assert (sent["data"]["failed"], sent["data"]["rows"]) == (2, sent["data"]["quarantined_rows"])
    assert any("temp" in f for f in sent["data"]["failures"]) and any("hr" in f for f in sent["data"]["failures"])
    query = urlencode({"dag_id": "bikes_ingest", "run_id": run.run_id})
    assert sent["link"] == f"{BASE_URL}/airloop/go/validation?{query}"
    assert "2 of" in sent["text"] and "expectations" in sent["text"]
    assert any(b.get("task_id") == "validate" for b in bodies)  # the failure alert went through the same channel

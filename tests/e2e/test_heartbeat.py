"""A task whose process is SIGKILLed mid-run, under the real scheduler: its heartbeats stop, the scheduler's
heartbeat timeout fails the try, Airflow retries it, and the outcome equals an undisturbed run's.

The embedded runtime (``airloop up``: api-server, scheduler with the LocalExecutor, dag-processor, triggerer on
SQLite) runs a project of one DAG of our own, with a short task heartbeat timeout. Its one task works for a while,
then writes its result atomically and returns it. Two runs start together: one is left alone; in the other, the
task's first try is killed while it works, together with its supervisor (the LocalExecutor's worker process that
runs the task and sends its heartbeats), so no one reports the try's end: only the heartbeat timeout can. The
retry must then run the task to the same result, file and XCom, as the undisturbed run. A few minutes on 2 cores.
The task also reports whether it found the task libraries already imported (the scheduler's preload).
"""

from __future__ import annotations

import json
import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from airloop.ops import runtime
from tests.e2e.helpers import wait_for
from tests.e2e.test_runtime import _admin_token, _isolate, _request

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(900)]

DAG_ID = "airloop_e2e_heartbeat"
HEARTBEAT_TIMEOUT = 20  # seconds without a heartbeat before the scheduler fails a running try
WORK_SECONDS = 15
DAG = f"""
import json
import os
import sys
import time
from datetime import timedelta
from pathlib import Path

import pendulum
from airflow.sdk import dag, task


@dag(dag_id="{DAG_ID}", schedule=None, start_date=pendulum.datetime(2024, 1, 1, tz="UTC"), catchup=False,
     max_active_runs=2)
def heartbeat():
    @task(retries=1, retry_delay=timedelta(seconds=1))
    def chore(**context):
        preloaded = "great_expectations" in sys.modules  # imported by the scheduler before it forked us?
        home = Path(os.environ["AIRLOOP_HOME"])
        run_id, try_number = context["run_id"], context["ti"].try_number
        (home / f"{{run_id}}.try{{try_number}}.pids").write_text(f"{{os.getpid()}} {{os.getppid()}}")
        time.sleep({WORK_SECONDS})
        result = {{"rows": 1000, "total": sum(range(1000)), "preloaded": preloaded}}
        out = home / f"{{run_id}}.out.json"
        tmp = home / f"{{run_id}}.out.tmp"
        tmp.write_text(json.dumps(result, sort_keys=True))
        os.replace(tmp, out)
        return result

    chore()


heartbeat()
"""


@pytest.fixture(scope="module")
def rt(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict]:
    home = tmp_path_factory.mktemp("heartbeat") / "home"
    project = home.parent / "project"
    (project / "dags").mkdir(parents=True)
    (project / "dags" / "heartbeat.py").write_text(DAG)
    with pytest.MonkeyPatch.context() as mp:
        _isolate(mp, home, project)
        mp.setenv("AIRFLOW__SCHEDULER__TASK_INSTANCE_HEARTBEAT_TIMEOUT", str(HEARTBEAT_TIMEOUT))
        mp.setenv("AIRFLOW__SCHEDULER__TASK_INSTANCE_HEARTBEAT_TIMEOUT_DETECTION_INTERVAL", "2")
        mp.setenv("AIRFLOW__DAG_PROCESSOR__REFRESH_INTERVAL", "5")
        try:
            status = runtime.up(wait_timeout=240)
            yield {"home": home, "api": status.urls["api"], "scheduler": status.components["scheduler"].pid}
        finally:
            runtime.down()


def _json(url: str, token: str) -> dict:
    code, _, body = _request(url, token)
    assert code == 200, (url, code, body[:500])
    return json.loads(body)


def test_a_killed_task_is_failed_by_its_heartbeat_timeout_and_retried_to_the_same_outcome(rt: dict) -> None:
    home: Path = rt["home"]
    token = _admin_token()
    dag_url = f"{rt['api']}/dags/{DAG_ID}"
    wait_for("the DAG to be parsed", lambda: _request(dag_url, token)[0] == 200, timeout=180)
    assert _request(dag_url, token, "PATCH", {"is_paused": False})[0] == 200
    runs = {}
    for name in ("killed", "undisturbed"):
        code, _, body = _request(f"{dag_url}/dagRuns", token, "POST", {"logical_date": None, "dag_run_id": name})
        assert code == 200, body
        runs[name] = json.loads(body)["dag_run_id"]

    pids_file = home / f"{runs['killed']}.try1.pids"
    wait_for("the first try to start working", pids_file.exists, timeout=180, every=0.5)
    time.sleep(1)  # mid-work: it sleeps WORK_SECONDS
    task_pid, supervisor_pid = (int(p) for p in pids_file.read_text().split())
    assert supervisor_pid != rt["scheduler"], "the task's supervisor is the scheduler itself: nothing to kill apart"
    os.kill(task_pid, signal.SIGKILL)
    os.kill(supervisor_pid, signal.SIGKILL)
    killed_at = time.monotonic()

    def finished(run: str) -> dict | None:
        ti = _json(f"{dag_url}/dagRuns/{run}/taskInstances/chore", token)
        return ti if ti["state"] in ("success", "failed") else None

    killed = wait_for("the killed run's task to end", lambda: finished(runs["killed"]), timeout=240, every=2)
    undisturbed = wait_for("the undisturbed run's task to end", lambda: finished(runs["undisturbed"]), timeout=120)
    assert (killed["state"], killed["try_number"]) == ("success", 2), killed
    assert (undisturbed["state"], undisturbed["try_number"]) == ("success", 1), undisturbed
    assert time.monotonic() - killed_at >= HEARTBEAT_TIMEOUT  # the first try ended by its heartbeat timeout only

    tries = _json(f"{dag_url}/dagRuns/{runs['killed']}/taskInstances/chore/tries", token)["task_instances"]
    assert [(t["try_number"], t["state"]) for t in tries] == [(1, "failed"), (2, "success")], tries

    def run_ended(run: str) -> str | None:
        state = _json(f"{dag_url}/dagRuns/{run}", token)["state"]
        return state if state in ("success", "failed") else None

    for name in runs.values():  # the scheduler settles a run's state a loop after its last task's
        state = wait_for(f"run {name} to end", lambda name=name: run_ended(name), timeout=60)
        assert state == "success", (name, state)
    detected = [  # the scheduler's own word that the heartbeat timeout, nothing else, ended the first try
        line
        for line in (home / "run" / "scheduler.log").read_text(errors="replace").splitlines()
        if "Detected a task instance without a heartbeat" in line
    ]
    assert [f"'Run Id': '{runs['killed']}'" in line for line in detected] == [True], detected

    # The same outcome: the result file and the XCom the task returned.
    outputs = {name: (home / f"{run}.out.json").read_text() for name, run in runs.items()}
    assert outputs["killed"] == outputs["undisturbed"]
    xcoms = {
        name: _json(f"{dag_url}/dagRuns/{run}/taskInstances/chore/xcomEntries/return_value", token)["value"]
        for name, run in runs.items()
    }
    assert xcoms["killed"] == xcoms["undisturbed"] == json.loads(outputs["undisturbed"])
    # The task processes were forked from a scheduler that had imported the task libraries (AIRLOOP_PRELOAD):
    # the task found Great Expectations imported without importing it.
    assert xcoms["undisturbed"]["preloaded"] is True

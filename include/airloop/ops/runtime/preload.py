"""Start an Airflow component after importing, once, the libraries that its task processes use.

``python -m airloop.ops.runtime.preload airflow scheduler --skip-serve-logs`` imports :data:`PRELOAD` and then runs
the Airflow CLI with the remaining arguments. The embedded runtime starts its scheduler this way: under the
LocalExecutor the scheduler forks its worker processes when it starts, and each worker forks one process per task
instance (Airflow's supervisor uses ``os.fork``, not a new interpreter), so every task process inherits the
modules already imported instead of paying their import again: Great Expectations for each validation, MLflow
and scikit-learn for each training and scoring, Evidently for each monitor run (seconds each on this 2-core
machine; ``benchmarks/loop.py`` measures the loop with and without).

Only a process that forks task processes gains from this. The dag-processor and the api-server never run a task,
so they start plain: DAG files stay light to parse (the parse-time benchmark and tests/dags hold that), and no
component that users wait on at start-up pays these imports. Importing must not start threads (forking a process
with threads copies only the forking one): a test holds that for :data:`PRELOAD`.
"""

from __future__ import annotations

import importlib
import logging
import os
import sys
import time
from collections.abc import Sequence
from pathlib import Path

log = logging.getLogger(__name__)

#: What task processes import, heaviest first; ``airloop.orchestration.tasks`` pulls in the stages.
PRELOAD: tuple[str, ...] = (
    "great_expectations",
    "evidently",
    "mlflow",
    "mlflow.sklearn",
    "sklearn.ensemble",
    "sklearn.linear_model",
    "sklearn.inspection",
    "pandas",
    "pyarrow.parquet",
    "sqlalchemy",
    "airloop.orchestration.tasks",
)


def preload(modules: Sequence[str] = PRELOAD) -> dict[str, float]:
    """Import ``modules`` (a module that fails to import is logged and skipped: the task will say why); seconds each."""
    seconds: dict[str, float] = {}
    for name in modules:
        started = time.perf_counter()
        try:
            importlib.import_module(name)
        except Exception as error:  # the task that needs it reports the real error; the component still starts
            print(f"airloop preload: {name} not imported ({type(error).__name__}: {error})", file=sys.stderr)
            continue
        seconds[name] = time.perf_counter() - started
    return seconds


#: A file the starter writes once the metadata database is migrated: ``ok``, or ``failed`` and why. When this
#: variable names one, the process preloads while the database migrates, and waits for the file before Airflow
#: starts (the scheduler must not touch a database that is not at head yet).
GATE_VAR = "AIRLOOP_PRELOAD_GATE"
#: How long a gated start waits for the gate at most (the starter's own limit is shorter: up()'s timeout).
GATE_TIMEOUT_S = 900.0


def wait_for_gate(gate: Path, timeout: float = GATE_TIMEOUT_S, poll: float = 0.1) -> None:
    """Return once ``gate`` says ``ok``; exit (status 1, the reason on stderr) when it says otherwise or never comes."""
    deadline = time.monotonic() + timeout
    while not gate.exists():
        if time.monotonic() > deadline:
            raise SystemExit(f"airloop preload: {gate} did not appear within {timeout:.0f} s; not starting Airflow")
        time.sleep(poll)
    verdict = gate.read_text().strip()
    if verdict != "ok":
        raise SystemExit(f"airloop preload: the metadata database is not ready ({verdict or 'no reason given'})")


def main(argv: Sequence[str] | None = None) -> None:
    """Preload, then run ``airflow <args>`` in this process (``argv``: ``["airflow", "scheduler", ...]``).

    With :data:`GATE_VAR` set, waits between the two for the gate file (see :func:`wait_for_gate`).
    """
    args = list(sys.argv[1:] if argv is None else argv)
    if not args or Path(args[0]).name != "airflow":
        raise SystemExit("usage: python -m airloop.ops.runtime.preload airflow <component> [args...]")
    seconds = preload()
    total = sum(seconds.values())
    print(f"airloop preload: {len(seconds)} modules in {total:.1f} s for the task processes this one forks", flush=True)
    gate = os.environ.get(GATE_VAR)
    if gate:
        started = time.perf_counter()
        wait_for_gate(Path(gate))
        print(f"airloop preload: metadata database ready after {time.perf_counter() - started:.1f} s more", flush=True)
    from airflow.__main__ import main as airflow_main

    sys.argv = [*args]
    airflow_main()


if __name__ == "__main__":
    main()

"""Start an Airflow component after importing, once, the libraries that its task processes use.

``python -m airloop.ops.runtime.preload airflow scheduler --skip-serve-logs`` imports :data:`PRELOAD` and then runs
the Airflow CLI with the remaining arguments. The embedded runtime starts its scheduler this way: under the
LocalExecutor the scheduler forks its worker processes when it starts, and each worker forks one process per task
instance (Airflow's supervisor uses ``os.fork``, not a new interpreter), so every task process inherits the
modules already imported instead of paying their import again: Great Expectations for each validation, MLflow
and scikit-learn for each training and scoring, Evidently for each monitor run (seconds each on this 2-core
machine; ``benchmarks/loop.py`` measures the loop with and without).

Only a process that forks task processes gains from this. The dag-processor never runs a task, but it forks a
process to parse each DAG file: it starts with :data:`PARSE_PRELOAD` only (airloop's light parse-time modules, and
the specs read once), never the task libraries, so DAG files stay light to parse (the parse-time benchmark and
tests/dags hold that). The api-server and the triggerer start plain. Importing must not start threads (forking a
process with threads copies only the forking one): a test holds that for :data:`PRELOAD` and :data:`PARSE_PRELOAD`.
"""

from __future__ import annotations

import importlib
import logging
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from airloop.core import settings

log = logging.getLogger(__name__)

#: What task processes import, heaviest first; ``airloop.orchestration.tasks`` pulls in the stages. The second
#: half is what the libraries import lazily on first use, found by listing the modules a train task imported
#: after these (``python -X importtime``; issue 16): about 0.4 s of every training run when each task paid it.
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
    # Lazy on first use: a training run's figures (matplotlib draws them; pyplot picks no backend at import)...
    "matplotlib.pyplot",
    # ... MLflow's run context (its git provider reads the repository through GitPython), request headers,
    # tracing processor and pyfunc (loaded with the first logged model) ...
    "git",
    "mlflow.tracking.request_header.registry",
    "mlflow.tracing.processor.base_mlflow",
    "mlflow.pyfunc",
    # ... and alembic's script directory, which airloop's warehouse reads to check its schema's revision.
    "alembic.script",
    "alembic.runtime.migration",
    "sklearn.impute",
)


#: What the dag-processor imports before it forks one process per DAG file to parse it: airloop's parse-time
#: modules, which every DAG file imports (light: tests/dags holds that they load nothing heavy). Without this,
#: each parse imported them again (about 15 ms of CPU, most of airloop's share of a parse).
PARSE_PRELOAD: tuple[str, ...] = (
    "airloop.orchestration.assets",
    "airloop.orchestration.build",
    "airloop.orchestration.links",
    "airloop.orchestration.tasks",
    "airloop.orchestration.labels_task",
)


def modules_for(args: Sequence[str]) -> tuple[str, ...]:
    """What to preload for ``airflow <args>``: the parse-time modules for the dag-processor, else the task libraries."""
    return PARSE_PRELOAD if args[1:2] == ["dag-processor"] else PRELOAD


def warm_specs() -> int:
    """Read and validate the model specs once, so that parsing processes forked from this one reuse them (the
    cache is keyed by each file's text: a changed spec is read again). A spec that does not validate is left to
    the DAG file's parse, which reports it as an import error naming the file and the field."""
    from airloop.core.spec import load_specs

    try:
        return len(load_specs(settings.paths().models_dir))
    except Exception as error:  # reported where users look: the DAG files' import errors
        print(f"airloop preload: specs not read ahead ({type(error).__name__}); the parse will say why", flush=True)
        return 0


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
GATE_VAR = settings.PRELOAD_GATE.name
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
    modules = modules_for(args)
    seconds = preload(modules)
    total = sum(seconds.values())
    if modules is PARSE_PRELOAD:
        specs = warm_specs()
        print(f"airloop preload: {len(seconds)} modules, {specs} specs for the parsing processes", flush=True)
    else:
        print(f"airloop preload: {len(seconds)} modules in {total:.1f} s for the task processes it forks", flush=True)
    gate = settings.preload_gate()
    if gate is not None:
        started = time.perf_counter()
        wait_for_gate(gate)
        print(f"airloop preload: metadata database ready after {time.perf_counter() - started:.1f} s more", flush=True)
    from airflow.__main__ import main as airflow_main

    sys.argv = [*args]
    airflow_main()


if __name__ == "__main__":
    main()

"""A training run on the demo data, split into imports, data load, fit, evaluation and MLflow logging.

Targets (DESIGN.md "Speed targets"): "Training: everything except ``fit`` ≤ half of a run on the demo data;
``log_model`` ≤ 0.1 s." The subject is airloop's real code path, ``airloop.stages.train.runner.train`` on the bikes
spec (resolve the window, assemble the validated partitions, split, fit, evaluate + permutation importance +
plots; on a second thread ``registry.TrainingRunLog``: params, metrics, dataset input, figures, ``log_model``,
register, alias), which returns its own phase timings (``data_s``, ``fit_s``, ``evaluate_s``, ``log_s``). The MLflow
run is logged on its own thread while the task's thread fits and evaluates: it opens the run and logs the training
data during the fit, and the model during the evaluation; ``log_s`` is what the task still waits for after its
evaluation (figures, JSON files, metrics, the registration). The phases are the task thread's; the total is its
wall time.

The overhead share is ``(total - fit) / total``, with the fit alone: the run's fit done again right after it, with the
same arguments and nothing beside it (during the run the logging thread shares the two cores with the fit, so the
run's ``fit_s`` holds time the two took from each other, and a share with it would look better the more the
logging slowed the fit). The target is checked on the run inside the task, without the
process's imports (the Airflow task process's imports are what the parse-time benchmark measures); the share
with this process's imports included is printed beside it. The imports include ``airflow.sdk``, which every
Airflow task process has loaded before its task runs (until 2026-12-07 ``train`` imported it during ``data_s``,
reading its warehouse connection, which made ``data_s`` about 1 s).

``train`` freezes the objects the process holds at the start of each phase (``gc.freeze``, thawed after the run),
so full garbage collections walk only what the run allocates; the child measures the run as a task runs it.

Two regimes, each on its own throw-away ``AIRLOOP_HOME``, their repetitions alternating (the order swapped each
repetition):

* ``server`` (**the verdict**): ``MLFLOW_TRACKING_URI`` points at an MLflow tracking server that this benchmark starts
  the way the embedded runtime starts it (``airloop.ops.runtime.processes._command`` and ``_component_env`` on
  ``environment.airflow_env``: ``mlflow server`` with its SQLite backend and artifact folder under that home, one
  worker, source validation; on a free port; stopped, with its process group, at the end), and the task processes
  get the MLflow variables the runtime gives every task (:data:`TASK_MLFLOW_VARS`). Every train task of the
  pipeline runs this way: the embedded runtime (``make up``, ``make demo``) sets ``MLFLOW_TRACKING_URI`` to its
  server for every task, and the distributed stack runs its own server. The target is about a training run as the
  pipeline runs it, so it is checked here. Through a server each MLflow call is an HTTP request and the artifacts
  (figures, JSON, the model's files) are uploaded through it; the client pays none of MLflow's store imports.
* ``local_store`` (informative): ``MLFLOW_TRACKING_URI`` unset, MLflow's local SQLite store, as a plain ``python``
  call of ``train`` without a server (tests, notebooks). Its first store access imports MLflow's SQL store
  (SQLAlchemy ORM, alembic: about 330 modules, about 0.5 s) inside ``log_s``; no pipeline task pays that.

Child processes (``python -m benchmarks.training --child MODE``):

* ``server`` (once): the runtime's command and environment for the MLflow server of the ``server`` regime's home;
* ``setup`` (per regime; untimed except ``store_init_s``): seed the source, write a validated lake partition per
  interval of the spec, create the MLflow store (local store: schema creation, once per store; server: the
  server made its schema when it started, this creates the experiment through it), one warm-up training
  (``max_iter`` 5: the same code path with a cheap fit; it fills the bytecode cache and matplotlib's font cache);
* ``rep``, once per repetition and regime, so imports are cold: the imports ``train`` needs, then the rest of
  what the embedded runtime's scheduler imports before it forks its task processes
  (``airloop.ops.runtime.preload.PRELOAD``: every task process inherits those), timed first; one ``train`` with
  its phases (``evaluate_s`` and the logging thread's calls broken down by thin timing wrappers around the
  library's calls, installed in the child only; the library is not changed); then, :data:`LOG_MODEL_CALLS` times
  each and alternating, airloop's own model logging (the ``log_model`` target) and a bare
  ``mlflow.sklearn.log_model`` for comparison, each in its own active run; in the last repetition of the verdict
  regime also the bare call with requirements inferred by MLflow, once, for contrast.

The ``log`` calls are the logging thread's (``logging_thread_calls_s`` is their sum: how long that thread talked to
the store, overlapping the fit and the evaluation); the figures are drawn by ``registry.render_figures`` on that
thread too, after the evaluation (reported under ``calls``, ``phase: detail``, inside ``log`` calls' time).

The ``log_model`` subject is the call ``log_training_run`` makes, ``airloop.adapters.registry._log_model``, on the
pipeline and rows that ``train`` just passed to it: the signature (inferred from a prediction on the
``SIGNATURE_ROWS`` rows), the input example (5 rows), the explicit pins, cloudpickle. As in ``log_training_run``, the
run's params are logged before it (the logged model copies them) and its metrics after it, linked to the model
(untimed: not part of the call). It runs on one thread, as ``train`` runs its logging (``threads.few_rows``). The
bare call (``mlflow.sklearn.log_model`` with the same pins, no signature, no input example, what this benchmark
measured before) is not a baseline of the target, only a comparison: it is less work (no signature, no example)
but still pays MLflow's re-check of the pins against the installed packages, which airloop's call skips. The
first call of a process is the one inside ``train`` (``calls``).

The fit (HistGradientBoostingRegressor) and the permutation importance use OpenMP threads on every core. On a busy
machine they slow down far more than the rest (threads wait for each other), so load lowers the overhead share:
read it with the load average and the per-repetition samples.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import importlib
import logging
import os
import signal
import socket
import statistics
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from benchmarks.common import child_env, child_exit, emit, fmt_s, ratio, run_child, summary, target

_STARTED_AT = time.monotonic()  # the child's first moment after the interpreter and this module (stdlib only)

MODEL = "bikes"
REQUEST = {"reason": "bench", "window_start": None, "window_end": None, "overrides": {}}
#: The warm-up training runs the same code with a few boosting iterations: it only has to compile and load things.
WARMUP_OVERRIDES = {"max_iter": 5}
TARGET_OVERHEAD = (0.5, "DESIGN.md: training: everything except fit ≤ half of a run on the demo data")
TARGET_LOG_MODEL = (0.1, "DESIGN.md: training: log_model ≤ 0.1 s")
#: Timed calls of airloop's model logging (and of the bare MLflow call) per repetition, after ``train``.
LOG_MODEL_CALLS = 3
#: The label of airloop's model logging among the timed calls inside ``train`` (the process's first call).
LOG_MODEL_CALL = "_log_model (signature, input example, pins)"
#: The label of the fit inside ``train`` (on the task's thread, while the logging thread runs beside it).
FIT_CALL = "fit (on the task's thread, the logging thread beside it)"
#: The label of the signature's inference (a prediction on ``SIGNATURE_ROWS`` rows), part of the model's logging.
SIGNATURE_CALL = "signature_sample (the logged model's signature: a prediction on 200 rows)"

#: The regimes (see the module docstring); the targets are checked on the first, as the pipeline runs ``train``.
REGIMES = ("server", "local_store")
VERDICT_REGIME = "server"
#: What the embedded runtime gives every task process about MLflow (``environment.airflow_env``).
TASK_MLFLOW_VARS = ("MLFLOW_TRACKING_URI", "MLFLOW_DISABLE_TELEMETRY", "DO_NOT_TRACK", "NO_PROXY", "no_proxy")
#: Seconds the benchmark's MLflow server may take to answer its health check.
SERVER_START_TIMEOUT = 120

#: What ``train_stage.train`` imports, by library, in import order (each group's time is what it adds).
IMPORT_GROUPS: tuple[tuple[str, tuple[str, ...]], ...] = (
    # The task SDK runs every Airflow task (its task runner is airflow.sdk.execution_time.task_runner), so a train
    # task finds it imported; train reads its connections through it (airloop.adapters.db.engine_for). Timed inside
    # the run it made most of data_s (about 1 s of 1.1 s, issue 16), a process import the task never pays there.
    ("airflow.sdk", ("airflow.sdk",)),
    ("numpy, pandas", ("numpy", "pandas")),
    ("pyarrow", ("pyarrow", "pyarrow.parquet")),
    (
        "scikit-learn",
        (
            "sklearn.compose",
            "sklearn.pipeline",
            "sklearn.preprocessing",
            "sklearn.ensemble",
            "sklearn.inspection",
            "sklearn.metrics",
        ),
    ),
    ("matplotlib", ("matplotlib", "matplotlib.pyplot")),  # MPLBACKEND=Agg in the child, as plots() sets
    ("mlflow", ("mlflow", "mlflow.sklearn", "mlflow.models", "mlflow.data")),
    (
        "airloop",
        (
            "airloop.stages.promote.runner",
            "airloop.stages.train.steps",
            "airloop.adapters.registry",
            "airloop.core.spec",
            "airloop.adapters.lake",
        ),
    ),
)

#: The calls timed inside a run: (phase, label, module, attribute). A call nested in another timed call counts
#: for the outer one only. ``git_commit`` runs between evaluation and logging (in neither phase).
WRAPPED: tuple[tuple[str, str, str, str], ...] = (
    ("fit", FIT_CALL, "airloop.stages.train.steps", "fit"),
    ("evaluate", "evaluate (holdout metrics, slices)", "airloop.stages.train.steps", "evaluate"),
    ("evaluate", "feature_importance (permutation)", "airloop.stages.train.steps", "feature_importance"),
    ("evaluate", "evaluation_plots (the holdout's figures)", "airloop.stages.train.steps", "evaluation_plots"),
    ("evaluate", "importance_plot", "airloop.stages.train.steps", "importance_plot"),
    ("evaluate", SIGNATURE_CALL, "airloop.adapters.registry", "signature_sample"),
    ("between", "git_commit (subprocess)", "airloop.adapters.registry", "git_commit"),
    ("log", "client() (tracking + registry URIs, client)", "airloop.adapters.registry", "client"),
    ("log", "ensure_experiment", "airloop.adapters.registry", "ensure_experiment"),
    ("log", "ensure_registered_model", "airloop.adapters.registry", "ensure_registered_model"),
    ("log", "start_run", "mlflow", "start_run"),
    ("log", "log_params", "mlflow", "log_params"),
    ("log", "log_metrics", "mlflow", "log_metrics"),
    (
        "log",
        "training_dataset (the dataset input; its schema is built in log_input)",
        "airloop.adapters.registry",
        "training_dataset",
    ),
    ("log", "log_input", "mlflow", "log_input"),
    ("log", "log_dict (lineage, evaluation, importance)", "mlflow", "log_dict"),
    ("log", "log_artifact (3 PNGs, drawn by render_figures)", "mlflow", "log_artifact"),
    ("log", LOG_MODEL_CALL, "airloop.adapters.registry", "_log_model"),
    ("log", "end_run", "mlflow.tracking.fluent", "end_run"),
    ("log", "create_model_version (with its description)", "mlflow", "MlflowClient.create_model_version"),
    (
        "log",
        "set_logged_model_tags (the logged model's link to its version)",
        "mlflow",
        "MlflowClient.set_logged_model_tags",
    ),
    ("log", "set_alias (@challenger)", "airloop.adapters.registry", "set_alias"),
)

#: MLflow's SQL store, imported in the setup child before the store is created (they are not part of store_init_s).
STORE_MODULES = (
    "mlflow.store.db.utils",
    "mlflow.store.tracking.sqlalchemy_store",
    "mlflow.store.model_registry.sqlalchemy_store",
)

#: MLflow internals timed even inside the calls above (label, module, attribute); skipped if they move or are not
#: imported yet (wrapping must not import anything early).
DETAILS: tuple[tuple[str, str, str], ...] = (
    (
        "render_figures (the PNGs, on the logging thread after the evaluation)",
        "airloop.adapters.registry",
        "render_figures",
    ),
    (
        "log_model → module-to-distribution map of every installed package (MLflow's requirement check)",
        "mlflow.utils.requirements_utils",
        "_init_packages_to_modules_map",
    ),
)

#: The two ways MLflow infers requirements when none are given: ``uv export`` of the project's lock when the
#: working directory is a uv project (this checkout is; MLFLOW_UV_AUTO_DETECT defaults to true), otherwise a
#: subprocess that loads the model and records what it imports.
INFERRED = {
    "uv_export": {"MLFLOW_UV_AUTO_DETECT": "true"},
    "captured_imports": {"MLFLOW_UV_AUTO_DETECT": "false"},
}


# --- child processes ---------------------------------------------------------------------------------------------


class CallTimer:
    """Thin timing wrappers around library functions (in this process only), undone by :meth:`restore`."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}
        self.calls: dict[str, int] = {}
        self.modules: dict[str, int] = {}
        self.captured: dict[str, Any] = {}
        self._local = threading.local()  # nesting is per thread: train logs its MLflow run on a second thread
        self._undo: list[tuple[Any, str, Any]] = []

    def wrap(self, label: str, module: str, attribute: str, *, nested: bool = False) -> bool:
        """Time calls of ``module.attribute``; ``nested`` ones are timed inside other timed calls too.

        Returns False (and times nothing) when the attribute does not exist (a private detail that moved).
        """
        owner: Any = importlib.import_module(module)
        *path, name = attribute.split(".")
        for part in path:
            owner = getattr(owner, part, None)
        original = getattr(owner, name, None)
        if original is None:
            return False

        @functools.wraps(original)
        def timed(*args: Any, **kwargs: Any) -> Any:
            self.captured.setdefault(label, (args, kwargs))  # the first call's arguments, to repeat it after train
            depth = getattr(self._local, "depth", 0)
            if depth and not nested:
                return original(*args, **kwargs)
            self._local.depth = depth + (0 if nested else 1)
            modules = len(sys.modules)
            start = time.perf_counter()
            try:
                return original(*args, **kwargs)
            finally:
                self.seconds[label] = self.seconds.get(label, 0.0) + time.perf_counter() - start
                self.calls[label] = self.calls.get(label, 0) + 1
                self.modules[label] = self.modules.get(label, 0) + len(sys.modules) - modules
                self._local.depth = depth

        setattr(owner, name, timed)
        self._undo.append((owner, name, original))
        return True

    def restore(self) -> None:
        for owner, name, original in reversed(self._undo):
            setattr(owner, name, original)
        self._undo.clear()


#: The last import group: what the embedded runtime's scheduler imports before it forks task processes.
PRELOAD_GROUP = "the runtime's preload (rest)"


def _runtime_preload() -> tuple[str, ...]:
    """``airloop.ops.runtime.preload.PRELOAD``: every task process of the embedded runtime inherits these."""
    from airloop.ops.runtime.preload import PRELOAD

    return PRELOAD


def _time_imports() -> dict[str, Any]:
    """Import what ``train`` needs, group by group, in a fresh process; seconds per group and in all."""
    before = set(sys.modules)
    groups: dict[str, float] = {}
    start = time.perf_counter()
    for label, modules in (*IMPORT_GROUPS, (PRELOAD_GROUP, _runtime_preload())):
        t = time.perf_counter()
        for module in modules:
            importlib.import_module(module)
        groups[label] = time.perf_counter() - t
    total = time.perf_counter() - start
    return {"total_s": total, "groups_s": groups, "modules": len(set(sys.modules) - before)}


def _spec() -> Any:
    from airloop.core.spec import get_spec

    return get_spec(MODEL)


def child_setup() -> dict[str, Any]:
    """Seed the source, write validated partitions, create the MLflow store, train once (all untimed but one)."""
    from airloop.adapters import registry as tracking
    from airloop.adapters.datasets import seed
    from airloop.adapters.db import engine_for
    from airloop.adapters.lake import Lake
    from airloop.adapters.source import extract_interval
    from airloop.core import settings as config
    from airloop.core.contracts import RunInfo, TrainRequest
    from airloop.core.intervals import expected_intervals
    from airloop.stages.train import runner as train_stage

    # The throw-away source database, whatever the calling shell has configured for the connection.
    conn_var = f"AIRFLOW_CONN_{config.SOURCE_CONN_ID.upper()}"
    os.environ[conn_var] = config.default_connections()[config.SOURCE_CONN_ID]
    config.paths().source_db.parent.mkdir(parents=True, exist_ok=True)
    spec = _spec()
    engine = engine_for(config.SOURCE_CONN_ID)
    t = time.perf_counter()
    source_rows = seed(engine, config.paths().data_dir / "bike_sharing").rows
    seed_s = time.perf_counter() - t

    t = time.perf_counter()
    lake = Lake(config.paths().lake)
    partitions = rows = 0
    for interval in expected_intervals(spec, until=datetime.now(UTC)):
        frame = extract_interval(engine, spec, interval).frame
        if frame.empty:
            continue
        lake.write(
            spec.name,
            "validated",
            interval.key,
            frame,
            meta={
                "interval_start": interval.start.isoformat(),
                "interval_end": interval.end.isoformat(),
                "suite_digests": {"schema": "bench"},
            },
        )
        partitions += 1
        rows += len(frame)
    lake_s = time.perf_counter() - t

    # MLflow's store modules first (SQLAlchemy, alembic, the ORM models), so that store_init_s is the creation of
    # the store's schema (alembic migrations) and of the experiment: the cost paid once per store.
    t = time.perf_counter()
    for module in STORE_MODULES if not tracking.tracking_uri().startswith("http") else ():  # a server has its own
        importlib.import_module(module)
    store_imports_s = time.perf_counter() - t
    modules = len(sys.modules)
    t = time.perf_counter()
    tracking.ensure_experiment(spec.name, spec.description)
    store_init_s = time.perf_counter() - t
    store_init_modules = len(sys.modules) - modules

    t = time.perf_counter()
    warmup = train_stage.train(
        spec, TrainRequest.from_dict({**REQUEST, "overrides": WARMUP_OVERRIDES}), RunInfo()
    ).to_dict()
    warmup_s = time.perf_counter() - t
    return {
        "source_rows": source_rows,
        "seed_s": seed_s,
        "partitions": partitions,
        "partition_rows": rows,
        "lake_write_s": lake_s,
        "store_init_s": store_init_s,
        "store_init_modules_imported": store_init_modules,
        "store_imports_s": store_imports_s,
        "tracking_uri": tracking.tracking_uri(),
        "warmup": {"total_s": warmup_s, "timings": warmup["timings"], "version": warmup["version"]},
    }


def child_server() -> dict[str, Any]:
    """How the embedded runtime starts its MLflow server, for this ``AIRLOOP_HOME``, and what its tasks see.

    The command and environment are the runtime's own (``processes._command`` / ``_component_env`` on
    ``environment.airflow_env``), on the port in ``AIRLOOP_MLFLOW_PORT``; the task side gets the variables
    ``airflow_env`` gives every task process that concern MLflow (its URI, telemetry off, no proxy for loopback).
    """
    from airloop.core.settings import paths
    from airloop.ops.runtime import environment, processes

    env = environment.airflow_env()
    _api_port, mlflow_port = environment._ports(env)
    (paths().mlflow / "artifacts").mkdir(parents=True, exist_ok=True)  # as up() makes it
    server_env = processes._component_env("mlflow", env)
    return {
        "cmd": processes._command("mlflow", _api_port, mlflow_port, env),
        "cwd": str(paths().home),
        "env": {k: v for k, v in server_env.items() if os.environ.get(k) != v},
        "client_env": {k: env[k] for k in TASK_MLFLOW_VARS if k in env},
        "url": env["MLFLOW_TRACKING_URI"],
    }


class _Records(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(f"{record.name}: {record.getMessage().splitlines()[0][:200]}")


def _fit_alone(captured: Any) -> float:
    """Seconds of the run's fit done again with the same arguments, nothing else running in the process.

    With the process's objects frozen out of the garbage collector's full collections, as ``train`` does at the
    start of each phase (``runner._frozen_heap``): after the run they are thawed, and a full collection walking
    them (0.1-0.4 s) would land in this fit and not in the run's.
    """
    import gc

    from airloop.stages.train import steps

    args, kwargs = captured
    gc.freeze()
    try:
        start = time.perf_counter()
        steps.fit(*args, **kwargs)
        return time.perf_counter() - start
    finally:
        gc.unfreeze()


def _airloop_log_model_once(
    captured: Mapping[str, Any], experiment_id: str, *, seen_warnings: list[str] | None = None
) -> float:
    """Seconds of one ``registry._log_model`` in its own run, as ``log_training_run`` calls it (see the docstring)."""
    import mlflow
    from threadpoolctl import threadpool_limits

    from airloop.adapters import registry as tracking

    (pipeline, x), _ = captured[SIGNATURE_CALL]
    params_args, params_kwargs = captured["log_params"]
    metrics = captured["log_metrics"][0][0]
    records = _Records()
    logging.getLogger("mlflow").addHandler(records)
    try:
        with (
            mlflow.start_run(experiment_id=experiment_id, run_name="bench-airloop-log-model"),
            threadpool_limits(limits=1),  # train's threads.few_rows around its evaluation and the signature
        ):
            mlflow.log_params(*params_args, **params_kwargs)
            start = time.perf_counter()
            signature, example = tracking.signature_sample(pipeline, x)
            _model_uri, model_id = tracking._log_model(pipeline, signature, example)
            seconds = time.perf_counter() - start
            mlflow.log_metrics(metrics, model_id=model_id)
    finally:
        logging.getLogger("mlflow").removeHandler(records)
    if seen_warnings is not None:
        seen_warnings.extend(records.messages)
    return seconds


def _log_model_once(pipeline: Any, experiment_id: str, env: Mapping[str, str] | None = None) -> dict[str, Any]:
    """One bare ``mlflow.sklearn.log_model`` of the fitted pipeline in its own active run (no signature, example).

    Explicit pins (airloop's call) when ``env`` is None; otherwise no ``pip_requirements`` (MLflow infers them)
    with ``env`` set for the call.
    """
    import mlflow
    import mlflow.sklearn

    from airloop.adapters import registry as tracking

    kwargs: dict[str, Any] = {} if env is not None else {"pip_requirements": tracking.pip_requirements()}
    saved = {k: os.environ.get(k) for k in env or {}}
    os.environ.update(env or {})
    records = _Records()
    logging.getLogger("mlflow").addHandler(records)
    try:
        with mlflow.start_run(experiment_id=experiment_id, run_name="bench-log-model"):
            start = time.perf_counter()
            info = mlflow.sklearn.log_model(pipeline, name="model", serialization_format="cloudpickle", **kwargs)
            seconds = time.perf_counter() - start
    finally:
        logging.getLogger("mlflow").removeHandler(records)
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
    requirements = Path(mlflow.artifacts.download_artifacts(info.model_uri)) / "requirements.txt"
    pins = [r for r in requirements.read_text().splitlines() if r.strip() and not r.startswith("#")]
    return {"seconds": seconds, "requirements": len(pins), "requirements_head": pins[:12], "warnings": records.messages}


def child_rep(with_inferred: bool) -> dict[str, Any]:
    """One repetition in a fresh process: imports, one timed ``train``, one separate ``log_model``."""
    imports = _time_imports()
    before_train = set(sys.modules)

    from airloop.adapters import registry as tracking
    from airloop.core.contracts import RunInfo, TrainRequest
    from airloop.stages.train import runner as train_stage

    spec = _spec()
    timer = CallTimer()
    for _phase, label, module, attribute in WRAPPED:
        if not timer.wrap(label, module, attribute):
            raise RuntimeError(f"cannot time {module}.{attribute}: update WRAPPED in benchmarks/training.py")
    details = [
        label
        for label, module, attribute in DETAILS
        if module in sys.modules and timer.wrap(label, module, attribute, nested=True)
    ]
    start = time.perf_counter()
    try:
        result = train_stage.train(spec, TrainRequest.from_dict(REQUEST), RunInfo()).to_dict()
    finally:
        timer.restore()
    total_s = time.perf_counter() - start
    new = set(sys.modules) - before_train
    fit_alone_s = _fit_alone(timer.captured[FIT_CALL])
    pipeline = timer.captured[LOG_MODEL_CALL][0][0]
    from threadpoolctl import threadpool_info

    experiment_id = tracking.ensure_experiment(spec.name, spec.description)
    airloop_s: list[float] = []
    bare: list[dict[str, Any]] = []
    airloop_warnings: list[str] = []
    for call in range(LOG_MODEL_CALLS):  # alternating, the first one first in every other repetition
        first_airloop = (call + int(with_inferred)) % 2 == 0
        if not first_airloop:
            bare.append(_log_model_once(pipeline, experiment_id))
        airloop_s.append(_airloop_log_model_once(timer.captured, experiment_id, seen_warnings=airloop_warnings))
        if first_airloop:
            bare.append(_log_model_once(pipeline, experiment_id))
    explicit = bare[-1]
    out: dict[str, Any] = {
        "started_at": _STARTED_AT,
        "imports": imports,
        "train_total_s": total_s,
        "fit_alone_s": fit_alone_s,
        "timings": result["timings"],
        "calls_s": timer.seconds,
        "calls_n": timer.calls,
        "calls_modules": timer.modules,
        "details": details,
        "threadpools": [
            {k: pool.get(k) for k in ("user_api", "internal_api", "num_threads")} for pool in threadpool_info()
        ],
        "version": result["version"],
        "train_rows": result["train_rows"],
        "holdout_rows": result["holdout_rows"],
        "partitions": result["partitions"],
        "rmse": result["metrics"]["rmse"],
        "modules_imported_during_train": len(new),
        "packages_imported_during_train": sorted({m.split(".")[0] for m in new}),
        "log_model_explicit": explicit,
        "log_model_airloop_s": airloop_s,
        "log_model_airloop_warnings": sorted(set(airloop_warnings)),
        "log_model_bare_s": [b["seconds"] for b in bare],
    }
    if with_inferred:
        out["log_model_inferred"] = {
            name: _log_model_once(pipeline, experiment_id, env) for name, env in INFERRED.items()
        }
    return out


# --- the orchestrating side ----------------------------------------------------------------------------------------


def _env(scratch: Path, regime: str) -> dict[str, str]:
    env = {
        **child_env(scratch / f"training-{regime}"),
        "PYTHONPYCACHEPREFIX": str(scratch / "pycache"),
        "MPLBACKEND": "Agg",
        "MPLCONFIGDIR": str(scratch / "matplotlib"),
    }
    for name in ("PYTHONDONTWRITEBYTECODE", "MLFLOW_TRACKING_URI", "MLFLOW_REGISTRY_URI"):
        env.pop(name, None)
    env.pop("AIRLOOP_MLFLOW_ARTIFACT_ROOT", None)
    return env


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


#: Loopback: never through an HTTP proxy the calling shell may configure (the runtime sets NO_PROXY for the same).
_NO_PROXY = urllib.request.build_opener(urllib.request.ProxyHandler({}))


@contextmanager
def _mlflow_server(env: Mapping[str, str]) -> Iterator[tuple[dict[str, str], dict[str, Any]]]:
    """An MLflow tracking server as the embedded runtime starts it (``child_server``), on a free port under
    ``env``'s ``AIRLOOP_HOME``; yields the task processes' environment and what was started. Stopped (its whole
    process group: the server forks its workers) when the block ends."""
    env = {**env, "AIRLOOP_MLFLOW_PORT": str(_free_port())}
    info = _child("server", env)
    log_path = Path(info["cwd"]) / "mlflow-server.log"
    started = time.monotonic()
    with log_path.open("ab") as log:
        proc = subprocess.Popen(
            info["cmd"],
            cwd=info["cwd"],
            env={**env, **info["env"]},
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        while True:
            try:
                with _NO_PROXY.open(f"{info['url']}/health", timeout=2) as answer:
                    if answer.status == 200:
                        break
            except OSError:
                pass
            if proc.poll() is not None or time.monotonic() - started > SERVER_START_TIMEOUT:
                tail = "\n".join(log_path.read_text(errors="replace").splitlines()[-30:])
                raise RuntimeError(f"the benchmark's MLflow server did not answer on {info['url']}:\n{tail}")
            time.sleep(0.25)
        ready_s = time.monotonic() - started
        yield {**env, **info["client_env"]}, {"url": info["url"], "command": info["cmd"], "ready_s": ready_s}
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


def _child(mode: str, env: Mapping[str, str], *extra: str) -> dict[str, Any]:
    return run_child([sys.executable, "-m", "benchmarks.training", "--child", mode, *extra], env, timeout=600)


def _share(total: float, fit: float) -> float:
    return (total - fit) / total if total > 0 else float("nan")


def run(scratch: Path, *, repeat: int = 7) -> dict[str, Any]:
    """Per regime a setup child, then one child per repetition and regime; print a summary, return the results.

    The top level is the verdict regime's (:data:`VERDICT_REGIME`, with ``targets``); ``regimes.local_store``
    holds the other one (its figures against the limits under ``limits``, not as targets).
    """
    envs = {regime: _env(scratch, regime) for regime in REGIMES}
    with _mlflow_server(envs["server"]) as (client_env, server):
        envs["server"] = client_env
        setups = {regime: _child("setup", envs[regime]) for regime in REGIMES}
        reps: dict[str, list[dict[str, Any]]] = {regime: [] for regime in REGIMES}
        for rep in range(repeat):
            for regime in REGIMES if rep % 2 == 0 else REGIMES[::-1]:
                inferred = rep == repeat - 1 and regime == VERDICT_REGIME
                spawned_at = time.monotonic()
                out = _child("rep", envs[regime], *(["--inferred"] if inferred else []))
                out["interpreter_start_s"] = out["started_at"] - spawned_at
                reps[regime].append(out)
    per = {regime: _aggregate(regime, reps[regime], setups[regime]) for regime in REGIMES}
    results: dict[str, Any] = {
        "benchmark": "training",
        "verdict_regime": VERDICT_REGIME,
        "server": server,
        "method": {
            "repeat": repeat,
            "subject": "airloop.stages.train.runner.train(get_spec('bikes'), TrainRequest('bench'), RunInfo()) on the "
            "demo "
            "data: its own phase timings (data_s, fit_s, evaluate_s, log_s) and its wall time (total_s)",
            "processes": "one setup child (seed, validated lake partitions, MLflow store creation, one warm-up "
            "training), then one fresh child per repetition: imports timed first, then one train, then one "
            "separate log_model",
            "regimes": "server (the verdict): MLFLOW_TRACKING_URI points at an MLflow tracking server started as the "
            "embedded runtime starts it (airloop.ops.runtime.processes: same command, flags and environment; SQLite "
            "backend and artifact folder under its own throw-away AIRLOOP_HOME, a free port, stopped at the end), "
            "as every train task of the runtime and of the distributed stack talks to one; local_store: "
            "MLFLOW_TRACKING_URI unset, MLflow's local SQLite store, as a plain python call without a server. Each "
            "regime has its own AIRLOOP_HOME, setup child and store; the repetitions alternate between regimes "
            "(the order swapped every repetition); every repetition adds a run and a registered version",
            "bytecode": "written to and read from a scratch PYTHONPYCACHEPREFIX (the setup child fills it)",
            "imports": "the modules train needs, by library (IMPORT_GROUPS), then the rest of the runtime's "
            "PRELOAD (what every task process of the embedded runtime inherits from its scheduler), in a fresh "
            "process before anything else; what is imported lazily after that counts in the run",
            "overhead_share": "(total - fit) / total per repetition, median, where fit is fit_alone_s: the run's "
            "fit done again right after it with the same arguments and nothing beside it (during the run the "
            "logging thread shares the cores with the fit, so fit_s holds time the two took from each other); "
            "the target is checked on in_task (the train call, without the process's imports, which the "
            "parse-time benchmark covers); with_imports adds this process's imports_s to total; in_task_phases "
            "(informative) uses fit_s",
            "calls": "thin timing wrappers around the library's calls, installed in the child only (a call nested "
            "in another timed call counts for the outer one; 'detail' calls are timed inside others too); "
            "modules_imported: modules first imported during the call (last repetition); the library is not "
            "changed",
            "log_model": f"the target: airloop.adapters.registry._log_model(pipeline, x_sample) with the arguments "
            f"train passed it (signature, input example, pins, cloudpickle), {LOG_MODEL_CALLS} times per "
            "repetition after train, each in its own active run with the run's params logged before and its "
            "metrics after (untimed), on one thread as train runs it; log_model_first_call_s is the call inside "
            "train (the process's first)",
            "log_model_bare": f"mlflow.sklearn.log_model(pipeline, name='model', pip_requirements=tracking."
            f"pip_requirements(), serialization_format='cloudpickle'), no signature or input example, "
            f"{LOG_MODEL_CALLS} times per repetition alternating with the target (comparison only); the inferred "
            "variants once, in the last repetition, without pip_requirements: "
            + "; ".join(f"{k}: {v}" for k, v in INFERRED.items()),
        },
        **per[VERDICT_REGIME],
        "regimes": {regime: _informative(per[regime]) for regime in REGIMES if regime != VERDICT_REGIME},
    }
    print_summary(results)
    return results


def _informative(regime: dict[str, Any]) -> dict[str, Any]:
    """A regime's results without targets (``run.py`` reports every dict with ``met`` and ``limit`` as one)."""
    limits = {
        name: {"limit": t["limit"], "within": t["met"], "source": t["source"]} for name, t in regime["targets"].items()
    }
    return {**{k: v for k, v in regime.items() if k != "targets"}, "limits": limits}


def _aggregate(regime: str, reps: list[dict[str, Any]], setup: dict[str, Any]) -> dict[str, Any]:
    """One regime's repetitions: medians, shares, calls, log_model, targets."""
    last = reps[-1]

    def series(get: Callable[[dict[str, Any]], float]) -> list[float]:
        return [float(get(r)) for r in reps]

    imports = series(lambda r: r["imports"]["total_s"])
    total = series(lambda r: r["train_total_s"])
    phases = {k: series(lambda r, k=k: r["timings"][k]) for k in ("data_s", "fit_s", "evaluate_s", "log_s")}
    # "fit" in the shares is the fit alone (the same fit again, right after the run, with nothing beside it): while
    # the logging thread runs, fit_s also holds the time the two threads took from each other on this 2-core
    # machine, so a share with fit_s would look better the more the logging slowed the fit.
    fit = series(lambda r: r["fit_alone_s"])
    shares = {
        "in_task": ([_share(t, f) for t, f in zip(total, fit, strict=True)], 0.0, fit),
        "with_imports": (
            [_share(t + i, f) for t, f, i in zip(total, fit, imports, strict=True)],
            statistics.median(imports),
            fit,
        ),
        "in_task_phases": ([_share(t, f) for t, f in zip(total, phases["fit_s"], strict=True)], 0.0, phases["fit_s"]),
    }
    overhead = {
        key: {**summary(values), "of_medians": _share(statistics.median(total) + extra, statistics.median(fits))}
        for key, (values, extra, fits) in shares.items()
    }
    calls: dict[str, dict[str, Any]] = {}
    for phase, label in [(p, lbl) for p, lbl, *_ in WRAPPED] + [("detail", lbl) for lbl, *_ in DETAILS]:
        if phase == "detail" and label not in last["details"]:
            continue
        calls[label] = {
            "phase": phase,
            "calls": last["calls_n"].get(label, 0),
            "modules_imported": last["calls_modules"].get(label, 0),
            **summary(series(lambda r, label=label: r["calls_s"].get(label, 0.0))),
        }
    thread_calls = [sum(r["calls_s"].get(lbl, 0.0) for ph, lbl, *_ in WRAPPED if ph == "log") for r in reps]
    airloop_calls = [s for r in reps for s in r["log_model_airloop_s"]]
    bare_calls = [s for r in reps for s in r["log_model_bare_s"]]
    last_explicit = last["log_model_explicit"]["seconds"]
    inferred = {
        name: {
            **data,
            "ratio_to_explicit": ratio([data["seconds"]], [last_explicit]),
            "new_warnings": [w for w in data["warnings"] if w not in last["log_model_explicit"]["warnings"]],
        }
        for name, data in last.get("log_model_inferred", {}).items()
    }
    results: dict[str, Any] = {
        "regime": regime,
        "tracking_uri": setup["tracking_uri"],
        "setup": setup,
        "store_init_s": setup["store_init_s"],
        "data": {
            "partitions": last["partitions"],
            "train_rows": last["train_rows"],
            "holdout_rows": last["holdout_rows"],
            "rmse": last["rmse"],
        },
        "imports_s": summary(imports),
        "imports_by_group_s": {
            label: summary(series(lambda r, label=label: r["imports"]["groups_s"][label]))
            for label in [label for label, _modules in IMPORT_GROUPS] + [PRELOAD_GROUP]
        },
        "interpreter_start_s": summary(series(lambda r: r["interpreter_start_s"])),
        "total_s": summary(total),
        **{name: summary(values) for name, values in phases.items()},
        "fit_alone_s": summary(fit),
        "unattributed_s": summary([t - sum(p[i] for p in phases.values()) for i, t in enumerate(total)]),
        "overhead_share": overhead,
        # Load slows fit (OpenMP threads on every core) far more than the rest: the seconds outside fit, and the share
        # they would be of a run whose fit took its fastest repetition, read the run without that distortion.
        "overhead_s": summary([t - f for t, f in zip(total, fit, strict=True)]),
        "overhead_share_at_fastest_fit": _share(
            statistics.median([t - f for t, f in zip(total, fit, strict=True)]) + min(fit), min(fit)
        ),
        "calls": calls,
        "logging_thread_calls_s": summary(thread_calls),
        "log_model_s": summary(airloop_calls),
        "log_model_first_call_s": calls[LOG_MODEL_CALL],
        "log_model_bare_s": summary(bare_calls),
        "log_model_ratio_to_bare": ratio(airloop_calls, bare_calls),
        "log_model_warnings": last["log_model_airloop_warnings"],
        "log_model_requirements": last["log_model_explicit"]["requirements_head"],
        "log_model_inferred": inferred,
        "imported_during_train": {
            "modules": last["modules_imported_during_train"],
            "packages": last["packages_imported_during_train"],
        },
        "threadpools": last["threadpools"],
        "targets": {
            "overhead_share": target(overhead["in_task"]["median"], *TARGET_OVERHEAD),
            "log_model_s": target(statistics.median(airloop_calls), *TARGET_LOG_MODEL),
        },
    }
    return results


def _verdict(t: Mapping[str, Any], limit: str) -> str:
    if "met" in t:
        return f"≤{limit} {'met' if t['met'] else 'MISSED'}"
    return f"≤{limit} {'within' if t['within'] else 'above'}, informative"


def print_summary(results: Mapping[str, Any]) -> None:
    """The headline numbers, per regime (the verdict regime first)."""
    server = results["server"]
    print(
        f"\n== training: MLflow server as the runtime starts it at {server['url']} (ready in "
        f"{fmt_s(server['ready_s'])}); targets checked on regime {results['verdict_regime']!r}"
    )
    _print_regime(results, results["method"])
    for regime in results["regimes"].values():
        _print_regime(regime, results["method"])


def _print_regime(results: Mapping[str, Any], m: Mapping[str, Any]) -> None:
    """One regime's headline numbers."""
    d, setup = results["data"], results["setup"]
    t = results.get("targets") or results["limits"]
    med = {k: results[k]["median"] for k in ("imports_s", "total_s", "data_s", "fit_s", "evaluate_s", "log_s")}
    print(
        f"\n== training [{results['regime']}: {results['tracking_uri'].split('://')[0]}]: train_stage.train on the "
        f"demo data ({m['repeat']} runs, a fresh process each, medians; "
        f"{d['partitions']} partitions, {d['train_rows']:,} train + {d['holdout_rows']:,} holdout rows)"
    )
    store = (
        f"MLflow store creation store_init_s {fmt_s(results['store_init_s'])} (schema, once per store; after "
        f"{fmt_s(setup['store_imports_s'])} of importing MLflow's SQL store)"
        if results["regime"] == "local_store"
        else f"the experiment's creation through the server {fmt_s(results['store_init_s'])} (the server made its "
        "schema when it started)"
    )
    print(
        f"  setup (untimed): {store}, warm-up train {fmt_s(setup['warmup']['total_s'])} (max_iter 5; compiles bytecode)"
    )
    groups = ", ".join(f"{k} {fmt_s(v['median'])}" for k, v in results["imports_by_group_s"].items())
    print(f"  imports (fresh process, before the run): {fmt_s(med['imports_s'])} ({groups})")
    total = med["total_s"]
    parts = ", ".join(
        f"{name.removesuffix('_s')} {fmt_s(med[name])} ({med[name] / total:.0%})"
        for name in ("data_s", "fit_s", "evaluate_s", "log_s")
    )
    between = fmt_s(results["unattributed_s"]["median"])
    print(f"  train (in the task): {fmt_s(total)} = {parts}, between phases {between}")
    ov, task = results["overhead_share"], results["overhead_share"]["in_task"]
    limit = f"{t['overhead_share']['limit']:.0%}"
    print(
        f"  overhead share (total - fit alone) / total, in the task (target checked on this): {task['median']:.0%} "
        f"(of medians {task['of_medians']:.0%}, range {task['min']:.0%}..{task['max']:.0%}; "
        f"{_verdict(t['overhead_share'], limit)}); fit alone {fmt_s(results['fit_alone_s']['median'])}, "
        f"fit in the run {fmt_s(med['fit_s'])} (the share with that: {ov['in_task_phases']['median']:.0%}, "
        "informative: the logging thread slows the fit beside it)"
    )
    print(
        f"  overhead share with this process's imports: {ov['with_imports']['median']:.0%} "
        f"(range {ov['with_imports']['min']:.0%}..{ov['with_imports']['max']:.0%}; informative)"
    )
    print(
        f"  seconds outside fit: {fmt_s(results['overhead_s']['median'])} (min {fmt_s(results['overhead_s']['min'])}); "
        f"their share of a run with the fastest fit ({fmt_s(results['fit_alone_s']['min'])}): "
        f"{results['overhead_share_at_fastest_fit']:.0%} (informative: load slows fit most)"
    )
    headings = (
        ("evaluate", "evaluate_s"),
        ("log", "the logging thread (the MLflow run, beside fit and evaluate)"),
        ("detail", "inside those"),
    )
    for phase, heading in headings:
        rows = sorted(
            ((k, v) for k, v in results["calls"].items() if v["phase"] == phase),
            key=lambda kv: kv[1]["median"],
            reverse=True,
        )
        text = ", ".join(
            f"{k} {fmt_s(v['median'])}"
            + (f" ({v['calls']} calls)" if v["calls"] > 1 else "")
            + (f" [+{v['modules_imported']} modules]" if v["modules_imported"] >= 10 else "")
            for k, v in rows
        )
        if text:
            print(f"  {heading} by call: {text}")
    print(
        f"  the logging thread's timed calls in all: {fmt_s(results['logging_thread_calls_s']['median'])}, of "
        f"which the task waited {fmt_s(med['log_s'])} after its evaluation (log_s)"
    )
    lm, tl, bare = results["log_model_s"], t["log_model_s"], results["log_model_bare_s"]
    print(
        f"  log_model, airloop's call (registry._log_model: signature, input example, pins; own run, warm, "
        f"{lm['n']} calls): {fmt_s(lm['median'])} (min {fmt_s(lm['min'])}; {_verdict(tl, fmt_s(tl['limit']))}); "
        f"first call of the process (inside train): {fmt_s(results['log_model_first_call_s']['median'])}"
    )
    print(
        f"  bare mlflow.sklearn.log_model (pins only, no signature or input example; comparison): "
        f"{fmt_s(bare['median'])} (min {fmt_s(bare['min'])}); airloop's call / bare "
        f"{results['log_model_ratio_to_bare']['of_medians']:.2f}x "
        f"(paired {results['log_model_ratio_to_bare']['paired_median']:.2f}x)"
        + "".join(f"; {w}" for w in results["log_model_warnings"])
    )
    for name, inf in results["log_model_inferred"].items():
        print(
            f"  log_model with inferred requirements, {name} (once): {fmt_s(inf['seconds'])} = "
            f"{inf['ratio_to_explicit']['of_medians']:.1f}x the bare call with pins in the same process; "
            f"{inf['requirements']} requirements" + "".join(f"; {w}" for w in inf["new_warnings"])
        )
    threads = ", ".join(f"{p['internal_api']} {p['num_threads']}" for p in results["threadpools"])
    print(
        f"  threads: {threads}. fit and permutation importance run on all cores; on a busy machine they slow "
        "down most, which lowers the overhead share (compare the samples in training.json)"
    )


def main(argv: Sequence[str] | None = None) -> int:
    """Child entry point (the orchestrating side is :func:`run`, called by ``benchmarks.run``)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--child", required=True, choices=("setup", "rep", "server"))
    parser.add_argument("--inferred", action="store_true", help="rep: also log_model with inferred requirements")
    args = parser.parse_args(argv)
    children = {"setup": child_setup, "server": child_server, "rep": lambda: child_rep(args.inferred)}
    emit(children[args.child]())
    return 0


if __name__ == "__main__":
    child_exit(main())

"""MLflow: where airloop's runs, models and aliases live.

One experiment and one registered model per model spec, named after it. Only aliases (``champion``,
``challenger``) mark a version's role; registry stages are deprecated and never used.

Where MLflow is: ``MLFLOW_TRACKING_URI`` when set (the embedded runtime points it at its server), else a
SQLite store under ``$AIRLOOP_HOME/mlflow``. The experiment's artifact location is always set explicitly
(otherwise MLflow writes artifacts into the worker's working directory): ``mlflow-artifacts:/<model>``
through a tracking server (which proxies to its artifact store: a folder, S3, ...), a folder under
``$AIRLOOP_HOME/mlflow/artifacts`` without one, or ``AIRLOOP_MLFLOW_ARTIFACT_ROOT/<model>`` when set.

Models are saved with cloudpickle and explicit pip requirements (no seconds of requirement inference), without
MLflow's redundant re-load of the saved model and re-check of the pins (:func:`_log_model`); the run's metrics are
logged after the model, linked to it in one write; the embedded SQLite store runs in WAL mode. Loading a pickled
model runs code from the registry, so MLflow 3.17 asks for ``MLFLOW_ALLOW_PICKLE_DESERIALIZATION=true``; airloop
sets it only while loading a version that its own training registered (:func:`trusted_source` checks the version's
run, tags, source and artifact location first). Write access to the model's experiment remains the trust boundary
(see docs/training-and-promotion.md, "Security").

An unreachable tracking server must never read as "not found": only MLflow's not-found answers mean "no such
alias / version"; anything else (a refused connection, a timeout, 5xx answers) propagates, and the task turns it
into a retryable failure that names the server (``airloop.adapters.outages``). :func:`client` also makes MLflow's HTTP
client give up within seconds (``outages.MLFLOW_CLIENT_DEFAULTS``, unless the environment sets them), so an
outage is ridden out by Airflow's retries rather than by minutes of waiting inside one try.
"""

from __future__ import annotations

import functools
import json
import logging
import os
import re
import subprocess
import tempfile
import threading
import warnings
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from importlib.metadata import version as dist_version
from pathlib import Path
from typing import TYPE_CHECKING, Any

from airloop.adapters.outages import mlflow_client_defaults
from airloop.core import settings
from airloop.core.contracts import PinnedChampion
from airloop.core.errors import ExpectedFailure, NoChampion
from airloop.core.settings import mlflow_tracking_uri, paths
from airloop.core.urls import mask_url, public_url

if TYPE_CHECKING:
    from collections.abc import Iterator

    from mlflow import MlflowClient

log = logging.getLogger(__name__)

CHAMPION = "champion"
CHALLENGER = "challenger"
MODEL_ARTIFACT = "model"
#: What a logged model needs to be loaded again (pinned to what trained it).
PIP_PACKAGES = ("scikit-learn", "pandas", "numpy", "scipy", "cloudpickle")
#: The run's artifact folder of the evaluation figures (``plots/<name>.png``).
PLOTS_ARTIFACT_DIR = "plots"
#: zlib level of the figures' PNGs (Pillow's default is 6; see render_figures).
PNG_COMPRESS_LEVEL = 1
#: Training rows the logged model's signature is inferred from (predicted once; the first 5 are its input example).
SIGNATURE_ROWS = 200


class RegistryProblem(ExpectedFailure, RuntimeError):
    """The registry does not hold what was asked for; the message names the model, version or alias."""


#: MLflow's error codes for "no such model, version or alias" (a missing alias is INVALID_PARAMETER_VALUE).
_NOT_FOUND = ("RESOURCE_DOES_NOT_EXIST", "INVALID_PARAMETER_VALUE")


def _not_found(exc: Exception) -> bool:
    """The registry answered that it has no such thing (as opposed to not answering at all)."""
    return getattr(exc, "error_code", None) in _NOT_FOUND


def tracking_uri() -> str:
    """The tracking and registry URI (:func:`airloop.core.settings.mlflow_tracking_uri`).

    Makes the embedded store's folder when no ``MLFLOW_TRACKING_URI`` is set.
    """
    uri = mlflow_tracking_uri()
    if not settings.mlflow_tracking_uri_set():
        paths().mlflow.mkdir(parents=True, exist_ok=True)
    return uri


def artifact_location(model: str) -> str | None:
    """Where a new experiment keeps its artifacts; None lets a tracking server choose.

    A server's choice (``mlflow-artifacts:/<experiment id>``) is what its basic-auth app can authorise: it
    checks an upload against the experiment whose id starts the path, so a named folder would make every
    non-admin upload a 403.
    """
    root = settings.mlflow_artifact_root()
    if root:
        return f"{root}/{model}"
    if tracking_uri().startswith(("http://", "https://")):
        return None
    folder = paths().mlflow / "artifacts" / model
    folder.mkdir(parents=True, exist_ok=True)
    return folder.as_uri()


def client() -> MlflowClient:
    """A client for the configured store (telemetry off; both tracking and registry on the same store)."""
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    os.environ.setdefault("DO_NOT_TRACK", "true")
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")  # no progress bars in task logs
    # MLflow prints "View run ... at: <tracking URI>" when a run ends, password and all; airloop logs its own
    # credential-free link (run_url) instead.
    os.environ["MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT"] = "true"

    mlflow_client_defaults()  # an outage fails the try in seconds; Airflow's retries do the waiting
    import mlflow
    from mlflow import MlflowClient

    uri = tracking_uri()
    mlflow.set_tracking_uri(uri)
    mlflow.set_registry_uri(uri)
    return MlflowClient(tracking_uri=uri, registry_uri=uri)


def ensure_experiment(model: str, description: str = "") -> str:
    """The experiment id of a model, created with an explicit artifact location on first use."""
    c = client()
    experiment = c.get_experiment_by_name(model)
    uri = tracking_uri()
    if uri.startswith("sqlite:///"):  # MLflow made the store just above if it was not there
        _write_ahead_log(uri.removeprefix("sqlite:///"))
    if experiment is not None:
        return experiment.experiment_id
    from mlflow.exceptions import MlflowException

    try:
        return c.create_experiment(
            model, artifact_location=artifact_location(model), tags={"mlflow.note.content": description}
        )
    except MlflowException:  # created by a concurrent run a moment ago
        experiment = c.get_experiment_by_name(model)
        if experiment is None:
            raise
        return experiment.experiment_id


@functools.cache
def _write_ahead_log(db: str) -> None:
    """:func:`use_write_ahead_log`, once per process for each store."""
    use_write_ahead_log(db)


def use_write_ahead_log(db: str) -> None:
    """Put a SQLite MLflow store in write-ahead-log mode (the mode stays with the file; the runtime calls this on
    its MLflow server's store before the server opens it).

    MLflow opens SQLite in its default rollback-journal mode, where every commit writes, syncs and deletes a journal
    file; logging a model makes about ten commits (the logged model, its params, outputs, status, ...). In WAL mode
    a commit appends to one log file: 3 ms less per logged model on a quiet machine, 90 ms on a busy one (issue 16),
    and readers no longer wait for a writer. airloop's own SQLite databases use it too (``adapters.db``). WAL needs
    every process on the same machine (SQLite's rule for any shared file): a store shared across machines is a
    tracking server (``MLFLOW_TRACKING_URI=http...``), which this never touches. A store that another process holds
    locked keeps its mode until a later run. A relative ``sqlite:///path`` is relative to the working directory, as
    for MLflow.
    """
    import sqlite3
    from contextlib import closing

    try:
        with closing(sqlite3.connect(db, timeout=1)) as conn:
            conn.execute("PRAGMA journal_mode=WAL")
    except sqlite3.Error as exc:
        log.debug("MLflow store %s stays in its journal mode: %s", db, exc)


def ensure_registered_model(model: str, description: str, owner: str) -> None:
    c = client()
    from mlflow.exceptions import MlflowException

    try:
        c.get_registered_model(model)
    except MlflowException as exc:
        if not _not_found(exc):
            raise
        try:
            c.create_registered_model(model, tags={"owner": owner}, description=description)
        except MlflowException:  # a concurrent run created it
            c.get_registered_model(model)


def pip_requirements() -> list[str]:
    """Explicit pins of what a saved pipeline needs (no slow inference of requirements)."""
    return list(_pins())


@functools.cache
def _pins() -> tuple[str, ...]:
    # Installed versions do not change while a process runs; each lookup reads package metadata from disk.
    return tuple(f"{name}=={dist_version(name)}" for name in PIP_PACKAGES)


def git_commit() -> str:
    """The project's commit (``AIRLOOP_GIT_COMMIT`` wins, for images built without ``.git``), or "unknown"."""
    explicit = settings.git_commit_override()
    if explicit:
        return explicit
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=paths().project, capture_output=True, text=True, timeout=5, check=True
        )
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return out.stdout.strip() or "unknown"


@contextmanager
def _pickle_allowed() -> Iterator[None]:
    previous = os.environ.get("MLFLOW_ALLOW_PICKLE_DESERIALIZATION")
    os.environ["MLFLOW_ALLOW_PICKLE_DESERIALIZATION"] = "true"
    try:
        yield
    finally:
        if previous is None:
            os.environ.pop("MLFLOW_ALLOW_PICKLE_DESERIALIZATION", None)
        else:
            os.environ["MLFLOW_ALLOW_PICKLE_DESERIALIZATION"] = previous


@dataclass(frozen=True)
class LoadedModel:
    """A registered model version, loaded: the pipeline and what the registry knows of it."""

    model: str
    version: str
    run_id: str | None
    pipeline: Any
    signature: dict[str, str] | None

    def predict(self, frame: Any) -> Any:
        return self.pipeline.predict(frame)


def version_for_alias(model: str, alias: str) -> str | None:
    """The version an alias points at, as a string, or None when the alias (or the model) does not exist.

    Any other error (an unreachable server above all) propagates: it must never read as "no champion".
    """
    from mlflow.exceptions import MlflowException

    try:
        return str(client().get_model_version_by_alias(model, alias).version)
    except MlflowException as exc:
        if _not_found(exc):
            return None
        raise


def signature_columns(model_uri: str) -> dict[str, str] | None:
    """The input columns and their types of a logged model's signature (None when it has none)."""
    from mlflow.models import get_model_info

    info = get_model_info(model_uri)
    if info.signature is None or info.signature.inputs is None:
        return None
    return {col.name: getattr(col.type, "name", str(col.type)) for col in info.signature.inputs.inputs}


class UntrustedVersion(RegistryProblem):
    """A registered version that airloop's training did not register; it is never unpickled."""


#: The version tag airloop's training sets to the run that logged the model (see :func:`version_tags`).
RUN_TAG = "airloop.run_id"
#: The run tag airloop's training sets to the model's name (``stages/train/record.py``).
MODEL_TAG = "airloop.model"
#: How a version airloop registers names its model: MLflow 3's logged-model URI. The embedded server and the
#: compose stack refuse any other source (``MLFLOW_CREATE_MODEL_VERSION_SOURCE_VALIDATION_REGEX``).
SOURCE_REGEX = r"^models:/m-[0-9a-f]{32}$"


def trusted_source(c: MlflowClient, model: str, mv: Any) -> str:
    """The artifact URI of a version airloop's training registered; :class:`UntrustedVersion` otherwise.

    Loading a version unpickles code, so before that it must be what ``log_training_run`` leaves behind: a
    version tagged with its run, that run in the model's experiment and tagged with the model, the source a
    model logged by that run, and its artifacts under the experiment's artifact location, which must be the
    configured one (:func:`artifact_location`). A version registered by hand from anywhere else fails one of
    these, and the error says which.
    """
    from mlflow.exceptions import MlflowException

    def refuse(problem: str) -> UntrustedVersion:
        return UntrustedVersion(
            f"Refusing to load {model} version {mv.version} (source {mask_url(mv.source or '')!r}): {problem}. "
            f"airloop loads only versions its own training registered. Retrain ({model}_train) and promote the new "
            f"version, or delete this version from the registry (MLflow UI: Models > {model}) if nobody should use it."
        )

    run_id = mv.run_id or ""
    if not run_id or (mv.tags or {}).get(RUN_TAG) != run_id:
        raise refuse(f"its tag {RUN_TAG} ({(mv.tags or {}).get(RUN_TAG)!r}) is not its run ({mv.run_id!r})")
    experiment = c.get_experiment_by_name(model)
    if experiment is None:
        raise refuse(f"there is no experiment {model!r}")
    expected = artifact_location(model)
    root = experiment.artifact_location.rstrip("/")
    if root != (expected or root) or (expected is None and not root.startswith("mlflow-artifacts:/")):
        raise refuse(
            f"experiment {model!r} keeps artifacts at {mask_url(root)!r}, "
            f"not the configured {mask_url(expected or 'mlflow-artifacts:/')}"
        )
    try:
        run = c.get_run(run_id)
    except MlflowException as exc:
        if not _not_found(exc):
            raise
        raise refuse(f"its run {run_id} does not exist") from None
    if run.info.experiment_id != experiment.experiment_id:
        raise refuse(f"its run {run_id} is in experiment {run.info.experiment_id}, not {model!r}")
    if run.data.tags.get(MODEL_TAG) != model:
        raise refuse(f"its run {run_id} is not tagged {MODEL_TAG}={model}")
    if not re.fullmatch(SOURCE_REGEX, mv.source or ""):
        raise refuse("its source is not a model logged by airloop's training (models:/m-<id>)")
    logged = c.get_logged_model(mv.source.removeprefix("models:/"))
    location = logged.artifact_location or ""
    if logged.source_run_id != run_id or logged.experiment_id != experiment.experiment_id:
        raise refuse(f"its source was logged by run {logged.source_run_id}, not by its run {run_id}")
    if not location.startswith(root + "/"):
        raise refuse(f"its artifacts are at {mask_url(location)!r}, outside the experiment's {mask_url(root)!r}")
    return location


def load_version(model: str, version: str) -> LoadedModel:
    """Load a registered version (the sklearn pipeline itself, for exact predictions and evaluation).

    Only a version that airloop's training registered is loaded (:func:`trusted_source`).
    """
    import mlflow.sklearn
    from mlflow.exceptions import MlflowException

    c = client()
    try:
        mv = c.get_model_version(model, str(version))
    except MlflowException as exc:
        if not _not_found(exc):
            raise
        raise RegistryProblem(
            f"Model {model} has no version {version!r} in the registry at {mask_url(tracking_uri())} ({exc.message}). "
            f"List versions in the MLflow UI (Models > {model})."
        ) from None
    trusted_source(c, model, mv)  # before anything of the version is unpickled
    uri = f"models:/{model}/{mv.version}"
    with _pickle_allowed():
        pipeline = mlflow.sklearn.load_model(uri)
    return LoadedModel(
        model=model, version=str(mv.version), run_id=mv.run_id, pipeline=pipeline, signature=signature_columns(uri)
    )


def pin_champion(model: str) -> PinnedChampion:
    """The champion's concrete version and MLflow run, resolved once for the whole run."""
    version = version_for_alias(model, CHAMPION)
    if version is None:
        raise NoChampion(
            f"{model} has no @champion yet, so nothing was scored. Train and promote one ({model}_train); "
            f"then re-score the range from {model}_score with params start and end."
        )
    mv = client().get_model_version(model, version)
    log.info("@champion of %s is v%s (MLflow run %s): pinned for this whole run.", model, version, mv.run_id)
    return PinnedChampion(version=str(version), run_id=str(mv.run_id))


def set_alias(model: str, alias: str, version: str) -> None:
    client().set_registered_model_alias(model, alias, str(version))


def clear_alias(model: str, alias: str) -> None:
    from mlflow.exceptions import MlflowException

    try:
        client().delete_registered_model_alias(model, alias)
    except MlflowException as exc:
        if not _not_found(exc):  # already gone is fine; an unreachable server is not
            raise


def record_verdict(model: str, version: str, tags: dict[str, str], description: str) -> None:
    """Write the gate's verdict on a model version: tags for filtering, description for people."""
    c = client()
    for key, value in tags.items():
        c.set_model_version_tag(model, str(version), key, value)
    c.update_model_version(model, str(version), description=description)


@dataclass(frozen=True)
class LoggedRun:
    run_id: str
    experiment_id: str
    model_uri: str
    version: str
    run_url: str | None


def ui_base() -> str | None:
    """The MLflow UI address people open (links in logs and the approval request).

    ``AIRLOOP_MLFLOW_UI_URL`` when set (in a compose stack the tracking URI is an internal name such as
    ``http://mlflow:5000``), else the tracking server's address; None for a local store.
    Never with ``user:password@`` (:func:`airloop.core.urls.public_url`): it goes into XCom, markdown, model-version
    descriptions and the view.
    """
    public = settings.mlflow_ui_url()
    if public:
        return public_url(public).rstrip("/")
    uri = tracking_uri()
    return public_url(uri).rstrip("/") if uri.startswith(("http://", "https://")) else None


def run_url(experiment_id: str, run_id: str) -> str | None:
    base = ui_base()
    return f"{base}/#/experiments/{experiment_id}/runs/{run_id}" if base else None


def version_url(model: str, version: str) -> str | None:
    base = ui_base()
    return f"{base}/#/models/{model}/versions/{version}" if base else None


def log_training_run(
    *,
    model: str,
    description: str,
    owner: str,
    run_name: str,
    params: dict[str, Any],
    metrics: dict[str, float],
    tags: dict[str, str],
    pipeline: Any,
    train_frame: Any,
    feature_names: list[str],
    target: str,
    dataset_digest: str,
    dataset_source: str,
    lineage: dict[str, Any],
    figures: dict[str, Any],
    extra_json: dict[str, Any],
) -> LoggedRun:
    """One MLflow run: params, metrics, the training data as a dataset input, plots, the model; then register it.

    The new version is tagged with its lineage and gets the ``challenger`` alias. Everything known at once: the
    train stage hands these over as it goes instead (:class:`TrainingRunLog`), so the tracking store's round trips
    overlap its fit and evaluation.
    """
    opened = TrainingRun(
        model, description, owner, run_name, tags, train_frame, target, dataset_digest, dataset_source, lineage
    )
    with TrainingRunLog(opened) as run_log:
        run_log.fitted(FittedForLog(pipeline, params, *signature_sample(pipeline, train_frame[feature_names])))
        run_log.evaluated(EvaluatedForLog(metrics, figures, extra_json))
        return run_log.result()


@dataclass(frozen=True)
class TrainingRun:
    """What a training run's MLflow run knows before its fit: where it goes, its tags and its training data."""

    model: str
    description: str
    owner: str
    run_name: str
    tags: dict[str, str]
    train_frame: Any
    target: str
    dataset_digest: str
    dataset_source: str
    lineage: dict[str, Any]


@dataclass(frozen=True)
class FittedForLog:
    """What the run logs once the fit is done: the pipeline, the run's params, the model's signature and example."""

    pipeline: Any
    params: dict[str, Any]
    signature: Any
    input_example: Any


@dataclass(frozen=True)
class EvaluatedForLog:
    """What the run logs once the evaluation is done: metrics, figures (matplotlib) and JSON files by path."""

    metrics: dict[str, float]
    figures: dict[str, Any]
    extra_json: dict[str, Any]


class RunAbandoned(RuntimeError):
    """The training run that was being logged failed before it handed over what the log waits for."""


class _Handoff:
    """One value passed from the training thread to the logging thread (or the training's failure instead).

    A ``concurrent.futures.Future`` would do, but those are the executor's to create (its documentation); this is
    the same few lines on a ``threading.Event``.
    """

    def __init__(self, what: str) -> None:
        self._what = what
        self._ready = threading.Event()
        self._value: Any = None
        self._failed: BaseException | None = None

    @property
    def given(self) -> bool:
        return self._ready.is_set()

    def give(self, value: Any) -> None:
        self._value = value
        self._ready.set()

    def fail(self, error: BaseException) -> None:
        if not self._ready.is_set():
            self._failed = error
            self._ready.set()

    def take(self) -> Any:
        self._ready.wait()
        if self._failed is not None:
            raise RunAbandoned(f"the training failed before its {self._what} was ready: {self._failed!r}")
        return self._value


class TrainingRunLog:
    """A training run's MLflow run, logged on its own thread while the training goes on (issue 16).

    Entered before the fit, it opens the run at once: the experiment and registered model are checked, the run
    starts with its tags, and its training data is logged as a dataset input with its lineage, while the caller
    fits. :meth:`fitted` hands over the fitted pipeline: its params are logged and the model (pickled, signature,
    example, pins) while the caller evaluates. :meth:`drawn` hands over the figures that are ready first (drawn
    into PNGs and uploaded while the caller computes the rest), :meth:`evaluated` the metrics, the other figures
    and the JSON files; :meth:`result` waits for the rest (the files, the metrics linked to the logged model, the
    new version and ``@challenger``) and returns the :class:`LoggedRun`. Each of those steps is an HTTP request
    or more through a tracking server; run one after another they were most of a run on the demo data.

    The logging thread does I/O, pickling and drawing, never a prediction: the caller infers the signature
    (:func:`signature_sample`), so the thread limits of its predictions (process-wide for some libraries) stay the
    caller's alone. If the block exits with an error (the fit or the evaluation failed, or the task timed out),
    the logging thread is told, the run ends ``FAILED`` and no version is registered; the block waits for the
    thread and re-raises the caller's error. If the logging fails, :meth:`result` raises its error (the task's
    retry then starts over: :func:`registered_by` finds no version). The figures are closed when the block exits.
    """

    def __init__(self, run: TrainingRun) -> None:
        self._run = run
        self._fitted = _Handoff("fitted model")
        self._drawn = _Handoff("evaluation figures")
        self._evaluated = _Handoff("evaluation")
        self._figures: dict[str, Any] = {}
        self._pool = ThreadPoolExecutor(1, thread_name_prefix="airloop-mlflow")
        self._warnings = _quiet_training_warnings()
        self._logged: Any = None

    def __enter__(self) -> TrainingRunLog:
        # Process-wide warning filters (catch_warnings is not thread-safe): entered here, on the caller's thread,
        # for the logging thread's whole life.
        self._warnings.__enter__()
        try:
            dataset = _prepared_dataset(self._run)  # MLflow's schema inference warns: built while filtered
        except BaseException:
            self._warnings.__exit__(None, None, None)
            raise
        self._logged = self._pool.submit(self._log, dataset)
        return self

    def __exit__(self, *exc: Any) -> None:
        try:
            if exc[1] is not None:
                for handoff in (self._fitted, self._drawn, self._evaluated):
                    handoff.fail(exc[1])
            self._pool.shutdown(wait=True)
            if exc[1] is not None and self._logged.exception() is not None:
                log.info("The MLflow run of %s ended FAILED: %s", self._run.run_name, self._logged.exception())
        finally:
            self._warnings.__exit__(*exc)
            _close_figures(self._figures)

    def fitted(self, fitted: FittedForLog) -> None:
        self._fitted.give(fitted)

    def drawn(self, figures: dict[str, Any]) -> None:
        """Figures ready before the rest of the evaluation: drawn into files and uploaded meanwhile."""
        self._figures.update(figures)
        self._drawn.give(figures)

    def evaluated(self, evaluated: EvaluatedForLog) -> None:
        if not self._drawn.given:
            self._drawn.give({})
        self._figures.update(evaluated.figures)
        self._evaluated.give(evaluated)

    def result(self) -> LoggedRun:
        logged: LoggedRun = self._logged.result()
        return logged

    def _log(self, dataset: Any) -> LoggedRun:
        import mlflow

        run = self._run
        experiment_id = ensure_experiment(run.model, run.description)
        ensure_registered_model(run.model, run.description, run.owner)
        with mlflow.start_run(
            experiment_id=experiment_id, run_name=run.run_name, tags={**run.tags, MODEL_TAG: run.model}
        ) as active:
            _log_data(dataset, run.lineage)
            fitted: FittedForLog = self._fitted.take()
            mlflow.log_params(loggable_params(fitted.params))  # before the model: the logged model copies them
            model_uri, model_id = _log_model(fitted.pipeline, fitted.signature, fitted.input_example)
            _log_figures(self._drawn.take())
            evaluated: EvaluatedForLog = self._evaluated.take()
            _log_figures(evaluated.figures)
            for name, payload in evaluated.extra_json.items():
                mlflow.log_dict(payload, name)
            # After the model and linked to it in the same write (the logged model's page shows them): logged
            # before it, MLflow's log_model would read every metric's history back and write them all again.
            mlflow.log_metrics(loggable_metrics(evaluated.metrics), model_id=model_id)
            run_id = active.info.run_id
        tags = version_tags(run_id, run.dataset_digest, run.lineage["partitions"], run.tags)
        version = _register_challenger(run.model, model_uri, run_id, run.run_name, tags)
        return LoggedRun(
            run_id=run_id,
            experiment_id=experiment_id,
            model_uri=model_uri,
            version=version,
            run_url=run_url(experiment_id, run_id),
        )


def _log_figures(figures: dict[str, Any]) -> None:
    """Into the active run: each figure as a file under :data:`PLOTS_ARTIFACT_DIR` (see :func:`render_figures`)."""
    import mlflow

    with tempfile.TemporaryDirectory(prefix="airloop-plots-") as folder:
        for path in render_figures(figures, Path(folder)):
            mlflow.log_artifact(str(path), PLOTS_ARTIFACT_DIR)


def signature_sample(pipeline: Any, x: Any) -> tuple[Any, Any]:
    """The logged model's signature, inferred from a prediction on the first :data:`SIGNATURE_ROWS` rows of ``x``,
    and its input example (the first 5 of them)."""
    from mlflow.models import infer_signature

    sample = x.head(SIGNATURE_ROWS)
    with _quiet_training_warnings():
        return infer_signature(sample, pipeline.predict(sample)), sample.head(5)


#: A JSON object as logged to MLflow.
Json = dict[str, Any]


def _prepared_dataset(run: TrainingRun) -> Any:
    """The training rows as a dataset input, its schema computed (it is logged with it)."""
    dataset = training_dataset(
        run.train_frame,
        source=run.dataset_source,
        target=run.target,
        name=f"{run.model}-training",
        digest=run.dataset_digest[:36],
    )
    dataset.schema  # noqa: B018 (a cached property, computed now: on the caller's thread, its warnings filtered)
    return dataset


def _log_data(dataset: Any, lineage: Json) -> None:
    """Into the active run: the training data as a dataset input, and its lineage."""
    import mlflow

    mlflow.log_input(dataset, context="training", tags={"partitions": str(len(lineage["partitions"]))})
    mlflow.log_dict(lineage, "lineage/training_data.json")


def render_figures(figures: dict[str, Any], folder: Path) -> list[Path]:
    """Each matplotlib figure as a file in ``folder``, named by its key (``name.png``): what ``mlflow.log_figure``
    writes (``Figure.savefig`` of the whole figure), with PNGs compressed at zlib level 1 instead of Pillow's 6.

    ``log_training_run`` calls this on a worker thread while it talks to the tracking store: the figures' drawing
    (0.1-0.2 s of a run on the demo data, issue 16) then overlaps with waiting on the tracking server, and the
    logging thread touches no matplotlib object until the files are written. Level 1 encodes the same pixels (PNG is
    lossless) in about a third of the time for files 5-25 % larger (20-60 kB each here).
    """
    paths = []
    for name, figure in figures.items():
        path = folder / name
        png = path.suffix.lower() == ".png"
        figure.savefig(path, **({"pil_kwargs": {"compress_level": PNG_COMPRESS_LEVEL}} if png else {}))
        paths.append(path)
    return paths


def training_dataset(frame: Any, *, source: str, target: str, name: str, digest: str) -> Any:
    """The training rows as an MLflow dataset input: what ``mlflow.data.from_pandas`` builds, its schema found faster.

    The digest is the one airloop computed (MLflow computes none when given one); the profile is MLflow's (rows,
    elements). MLflow's schema inference decides whether each column is ``required`` by looking at every value in
    Python (``_infer_required``): for the time column that turns every row into a ``Timestamp``, about 0.05 s on the
    demo's 9k rows and, by the objects it allocates, often the moment a full garbage collection of the process falls
    due (0.3-0.7 s inside ``log_input``, issue 16). Here ``required`` is the same test vectorised (no null, NaN or
    NaT in the column); the column types are still MLflow's own inference, so the logged schema is the same.
    """
    from mlflow.data.dataset_source_registry import resolve_dataset_source

    return _training_dataset_class()(
        df=frame, source=resolve_dataset_source(source), targets=target, name=name, digest=digest
    )


@functools.cache
def _training_dataset_class() -> type:
    """:class:`mlflow.data.pandas_dataset.PandasDataset` with a vectorised schema (made on first use: MLflow is
    imported lazily)."""
    from functools import cached_property

    from mlflow.data.pandas_dataset import PandasDataset
    from mlflow.types import ColSpec, Schema
    from mlflow.types.utils import _infer_pandas_column

    class TrainingDataset(PandasDataset):
        @cached_property
        def schema(self) -> Any:
            df = self.df
            try:
                nulls = df.isna().any()
                # What MLflow's PandasDataset.schema gives (mlflow.types.utils._infer_schema), required vectorised.
                return Schema(
                    [
                        ColSpec(type=_infer_pandas_column(df[col]), name=col, required=not bool(nulls[col]))
                        for col in df.columns
                    ]
                )
            except Exception:  # an unusual column: MLflow's own inference (which may give no schema at all)
                return super().schema

    return TrainingDataset


@contextmanager
def _quiet_training_warnings() -> Iterator[None]:
    """Two warnings that would only add noise to every training log.

    "integer columns cannot represent missing values" (the suites guarantee non-null features) and a local
    dataset source that "can be interpreted in multiple ways" (both ways are the same local source).
    """
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*integer column", category=UserWarning)
        warnings.filterwarnings("ignore", message=".*can be interpreted in multiple ways", category=UserWarning)
        yield


def loggable_params(params: dict[str, Any]) -> dict[str, Any]:
    """Params as MLflow keeps them: lists and dicts as JSON text, everything else as it is."""
    return {k: (json.dumps(v) if isinstance(v, (dict, list)) else v) for k, v in params.items()}


def loggable_metrics(metrics: dict[str, float]) -> dict[str, float]:
    """The metrics MLflow can keep: NaN ones are left out."""
    return {k: v for k, v in metrics.items() if v == v}


def version_tags(
    run_id: str, dataset_digest: str, partitions: list[dict[str, Any]], tags: dict[str, str]
) -> dict[str, str]:
    """A registered version's lineage tags: its run, its data's digest and partitions, and the Airflow link."""
    return {
        "airloop.run_id": run_id,
        "airloop.dataset_digest": dataset_digest,
        "airloop.partitions": ",".join(p["partition"] for p in partitions),
        **{k: v for k, v in tags.items() if k.startswith("airflow.")},
    }


def _log_model(pipeline: Any, signature: Any, input_example: Any) -> tuple[str, str]:
    """Log the pipeline with its signature, an input example and pinned requirements; returns its URI and id.

    What ``mlflow.sklearn.log_model`` does, through :meth:`mlflow.models.Model.log` (which it calls) so that
    ``validate_serving_input=False`` can be passed: MLflow would otherwise load the saved model back through pyfunc,
    check the pins against the installed packages once more and predict on the input example, only to log a
    warning if that failed (it never fails the call). Here the signature came from a prediction on the same rows
    (:func:`signature_sample`), the pins are the installed versions (:func:`pip_requirements`), and every load of a
    registered version is tested where it happens (scoring, the gate). The files written are the same: MLmodel
    with the signature and ``saved_input_example_info``, the input and serving examples, the pickled pipeline,
    conda.yaml, python_env.yaml and requirements.txt.
    """
    from mlflow.models import Model

    info = Model.log(
        artifact_path=None,
        name=MODEL_ARTIFACT,
        flavor=_SklearnWithoutServingCheck,
        flavor_name="mlflow.sklearn",  # the flavor recorded on the logged model, as mlflow.sklearn.log_model does
        validate_serving_input=False,
        sk_model=pipeline,
        signature=signature,
        input_example=input_example,
        pip_requirements=pip_requirements(),
        serialization_format="cloudpickle",
    )
    return str(info.model_uri), str(info.model_id)


class _SklearnWithoutServingCheck:
    """``mlflow.sklearn`` as the flavor of :meth:`mlflow.models.Model.log`, taking its ``validate_serving_input``.

    ``Model.log`` passes all its extra arguments on to the flavor's ``save_model``, which for scikit-learn does not
    accept ``validate_serving_input`` (flavors such as MLflow's transformers one do); this drops it and saves with
    ``mlflow.sklearn.save_model`` itself.
    """

    @staticmethod
    def save_model(*, validate_serving_input: bool = True, **kwargs: Any) -> None:
        import mlflow.sklearn

        del validate_serving_input  # read by Model.log, not a save_model option
        with _installed_pins_not_rechecked():
            mlflow.sklearn.save_model(**kwargs)


@contextmanager
def _installed_pins_not_rechecked() -> Iterator[None]:
    """Skip MLflow's check of the pins against the installed packages while airloop saves a model.

    ``save_model`` reads every pinned package's metadata again and, on a process's first save, maps the modules of
    every installed distribution (about 0.4 s here), only to warn when a pin differs from what is installed. The
    pins are what is installed: :func:`pip_requirements` read them from the same metadata in this process. There
    is no option to turn the check off, so MLflow's module attribute is swapped for the duration of the save (a
    warning-only check; a concurrent load in another thread would merely miss its warning). If MLflow moves it,
    nothing is skipped.
    """
    from mlflow.utils import environment

    name = "warn_dependency_requirement_mismatches"
    original = getattr(environment, name, None)
    if original is None:
        yield
        return
    setattr(environment, name, lambda *args, **kwargs: None)
    try:
        yield
    finally:
        setattr(environment, name, original)


def _close_figures(figures: dict[str, Any]) -> None:
    import matplotlib.pyplot as plt

    for fig in figures.values():
        plt.close(fig)


def _register_challenger(model: str, model_uri: str, run_id: str, run_name: str, tags: dict[str, str]) -> str:
    """Register the run's model as a new version, described, and give it ``@challenger``; returns the version.

    What ``mlflow.register_model`` does for a ``models:/<model id>`` URI, in fewer calls to the tracking store (each
    an HTTP request through a server, issue 16): ``ensure_registered_model`` made the registered model, so MLflow's
    attempt to create it again (refused: it exists) is skipped; the description is part of the new version instead
    of a second update (which MLflow precedes with a read of the registered model). As MLflow does, the logged model
    gets the new version in its ``mlflow.modelVersions`` tag (its page links to the version).
    """
    from mlflow.utils.mlflow_tags import MLFLOW_MODEL_VERSIONS

    c = client()
    model_id = model_uri.removeprefix("models:/")
    mv = c.create_model_version(
        model,
        model_uri,
        run_id=run_id,
        tags=tags,
        description=_version_description(run_id, run_name),
        model_id=model_id,
    )
    version = str(mv.version)
    # The logged model was made by this run a moment ago, so this is its first version (MLflow reads the tag back
    # first to append to it: one more round trip, for a list that is empty here).
    c.set_logged_model_tags(model_id, {MLFLOW_MODEL_VERSIONS: json.dumps([{"name": mv.name, "version": mv.version}])})
    set_alias(model, CHALLENGER, version)
    log.info("Registered %s version %s from run %s and set @%s.", model, version, run_id, CHALLENGER)
    return version


def _finish_registration(model: str, version: str, run_id: str, run_name: str) -> None:
    """What follows registering a version (idempotent, so a retry can do it again): its description, ``@challenger``."""
    c = client()
    c.update_model_version(model, version, description=_version_description(run_id, run_name))
    set_alias(model, CHALLENGER, version)


def _version_description(run_id: str, run_name: str) -> str:
    return f"Trained by run {run_id} ({run_name}); awaiting the gate."


def _tag_filter(tags: dict[str, str]) -> str | None:
    """An MLflow search filter matching every tag exactly; None when a value cannot be quoted (it holds a ')."""
    if any("'" in value for value in tags.values()):
        return None
    return " and ".join(f"tags.`{key}` = '{value}'" for key, value in tags.items())


def runs_tagged(experiment: str, tags: dict[str, str]) -> list[Any]:
    """The runs of an experiment (by name) carrying every one of ``tags``, oldest first; [] when there are none."""
    c = client()
    found = c.get_experiment_by_name(experiment)
    where = _tag_filter(tags)
    if found is None or where is None:
        return []
    return list(c.search_runs([found.experiment_id], filter_string=where, order_by=["attributes.start_time ASC"]))


def registered_by(model: str, dag_id: str | None, run_id: str | None) -> LoggedRun | None:
    """The version that an earlier try of this Airflow run registered, with its MLflow run; None when none did.

    Training runs carry their Airflow run and model as tags (``airflow.dag_id``, ``airflow.run_id``,
    ``airloop.model``), so a retry of the train task finds them in the model's experiment. The version found gets
    its description and ``@challenger`` again (its try may have died between registering and those). A run of an
    earlier try that registered nothing and is still marked running (its process died) is marked failed.
    Outside Airflow (no run id) there is nothing to find.
    """
    if not dag_id or not run_id:
        return None
    c = client()
    tags = {"airflow.dag_id": dag_id, "airflow.run_id": run_id, "airloop.model": model}
    for run in runs_tagged(model, tags):
        versions = c.search_model_versions(f"name = '{model}' and run_id = '{run.info.run_id}'")
        if not versions:
            if run.info.status == "RUNNING":
                c.set_terminated(run.info.run_id, status="FAILED")
                log.info("MLflow run %s of an earlier try registered nothing: marked FAILED.", run.info.run_id)
            continue
        version = str(min(int(v.version) for v in versions))
        _finish_registration(model, version, run.info.run_id, run.info.run_name or run.info.run_id)
        return LoggedRun(
            run_id=run.info.run_id,
            experiment_id=run.info.experiment_id,
            model_uri=f"models:/{model}/{version}",
            version=version,
            run_url=run_url(run.info.experiment_id, run.info.run_id),
        )
    return None


def run_dict(run_id: str, path: str) -> dict[str, Any] | None:
    """A JSON artifact of a run, or None when the run has no such artifact."""
    import mlflow.artifacts

    client()  # the tracking URI, set
    names = {f.path for f in client().list_artifacts(run_id, path.rsplit("/", 1)[0] if "/" in path else None)}
    if path not in names:
        return None
    loaded: dict[str, Any] = mlflow.artifacts.load_dict(f"runs:/{run_id}/{path}")
    return loaded

"""``airloop ci``: the checks a repository of model specs and suites runs on every change (``templates/ci/``).

For every spec in the models folder: the spec loads; each of its suites loads; a dry run of the newest interval
(or ``on``'s) extracts it from the source, validates it with the suites and fits the spec's pipeline on it, as
``airloop model check`` does (:func:`airloop.ops.onboard.dry_run`); and, when the model has a ``@champion``, the
gate's behaviour checks (metrics finite, absolute thresholds, sanity) on a recent holdout, with the gate's own
rules (:func:`airloop.stages.promote.rules.evaluate_gate`) and the promote stage's evaluation. Then the DAG folder:
every file imports (Airflow's ``DagBag``, which also refuses cycles) and every model has a DAG for every stage.

Each check ends ``pass``, ``fail`` or ``skip`` with a reason. Skips are for what a CI runner may not reach: a source
that is not configured or holds no tables (a failure with ``require_source``), no MLflow store, no champion, no
validated data for a holdout. Nothing is written: no lake partition, warehouse row or registry change.
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass, field
from datetime import date
from pathlib import Path
from typing import TYPE_CHECKING, Literal

from airloop.core.spec import ModelSpec, SpecError, load_spec

if TYPE_CHECKING:
    from airloop.adapters.expectations import SuiteFile

Status = Literal["pass", "fail", "skip"]
#: The project-wide checks' ``model``.
PROJECT = "-"
#: The gate's checks that compare two models: with the champion judged alone they say nothing, so they are left out.
_COMPARISONS = ("improvement", "signature")


@dataclass(frozen=True)
class Check:
    """One check's outcome: which model (or :data:`PROJECT`), what was checked, and why it ended so."""

    model: str
    name: str
    status: Status
    reason: str
    file: str | None = None

    def line(self) -> str:
        """One line: status, model, check, and the reason (a multi-line reason joined with " | ")."""
        reason = " | ".join(part.strip() for part in self.reason.splitlines() if part.strip())
        return f"{self.status.upper():<4}  {self.model:<12} {self.name:<18} {reason}"


@dataclass
class CiReport:
    """Every check of a run, in the order they ran."""

    checks: list[Check] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        return not any(c.status == "fail" for c in self.checks)

    def count(self, status: Status) -> int:
        return sum(c.status == status for c in self.checks)

    def summary(self) -> str:
        verdict = "PASS" if self.passed else "FAIL"
        return (
            f"airloop ci: {verdict} ({self.count('pass')} passed, {self.count('fail')} failed, "
            f"{self.count('skip')} skipped)"
        )

    def lines(self) -> list[str]:
        return [c.line() for c in self.checks] + [self.summary()]

    def annotations(self, root: Path) -> list[str]:
        """GitHub Actions' ``::error`` commands for the failures, on their files (relative to ``root``), so a pull
        request shows each one on the file it names."""
        return [_annotation(c, root) for c in self.checks if c.status == "fail"]

    def to_dict(self) -> dict[str, object]:
        return {
            "passed": self.passed,
            "counts": {s: self.count(s) for s in ("pass", "fail", "skip")},
            "checks": [asdict(c) for c in self.checks],
        }


def _escaped(text: str, *, prop: bool = False) -> str:
    """GitHub's escaping of a workflow command's message (and, with ``prop``, of a property's value)."""
    text = text.replace("%", "%25").replace("\r", "%0D").replace("\n", "%0A")
    return text.replace(":", "%3A").replace(",", "%2C") if prop else text


def _annotation(check: Check, root: Path) -> str:
    title = _escaped(f"airloop ci: {check.model} {check.name}", prop=True)
    where = ""
    if check.file:
        path = Path(check.file)
        shown = path.relative_to(root) if path.is_absolute() and path.is_relative_to(root) else path
        where = f"file={_escaped(str(shown), prop=True)},"
    return f"::error {where}title={title}::{_escaped(check.reason)}"


@dataclass(frozen=True)
class Options:
    """Where the project's files are, and how strict to be."""

    models_dir: Path
    expectations_dir: Path
    dags_dir: Path
    on: date | None = None
    require_source: bool = False
    gate: bool = True


def run_ci(options: Options) -> CiReport:
    """Run every check (see the module's docstring) and return them all; nothing raises for a failed check."""
    report = CiReport()
    paths = sorted(options.models_dir.glob("*.yaml")) if options.models_dir.is_dir() else []
    if not paths:
        report.checks.append(
            Check(
                PROJECT,
                "models",
                "fail",
                f"no model spec (*.yaml) in {options.models_dir}: run from the project's root, or set "
                "AIRLOOP_PROJECT_DIR (or AIRLOOP_MODELS_DIR) to the folder holding include/models",
                str(options.models_dir),
            )
        )
        return report
    sources: dict[str, str | None] = {}
    specs: list[ModelSpec] = []
    for path in paths:
        spec, checks = model_checks(path, options, sources)
        report.checks += checks
        if spec is not None:
            specs.append(spec)
    report.checks += dag_checks(options.dags_dir, specs)
    return report


def model_checks(path: Path, options: Options, sources: dict[str, str | None]) -> tuple[ModelSpec | None, list[Check]]:
    """The checks of one spec file: spec, suites, dry run, gate. ``sources`` caches each connection's state."""
    name = path.stem
    try:
        spec = load_spec(path)
    except SpecError as exc:
        after = "the spec does not load"
        return None, [
            Check(name, "spec", "fail", str(exc), str(path)),
            *(Check(name, what, "skip", after) for what in ("suites", "dry-run", "gate")),
        ]
    checks = [Check(name, "spec", "pass", f"loads ({len(spec.features)} features, task {spec.target.task})", str(path))]
    suites, suite_results = suite_checks(spec, options.expectations_dir)
    checks += suite_results
    if suites is None:
        checks.append(Check(name, "dry-run", "skip", "the suites do not load"))
    else:
        checks.append(dry_run_check(spec, suites, options, sources))
    checks.append(gate_check(spec) if options.gate else Check(name, "gate", "skip", "left out (--no-gate)"))
    return spec, checks


def suite_checks(spec: ModelSpec, expectations_dir: Path) -> tuple[list[SuiteFile] | None, list[Check]]:
    """One check per suite file of the model (a problem naming no file gets a check of its own)."""
    from airloop.adapters.expectations import SuiteError, load_suites, suite_files

    files = suite_files(spec, expectations_dir)
    try:
        suites = load_suites(spec, expectations_dir)
    except SuiteError as exc:
        problems = str(exc).splitlines()
        checks = []
        for path in files:
            mine = [p for p in problems if p.startswith(f"{path}:")]
            if mine:
                checks.append(Check(spec.name, f"suite {path.name}", "fail", "\n".join(mine), str(path)))
            else:
                checks.append(Check(spec.name, f"suite {path.name}", "pass", "loads", str(path)))
        rest = [p for p in problems if not any(p.startswith(f"{path}:") for path in files)]
        if rest:
            where = str(expectations_dir / spec.suite_dir)
            checks.append(Check(spec.name, "suites", "fail", "\n".join(rest), where))
        return None, checks
    return suites, [
        Check(
            spec.name,
            f"suite {s.path.name}",
            "pass",
            f"loads (suite {s.name!r}, {s.expectation_count} expectations, digest {s.digest})",
            str(s.path),
        )
        for s in suites
    ]


def source_unavailable(conn_id: str) -> str | None:
    """Why the source of a connection cannot be dry-run here, or None when it answers and holds tables."""
    import sqlalchemy as sa
    from sqlalchemy.exc import SQLAlchemyError

    from airloop.adapters.db import ConnectionProblem, describe, engine_for

    try:
        engine = engine_for(conn_id)
    except ConnectionProblem as exc:
        return f"the source connection is not configured here: {exc}"
    try:
        with engine.connect() as conn:
            tables = sa.inspect(conn).get_table_names()
    except SQLAlchemyError as exc:
        return f"the source {describe(engine)} is not reachable: {str(exc).splitlines()[0]}"
    if not tables:
        return f"the source {describe(engine)} holds no tables (no data loaded here)"
    return None


def dry_run_check(spec: ModelSpec, suites: list[SuiteFile], options: Options, sources: dict[str, str | None]) -> Check:
    """``airloop model check``'s dry run of one interval: extract, validate with the suites, fit (nothing saved)."""
    from airloop.ops import onboard
    from airloop.ops.suites import interval_containing

    if options.on is not None:
        try:
            interval_containing(spec, options.on)
        except ValueError as exc:  # one date rarely fits every model's schedule: the others are named and skipped
            return Check(spec.name, "dry-run", "skip", f"--on: {exc}")
    conn_id = spec.source.connection
    if conn_id not in sources:
        sources[conn_id] = source_unavailable(conn_id)
    why_not = sources[conn_id]
    if why_not is not None:
        hint = (
            "; a CI runner dry-runs when the connection is set (AIRFLOW_CONN_"
            f"{conn_id.upper()}) or the script seeds a sample (--seed)"
        )
        return Check(spec.name, "dry-run", "fail" if options.require_source else "skip", why_not + hint)
    result = onboard.ModelCheck(spec.name, [], [])
    onboard.dry_run(spec, suites, options.on, result)
    if result.problems:
        return Check(spec.name, "dry-run", "fail", "\n".join(result.problems))
    done = [re.sub(r"^(OK|SKIP)\s+", "", line) for line in result.lines]
    return Check(spec.name, "dry-run", "pass", "\n".join(done))


def _no_store() -> str | None:
    """Why there is no MLflow store to ask (None when ``MLFLOW_TRACKING_URI`` is set or the embedded one exists)."""
    from airloop.core.settings import mlflow_tracking_uri, mlflow_tracking_uri_set, paths

    if mlflow_tracking_uri_set() or (paths().mlflow / "mlflow.db").exists():
        return None
    return f"no MLflow store here (MLFLOW_TRACKING_URI is unset and {mlflow_tracking_uri()} does not exist)"


def gate_check(spec: ModelSpec) -> Check:
    """The gate's behaviour checks of today's ``@champion`` on a recent holdout, judged by this spec's gate.

    The holdout is the one the promote DAG gates a named version on: the last ``holdout_days`` of the newest
    training window in the lake. Only the rules that judge one model apply (metrics finite, thresholds, sanity);
    improvement and signature compare two models and are left out.
    """
    from mlflow.exceptions import MlflowException

    from airloop.adapters import registry

    missing = _no_store()
    if missing:
        return Check(spec.name, "gate", "skip", f"{missing}: no champion to check")
    try:
        version = registry.version_for_alias(spec.name, registry.CHAMPION)
    except (MlflowException, OSError) as exc:
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        return Check(spec.name, "gate", "skip", f"MLflow at {registry.tracking_uri()} is not reachable: {first}")
    if version is None:
        return Check(spec.name, "gate", "skip", f"{spec.name} has no @champion yet: nothing to check")
    return _judge_champion(spec, version)


def _judge_champion(spec: ModelSpec, version: str) -> Check:
    from airloop.adapters import registry
    from airloop.adapters.lake import default_lake
    from airloop.stages.promote.rules import evaluate_gate
    from airloop.stages.promote.steps import holdout_range
    from airloop.stages.train import steps as training
    from airloop.stages.train.labels import LabelsUnavailable

    lake = default_lake()
    try:  # the promote runner's holdout for a named version: the newest window's (runner._holdout, no window)
        window = training.resolve_window(spec, lake)
        _, holdout = training.split(spec, training.assemble(spec, lake, window))
    except (training.TrainingProblem, LabelsUnavailable) as exc:  # no data, or its labels cannot be read
        return Check(spec.name, "gate", "skip", f"no recent holdout for champion v{version}: {exc}")
    where = f"champion v{version} on holdout {holdout_range(window.holdout_start, window.end)} ({len(holdout)} rows)"
    try:
        loaded = registry.load_version(spec.name, version)
        evaluation = training.evaluate(spec, loaded, holdout, signature=loaded.signature, version=f"v{version}")
    except Exception as exc:  # the gate would fail to score it too; what it raised is the finding
        return Check(
            spec.name, "gate", "fail", f"{where}: cannot be scored under this spec: {type(exc).__name__}: {exc}"
        )
    verdict = evaluate_gate(spec.gate, evaluation, None, metric=spec.gate_metric)
    judged = [c for c in verdict.checks if c.name not in _COMPARISONS]
    failed = [c for c in judged if not c.passed]
    shown = failed or judged
    details = "; ".join(f"{c.name}: {c.detail}" for c in shown)
    return Check(spec.name, "gate", "fail" if failed else "pass", f"{where}: {details}")


def _condensed(error: str) -> str:
    """An import error without its traceback frames: the exception's own lines, which name file and fix."""
    lines = error.strip().splitlines()
    start = max((i for i, line in enumerate(lines) if line.startswith("  File ")), default=-1)
    kept = lines[start + 1 :]
    while start >= 0 and kept and kept[0].startswith("    "):  # the last frame's source line and its carets
        kept = kept[1:]
    return "\n".join(kept or lines[-1:])


def dag_checks(dags_dir: Path, specs: list[ModelSpec]) -> list[Check]:
    """Every DAG file imports (``DagBag`` turns a cycle into an import error too); every model has all its DAGs."""
    if not dags_dir.is_dir():
        return [Check(PROJECT, "dags", "fail", f"no DAG folder {dags_dir}: pass --dags DIR", str(dags_dir))]
    from airflow.dag_processing.dagbag import DagBag

    bag = DagBag(dag_folder=str(dags_dir))
    checks = [
        Check(PROJECT, "dags", "fail", f"{file}: {_condensed(error)}", file)
        for file, error in sorted(bag.import_errors.items())
    ]
    files = sorted(p.name for p in dags_dir.glob("*.py"))
    if not checks:
        checks.append(
            Check(
                PROJECT,
                "dags",
                "pass",
                f"{len(files)} DAG files import without errors or cycles ({len(bag.dag_ids)} DAGs)",
                str(dags_dir),
            )
        )
    tags = [t for dag in bag.dags.values() if "airloop" in dag.tags for t in dag.tags]
    stages = sorted({t.split(":", 1)[1] for t in tags if t.startswith("stage:")})
    for spec in specs:
        expected = [spec.dag_id(stage) for stage in stages]
        missing = [d for d in expected if d not in bag.dag_ids]
        if not stages:
            why = "see the import errors above" if bag.import_errors else "no DAG is tagged `airloop`"
            checks.append(Check(spec.name, "dag-ids", "fail", f"no airloop DAG could be read from {dags_dir} ({why})"))
        elif missing:
            why = " (see the import errors above)" if bag.import_errors else ""
            checks.append(Check(spec.name, "dag-ids", "fail", f"missing DAG(s) {', '.join(missing)}{why}"))
        else:
            checks.append(Check(spec.name, "dag-ids", "pass", ", ".join(expected)))
    return checks

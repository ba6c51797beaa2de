"""``airloop ci`` and its templates: each check on real specs, suites, a real SQLite source and real DagBags; the
workflow against GitHub's workflow schema; the script's handling of its options. The script run end to end on this
repository is tests/e2e/test_ci_script.py; the champion's gate checks with a real registry are in
tests/integration/test_ci_gate.py."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from datetime import date
from pathlib import Path

import pytest
import yaml

from airloop.ops.ci import CiReport, Options, dag_checks, model_checks, run_ci
from airloop.ops.cli import main
from tests.conftest import ROOT

TEMPLATES = ROOT / "templates" / "ci"
WORKFLOW = TEMPLATES / "airloop-checks.yml"
SCRIPT = TEMPLATES / "airloop-checks.sh"


def _project(tmp_path: Path, models: tuple[str, ...] = ("bikes",)) -> Options:
    """A copy of this repository's specs and suites of ``models`` under tmp_path (DAGs: the repository's)."""
    for name in models:
        (tmp_path / "models").mkdir(exist_ok=True)
        shutil.copy(ROOT / "include" / "models" / f"{name}.yaml", tmp_path / "models")
        shutil.copytree(ROOT / "expectations" / name, tmp_path / "expectations" / name)
    return Options(tmp_path / "models", tmp_path / "expectations", ROOT / "dags", gate=False)


def _by_name(checks) -> dict[str, object]:
    return {c.name: c for c in checks}


@pytest.fixture
def empty_source(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The source connection pointing at an SQLite file with no tables (what a fresh CI runner has)."""
    path = tmp_path / "empty-source.db"
    monkeypatch.setenv("AIRFLOW_CONN_AIRLOOP_SOURCE", json.dumps({"conn_type": "sqlite", "host": str(path)}))
    return path


# --- the checks of one model ------------------------------------------------------------------------------------


def test_a_good_model_passes_spec_and_suites_and_skips_the_dry_run_on_an_empty_source(tmp_path, empty_source):
    options = _project(tmp_path)
    spec, checks = model_checks(options.models_dir / "bikes.yaml", options, {})
    assert spec is not None and spec.name == "bikes"
    found = _by_name(checks)
    assert [c.status for c in checks] == ["pass", "pass", "pass", "skip", "skip"], [c.line() for c in checks]
    assert set(found) == {"spec", "suite schema.json", "suite values.json", "dry-run", "gate"}
    assert "holds no tables" in found["dry-run"].reason and "AIRFLOW_CONN_AIRLOOP_SOURCE" in found["dry-run"].reason


def test_require_source_turns_the_skipped_dry_run_into_a_failure(tmp_path, empty_source):
    options = _project(tmp_path)
    strict = Options(options.models_dir, options.expectations_dir, options.dags_dir, require_source=True, gate=False)
    _, checks = model_checks(strict.models_dir / "bikes.yaml", strict, {})
    dry = _by_name(checks)["dry-run"]
    assert dry.status == "fail" and "holds no tables" in dry.reason


def test_a_broken_spec_field_fails_naming_file_and_field(tmp_path, empty_source):
    options = _project(tmp_path)
    path = options.models_dir / "bikes.yaml"
    raw = yaml.safe_load(path.read_text())
    raw["schedule"]["every"] = "sometimes"
    path.write_text(yaml.safe_dump(raw))
    spec, checks = model_checks(path, options, {})
    assert spec is None
    first = checks[0]
    assert (first.name, first.status, first.file) == ("spec", "fail", str(path))
    assert str(path) in first.reason and "schedule.every" in first.reason and "Fix:" in first.reason
    assert [c.status for c in checks[1:]] == ["skip", "skip", "skip"]
    assert "schedule.every" in first.line() and "\n" not in first.line()


def test_a_bad_expectation_fails_its_suite_file_only(tmp_path, empty_source):
    options = _project(tmp_path)
    suite = options.expectations_dir / "bikes" / "values.json"
    raw = json.loads(suite.read_text())
    raw["expectations"][0]["kwargs"]["column"] = "no_such_column"
    suite.write_text(json.dumps(raw))
    _, checks = model_checks(options.models_dir / "bikes.yaml", options, {})
    found = _by_name(checks)
    bad = found["suite values.json"]
    assert bad.status == "fail" and bad.file == str(suite)
    assert str(suite) in bad.reason and "'no_such_column' is not a column of model bikes" in bad.reason
    assert found["suite schema.json"].status == "pass"
    assert found["dry-run"].status == "skip" and found["dry-run"].reason == "the suites do not load"


def test_the_dry_run_validates_and_fits_the_newest_interval_of_a_seeded_source(tmp_path, seeded_source):
    options = _project(tmp_path)
    _, checks = model_checks(options.models_dir / "bikes.yaml", options, {})
    dry = _by_name(checks)["dry-run"]
    assert dry.status == "pass", dry.reason
    assert "[2012-12-01" in dry.reason and "the suites pass" in dry.reason and "fits on" in dry.reason


def test_a_date_outside_a_models_schedule_skips_its_dry_run(tmp_path, seeded_source):
    options = _project(tmp_path)
    on = Options(options.models_dir, options.expectations_dir, options.dags_dir, on=date(1995, 3, 1), gate=False)
    _, checks = model_checks(on.models_dir / "bikes.yaml", on, {})
    dry = _by_name(checks)["dry-run"]
    assert dry.status == "skip" and "1995-03-01 is outside the schedule of bikes" in dry.reason
    inside = Options(options.models_dir, options.expectations_dir, options.dags_dir, on=date(2011, 6, 15), gate=False)
    _, checks = model_checks(inside.models_dir / "bikes.yaml", inside, {})
    dry = _by_name(checks)["dry-run"]
    assert dry.status == "pass" and "[2011-05-21" in dry.reason, dry.reason


def test_a_suite_that_loads_but_fails_on_the_data_fails_the_dry_run(tmp_path, seeded_source):
    options = _project(tmp_path)
    suite = options.expectations_dir / "bikes" / "values.json"
    raw = json.loads(suite.read_text())
    raw["expectations"].append(
        {"type": "expect_column_values_to_be_between", "kwargs": {"column": "cnt", "min_value": 0, "max_value": 1}}
    )
    suite.write_text(json.dumps(raw))
    _, checks = model_checks(options.models_dir / "bikes.yaml", options, {})
    found = _by_name(checks)
    assert found["suite values.json"].status == "pass"
    dry = found["dry-run"]
    assert dry.status == "fail" and "would be quarantined" in dry.reason and "cnt" in dry.reason


# --- the DAG folder ---------------------------------------------------------------------------------------------

_CYCLE = """
from airflow.sdk import DAG
from airflow.providers.standard.operators.empty import EmptyOperator

with DAG(dag_id="cyclic", schedule=None, tags=["mine"]):
    a = EmptyOperator(task_id="a")
    b = EmptyOperator(task_id="b")
    a >> b >> a
"""
_ONE_STAGE = """
from airflow.sdk import DAG
from airflow.providers.standard.operators.empty import EmptyOperator

with DAG(dag_id="bikes_extra", schedule=None, tags=["airloop", "model:bikes", "stage:extra"]):
    EmptyOperator(task_id="a")
"""


def test_a_dag_file_with_a_cycle_fails_naming_the_file(tmp_path):
    from airloop.core.spec import load_spec

    dags = tmp_path / "dags"
    dags.mkdir()
    (dags / "cyclic.py").write_text(_CYCLE)
    (dags / "stage.py").write_text(_ONE_STAGE)
    specs = [load_spec(ROOT / "include" / "models" / f"{m}.yaml") for m in ("bikes", "birds")]
    checks = dag_checks(dags, specs)
    failed = [c for c in checks if c.status == "fail"]
    cycle = next(c for c in failed if c.name == "dags")
    assert cycle.file is not None and cycle.file.endswith("cyclic.py") and "cycle" in cycle.reason.lower()
    assert "  File " not in cycle.reason, "the traceback's frames are left out"
    by_model = {c.model: c for c in checks if c.name == "dag-ids"}
    assert by_model["bikes"].status == "pass"
    assert by_model["birds"].status == "fail" and "birds_extra" in by_model["birds"].reason


def test_a_dag_file_that_cannot_load_a_spec_fails_with_the_specs_message_not_a_traceback(tmp_path, monkeypatch):
    options = _project(tmp_path)
    path = options.models_dir / "bikes.yaml"
    raw = yaml.safe_load(path.read_text())
    raw["schedule"]["every"] = "sometimes"
    path.write_text(yaml.safe_dump(raw))
    monkeypatch.setenv("AIRLOOP_MODELS_DIR", str(options.models_dir))
    dags = tmp_path / "dags"
    dags.mkdir()
    shutil.copy(ROOT / "dags" / "ingest.py", dags)
    checks = dag_checks(dags, [])
    (failed,) = [c for c in checks if c.status == "fail"]
    assert failed.file is not None and failed.file.endswith("ingest.py")
    assert failed.reason.startswith(f"{failed.file}: airloop.core.spec.SpecError: Model spec {path} is not valid")
    assert "schedule.every" in failed.reason and "Traceback" not in failed.reason and "  File " not in failed.reason


def test_a_missing_dag_folder_fails(tmp_path):
    (check,) = dag_checks(tmp_path / "nowhere", [])
    assert check.status == "fail" and "--dags" in check.reason


def test_no_spec_at_all_fails(tmp_path):
    report = run_ci(Options(tmp_path / "models", tmp_path / "expectations", tmp_path / "dags"))
    assert not report.passed
    assert "no model spec" in report.checks[0].reason


# --- the command ------------------------------------------------------------------------------------------------


def test_the_command_checks_every_model_of_this_repository(empty_source, capsys):
    """Every spec in include/models: spec, suites, dry run (skipped: the source is empty), DAGs; JSON on stdout."""
    assert main(["ci", "--json", "--no-gate"]) == 0
    out = json.loads(capsys.readouterr().out)
    models = sorted(p.stem for p in (ROOT / "include" / "models").glob("*.yaml"))
    assert out["passed"] is True and out["counts"]["fail"] == 0
    for model in models:
        names = {c["name"] for c in out["checks"] if c["model"] == model}
        assert {"spec", "dry-run", "gate", "dag-ids"} <= names, (model, names)
        assert any(n.startswith("suite ") for n in names), model
    dags = next(c for c in out["checks"] if c["name"] == "dags")
    assert dags["status"] == "pass"


def test_the_command_exits_1_naming_the_broken_file(tmp_path, monkeypatch, empty_source, capsys):
    options = _project(tmp_path)
    path = options.models_dir / "bikes.yaml"
    path.write_text(path.read_text().replace("task: regression", "task: regresion"))
    monkeypatch.setenv("AIRLOOP_MODELS_DIR", str(options.models_dir))
    monkeypatch.setenv("AIRLOOP_EXPECTATIONS_DIR", str(options.expectations_dir))
    assert main(["ci", "--no-gate", "--github"]) == 1
    lines = capsys.readouterr().out.splitlines()
    annotations = [line for line in lines if line.startswith("::error ")]
    assert any(a.startswith(f"::error file={path},title=airloop ci%3A bikes spec::Model spec") for a in annotations)
    lines = [line for line in lines if line not in annotations]
    spec_line = next(line for line in lines if line.startswith("FAIL") and " spec " in line)
    assert str(path) in spec_line and "target.task" in spec_line
    assert any(line.startswith("FAIL") and " dags " in line and str(path) in line for line in lines), lines
    assert lines[-1].startswith("airloop ci: FAIL")


def test_report_lines_and_counts():
    from airloop.ops.ci import Check

    report = CiReport(
        [
            Check("m", "spec", "pass", "loads"),
            Check("m", "gate", "skip", "no champion"),
            Check("-", "dags", "fail", "x"),
        ]
    )
    assert not report.passed
    assert report.summary() == "airloop ci: FAIL (1 passed, 1 failed, 1 skipped)"
    assert report.lines()[0].split() == ["PASS", "m", "spec", "loads"]
    assert report.to_dict()["counts"] == {"pass": 1, "fail": 1, "skip": 1}


def test_failures_become_github_annotations_on_their_files(tmp_path):
    from airloop.ops.ci import Check

    report = CiReport(
        [
            Check(
                "m",
                "spec",
                "fail",
                "Model spec x is not valid:\n  - field `a.b`: 100%, wrong",
                str(tmp_path / "m.yaml"),
            ),
            Check("m", "gate", "skip", "no champion"),
            Check("-", "dags", "fail", "x", "/elsewhere/dags/a.py"),
            Check("m", "dry-run", "fail", "no rows"),
        ]
    )
    assert report.annotations(tmp_path) == [
        "::error file=m.yaml,title=airloop ci%3A m spec::Model spec x is not valid:%0A  - field `a.b`: 100%25, wrong",
        "::error file=/elsewhere/dags/a.py,title=airloop ci%3A - dags::x",
        "::error title=airloop ci%3A m dry-run::no rows",
    ]


# --- the templates ----------------------------------------------------------------------------------------------


def test_the_workflow_matches_githubs_workflow_schema():
    exe = Path(sys.executable).parent / "check-jsonschema"
    assert exe.exists(), "check-jsonschema is a dev dependency: uv sync --frozen"
    result = subprocess.run(
        [str(exe), "--builtin-schema", "vendor.github-workflows", str(WORKFLOW)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_the_workflow_runs_the_script_on_every_change_of_a_spec_suite_or_dag():
    workflow = yaml.safe_load(WORKFLOW.read_text())
    triggers = workflow.get("on", workflow.get(True))  # YAML 1.1 reads a bare `on` as true
    for event in ("push", "pull_request"):
        paths = triggers[event]["paths"]
        assert {"include/models/**", "expectations/**", "dags/**", "ci/airloop-checks.sh"} <= set(paths), event
    (job,) = workflow["jobs"].values()
    steps = job["steps"]
    uses = [s.get("uses", "") for s in steps]
    assert any(u.startswith("actions/checkout@") for u in uses)
    python = next(s for s in steps if s.get("uses", "").startswith("actions/setup-python@"))
    assert str(python["with"]["python-version"]) == "3.11"
    assert any(u.startswith("astral-sh/setup-uv@") for u in uses)
    runs = [s.get("run", "") for s in steps]
    assert runs.index("uv sync --frozen") < next(i for i, r in enumerate(runs) if "ci/airloop-checks.sh" in r)


def _fake_tools(folder: Path) -> Path:
    """Stand-ins for uv and airloop that print how they were called, to test the script's own logic."""
    folder.mkdir()
    for tool in ("uv", "airloop"):
        exe = folder / tool
        exe.write_text(f'#!/usr/bin/env bash\necho "{tool} $* home=$AIRLOOP_HOME project=$AIRLOOP_PROJECT_DIR"\n')
        exe.chmod(0o755)
    return folder


def _script(tmp_path: Path, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    bin_dir = _fake_tools(tmp_path / "bin")
    base = {"PATH": f"{bin_dir}{os.pathsep}/usr/bin{os.pathsep}/bin", "HOME": str(tmp_path)}
    return subprocess.run(
        ["bash", str(SCRIPT), *args], capture_output=True, text=True, env={**base, **env}, cwd=tmp_path, timeout=60
    )


def test_the_script_is_strict_bash_and_runs_airloop_ci():
    text = SCRIPT.read_text()
    assert text.startswith("#!/usr/bin/env bash\n") and "set -euo pipefail" in text
    assert subprocess.run(["bash", "-n", str(SCRIPT)], capture_output=True).returncode == 0
    assert os.access(SCRIPT, os.X_OK)


def test_the_script_passes_options_to_airloop_ci_in_a_throwaway_home(tmp_path):
    done = _script(tmp_path, "--on", "2012-06-01", "--json")
    assert done.returncode == 0, done.stderr
    (line,) = done.stdout.splitlines()
    assert line.startswith("uv run --frozen airloop ci --on 2012-06-01 --json home=")
    home = line.split("home=")[1].split()[0]
    assert home.endswith("/airloop") and Path(home).parent.is_dir() and not home.startswith(str(ROOT))
    assert f"project={tmp_path}" in line


def test_the_script_asks_for_annotations_on_github_actions(tmp_path):
    done = _script(tmp_path, "--no-gate", GITHUB_ACTIONS="true")
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("uv run --frozen airloop ci --no-gate --github home=")


def test_the_script_seeds_first_with_seed(tmp_path):
    done = _script(tmp_path, "--seed", AIRLOOP_HOME=str(tmp_path / "h"))
    assert done.returncode == 0, done.stderr
    assert [line.split(" home=")[0] for line in done.stdout.splitlines()] == [
        "uv run --frozen airloop seed",
        "uv run --frozen airloop ci",
    ]


def test_the_script_refuses_to_seed_a_configured_source(tmp_path):
    done = _script(tmp_path, "--seed", AIRFLOW_CONN_AIRLOOP_SOURCE="postgresql://db/source")
    assert done.returncode == 2
    assert done.stdout == "" and "AIRFLOW_CONN_AIRLOOP_SOURCE" in done.stderr

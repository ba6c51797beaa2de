"""The users' CI script (templates/ci/airloop-checks.sh) run as a workflow runs it: on this repository (seeded with
its vendored sample data, so every dry run runs) and on broken copies of it, in a subprocess with a fresh
AIRLOOP_HOME. Slow (each run imports every DAG file and dry-runs the models): e2e."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tests.conftest import ROOT

pytestmark = pytest.mark.e2e

SCRIPT = ROOT / "templates" / "ci" / "airloop-checks.sh"
MODELS = sorted(p.stem for p in (ROOT / "include" / "models").glob("*.yaml"))


def _run(home: Path, *args: str, project: Path | None = None) -> subprocess.CompletedProcess[str]:
    """The script from the repository's root, as a CI runner would: only the environment a runner has."""
    keep = ("HOME", "LANG", "LC_ALL", "TMPDIR")
    env = {k: v for k, v in os.environ.items() if k in keep}
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '/usr/bin:/bin')}"
    env["AIRLOOP_HOME"] = str(home)
    if project is not None:
        env["AIRLOOP_PROJECT_DIR"] = str(project)
    return subprocess.run(["bash", str(SCRIPT), *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)


def _lines(out: str) -> list[list[str]]:
    """Each check's line as [status, model, check, rest] (a suite check's rest starts with its file's name)."""
    return [line.split(None, 3) for line in out.splitlines() if line.startswith(("PASS ", "FAIL ", "SKIP "))]


def test_the_script_passes_on_this_repository_with_every_models_checks(tmp_path):
    done = _run(tmp_path / "home", "--seed")
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-4000:]
    lines = _lines(done.stdout)
    checks = {(m, name): status for status, m, name, *_ in lines}
    suites_passed = {(m, rest.split()[0]) for status, m, name, rest in lines if name == "suite" and status == "PASS"}
    for model in MODELS:
        assert checks[(model, "spec")] == "PASS", model
        assert checks[(model, "dry-run")] == "PASS", f"{model}: the seeded sample is dry-run\n{done.stdout}"
        assert checks[(model, "dag-ids")] == "PASS", model
        assert checks[(model, "gate")] == "SKIP", "a fresh home has no MLflow store, so no champion"
        suites = sorted(p.name for p in (ROOT / "expectations" / model).glob("*.json"))
        assert suites and {(model, s) for s in suites} <= suites_passed, model
    assert checks[("-", "dags")] == "PASS"
    assert done.stdout.splitlines()[-1].startswith("airloop ci: PASS")


def _project(tmp_path: Path) -> Path:
    project = tmp_path / "project"
    for part in ("include/models", "expectations", "dags"):
        shutil.copytree(ROOT / part, project / part)
    return project


def _break_spec(project: Path) -> Path:
    path = project / "include" / "models" / "bikes.yaml"
    raw = yaml.safe_load(path.read_text())
    raw["gate"]["min_improvement"] = 3  # a share: at most 1
    path.write_text(yaml.safe_dump(raw))
    return path


def _break_suite(project: Path) -> Path:
    path = project / "expectations" / "birds" / "schema.json"
    raw = json.loads(path.read_text())
    raw["expectations"][0]["type"] = "expect_column_to_be_lovely"
    path.write_text(json.dumps(raw))
    return path


@pytest.mark.parametrize(("breaking", "check"), [(_break_spec, "spec"), (_break_suite, "suite")])
def test_a_broken_spec_or_suite_fails_the_script_naming_the_file(tmp_path, breaking, check):
    project = _project(tmp_path)
    broken = breaking(project)
    done = _run(tmp_path / "home", project=project)
    assert done.returncode == 1, done.stdout[-4000:] + done.stderr[-4000:]
    failed = [line for line in _lines(done.stdout) if line[0] == "FAIL"]
    assert any(line[2] == check and str(broken) in line[3] for line in failed), done.stdout
    assert done.stdout.splitlines()[-1].startswith("airloop ci: FAIL")

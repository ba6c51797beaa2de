"""airloop's settings: one table, read in one module, documented from the table."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

from airloop.core import settings

ROOT = Path(__file__).resolve().parents[2]
INCLUDE = ROOT / "include"
SETTINGS_MODULE = INCLUDE / "airloop" / "core" / "settings.py"
#: An environment read naming an airloop variable: os.environ.get("AIRLOOP_X"), os.environ["AIRLOOP_X"],
#: os.getenv("AIRLOOP_X"), env.get("AIRLOOP_X") on a mapping.
_READ = re.compile(r"""(environ|getenv|env)\s*(\.get\(|\[|\()\s*['"]AIRLOOP_""")
_NAME = re.compile(r"^AIRLOOP_[A-Z0-9_]+$")


def _python_files() -> list[Path]:
    return sorted(p for p in INCLUDE.rglob("*.py") if p != SETTINGS_MODULE)


def test_no_airloop_variable_is_read_outside_the_settings_module() -> None:
    reads = []
    for path in _python_files():
        text = path.read_text()
        reads += [f"{path.relative_to(ROOT)}: {m.group(0)}" for m in _READ.finditer(text)]
        # A variable name as a bare string is how a read hides behind a constant (VAR = "AIRLOOP_X"; env.get(VAR)).
        for node in ast.walk(ast.parse(text)):
            if isinstance(node, ast.Constant) and isinstance(node.value, str) and _NAME.match(node.value):
                reads.append(f"{path.relative_to(ROOT)}:{node.lineno}: {node.value!r}")
    assert not reads, "read these through airloop.core.settings instead:\n" + "\n".join(reads)


def test_every_airloop_variable_named_in_the_package_is_in_the_table() -> None:
    named = set()
    for path in INCLUDE.rglob("*"):
        if path.is_file() and path.suffix in (".py", ".md", ".html", ".yaml"):
            named |= set(re.findall(r"\bAIRLOOP_[A-Z0-9_]*[A-Z0-9]\b", path.read_text()))
    assert named, "the scan found nothing: the test looks in the wrong place"
    assert sorted(named - set(settings.SETTINGS)) == []


def test_the_scan_catches_a_read(tmp_path: Path) -> None:
    """The patterns above do match the ways a module reads the environment."""
    for line in (
        'os.environ.get("AIRLOOP_X")',
        "os.environ['AIRLOOP_X']",
        'os.getenv("AIRLOOP_X", "1")',
        'env.get("AIRLOOP_X")',
    ):
        assert _READ.search(line), line


def test_docs_are_generated_from_the_table() -> None:
    docs = ROOT / "docs" / "settings.md"
    assert docs.read_text() == settings.settings_markdown(), (
        "docs/settings.md is out of date: python -m airloop.core.settings > docs/settings.md"
    )
    for setting in settings.SETTINGS.values():
        assert f"`{setting.name}`" in docs.read_text()
        assert setting.meaning and len(setting.meaning.splitlines()) == 1, setting.name


def test_every_setting_has_a_name_of_its_owner() -> None:
    for name, setting in settings.SETTINGS.items():
        assert name == setting.name
        assert name.startswith("AIRLOOP_") == (setting.owner == "airloop"), name


def test_values_defaults_and_blanks(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("AIRLOOP_CELERY_CONCURRENCY", raising=False)
    assert settings.celery_concurrency() == "2"
    monkeypatch.setenv("AIRLOOP_CELERY_CONCURRENCY", "  ")
    assert settings.celery_concurrency() == "2", "blank is unset"
    assert settings.celery_concurrency({"AIRLOOP_CELERY_CONCURRENCY": "5"}) == "5", "a given mapping wins"
    monkeypatch.setenv("AIRLOOP_MLFLOW_UI_URL", "https://mlflow.example.com/")
    assert settings.mlflow_ui_url() == "https://mlflow.example.com"
    monkeypatch.setenv("AIRLOOP_MLFLOW_ARTIFACT_ROOT", "s3://bucket/mlflow/")
    assert settings.mlflow_artifact_root() == "s3://bucket/mlflow"
    monkeypatch.delenv("AIRLOOP_GIT_COMMIT", raising=False)
    assert settings.git_commit_override() is None
    monkeypatch.setenv("AIRLOOP_ALERTS_ENDPOINT", "")
    assert settings.alerts_endpoint() is None


def test_home_is_read_when_asked(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("AIRLOOP_HOME", str(tmp_path / "h"))
    assert settings.paths().home == tmp_path / "h"
    monkeypatch.setenv("AIRLOOP_MODELS_DIR", str(tmp_path / "models"))
    assert settings.paths().models_dir == tmp_path / "models"


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"AIRLOOP_AIRFLOW_PORT": "x"}, "AIRLOOP_AIRFLOW_PORT='x' is not a port number"),
        ({"AIRLOOP_AIRFLOW_PORT": "0"}, "AIRLOOP_AIRFLOW_PORT=0 is out of range"),
    ],
)
def test_bad_ports_name_the_variable(env: dict[str, str], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        settings.port(settings.AIRFLOW_PORT, env)
    assert settings.port(settings.AIRFLOW_PORT, {}) == 8080


def test_bad_worker_count_names_the_variable() -> None:
    assert settings.celery_workers({}) == 2
    with pytest.raises(ValueError, match="AIRLOOP_CELERY_WORKERS='0'"):
        settings.celery_workers({"AIRLOOP_CELERY_WORKERS": "0"})

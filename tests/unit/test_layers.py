"""The layer rule's parts that import-linter cannot express: who may import the Airflow task SDK, and how long
a library function may grow. (The layers themselves are import-linter contracts in pyproject.toml.)"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[2] / "include" / "airloop"
MAX_FUNCTION_LINES = 60


def _modules() -> list[Path]:
    return sorted(PACKAGE.rglob("*.py"))


def _imports(tree: ast.AST) -> list[tuple[str, int]]:
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(alias.name, node.lineno) for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module:
            found.append((node.module, node.lineno))
    return found


def test_the_package_has_the_layers_the_docs_describe() -> None:
    layers = sorted(p.name for p in PACKAGE.iterdir() if p.is_dir() and (p / "__init__.py").exists())
    assert layers == ["adapters", "core", "ops", "orchestration", "stages", "ui"]
    assert not [p.name for p in PACKAGE.glob("*.py") if p.name != "__init__.py"], "modules belong in a layer"


@pytest.mark.parametrize("module", _modules(), ids=lambda p: str(p.relative_to(PACKAGE)))
def test_only_orchestration_imports_the_airflow_task_sdk(module: Path) -> None:
    # adapters/db.py reads Airflow connections (where deployments keep their database settings): its one use.
    if module.relative_to(PACKAGE).parts[0] == "orchestration" or module.relative_to(PACKAGE) == Path("adapters/db.py"):
        return
    sdk = [
        f"line {line}: {name}"
        for name, line in _imports(ast.parse(module.read_text()))
        if name.startswith("airflow.sdk")
    ]
    assert not sdk, f"{module.relative_to(PACKAGE)} imports the task SDK outside orchestration: {sdk}"


def test_no_library_function_is_longer_than_the_limit() -> None:
    long = []
    for module in _modules():
        for node in ast.walk(ast.parse(module.read_text())):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                lines = node.end_lineno - node.lineno + 1  # type: ignore[operator]
                if lines > MAX_FUNCTION_LINES:
                    long.append(f"{module.relative_to(PACKAGE)}:{node.lineno} {node.name} ({lines} lines)")
    assert not long, "split these into steps:\n" + "\n".join(long)


def _demo_names() -> set[str]:
    """What a demo model or data set is called: spec names, their tables, targets, time, key and leakage columns,
    data set folders, files and tables. The library must not name any of them (a new model needs no code)."""
    import yaml

    from airloop.core.spec import load_specs

    root = PACKAGE.parents[1]
    names: set[str] = set()
    for spec in load_specs(root / "include" / "models"):
        names |= {
            spec.name,
            spec.target.name,
            spec.source.time_column,
            *(spec.source.keys or ()),
            *spec.leakage_columns,
        }
        names |= {spec.source.table} if spec.source.table else set()
    for manifest in (root / "include" / "data").glob("*/dataset.yaml"):
        data = yaml.safe_load(manifest.read_text())
        names |= {manifest.parent.name, str(data.get("file")), str(data.get("table"))}
    from airloop.adapters.warehouse import metadata

    own = {c.name for table in metadata.tables.values() for c in table.columns}  # airloop's schema, e.g. `ts`
    return {n for n in names if n and n != "None"} - own


def test_the_library_names_no_demo_model_column_table_or_file() -> None:
    names = _demo_names()
    assert {"bikes", "birds"} <= names  # the check knows the demo models it guards against
    found = []
    for module in _modules():
        if module.relative_to(PACKAGE) == Path("ops/demo.py"):  # the demo tells the demo models' stories
            continue
        for node in ast.walk(ast.parse(module.read_text())):
            if isinstance(node, ast.Constant) and isinstance(node.value, str) and node.value in names:
                found.append(f"{module.relative_to(PACKAGE)}:{node.lineno} {node.value!r}")
    assert not found, "library code names a demo model, column, table or file:\n" + "\n".join(found)

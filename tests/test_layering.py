"""The core (recurra.data, .nn, .forecasting, .anomaly) never imports prefect or mlflow;
inside it, imports go one way (data <- nn <- forecasting, anomaly); the dashboards only
read; ``recurra`` is the one top-level package."""

import ast
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1] / "recurra"
FORBIDDEN = {"prefect", "mlflow", "prefect_dask"}


def _modules(path: Path) -> set[str]:
    tree = ast.parse(path.read_text())
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
    return names


def _imports(path: Path) -> set[str]:
    return {name.split(".")[0] for name in _modules(path)}


def _subpackages(path: Path) -> set[str]:
    return {name.split(".")[1] for name in _modules(path)
            if name.startswith("recurra.") and name.count(".") >= 1}


# what each core subpackage may import from the others (itself always)
ALLOWED = {
    "data": set(),
    "nn": {"data"},
    "forecasting": {"data", "nn"},
    "anomaly": {"data", "nn"},
}


@pytest.mark.parametrize("package", sorted(ALLOWED))
def test_core_imports_go_one_way(package):
    files = list((ROOT / package).rglob("*.py"))
    assert files, f"{package}/ has no Python files"
    offenders = {}
    for path in files:
        outside = _subpackages(path) - ALLOWED[package] - {package, "_legacy"}
        if outside:
            offenders[str(path.relative_to(ROOT))] = sorted(outside)
    assert offenders == {}, f"recurra.{package} may import only {sorted(ALLOWED[package])}"


def test_data_does_not_import_torch():
    """recurra.data is numpy/polars only: torch lives in recurra.nn and the estimators."""
    files = list((ROOT / "data").rglob("*.py"))
    offenders = [str(f.relative_to(ROOT)) for f in files if "torch" in _imports(f)]
    assert offenders == []


@pytest.mark.parametrize("package", ["data", "nn", "forecasting", "anomaly"])
def test_core_package_does_not_import_orchestration(package):
    files = list((ROOT / package).rglob("*.py"))
    assert files, f"{package}/ has no Python files"
    offenders = {str(f.relative_to(ROOT)): sorted(_imports(f) & FORBIDDEN) for f in files}
    assert {f: i for f, i in offenders.items() if i} == {}


def test_dashboards_never_import_training_code():
    files = list((ROOT / "dashboards").rglob("*.py"))
    assert files, "dashboards/ has no Python files"
    for path in files:
        source = path.read_text()
        assert ".fit(" not in source, f"{path} calls fit: dashboards only read"


def test_recurra_is_the_only_installed_top_level_package():
    project = tomllib.loads((ROOT.parent / "pyproject.toml").read_text())
    assert project["tool"]["setuptools"]["packages"]["find"]["include"] == ["recurra*"]
    tops = {p.name for p in ROOT.parent.iterdir() if (p / "__init__.py").exists()}
    assert tops <= {"recurra", "tests"}, f"top-level packages besides recurra: {tops}"


def test_a_scheduled_run_does_not_import_what_only_some_models_use():
    """Each served flow run is a new process: importing the task modules must not pull in
    scikit-learn (the isolation forest imports it when fitted) or scipy (KS drift test),
    each a second or more of every run's start."""
    import subprocess
    import sys

    code = ("import sys, recurra.pipelines.tasks, recurra.pipelines.flows; "
            "print(sorted(m for m in ('sklearn', 'scipy') if m in sys.modules))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          cwd=ROOT.parent, check=True)
    assert done.stdout.strip() == "[]"

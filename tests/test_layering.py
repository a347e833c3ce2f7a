"""The core (recurra.data, .forecasting, .anomaly) never imports prefect or mlflow; the
dashboards only read; ``recurra`` is the one top-level package."""

import ast
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1] / "recurra"
FORBIDDEN = {"prefect", "mlflow", "prefect_dask"}


def _imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text())
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module.split(".")[0])
    return names


@pytest.mark.parametrize("package", ["data", "forecasting", "anomaly"])
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

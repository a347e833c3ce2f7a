"""The core (data, forecasting, anomaly) never imports prefect or mlflow."""

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
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
    for path in (ROOT / "dashboards").rglob("*.py"):
        source = path.read_text()
        assert ".fit(" not in source, f"{path} calls fit: dashboards only read"

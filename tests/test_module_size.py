"""The module-size rule of the house style (``../shared/STYLE.md``, "Size, names, errors"):
every module of the package (``recurra/``) and every benchmark script (``benchmarks/*.py``)
has at most 600 lines, and one of more than 400 says why in a paragraph of its module
docstring that starts with ``Size:``."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
MAX_LINES = 600
EXPLAINED_ABOVE = 400
MODULES = sorted(p.relative_to(ROOT).as_posix() for p in [*(ROOT / "recurra").rglob("*.py"),
                                                           *(ROOT / "benchmarks").glob("*.py")])


def size_problem(path: Path) -> str | None:
    """Why ``path`` breaks the rule, or None."""
    text = path.read_text(encoding="utf-8")
    n_lines = len(text.splitlines())
    if n_lines > MAX_LINES:
        return f"{n_lines} lines (at most {MAX_LINES}): split it into cohesive modules"
    if n_lines > EXPLAINED_ABOVE:
        docstring = ast.get_docstring(ast.parse(text)) or ""
        paragraphs = [p.strip() for p in docstring.split("\n\n")]
        if not any(p.startswith("Size:") for p in paragraphs):
            return (f"{n_lines} lines (over {EXPLAINED_ABOVE}) and no paragraph starting "
                    "with 'Size:' in the module docstring saying why")
    return None


@pytest.mark.parametrize("module", MODULES)
def test_module_is_small_or_says_why(module):
    assert size_problem(ROOT / module) is None, f"{module}: {size_problem(ROOT / module)}"


def test_the_rule_catches_a_long_module_without_a_reason(tmp_path):
    long_body = "x = 1\n" * (EXPLAINED_ABOVE + 1)
    quiet, explained, huge = (tmp_path / "quiet.py", tmp_path / "explained.py",
                              tmp_path / "huge.py")
    quiet.write_text('"""A module."""\n' + long_body)
    explained.write_text('"""A module.\n\nSize: one reader\'s view, on purpose.\n"""\n'
                         + long_body)
    huge.write_text('"""A module.\n\nSize: no excuse.\n"""\n' + "x = 1\n" * MAX_LINES)
    assert "no paragraph starting with 'Size:'" in size_problem(quiet)
    assert size_problem(explained) is None
    assert "at most 600" in size_problem(huge)

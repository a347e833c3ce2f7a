"""The documentation as a product: generated pages current, links resolve, code blocks run.

A code block whose first line is ``# runnable`` is executed (bash, in a temp folder); every
other ``bash`` block must parse (``bash -n``) and every ``python`` block must compile.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
DOC_FILES = sorted([ROOT / "README.md", ROOT / "ARCHITECTURE.md", ROOT / "benchmarks" / "NOTES.md",
                    *(ROOT / "docs").glob("*.md")])
USER_DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
LINK = re.compile(r"!?\[[^\]]*\]\(([^)\s]+)\)")
FENCE = re.compile(r"^```(\w*)[^\n]*\n(.*?)^```", re.S | re.M)
RUNNABLE = "# runnable"
# Lab-notebook phrases that user docs must not contain (who was on the machine, what was
# tried when): those belong in benchmarks/NOTES.md.
NOTEBOOK = re.compile(r"\b(engineers?|contended|contention|yesterday|tried and|tried on|"
                      r"shared by (\d+|two|three|four|five|other)|shared with other|"
                      r"other jobs|on the machine|quiet moment|busy shared)\b", re.I)


def _blocks(path: Path) -> list[tuple[str, str]]:
    return [(m.group(1), m.group(2)) for m in FENCE.finditer(path.read_text())]


def test_generated_reference_pages_are_current():
    from recurra.pipelines import docgen

    for page, (file_name, _) in docgen.PAGES.items():
        path = ROOT / "docs" / file_name
        assert path.is_file() and path.read_text() == docgen.render(page), (
            f"docs/{file_name} is out of date: run `python -m recurra.pipelines.docgen {page}` "
            "(or `make docs`) and commit the result")


def test_benchmark_page_and_readme_table_are_current():
    sys.path.insert(0, str(ROOT / "benchmarks"))
    try:
        import report
    finally:
        sys.path.remove(str(ROOT / "benchmarks"))
    hint = "run `python benchmarks/report.py` (or `make docs`) and commit the result"
    assert (ROOT / "docs" / "benchmarks.md").read_text() == report.render_page(), (
        f"docs/benchmarks.md is out of date: {hint}")
    readme = (ROOT / "README.md").read_text()
    assert readme == report.render_readme(readme), f"README's benchmark table is stale: {hint}"


@pytest.mark.parametrize("path", DOC_FILES, ids=lambda p: str(p.relative_to(ROOT)))
def test_relative_links_resolve(path):
    broken = []
    for target in LINK.findall(path.read_text()):
        if re.match(r"^[a-z]+:", target) or target.startswith("#"):
            continue
        file_part = target.split("#", 1)[0]
        if not (path.parent / file_part).exists():
            broken.append(target)
    allowed = {"deploy.md", "docs/deploy.md"}  # written by the deployment work (issue 14)
    broken = [b for b in broken if b not in allowed or (ROOT / "docs" / "deploy.md").exists()]
    assert not broken, f"{path.relative_to(ROOT)}: links that do not resolve: {broken}"


@pytest.mark.parametrize("path", DOC_FILES, ids=lambda p: str(p.relative_to(ROOT)))
def test_code_blocks_parse(path):
    for language, code in _blocks(path):
        if language == "python":
            compile(code, f"{path.name} block", "exec")  # SyntaxError names the line
        elif language in ("bash", "sh"):
            result = subprocess.run(["bash", "-n"], input=code, text=True, capture_output=True)
            assert result.returncode == 0, f"{path.name}: bash block does not parse: " \
                                           f"{result.stderr}\n{code}"


def test_runnable_blocks_run(tmp_path):
    runnable = [(p, code) for p in DOC_FILES for lang, code in _blocks(p)
                if lang in ("bash", "sh") and code.lstrip().startswith(RUNNABLE)]
    assert runnable, "no block is marked runnable"
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
           "RECURRA_HOME": str(tmp_path / "home")}
    for path, code in runnable:
        result = subprocess.run(["bash", "-e", "-c", code], cwd=tmp_path, env=env, text=True,
                                capture_output=True, timeout=120)
        assert result.returncode == 0, (f"{path.name}: runnable block failed "
                                        f"({result.returncode}): {result.stderr}\n{code}")


def test_readme_is_short_and_starts_with_the_two_commands():
    lines = (ROOT / "README.md").read_text().splitlines()
    assert len(lines) <= 150, f"README.md has {len(lines)} lines (at most ~150)"
    first_block = FENCE.search("\n".join(lines)).group(2).splitlines()
    assert [line.split()[:2] for line in first_block[:2]] == [["make", "demo"], ["make", "test"]]


@pytest.mark.parametrize("path", USER_DOCS, ids=lambda p: str(p.relative_to(ROOT)))
def test_user_docs_read_as_docs_not_a_lab_notebook(path):
    hits = [m.group(0) for m in NOTEBOOK.finditer(path.read_text())]
    assert not hits, (f"{path.relative_to(ROOT)} speaks of the machine's users or of what "
                      f"was tried when ({hits}); move it to benchmarks/NOTES.md")


def test_screenshot_is_committed_and_small():
    image = ROOT / "docs" / "img" / "dashboard.png"
    assert image.is_file() and image.stat().st_size < 400_000
    assert shutil.which("bash")


def _benchmark_module(name: str):
    sys.path.insert(0, str(ROOT / "benchmarks"))
    try:
        return __import__(name)
    finally:
        sys.path.remove(str(ROOT / "benchmarks"))


def test_report_renders_an_unknown_result_file_and_the_recorded_machine():
    report = _benchmark_module("report")
    results = {"store_compact": {"rows_per_s": 1234.5, "benchmark": "store_compact",
                                 "device": "cpu (x86_64, 1 threads)",
                                 "machine": {"cpu_count": 2, "load_average_start": [0.5]},
                                 "versions": {"python": "3.11.7"},
                                 "timestamp": "2026-12-05T00:00:00+00:00"}}
    page = report.render_page(results)
    assert "## store_compact" in page and "| rows_per_s | 1,234.500 |" in page
    assert "cpu_count 2" in page and "python 3.11.7" in page
    readme = f"intro\n{report.START}\nold\n{report.END}\nrest\n"
    assert report.render_readme(readme, results) == (
        f"intro\n{report.START}\n| protocol | ours | reference | target | met? |\n"
        f"|---|---|---|---|---|\n{report.END}\nrest\n")


def test_benchmark_results_record_measured_machine_facts_not_notes():
    common = _benchmark_module("_common")
    facts = common.machine_facts()
    assert facts["cpu_count"] == os.cpu_count()
    assert {"torch_threads", "load_average_start", "load_average_end"} <= set(facts)
    for path in sorted((ROOT / "benchmarks").glob("*.py")):
        hits = NOTEBOOK.findall(path.read_text())
        assert not hits, f"{path.name} hard-codes environment claims: {hits}"

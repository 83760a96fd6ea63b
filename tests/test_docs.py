"""The guide builds and its code runs.

* ``mkdocs build --strict`` (broken links, missing pages, API entries that do not resolve all fail) into a
  temporary directory;
* every fenced ```` ```python ```` block of every ``docs/*.md`` page is executed, each page's blocks in order in
  one fresh namespace (later blocks may use names from earlier ones). Blocks fenced as ``text``/``bash`` are not run.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import matplotlib
import pytest

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs"
PYTHON_BLOCK = re.compile(r"^```python[^\n]*\n(.*?)^```[ \t]*$", re.DOTALL | re.MULTILINE)
PAGES = sorted(DOCS.glob("*.md"))


def python_blocks(page: Path) -> list[tuple[int, str]]:
    """``(line number, source)`` of each ```python block of ``page``."""
    text = page.read_text(encoding="utf-8")
    return [(text.count("\n", 0, m.start()) + 2, m.group(1)) for m in PYTHON_BLOCK.finditer(text)]


def test_block_extraction_sees_python_and_skips_other_fences(tmp_path):
    page = tmp_path / "page.md"
    page.write_text("# t\n\n```python\nx = 1\n```\n\n```text\nnot code\n```\n\n```python\ny = x + 1\n```\n")
    assert python_blocks(page) == [(4, "x = 1\n"), (12, "y = x + 1\n")]


@pytest.mark.slow  # every docs page's code: several seconds each
@pytest.mark.parametrize("page", PAGES, ids=[p.name for p in PAGES])
def test_code_blocks_run(page, monkeypatch, tmp_path):
    matplotlib.use("Agg")
    monkeypatch.chdir(tmp_path)  # snippets that write files write them here
    namespace: dict = {"__name__": f"docs_{page.stem}"}
    for line, source in python_blocks(page):
        exec(compile(source, f"{page.relative_to(ROOT)}:{line}", "exec"), namespace)


@pytest.mark.slow  # imports the whole public API
def test_every_public_parameter_is_documented():
    """docs/check_docstrings.py: griffe warns on an Args entry naming no parameter, not on a missing one."""
    result = subprocess.run(
        [sys.executable, str(DOCS / "check_docstrings.py")], cwd=ROOT, capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.slow  # the docs build
def test_mkdocs_build_strict(tmp_path):
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "mkdocs",
            "build",
            "--strict",
            "--config-file",
            str(ROOT / "mkdocs.yml"),
            "--site-dir",
            str(tmp_path / "site"),
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    built = {p.relative_to(tmp_path / "site").parts[0] for p in (tmp_path / "site").rglob("index.html")}
    assert {page.stem for page in PAGES if page.stem != "index"} <= built, "every docs page is in the site"

"""README runs as written: every Python block as a file, the demo and test commands as CI takes
them; and CHANGELOG keeps the form of Keep a Changelog."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from shopline_async import __version__

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
PYTHON_BLOCKS = re.findall(r"```python\n(.*?)```", README.read_text(), re.S)


def run_as_file(code: str, tmp_path: Path) -> list[str]:
    script = tmp_path / "example.py"
    script.write_text(code)
    run = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=60, cwd=tmp_path)
    assert run.returncode == 0, run.stderr
    return run.stdout.splitlines()


def test_readme_is_a_guide_of_at_most_250_lines_with_runnable_python() -> None:
    assert len(README.read_text().splitlines()) <= 250
    assert len(PYTHON_BLOCKS) >= 3
    assert "](" not in re.sub(r"```.*?```", "", README.read_text(), flags=re.S).replace("](https://", "")  # no
    # relative links: they break on the package index, where README is the long description


@pytest.mark.parametrize("index", range(len(PYTHON_BLOCKS)))
def test_every_python_block_runs_as_a_file(index: int, tmp_path: Path) -> None:
    output = run_as_file(PYTHON_BLOCKS[index], tmp_path)
    assert output  # each example says what it did


def test_the_quickstart_prints_what_it_says(tmp_path: Path) -> None:
    match = re.search(r"<!-- readme:runnable -->\n```python\n(.*?)```", README.read_text(), re.S)
    assert match, "README lost its quickstart"
    first, second = run_as_file(match.group(1), tmp_path)
    assert first.startswith("200 ") and "['linen', 'summer'] 29.90" in first
    assert second == "Front 1"


def test_the_changelog_has_an_unreleased_section_dated_releases_and_standard_headings() -> None:
    changelog = (ROOT / "CHANGELOG.md").read_text()
    headings = re.findall(r"^## \[([^\]]+)\](?: - (\d{4}-\d{2}-\d{2}))?$", changelog, re.M)
    assert headings[0] == ("Unreleased", "")
    assert all(date for _, date in headings[1:])  # every release dated
    latest = headings[1][0]
    # the version in development is past the latest release; a release is that version exactly
    assert __version__ == latest or (".dev" in __version__ and __version__.split(".dev")[0] != latest)
    for heading in re.findall(r"^### (.+)$", changelog, re.M):
        assert heading in {"Added", "Changed", "Deprecated", "Removed", "Fixed", "Security"}, heading

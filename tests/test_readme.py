"""README's runnable example runs as written."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

README = Path(__file__).resolve().parent.parent / "README.md"


def test_readme_example_runs_against_the_mock_server() -> None:
    text = README.read_text()
    match = re.search(r"<!-- readme:runnable -->\n```python\n(.*?)```", text, re.S)
    assert match, "README lost its runnable example"
    run = subprocess.run([sys.executable, "-c", match.group(1)], capture_output=True, text=True, timeout=60)
    assert run.returncode == 0, run.stderr
    first, second = run.stdout.splitlines()
    assert first.startswith("200 ") and "['linen', 'summer'] 29.90" in first
    assert second == "Front 1"

"""The documentation site builds strictly, and its API reference has every public name."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("mkdocstrings", reason="the docs need the [docs] extra: pip install -e '.[docs]'")

import shopline_async
import shopline_async.mock

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.slow
def test_the_site_builds_strictly_and_documents_every_public_name(tmp_path: Path) -> None:
    command = [sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(tmp_path)]
    built = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert built.returncode == 0, built.stderr
    modules = [(shopline_async, "index.html"), (shopline_async.mock, "mock/index.html")]
    try:
        import shopline_async.otel as otel
    except ImportError:  # without [otel]
        pass
    else:
        modules.append((otel, "otel/index.html"))
    try:
        import shopline_async.fleet as fleet
    except ImportError:  # without [fleet] its page documents nothing to check against
        pass
    else:
        modules.append((fleet, "fleet/index.html"))
    for module, page in modules:
        html = (tmp_path / "reference" / page).read_text()
        missing = [name for name in module.__all__ if f'id="{module.__name__}.{name}"' not in html]
        assert missing in ([], ["UNSET"]), (module.__name__, missing)  # UNSET: msgspec's sentinel, re-exported

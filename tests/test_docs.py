"""The documentation site builds strict: Sphinx with ``-W`` (every warning an error).

A docstring with broken reStructuredText, a guide missing from the toctree or a notebook that
no longer parses fails here. The guides' ``python`` blocks run in ``test_readme.py``.
"""

import pathlib
import subprocess
import sys

import pytest

REPO = pathlib.Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_docs_build_with_warnings_as_errors(tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", "sphinx", "-E", "-q", "-W", "--keep-going", "-b", "html",
         str(REPO / "docs"), str(tmp_path / "html")],
        capture_output=True, text=True, timeout=600,
    )
    assert result.returncode == 0, result.stderr[-5000:]
    assert (tmp_path / "html" / "api" / "core.html").exists()

"""The guide's runbook script run the wrong way (directly, with the system's Python): one line, exit 1."""
from __future__ import annotations

import shutil
import subprocess

import pytest

from tests.support.daemon import REPO


@pytest.mark.skipif(shutil.which("python3.11") is None and shutil.which("/usr/bin/python3") is None,
                    reason="needs a second Python without the project's packages")
def test_direct_run_without_the_venv_is_one_line_not_a_traceback():
    python = shutil.which("/usr/bin/python3") or shutil.which("python3.11")
    proc = subprocess.run([python, "-I", "scripts/health_check_carbon.py"], cwd=REPO, capture_output=True,
                          text=True, timeout=60)
    assert proc.returncode == 1
    assert "Traceback" not in proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "uv run --no-sync python scripts/health_check_carbon.py" in lines[0], proc.stderr

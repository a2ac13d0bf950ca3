"""The real entry points, `taskd` and `python -m taskd`, each run once as a process."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

from support.cli import ROOT, taskd

from taskd import __version__


def test_console_script_is_installed() -> None:
    # Beside the interpreter (a venv's bin/), or on PATH for an installation into the system.
    beside = Path(sys.executable).with_name("taskd")
    script = str(beside) if beside.exists() else shutil.which("taskd")
    assert script, "pip install -e . should put a `taskd` script beside python or on PATH"
    result = subprocess.run([script, "--version"], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0 and result.stdout.startswith("taskd ")


def test_python_dash_m_taskd_runs_the_same_command_line() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "taskd", "--version"], cwd=ROOT, capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0
    assert result.stdout.strip() == f"taskd {__version__}"
    assert taskd("--version").stdout == result.stdout

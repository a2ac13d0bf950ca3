"""The real entry points, `taskd` and `python -m taskd`, each run once as a process."""

from __future__ import annotations

import contextlib
import io
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

from taskd import __version__
from taskd.cli import main

ROOT = Path(__file__).resolve().parents[2]


@dataclass
class Result:
    returncode: int
    stdout: str
    stderr: str


def taskd(*args: str, cwd: Path = ROOT, env: dict[str, str] | None = None) -> Result:
    """`taskd ARGS` in this process, in `cwd`, with `env` added to the environment."""
    out, err = io.StringIO(), io.StringIO()
    with pytest.MonkeyPatch.context() as patch:
        patch.chdir(cwd)
        for name, value in (env or {}).items():
            patch.setenv(name, value)
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            try:
                code = main(list(args))
            except SystemExit as exit:  # argparse: --help, --version and usage errors
                code = exit.code if isinstance(exit.code, int) else 1
    return Result(code, out.getvalue(), err.getvalue())


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

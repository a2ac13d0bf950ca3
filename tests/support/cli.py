"""The command line run in-process, as `cli.main(argv)`."""

from __future__ import annotations

import contextlib
import io
from dataclasses import dataclass
from pathlib import Path

import pytest

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

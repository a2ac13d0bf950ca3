"""schemathesis, run against a live daemon from its own OpenAPI document with every check and
every phase (the stateful one follows the document's links: a start's run id to the run, its log
and the task's stop), finds no server error and no answer that contradicts the document, with a
token configured and without one."""

from __future__ import annotations

import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
from conftest import Daemon, base_config
from support.openapi import PIPELINES, TASKS

TOKEN = "fuzz-token-0123456789"


@pytest.mark.parametrize("token", [None, TOKEN], ids=["open", "token"])
def test_schemathesis_finds_nothing_against_a_live_daemon(
    daemon_factory: Callable[..., Daemon], tmp_path: Path, token: str | None
) -> None:
    st = shutil.which("st", path=str(Path(sys.executable).parent)) or shutil.which("st")
    if st is None:
        pytest.skip("schemathesis is not installed (pip install -e '.[test]' installs it)")
    config = base_config(TASKS, PIPELINES)
    if token:
        config = config.replace(
            "api: {listen: '127.0.0.1:{port}'}", f"api: {{listen: '127.0.0.1:{{port}}', token: {token}}}"
        )
    daemon = daemon_factory(config)
    daemon.token = token
    daemon.start()
    result = subprocess.run(
        [
            st,
            "run",
            f"http://127.0.0.1:{daemon.port}/openapi.json",
            *(["--header", f"Authorization: Bearer {token}"] if token else []),
            "--checks",
            "all",
            "--exclude-path",
            "/events",
            "--exclude-operation-id",
            "drainNode",  # drains the daemon, which then exits: by design, and tested on its own
            "--max-examples",
            "25",
            "--workers",
            "1",
            "--phases",
            "examples,coverage,fuzzing,stateful",
            "--seed",
            "1",
        ],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=tmp_path,  # schemathesis keeps a cache in its working directory
    )
    assert result.returncode == 0, result.stdout[-6000:] + result.stderr[-2000:]
    assert "Stateful" in result.stdout and "❌" not in result.stdout
    assert daemon.request("GET", "/health").status == 200  # and the daemon is still fine
    assert daemon.stop() == 0

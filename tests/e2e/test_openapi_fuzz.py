"""schemathesis, run against a live daemon from its own OpenAPI document, finds no server error
and no answer that contradicts the document."""

from __future__ import annotations

import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
from conftest import Daemon, base_config
from support.openapi import PIPELINES, TASKS


def test_schemathesis_finds_nothing_against_a_live_daemon(
    daemon_factory: Callable[..., Daemon], tmp_path: Path
) -> None:
    st = shutil.which("st", path=str(Path(sys.executable).parent)) or shutil.which("st")
    if st is None:
        pytest.skip("schemathesis is not installed (pip install -e '.[test]' installs it)")
    daemon = daemon_factory(base_config(TASKS, PIPELINES)).start()
    result = subprocess.run(
        [
            st,
            "run",
            f"http://127.0.0.1:{daemon.port}/openapi.json",
            "--checks",
            "not_a_server_error,status_code_conformance,content_type_conformance,response_schema_conformance",
            "--exclude-path",
            "/events",
            "--max-examples",
            "25",
            "--workers",
            "1",
            "--phases",
            "examples,coverage,fuzzing",
            "--seed",
            "1",
        ],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=tmp_path,  # schemathesis keeps a cache in its working directory
    )
    assert result.returncode == 0, result.stdout[-6000:] + result.stderr[-2000:]
    assert daemon.request("GET", "/health").status == 200  # and the daemon is still fine
    assert daemon.stop() == 0

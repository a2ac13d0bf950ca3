"""The bundled taskd.yml and pipelines/ run out of the box, and as the systemd unit installs them."""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable
from pathlib import Path

import pytest
from conftest import Daemon, free_port

ROOT = Path(__file__).resolve().parents[2]


def _tree(root: Path) -> set[str]:
    return {str(path.relative_to(root)) for path in root.rglob("*")}


@pytest.mark.parametrize("layout", ["checkout", "installed"])
def test_every_bundled_task_succeeds_on_a_fresh_machine(
    daemon_factory: Callable[..., Daemon], tmp_path: Path, layout: str
) -> None:
    """`checkout`: taskd.yml run where it lies, state under ./var. `installed`: as the systemd unit
    runs it, the configuration in etc/taskd (left untouched), everything written in
    $STATE_DIRECTORY (also the working directory), and an API token set."""
    daemon = daemon_factory("placeholder: true\n")
    port = free_port()
    daemon.port = port
    env = {"TASKD_LISTEN": f"127.0.0.1:{port}", "TASKD_URL": f"http://127.0.0.1:{port}"}
    # A nearly full disk on the test machine must not decide this test; thresholds get their own test.
    env |= {"TASKD_DISK_THRESHOLD": "100", "TASKD_MEMORY_THRESHOLD": "100"}
    if layout == "installed":
        etc, state = tmp_path / "etc" / "taskd", tmp_path / "var" / "lib" / "taskd"
        state.mkdir(parents=True)
        env["STATE_DIRECTORY"] = str(state)
        env["TASKD_TOKEN"] = daemon.token = "a-token-the-bundled-health-checks-do-not-need"
        daemon.dir = state
        daemon.log_path = state.parent / "daemon.log"
    else:
        etc, state = daemon.dir, daemon.dir / "var"
    etc.mkdir(parents=True, exist_ok=True)
    shutil.copy(ROOT / "taskd.yml", etc / "taskd.yml")
    shutil.copytree(ROOT / "pipelines", etc / "pipelines")
    daemon.config_path = etc / "taskd.yml"
    before = _tree(etc)
    daemon.start(extra_env=env)
    (state / "logs").mkdir(parents=True, exist_ok=True)
    stale = state / "logs" / "old.log"
    stale.write_text("x")
    os.utime(stale, (0, 0))
    tasks = [t["id"] for t in daemon.request("GET", "/tasks").json()["tasks"]]
    assert set(tasks) == {"health_check", "self_ping", "data_backup", "log_rotation"}
    for task_id in tasks:
        run = daemon.wait_run(daemon.start_task(task_id), timeout=30)
        log = daemon.request("GET", f"/run/{run['id']}/log").text
        assert run["state"] == "completed", (task_id, run["error"], log)
    assert not stale.exists(), "log_rotation deletes *.log files older than 14 days"
    assert len(list((state / "backups").glob("pipelines-*.tar.gz"))) == 1
    assert (state / "taskd.db").exists()
    assert daemon.stop() == 0
    if layout == "installed":
        assert _tree(etc) == before, "nothing is written next to the configuration"

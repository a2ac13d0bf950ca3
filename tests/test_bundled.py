"""The bundled taskd.yml and pipelines/ run out of the box, and the systemd unit is well formed."""

from __future__ import annotations

import configparser
import os
import shutil
from collections.abc import Callable
from pathlib import Path

from conftest import Daemon, free_port

ROOT = Path(__file__).resolve().parent.parent


def test_every_bundled_task_succeeds_on_a_fresh_machine(daemon_factory: Callable[..., Daemon], tmp_path: Path) -> None:
    daemon = daemon_factory("placeholder: true\n")
    shutil.copy(ROOT / "taskd.yml", daemon.config_path)
    shutil.copytree(ROOT / "pipelines", daemon.dir / "pipelines")
    port = free_port()
    daemon.port = port
    env = {"TASKD_LISTEN": f"127.0.0.1:{port}", "TASKD_URL": f"http://127.0.0.1:{port}"}
    # A nearly full disk on the test machine must not decide this test; thresholds get their own test.
    env |= {"TASKD_DISK_THRESHOLD": "100", "TASKD_MEMORY_THRESHOLD": "100"}
    daemon.start(extra_env=env)
    (daemon.dir / "var" / "logs").mkdir(parents=True, exist_ok=True)
    stale = daemon.dir / "var" / "logs" / "old.log"
    stale.write_text("x")
    os.utime(stale, (0, 0))
    tasks = [t["id"] for t in daemon.request("GET", "/tasks").json()["tasks"]]
    assert set(tasks) == {"health_check", "self_ping", "data_backup", "log_rotation"}
    for task_id in tasks:
        run = daemon.wait_run(daemon.start_task(task_id), timeout=30)
        log = daemon.request("GET", f"/run/{run['id']}/log").text
        assert run["state"] == "completed", (task_id, run["error"], log)
    assert not stale.exists(), "log_rotation deletes *.log files older than 14 days"
    assert daemon.stop() == 0


def test_systemd_unit_is_type_notify_with_reload_and_watchdog() -> None:
    parser = configparser.ConfigParser(strict=False, interpolation=None)
    parser.optionxform = str  # type: ignore[assignment,method-assign]
    parser.read(ROOT / "config" / "taskd.service")
    service = parser["Service"]
    assert service["Type"] == "notify"
    assert service["ExecReload"] == "/bin/kill -HUP $MAINPID"
    assert service["ExecStart"].endswith("taskd run -c /etc/taskd/taskd.yml")
    assert int(service["WatchdogSec"]) > 0
    assert service["NoNewPrivileges"] == "yes" and service["ProtectSystem"] == "strict"

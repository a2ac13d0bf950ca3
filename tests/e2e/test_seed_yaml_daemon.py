"""The seed's configuration style through `taskd run` and `taskd check`: `task.debug`,
`task.log_task_execution`, and a `send_alert` with only `condition` and `message`."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable

from conftest import Daemon
from support.seed import SEED


def test_an_alert_without_a_channel_goes_to_the_daemon_log_and_check_says_so(
    daemon_factory: Callable[..., Daemon],
) -> None:
    failing = SEED.replace("source: ./data", "source: ./missing").replace("retry_count: 3", "retry_count: 0")
    daemon = daemon_factory(failing)
    check = subprocess.run(
        [sys.executable, "-m", "taskd", "check", "-c", str(daemon.config_path)],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert check.returncode == 0, check.stderr
    assert "step 4 (send_alert): no channel (webhook, email, log, channels): alerts go to the daemon log" in (
        check.stdout
    )
    daemon.start()
    run = daemon.wait_run(daemon.start_task("data_backup"), timeout=60)
    assert run["state"] == "failed" and "missing does not exist" in run["error"]
    alerts = [e for e in daemon.events() if e.get("event") == "alert"]
    assert alerts and alerts[-1]["summary"] == "Backup failed for data_backup"
    assert daemon.stop() == 0


def test_debug_and_log_task_execution_set_what_the_daemon_logs(daemon_factory: Callable[..., Daemon]) -> None:
    quiet = SEED.replace("log_task_execution: true", "log_task_execution: false")
    loud = SEED.replace("debug: false", "debug: true")
    events = {}
    for name, text in (("default", SEED), ("quiet", quiet), ("loud", loud)):
        daemon = daemon_factory(text, subdir=name)
        (daemon.dir / "data").mkdir()
        daemon.start()
        assert daemon.wait_run(daemon.start_task("data_backup"))["state"] == "completed"
        assert daemon.stop() == 0
        events[name] = {e.get("event") for e in daemon.events()}
    assert "run_finished" in events["default"] and "run_queued" not in events["default"]
    assert "run_finished" not in events["quiet"]
    assert {"run_finished", "run_queued", "attempt_started", "run_output"} <= events["loud"]

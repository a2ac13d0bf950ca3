"""GET /metrics from a real `taskd run`: the last success survives a restart."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime

import pytest
from conftest import Daemon, base_config
from support.metrics import PIPELINES, TASKS, parse, value


def test_the_last_success_survives_a_restart_and_metrics_come_from_the_daemon(
    daemon_factory: Callable[..., Daemon],
) -> None:
    daemon = daemon_factory(base_config(TASKS, PIPELINES)).start()
    run = daemon.wait_run(daemon.start_task("ok"))
    assert daemon.stop() == 0
    daemon.start()
    samples = parse(daemon.request("GET", "/metrics").text)
    finished = run["finished_at"].replace("Z", "+00:00")
    assert value(samples, "taskd_task_last_success_timestamp_seconds", task="ok") == pytest.approx(
        datetime.fromisoformat(finished).timestamp(), abs=0.01
    )
    assert "taskd_runs_total" not in samples or not samples["taskd_runs_total"]  # counters restart at zero
    assert daemon.stop() == 0

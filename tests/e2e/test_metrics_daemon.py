"""GET /metrics from a real `taskd run`: the last success survives a restart."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime

import pytest
from conftest import Daemon, base_config
from prometheus_client.parser import text_string_to_metric_families

TASKS = """
- {id: ok, pipeline: fine, schedule: '0 3 * * *'}
- {id: bad, pipeline: broken}
- {id: slow, pipeline: slow}
"""
PIPELINES = """
- {name: fine, processors: [{log: {message: fine}}]}
- {name: broken, processors: [{shell: {command: 'exit 4'}}]}
- {name: slow, processors: [{shell: {command: 'sleep 30'}}]}
"""


def parse(text: str) -> dict[str, list[tuple[dict[str, str], float]]]:
    """Sample name -> [(labels, value)], as Prometheus reads the exposition."""
    samples: dict[str, list[tuple[dict[str, str], float]]] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            samples.setdefault(sample.name, []).append((dict(sample.labels), sample.value))
    return samples


def value(samples: dict[str, list[tuple[dict[str, str], float]]], name: str, **labels: str) -> float:
    found = [v for found, v in samples.get(name, []) if all(found.get(k) == w for k, w in labels.items())]
    assert len(found) == 1, (name, labels, samples.get(name))
    return found[0]


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

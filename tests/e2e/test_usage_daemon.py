"""What each run used, measured on a real daemon: a shell step that holds 200 MB and burns a second
of CPU is reported within 20% of that (from wait4's rusage), a python step's use is unknown rather
than zero, run search sorts by the figures, and /metrics has them per task."""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path

import pytest
from conftest import Daemon, base_config

HUNGRY = (
    "x = bytearray(200 * 1024 * 1024)\\n"
    "import resource, time\\n"
    "t = time.process_time()\\n"
    "while time.process_time() - t < 1.0: pass\\n"
    "r = resource.getrusage(resource.RUSAGE_SELF)\\n"
    "print('self', r.ru_utime + r.ru_stime, r.ru_maxrss * 1024)"
)
TASKS = """
- {id: hungry, pipeline: hungry}
- {id: light, pipeline: light}
- {id: inside, pipeline: inside}
"""
PIPELINES = f"""
- name: hungry
  processors: [{{shell: {{argv: ["{sys.executable}", "-c", "{HUNGRY}"]}}}}]
- {{name: light, processors: [{{shell: {{command: "true"}}}}, {{shell: {{command: "echo hi"}}}}]}}
- {{name: inside, processors: [{{python: {{function: "fake_steps:note_start"}}}}]}}
"""


@pytest.mark.parametrize("cgroups", [True, False], ids=["cgroup", "rusage"])
def test_usage_is_measured_per_run_sorted_and_exported(daemon_factory: Callable[..., Daemon], cgroups: bool) -> None:
    config = base_config(TASKS, PIPELINES).replace(
        "shutdown_timeout: 5s}", f"shutdown_timeout: 5s, cgroups: {str(cgroups).lower()}}}"
    )
    daemon = daemon_factory(config, env={"PYTHONPATH": str(Path(__file__).parents[1])}).start()
    version = daemon.request("GET", "/health").json()["resources"]["cgroups"]
    if cgroups and version == "none":
        daemon.stop()
        pytest.skip("this machine lets taskd make no cgroup (no delegated v2 subtree, no writable v1 memory)")
    source = "cgroup" if cgroups else "rusage"
    hungry = daemon.wait_run(daemon.start_task("hungry"), timeout=30)
    light = daemon.wait_run(daemon.start_task("light"))
    inside = daemon.wait_run(daemon.start_task("inside"))
    assert (hungry["state"], light["state"], inside["state"]) == ("completed",) * 3

    used = daemon.run(hungry["id"])["usage"]
    assert used["source"] == source and used["processes"] == 1 and used["unknown"] == []
    # The truth: what the process says it used, from its own getrusage, as its last words.
    (line,) = [x for x in daemon.request("GET", f"/run/{hungry['id']}/log").text.splitlines() if " self " in x]
    cpu_s, peak = float(line.split()[-2]), int(line.split()[-1])
    assert cpu_s >= 1.0 and 0.8 * cpu_s <= used["cpu_s"] <= 1.2 * cpu_s, (used, cpu_s)
    assert 0.8 * peak <= used["peak_memory_bytes"] <= 1.2 * peak, (used, peak)
    assert 0.8 * 200 * 2**20 <= used["peak_memory_bytes"] <= 1.2 * 200 * 2**20, used  # 200 MiB, within 20%

    few = daemon.run(light["id"])["usage"]
    assert few["processes"] == 2 and few["cpu_s"] < 0.5 and few["source"] == source
    if cgroups:  # the step's cgroup counts its own pages only
        assert 0 < few["peak_memory_bytes"] < 20 * 2**20 and few["peak_memory_at_most"] is None
    else:  # smaller than taskd, whose pages rusage counts from: unknown, with how large it could have been
        assert few["peak_memory_bytes"] is None and 10 * 2**20 < few["peak_memory_at_most"] < 200 * 2**20

    unknown = daemon.run(inside["id"])["usage"]
    assert unknown["cpu_s"] is None and unknown["peak_memory_bytes"] is None  # unknown, not zero
    assert unknown["unknown"] == ["python fake_steps:note_start"] and unknown["processes"] == 0

    by_cpu = daemon.request("GET", "/runs?sort=-cpu_s&limit=10").json()["runs"]
    assert [r["task_id"] for r in by_cpu][:2] == ["hungry", "light"]  # the unknown one last (null)
    by_memory = daemon.request("GET", "/runs?sort=peak_memory&limit=10").json()["runs"]
    assert [r["task_id"] for r in by_memory][-1] == "hungry"

    metrics = daemon.request("GET", "/metrics").text
    assert 'taskd_run_cpu_seconds_count{task="hungry"} 1.0' in metrics
    assert 'taskd_run_peak_memory_bytes_count{task="hungry"} 1.0' in metrics
    assert ('taskd_run_peak_memory_bytes_count{task="light"}' in metrics) == cgroups  # unknown with rusage
    assert 'taskd_run_cpu_seconds_count{task="inside"}' not in metrics
    assert daemon.stop() == 0

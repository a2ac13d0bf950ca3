"""Limits on real daemons: a step past its memory limit fails with "memory limit ... exceeded"
(never a bare SIGKILL), is not retried unless retry.on_limit says so, and leaves no process;
with cgroups (where this machine lets taskd make them) and with the rlimit fallback."""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path

import pytest
from conftest import Daemon, base_config, processes_matching

GREEDY = "import time; x = bytearray(300 * 1024 * 1024); time.sleep(30)"
TASKS = """
- {id: greedy, pipeline: greedy, limits: {memory: 100M}, retry: {count: 2, backoff: 0.1}}
- {id: patient, pipeline: greedy, limits: {memory: 100M}, retry: {count: 1, backoff: 0.1, on_limit: true}}
- {id: modest, pipeline: modest, limits: {memory: 100M, processes: 50, cpu: 1}}
- {id: forky, pipeline: forky, limits: {processes: 4}}
- {id: escape, pipeline: escape}
"""
PIPELINES = f"""
- name: greedy
  processors:
    - shell: {{command: 'sleep 60.125 & "{sys.executable}" -c "{GREEDY}"'}}
- {{name: modest, processors: [{{shell: {{command: "echo fine"}}}}]}}
- {{name: forky, processors: [{{shell: {{command: "for i in 1 2 3 4 5 6 7 8; do sleep 2 & done; wait"}}}}]}}
- {{name: escape, processors: [{{shell: {{command: "(sleep 30.25 &) ; sleep 0.2"}}}}]}}
"""


def start(daemon_factory: Callable[..., Daemon], cgroups: bool) -> Daemon:
    config = base_config(TASKS, PIPELINES).replace(
        "shutdown_timeout: 5s}", f"shutdown_timeout: 5s, cgroups: {str(cgroups).lower()}}}"
    )
    daemon = daemon_factory(config).start()
    if cgroups and daemon.request("GET", "/health").json()["resources"]["cgroups"] == "none":
        daemon.stop()
        pytest.skip("this machine lets taskd make no cgroup (no delegated v2 subtree, no writable v1 memory)")
    return daemon


def test_a_step_past_its_memory_limit_fails_as_such_once_and_leaves_nothing(
    daemon_factory: Callable[..., Daemon],
) -> None:
    daemon = start(daemon_factory, cgroups=True)
    run = daemon.wait_run(daemon.start_task("greedy"), timeout=30)
    assert run["state"] == "failed" and run["attempts"] == 1, run  # retries 2, but not for this
    assert run["error"] == "not retried: step 1 (shell): memory limit 100 MiB exceeded", run["error"]
    assert "SIGKILL" not in run["error"]
    assert not processes_matching("sleep 60.125")  # the whole tree went with it
    patient = daemon.wait_run(daemon.start_task("patient"), timeout=30)
    assert patient["state"] == "failed" and patient["attempts"] == 2  # retry.on_limit: true
    assert patient["error"].endswith("memory limit 100 MiB exceeded")
    modest = daemon.wait_run(daemon.start_task("modest"))
    assert modest["state"] == "completed"  # limits it stays within change nothing
    forky = daemon.wait_run(daemon.start_task("forky"), timeout=30)
    assert forky["state"] == "failed", forky  # pids.max: the fifth process is refused
    assert "fork" in daemon.request("GET", f"/run/{forky['id']}/log").text.lower()
    for _ in range(3):  # a process that left its step's group is killed with the cgroup, which goes
        escaped = daemon.wait_run(daemon.start_task("escape"))
        assert escaped["state"] == "completed" and not processes_matching("sleep 30.25")
        assert not list(Path("/sys/fs/cgroup").glob(f"*/**/taskd-step-{escaped['id']}-*"))
    assert daemon.stop() == 0


def test_without_cgroups_the_address_space_rlimit_stands_in(daemon_factory: Callable[..., Daemon]) -> None:
    daemon = start(daemon_factory, cgroups=False)
    run = daemon.wait_run(daemon.start_task("greedy"), timeout=30)
    assert run["state"] == "failed" and "MemoryError" in daemon.request("GET", f"/run/{run['id']}/log").text
    assert "with its memory limited to 100 MiB of address space" in run["error"]
    assert not processes_matching("sleep 60.125")
    assert daemon.wait_run(daemon.start_task("modest"))["state"] == "completed"
    assert daemon.stop() == 0

"""Dependencies on real daemons: a shell step of a downstream run sees its upstream run in its
environment and the values the upstream steps returned as params; the API and `taskd check` show
the graph; a kill -9 while the downstream run waits for its slot loses nothing (it runs after the
restart); and on PostgreSQL two nodes run each downstream task once per upstream run, also when the
only node that may run it was killed with kill -9 before it could."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from conftest import POSTGRES_URL, Daemon, base_config, postgres_schema, wait_for

PIPELINES = """
- {name: extract, processors: [{shell: {command: 'echo "extract $TASKD_RUN_ID" >> "${LEDGER}"'}}]}
- name: transform
  processors:
    - shell:
        command: >-
          echo "transform $TASKD_RUN_ID after $TASKD_UPSTREAM_TASK_ID $TASKD_UPSTREAM_RUN_ID
          $TASKD_UPSTREAM_STATE code=$TASKD_PARAM_EXIT_CODE" >> "${LEDGER}"
- {name: hold, processors: [{shell: {command: 'sleep "$TASKD_PARAM_SECONDS"'}}]}
"""
TASKS = """
- {id: extract, pipeline: extract, priority: 5}
- {id: transform, pipeline: transform, after: {tasks: [extract], when: success}}
- {id: hog, pipeline: hold, params: {seconds: "3"}, priority: 1, concurrency: allow}
"""


def ledger_lines(ledger: Path, word: str) -> list[str]:
    if not ledger.exists():
        return []
    return [line for line in ledger.read_text().splitlines() if line.startswith(word + " ")]


def test_a_downstream_run_gets_its_upstream_and_the_api_and_check_show_the_graph(
    daemon_factory: Callable[..., Daemon], tmp_path: Path
) -> None:
    ledger = tmp_path / "ledger.txt"
    daemon = daemon_factory(base_config(TASKS, PIPELINES), env={"LEDGER": str(ledger)}).start()
    upstream = daemon.start_task("extract")
    wait_for(lambda: ledger_lines(ledger, "transform"), timeout=15, what="the downstream run")
    (line,) = ledger_lines(ledger, "transform")
    assert line.endswith(f"after extract {upstream} completed code=0")  # exit_code: what extract returned
    (run,) = daemon.runs("transform")
    assert run["trigger"] == "dependency"
    run = daemon.wait_run(run["id"], states=("completed",))
    detail = daemon.request("GET", f"/run/{run['id']}").json()
    assert [(u["run_id"], u["task_id"], u["state"]) for u in detail["upstream_runs"]] == [
        (upstream, "extract", "completed")
    ]
    assert daemon.request("GET", f"/run/{upstream}").json()["downstream_runs"] == [
        {"task_id": "transform", "run_id": run["id"]}
    ]
    shown = subprocess.run(
        [sys.executable, "-m", "taskd", "show", run["id"], "--url", f"http://127.0.0.1:{daemon.port}"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert f"after:        run {upstream} of extract (completed)" in shown
    assert "used:" in shown and ("process(es) (rusage)" in shown or "process(es) (cgroup)" in shown)
    task = daemon.request("GET", "/task/transform").json()
    assert task["upstream"] == {"tasks": ["extract"], "when": "success", "mode": "all"}
    assert daemon.request("GET", "/task/extract").json()["downstream"] == ["transform"]
    checked = subprocess.run(
        [sys.executable, "-m", "taskd", "check", "-c", str(daemon.config_path)],
        capture_output=True,
        text=True,
        check=True,
        env={**os.environ, "LEDGER": str(ledger)},
    ).stdout
    assert "transform <- extract (success, all)" in checked

    # Deleting the upstream task leaves the downstream one waiting on it, not failing.
    assert daemon.request("DELETE", "/task/extract").status == 200
    task = daemon.request("GET", "/task/transform").json()
    assert (task["status"], task["waiting_on"]) == ("waiting", ["extract"])
    listed = subprocess.run(
        [sys.executable, "-m", "taskd", "tasks", "--url", f"http://127.0.0.1:{daemon.port}"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert any(
        line.split()[:6] == ["transform", "waiting", "on", "extract", "after", "extract"]
        for line in listed.splitlines()
    )
    assert daemon.stop() == 0


def test_kill_9_while_the_downstream_run_waits_for_a_slot_runs_it_after_the_restart(
    daemon_factory: Callable[..., Daemon], tmp_path: Path, hold_s: str
) -> None:
    """One slot: extract runs, hog waits for the slot and takes it when extract ends (its priority
    comes before transform's), so transform waits; the daemon is killed; after the restart transform
    runs, once, for that extract run."""
    ledger = tmp_path / "ledger.txt"
    daemon = daemon_factory(base_config(TASKS, PIPELINES, slots=1), env={"LEDGER": str(ledger)}).start()
    hog = daemon.start_task("hog", {"seconds": "1"})  # extract (priority 5) waits behind it, then hog2
    upstream = daemon.start_task("extract")
    held = daemon.start_task("hog", {"seconds": hold_s})
    daemon.wait_run(upstream, states=("completed",), timeout=15)
    daemon.wait_run(held, states=("running",), timeout=15)
    waiting = wait_for(lambda: daemon.runs("transform"), timeout=10, what="the downstream run, queued")
    assert [r["state"] for r in waiting] == ["queued"]
    assert ledger_lines(ledger, "transform") == []
    daemon.stop(signal.SIGKILL)
    daemon.start()
    wait_for(lambda: ledger_lines(ledger, "transform"), timeout=20, what="the downstream run after the restart")
    runs = {r["id"]: r for r in daemon.runs("transform")}
    assert runs[waiting[0]["id"]]["state"] == "interrupted"
    assert "its upstream runs were given back" in runs[waiting[0]["id"]]["error"]
    (again,) = [r for r in runs.values() if r["id"] != waiting[0]["id"]]
    again = daemon.wait_run(again["id"], states=("completed",))
    assert [u["run_id"] for u in daemon.request("GET", f"/run/{again['id']}").json()["upstream_runs"]] == [upstream]
    assert len(ledger_lines(ledger, "transform")) == 1
    assert daemon.run(hog)["state"] == "completed"
    assert daemon.stop() == 0


@pytest.fixture
async def url(request: pytest.FixtureRequest) -> str:
    schema = await postgres_schema(request)
    return f"{POSTGRES_URL}?search_path={schema}"


def cluster_node(daemon_factory: Callable[..., Daemon], url: str, name: str, ledger: Path, tasks: str) -> Daemon:
    config = base_config(tasks, PIPELINES).replace(
        "store: {path: ./var/taskd.db}", f"store: {{url: '{url}'}}\nnode: {{name: {name}}}"
    )
    return daemon_factory(config, env={"LEDGER": str(ledger)}, subdir=name)


def test_two_nodes_run_a_downstream_task_once_per_upstream_run_and_a_killed_node_loses_none(
    daemon_factory: Callable[..., Daemon], url: str, tmp_path: Path
) -> None:
    ledger = tmp_path / "ledger.txt"
    tasks = TASKS.replace("when: success}", "mode: any}") + (
        "- {id: only-b, pipeline: transform, after: {tasks: [extract], mode: any}, placement: {nodes: [b]}}\n"
    )
    a = cluster_node(daemon_factory, url, "a", ledger, tasks).start()
    b = cluster_node(daemon_factory, url, "b", ledger, tasks).start()
    upstream = []
    for i in range(6):
        upstream.append((a if i % 2 else b).start_task("extract"))
        time.sleep(0.2)
    wait_for(lambda: len(ledger_lines(ledger, "transform")) >= 12, timeout=30, what="12 downstream runs")
    time.sleep(2)  # a second take of any upstream run would show by now
    lines = ledger_lines(ledger, "transform")
    assert len(lines) == 12
    for run_id in upstream:
        assert sum(f"after extract {run_id} " in line for line in lines) == 2  # transform and only-b, once each
    only_b = a.runs("only-b", limit=100)
    assert {r["node"] for r in only_b} == {"b"} and len(only_b) == 6
    for run_id in upstream:  # the store links each upstream run to one run of each downstream task
        linked = a.request("GET", f"/run/{run_id}").json()["downstream_runs"]
        assert sorted(d["task_id"] for d in linked) == ["only-b", "transform"] and all(d["run_id"] for d in linked)

    # b is killed: an extract run on a is kept pending for only-b until b is back, then runs once.
    b.stop(signal.SIGKILL)
    after_kill = a.start_task("extract")
    a.wait_run(after_kill, states=("completed",), timeout=15)
    wait_for(
        lambda: sum(f"after extract {after_kill} " in x for x in ledger_lines(ledger, "transform")) == 1,
        timeout=15,
        what="transform on a",
    )
    time.sleep(1)
    assert not any(r for r in a.runs("only-b", limit=100) if r["id"] not in {x["id"] for x in only_b})
    b.start()
    wait_for(
        lambda: sum(f"after extract {after_kill} " in x for x in ledger_lines(ledger, "transform")) == 2,
        timeout=30,
        what="only-b on b after its restart",
    )
    time.sleep(2)
    assert sum(f"after extract {after_kill} " in x for x in ledger_lines(ledger, "transform")) == 2
    assert a.stop() == 0 and b.stop() == 0


def test_a_node_killed_while_its_downstream_run_waits_gives_the_upstream_run_back_to_run_after_its_restart(
    daemon_factory: Callable[..., Daemon], url: str, tmp_path: Path, hold_s: str
) -> None:
    """extract ends on a; only-b (placed on b) is taken by b and queued behind b's hog (one slot);
    b is killed with kill -9; a finds b's lease expired and interrupts b's runs, which gives the
    upstream run back; b comes back and runs only-b for it, once."""
    ledger = tmp_path / "ledger.txt"
    tasks = (
        TASKS.replace("{id: extract, pipeline: extract,", "{id: extract, pipeline: extract, placement: {nodes: [a]},")
        .replace("concurrency: allow}", "concurrency: allow, placement: {nodes: [b]}}")
        .replace("- {id: transform", "# - {id: transform")
    ) + "- {id: only-b, pipeline: transform, after: extract, placement: {nodes: [b]}}\n"
    config = base_config(tasks, PIPELINES, slots=1)
    nodes = {}
    for name in "ab":
        text = config.replace("store: {path: ./var/taskd.db}", f"store: {{url: '{url}'}}\nnode: {{name: {name}}}")
        nodes[name] = daemon_factory(text, env={"LEDGER": str(ledger)}, subdir=name).start()
    a, b = nodes["a"], nodes["b"]
    hog = b.start_task("hog", {"seconds": hold_s})
    b.wait_run(hog, states=("running",))
    upstream = a.start_task("extract")
    a.wait_run(upstream, states=("completed",))
    (queued,) = wait_for(lambda: a.runs("only-b"), timeout=15, what="only-b taken by b")
    assert (queued["state"], queued["node"]) == ("queued", "b")

    b.stop(signal.SIGKILL)
    interrupted = a.wait_run(queued["id"], states=("interrupted",), timeout=20)
    assert "its upstream runs were given back" in interrupted["error"]
    assert ledger_lines(ledger, "transform") == []
    b.start()
    wait_for(lambda: ledger_lines(ledger, "transform"), timeout=30, what="only-b on b after its restart")
    time.sleep(2)
    (line,) = ledger_lines(ledger, "transform")
    assert f"after extract {upstream} completed" in line
    again = [r for r in a.runs("only-b") if r["id"] != queued["id"]]
    assert [(r["state"], r["node"]) for r in again] == [("completed", "b")]
    assert a.stop() == 0 and b.stop() == 0

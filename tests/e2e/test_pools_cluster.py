"""A pool of one is a mutex across two nodes on PostgreSQL: a run waits, in `queued` and saying
so, while the other node's run holds the pool, and gets it once that run ends, or once its node
is found dead after a kill -9."""

from __future__ import annotations

import signal
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from conftest import POSTGRES_URL, Daemon, base_config, kill_matching, postgres_schema, wait_for

TASKS = """
- {id: hold, pipeline: hold, pools: [db], placement: {nodes: [a]}}
- {id: next, pipeline: hold, pools: [db], placement: {nodes: [b]}}
"""
PIPELINES = """
- name: hold
  processors:
    - shell:
        command: >-
          echo "start $TASKD_TASK_ID" >> "${LEDGER}"; sleep "$TASKD_PARAM_SECONDS";
          echo "end $TASKD_TASK_ID" >> "${LEDGER}"
"""


@pytest.fixture(autouse=True)
def no_leftovers() -> Iterator[None]:
    yield
    kill_matching("sleep 60.375")


@pytest.fixture
async def url(request: pytest.FixtureRequest) -> str:
    schema = await postgres_schema(request)
    return f"{POSTGRES_URL}?search_path={schema}"


def test_a_pool_of_one_runs_one_task_at_a_time_across_nodes_and_a_dead_holder_lets_go(
    daemon_factory: Callable[..., Daemon], url: str, tmp_path: Path
) -> None:
    ledger = tmp_path / "ledger.txt"
    config = base_config(TASKS, PIPELINES, extra="pools: {db: 1}\n")
    nodes = {}
    for name in "ab":
        text = config.replace("store: {path: ./var/taskd.db}", f"store: {{url: '{url}'}}\nnode: {{name: {name}}}")
        nodes[name] = daemon_factory(text, env={"LEDGER": str(ledger)}, subdir=name).start()
    a, b = nodes["a"], nodes["b"]
    lines = lambda: ledger.read_text().splitlines() if ledger.exists() else []  # noqa: E731

    first = a.start_task("hold", {"seconds": "4"})
    wait_for(lambda: "start hold" in lines(), what="hold running on a")
    waiting = b.start_task("next", {"seconds": "0.1"})
    run = wait_for(
        lambda: (r := b.request("GET", f"/run/{waiting}").json())["waiting_for"] and r,
        timeout=3,
        what="next waiting for the pool",
    )
    assert run["state"] == "queued" and run["waiting_for"] == ["pool db (on another node)"]
    assert a.run(first)["state"] == "running"
    b.wait_run(waiting, timeout=20)
    assert lines() == ["start hold", "end hold", "start next", "end next"]  # one at a time
    assert a.run(first)["state"] == "completed"

    # The holder's node is killed: its hold counts no more once its lease has expired.
    ledger.unlink()
    held = a.start_task("hold", {"seconds": "60.375"})
    wait_for(lambda: "start hold" in lines(), what="hold running on a again")
    waiting = b.start_task("next", {"seconds": "0.1"})
    time.sleep(1)
    assert b.run(waiting)["state"] == "queued"
    a.stop(signal.SIGKILL)
    killed = time.monotonic()
    b.wait_run(waiting, timeout=30)
    assert time.monotonic() - killed < 20
    assert b.run(held)["state"] == "interrupted"
    assert lines() == ["start hold", "start next", "end next"]
    assert b.stop() == 0


def test_cluster_max_concurrent_tasks_counts_the_runs_of_every_node(
    daemon_factory: Callable[..., Daemon], url: str, tmp_path: Path
) -> None:
    ledger = tmp_path / "ledger.txt"
    tasks = TASKS.replace(" pools: [db],", "")
    config = base_config(tasks, PIPELINES, extra="cluster: {max_concurrent_tasks: 1}\n")
    nodes = {}
    for name in "ab":
        text = config.replace("store: {path: ./var/taskd.db}", f"store: {{url: '{url}'}}\nnode: {{name: {name}}}")
        nodes[name] = daemon_factory(text, env={"LEDGER": str(ledger)}, subdir=name).start()
    a, b = nodes["a"], nodes["b"]
    first = a.start_task("hold", {"seconds": "4"})
    wait_for(lambda: ledger.exists() and "start hold" in ledger.read_text(), what="hold running on a")
    second = b.start_task("next", {"seconds": "0.1"})
    waiting = wait_for(
        lambda: b.request("GET", f"/run/{second}").json()["waiting_for"], timeout=3, what="next waiting for a slot"
    )
    assert waiting == ["cluster slot (on another node)"] and a.run(first)["state"] == "running"
    b.wait_run(second, timeout=20)
    assert a.run(first)["state"] == "completed"
    assert ledger.read_text().splitlines() == ["start hold", "end hold", "start next", "end next"]
    assert a.stop() == 0 and b.stop() == 0

"""Several daemons on one PostgreSQL store: each scheduled fire runs once in the cluster, every run
names its node, `GET /nodes` shows every node from any node (flagging one whose tasks differ), and
a node killed with kill -9 has its active runs interrupted by a survivor within the lease."""

from __future__ import annotations

import collections
import random
import signal
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from conftest import POSTGRES_URL, Daemon, base_config, postgres_schema, processes_matching, wait_for

TASKS = """
- {id: t1, pipeline: note, schedule: '* * * * * *'}
- {id: t2, pipeline: note, schedule: '* * * * * *'}
- {id: t3, pipeline: note, schedule: '* * * * * *'}
- {id: slow, pipeline: wait, params: {seconds: "60"}}
"""
SLOW_ONLY = """
- {id: slow, pipeline: wait, params: {seconds: "60"}, concurrency: allow}
"""
PIPELINES = """
- {name: note, processors: [{shell: {command: 'echo "$TASKD_TASK_ID $TASKD_RUN_ID" >> "${LEDGER}"'}}]}
- {name: wait, processors: [{shell: {command: 'sleep "$TASKD_PARAM_SECONDS"'}}]}
"""


@pytest.fixture
async def url(request: pytest.FixtureRequest) -> str:
    schema = await postgres_schema(request)
    return f"{POSTGRES_URL}?search_path={schema}"


def node(daemon_factory: Callable[..., Daemon], url: str, name: str, ledger: Path, tasks: str = TASKS) -> Daemon:
    config = base_config(tasks, PIPELINES).replace(
        "store: {path: ./var/taskd.db}", f"store: {{url: '{url}'}}\nnode: {{name: {name}, labels: {{zone: z{name}}}}}"
    )
    return daemon_factory(config, env={"LEDGER": str(ledger)}, subdir=name)


def test_three_nodes_run_each_fire_once_and_see_each_other(
    daemon_factory: Callable[..., Daemon], url: str, tmp_path: Path
) -> None:
    ledger = tmp_path / "ledger.txt"
    nodes = [node(daemon_factory, url, name, ledger).start() for name in ("a", "b", "c")]
    began = time.time()
    time.sleep(5)
    listed = nodes[1].request("GET", "/nodes").json()["nodes"]
    assert [(n["name"], n["alive"], n["config_differs"]) for n in listed] == [
        ("a", True, False),
        ("b", True, False),
        ("c", True, False),
    ]
    assert [n["this"] for n in listed] == [False, True, False]
    assert listed[0]["labels"] == {"zone": "za"} and listed[0]["slots"] == 10
    stopping = time.time()
    for daemon in nodes[1:]:
        assert daemon.stop() == 0
    runs = [r for task in ("t1", "t2", "t3") for r in nodes[0].runs(task) if r["trigger"] != "catch_up"]
    assert nodes[0].stop() == 0
    fires = collections.Counter((r["task_id"], r["scheduled_at"]) for r in runs)
    assert fires and max(fires.values()) == 1, [f for f, n in fires.items() if n > 1]  # no fire twice
    assert {r["node"] for r in runs} <= {"a", "b", "c"}
    # Every whole second all three were up has its fire of each task, run once.
    seconds = {
        r["scheduled_at"]
        for r in runs
        if r["scheduled_at"] and _iso(began + 1) <= r["scheduled_at"] < _iso(stopping - 1)
    }
    assert len(seconds) >= 2
    for second in seconds:
        assert all(fires[(task, second)] == 1 for task in ("t1", "t2", "t3")), second
    # What the steps wrote: one line per run, no run twice.
    lines = ledger.read_text().split("\n")[:-1]
    assert len(lines) == len(set(lines)) and len(lines) >= len([r for r in runs if r["state"] == "completed"])


def test_a_killed_node_has_its_runs_interrupted_and_a_differing_node_is_flagged(
    daemon_factory: Callable[..., Daemon], url: str, tmp_path: Path, hold_s: str
) -> None:
    ledger = tmp_path / "ledger.txt"
    a = node(daemon_factory, url, "a", ledger).start()
    b = node(daemon_factory, url, "b", ledger, TASKS + "- {id: extra, pipeline: note}\n").start()
    listed = {n["name"]: n for n in a.request("GET", "/nodes").json()["nodes"]}
    assert listed["a"]["config_digest"] != listed["b"]["config_digest"]
    assert [listed[name]["config_differs"] for name in "ab"].count(True) == 1  # two nodes, two configs
    run_id = a.start_task("slow", {"seconds": hold_s})
    a.wait_run(run_id, states=("running",))
    assert a.run(run_id)["node"] == "a"
    a.stop(signal.SIGKILL)  # its step's process outlives it, until node a starts again
    killed = time.monotonic()
    run = b.wait_run(run_id, states=("interrupted",), timeout=15)
    assert time.monotonic() - killed <= 10.0, "the survivor took longer than 10 s"
    assert "node a stopped renewing its lease" in run["error"]
    wait_for(
        lambda: not {n["name"]: n for n in b.request("GET", "/nodes").json()["nodes"]}["a"]["alive"],
        timeout=5,
        what="node a shown dead",
    )
    assert processes_matching(f"sleep {hold_s} ")
    a.start()  # its run was interrupted by b already: the restart still kills what it left running
    orphan = f"sleep {hold_s} "
    wait_for(lambda: not processes_matching(orphan), timeout=10, what="node a's orphan killed at its restart")
    assert a.stop() == 0 and b.stop() == 0


def _iso(epoch: float) -> str:
    from datetime import UTC, datetime

    return datetime.fromtimestamp(int(epoch), UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def test_a_node_back_after_losing_its_lease_stops_what_it_no_longer_owns(
    daemon_factory: Callable[..., Daemon], url: str, tmp_path: Path, hold_s: str
) -> None:
    ledger = tmp_path / "ledger.txt"
    a = node(daemon_factory, url, "a", ledger).start()
    b = node(daemon_factory, url, "b", ledger).start()
    run_id = a.start_task("slow", {"seconds": hold_s})
    a.wait_run(run_id, states=("running",))
    wait_for(lambda: processes_matching(f"sleep {hold_s} "), what="the run's process")  # running comes first
    a.send(signal.SIGSTOP)  # paused: it cannot renew its lease
    try:
        b.wait_run(run_id, states=("interrupted",), timeout=15)
    finally:
        a.send(signal.SIGCONT)
    wait_for(lambda: not processes_matching(f"sleep {hold_s} "), timeout=10, what="the run's process gone on node a")
    time.sleep(1.5)  # a's own record of the run must not overwrite the cluster's verdict
    assert b.run(run_id)["state"] == "interrupted"
    wait_for(
        lambda: {n["name"]: n for n in b.request("GET", "/nodes").json()["nodes"]}["a"]["alive"],
        timeout=10,
        what="node a back, as a new incarnation",
    )
    assert "lease_lost" in a.output()
    assert a.stop() == 0 and b.stop() == 0


def test_kill_9_at_random_while_fires_go_on_loses_no_fire_and_runs_none_twice(
    daemon_factory: Callable[..., Daemon], url: str, tmp_path: Path
) -> None:
    """Three nodes, three per-second tasks; one node at a time is killed with kill -9 and started
    again. Counted from the store and from what the steps wrote: no fire ran twice, and every fire
    ran exactly once, those of the second of a kill included: every node claims every fire, so
    the survivors take the next fire at once, and a fire the dead node claimed and never started
    is adopted by whoever finds it dead first (a survivor, or its own restarted process)."""
    ledger = tmp_path / "ledger.txt"
    nodes = {name: node(daemon_factory, url, name, ledger).start() for name in ("a", "b", "c")}
    rng = random.Random(13)
    kills: list[float] = []
    began = time.time()
    for _ in range(3):
        time.sleep(rng.uniform(1.5, 3.0))
        victim = nodes[rng.choice(sorted(nodes))]
        victim.stop(signal.SIGKILL)
        kills.append(time.time())
        time.sleep(rng.uniform(0.5, 1.5))
        victim.start()  # waits out the dead process's lease before it joins
    time.sleep(3)
    ended = time.time()
    survivor = nodes["a"]
    runs = [r for task in ("t1", "t2", "t3") for r in survivor.runs(task) if r["trigger"] == "schedule"]
    for daemon in nodes.values():
        assert daemon.stop() == 0
    fires = collections.Counter((r["task_id"], r["scheduled_at"]) for r in runs)
    assert max(fires.values()) == 1, [f for f, n in fires.items() if n > 1]
    lines = ledger.read_text().split("\n")[:-1]
    assert len(lines) == len(set(lines))  # no run's step ran twice
    for second in range(int(began) + 2, int(ended) - 1):
        for task in ("t1", "t2", "t3"):
            assert fires[(task, _iso(second))] == 1, (task, _iso(second), kills)


def test_a_rolling_restart_with_drain_misses_no_fire_and_runs_none_twice(
    daemon_factory: Callable[..., Daemon], url: str, tmp_path: Path
) -> None:
    """Three nodes, three per-second tasks and a manual run that takes a few seconds; each node in
    turn is drained (`taskd drain --wait` through its API), exits 0 once its runs have finished,
    and starts again. Every fire of the window ran exactly once, the draining node's manual run
    completed rather than being stopped, and a manual start asked of a draining node ran elsewhere."""
    ledger = tmp_path / "ledger.txt"
    tasks = TASKS + "- {id: poke, pipeline: note}\n"
    nodes = {name: node(daemon_factory, url, name, ledger, tasks).start() for name in ("a", "b", "c")}
    began = time.time()
    time.sleep(2)
    for name, daemon in nodes.items():
        long_run = daemon.start_task("slow", {"seconds": "2.5"})
        daemon.wait_run(long_run, states=("running",))
        assert daemon.request("POST", f"/nodes/{name}/_drain").status == 202
        wait_for(
            lambda d=daemon, me=name: {n["name"]: n["draining"] for n in d.request("GET", "/nodes").json()["nodes"]}[
                me
            ],
            timeout=5,
            what=f"node {name} draining",
        )
        forwarded = daemon.start_task("poke")  # a manual start asked of the draining node
        assert daemon.proc is not None and daemon.proc.wait(timeout=30) == 0, daemon.output()[-2000:]
        assert "drained" in daemon.output()
        other = nodes["b" if name == "a" else "a"]
        assert other.run(long_run)["state"] == "completed"  # finished, not stopped
        assert other.wait_run(forwarded)["node"] != name
        daemon.start()  # waits out its own lease before it joins again
        time.sleep(1)
    time.sleep(2)
    ended = time.time()
    runs = [r for task in ("t1", "t2", "t3") for r in nodes["a"].runs(task) if r["trigger"] == "schedule"]
    for daemon in nodes.values():
        assert daemon.stop() == 0
    fires = collections.Counter((r["task_id"], r["scheduled_at"]) for r in runs)
    assert max(fires.values()) == 1, [f for f, n in fires.items() if n > 1]
    lines = ledger.read_text().split("\n")[:-1]
    assert len(lines) == len(set(lines))
    for second in range(int(began) + 2, int(ended) - 1):
        for task in ("t1", "t2", "t3"):
            assert fires[(task, _iso(second))] == 1, (task, _iso(second))


def test_placement_picks_the_nodes(daemon_factory: Callable[..., Daemon], url: str, tmp_path: Path) -> None:
    tasks = """
- {id: everywhere, pipeline: note, schedule: '* * * * * *', placement: all}
- {id: only_b, pipeline: note, schedule: '* * * * * *', placement: {nodes: [b]}}
- {id: zone_a, pipeline: note, schedule: '* * * * * *', placement: {labels: {zone: za}}}
- {id: slow, pipeline: wait, params: {seconds: "1"}, placement: {nodes: [b]}}
- {id: nowhere, pipeline: note, placement: {nodes: [z]}}
"""
    ledger = tmp_path / "ledger.txt"
    a = node(daemon_factory, url, "a", ledger, tasks).start()
    b = node(daemon_factory, url, "b", ledger, tasks).start()
    time.sleep(3.5)
    forwarded = a.request("POST", "/task/slow/_start")  # a may not run it: b does
    assert forwarded.status == 202, forwarded.text
    assert b.wait_run(forwarded.json()["run_id"])["node"] == "b"
    refused = a.request("POST", "/task/nowhere/_start")
    assert refused.status == 409 and "no live node it may run on" in refused.json()["error"]["message"]
    b.stop()
    runs = {task: a.runs(task) for task in ("everywhere", "only_b", "zone_a")}
    assert a.stop() == 0
    assert {r["node"] for r in runs["only_b"]} == {"b"} and {r["node"] for r in runs["zone_a"]} == {"a"}
    per_fire = collections.Counter((r["scheduled_at"], r["node"]) for r in runs["everywhere"])
    assert max(per_fire.values()) == 1  # once per node per fire
    both = [s for s in {s for s, _ in per_fire} if per_fire[(s, "a")] and per_fire[(s, "b")]]
    assert len(both) >= 2  # every node ran the same fire


def test_stop_and_delete_reach_the_node_that_holds_the_run(
    daemon_factory: Callable[..., Daemon], url: str, tmp_path: Path, hold_s: str
) -> None:
    ledger = tmp_path / "ledger.txt"
    a = node(daemon_factory, url, "a", ledger).start()
    b = node(daemon_factory, url, "b", ledger).start()
    run_id = b.start_task("slow", {"seconds": hold_s})
    b.wait_run(run_id, states=("running",))
    # Node a shows the task as the cluster sees it: running, on b.
    seen = a.request("GET", "/task/slow").json()
    assert seen["status"] == "running" and seen["last_run"]["id"] == run_id
    listed = {t["id"]: t for t in a.request("GET", "/tasks").json()["tasks"]}
    assert listed["slow"]["status"] == "running"
    running = a.request("GET", "/tasks?status=running").json()
    # The per-second tasks may be running at that instant too.
    assert "slow" in [t["id"] for t in running["tasks"]] and running["total"] == len(running["tasks"])
    assert {t["status"] for t in running["tasks"]} == {"running"}
    statuses = [t["status"] for t in a.request("GET", "/tasks?sort=-status").json()["tasks"]]
    assert "running" in statuses and statuses == sorted(statuses, reverse=True)
    asked = time.monotonic()
    resp = a.request("POST", "/task/slow/_stop")  # asked of the node that does not hold it
    assert resp.status == 200 and resp.json()["stopped"] == [run_id] and resp.json()["stopping"] == [], resp.text
    assert a.run(run_id)["state"] == "stopped"
    wait_for(lambda: not processes_matching(f"sleep {hold_s} "), timeout=5, what="the run's process gone")
    assert time.monotonic() - asked <= 5.0
    assert a.request("POST", "/task/slow/_stop").status == 409  # nothing active anywhere now
    assert a.request("GET", "/task/slow").json()["status"] == "stopped"
    second = b.start_task("slow", {"seconds": f"{hold_s}1"})
    b.wait_run(second, states=("running",))
    resp = a.request("DELETE", "/task/slow")
    assert resp.status == 200 and resp.json()["stopped"] == [second], resp.text
    assert b.run(second)["state"] == "stopped"
    wait_for(lambda: b.request("GET", "/task/slow").status == 404, timeout=5, what="the task gone from node b")
    assert not processes_matching(f"sleep {hold_s}1 ")
    assert a.stop() == 0 and b.stop() == 0


def test_one_run_is_stopped_and_run_again_from_another_node_and_a_draining_node_says_so(
    daemon_factory: Callable[..., Daemon], url: str, tmp_path: Path
) -> None:
    ledger = tmp_path / "ledger.txt"
    a = node(daemon_factory, url, "a", ledger, tasks=SLOW_ONLY).start()
    b = node(daemon_factory, url, "b", ledger, tasks=SLOW_ONLY).start()
    first = b.start_task("slow", {"seconds": "60.91"})
    second = b.start_task("slow", {"seconds": "60.92"})
    b.wait_run(first, states=("running",))
    b.wait_run(second, states=("running",))
    wait_for(lambda: processes_matching("sleep 60.91"), timeout=5, what="the first run's process")
    resp = a.request("POST", f"/run/{first}/_stop")  # asked of the node that does not hold it
    assert resp.status == 200 and resp.json() == {"run_id": first, "stopped": True, "stopping": False}, resp.text
    wait_for(lambda: not processes_matching("sleep 60.91"), timeout=5, what="the stopped run's process gone")
    assert processes_matching("sleep 60.92") and b.run(second)["state"] == "running"  # the other run goes on
    again = a.request("POST", f"/run/{first}/_rerun")
    assert again.status == 202 and again.json()["rerun_of"] == first, again.text
    rerun = again.json()["run_id"]
    assert a.wait_run(rerun, states=("running",))["params"]["seconds"] == "60.91"
    # A node told to stop drains its runs (for shutdown_timeout), and the others see it draining.
    b.send(signal.SIGTERM)
    wait_for(
        lambda: (
            {n["name"]: n["draining"] for n in a.request("GET", "/nodes").json()["nodes"]} == {"a": False, "b": True}
        ),
        timeout=5,
        what="node b shown draining",
    )
    assert b.proc is not None and b.proc.wait(timeout=30) == 0
    assert a.stop() == 0

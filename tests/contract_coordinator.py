"""The coordinator contract: every coordinator (the local one, with several nodes sharing a hub in
one process, and PostgreSQL's) must pass these. Leases run on a fake clock: a lease expires when the
test moves the clock, not after seconds of waiting.

A test module imports these tests and provides a `cluster` fixture: a `Cluster` whose nodes share
one store and one fake clock.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable

import pytest
import structlog

from taskd.clock import FakeClock, settle
from taskd.cluster import HEARTBEAT_S, LEASE_S, Coordinator, NodeNameInUse, alive
from taskd.cluster.messages import DropTask, Message, Started, StartRun, StopRuns
from taskd.models import RunRecord, RunState, Trigger, new_run_id
from taskd.store import Store


class Cluster:
    """Nodes on one store and one fake clock; what each heard, and each loss of a lease."""

    def __init__(self, store: Store, clock: FakeClock, make: Callable[[str, dict[str, str]], Coordinator]) -> None:
        self.store = store
        self.clock = clock
        self._make = make
        self.heard: dict[str, list[Message]] = {}
        self.lost: list[str] = []
        self.made: list[Coordinator] = []

    def node(self, name: str, labels: dict[str, str] | None = None, slots: tuple[int, int] = (10, 0)) -> Coordinator:
        coordinator = self._make(name, labels or {})
        inbox = self.heard.setdefault(f"{name}#{len(self.made)}", [])
        coordinator.attach(lambda: ("digest-1", *slots), lambda: self.lost.append(name), inbox.append)
        self.made.append(coordinator)
        return coordinator

    def inbox(self, coordinator: Coordinator) -> list[Message]:
        index = self.made.index(coordinator)
        return self.heard[f"{coordinator.name}#{index}"]

    async def run(self, name: str, node: str | None, state: RunState = RunState.RUNNING, task: str = "t") -> RunRecord:
        """A run of `task` held by `node`, as that node would have saved it."""
        now = self.clock.time()
        run = RunRecord(new_run_id(now), task, Trigger.MANUAL, now, state=state, node=node)
        run.error = None
        self.store.save_run(run)
        await self.store.flush()
        return run


async def eventually(check: Callable[[], bool | Awaitable[bool]], what: str, within_s: float = 5.0) -> None:
    """Notifications and the database travel on their own: poll (in real time, with a deadline)
    until `check` holds."""
    deadline = time.monotonic() + within_s
    while True:
        held = check()
        if not isinstance(held, bool):
            held = await held
        if held:
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {within_s}s waiting for {what}")
        await asyncio.sleep(0.01)


async def test_a_node_joins_and_is_listed_as_it_describes_itself(cluster: Cluster) -> None:
    a = cluster.node("a", {"zone": "eu"}, slots=(8, 3))
    await a.join()
    (listed,) = await a.nodes()
    assert (listed.name, dict(listed.labels), listed.slots, listed.slots_in_use) == ("a", {"zone": "eu"}, 8, 3)
    assert listed.config_digest == "digest-1" and listed.incarnation == a.incarnation
    assert listed.heartbeat_at == cluster.clock.time() and alive(listed, cluster.clock.time())
    assert a.alone


async def test_the_heartbeat_renews_the_lease_on_the_clock(cluster: Cluster) -> None:
    a = cluster.node("a")
    await a.join()
    await settle()  # the heartbeat loop begins: its first wait is on the clock

    async def renewed() -> bool:
        (listed,) = await a.nodes()
        return listed.heartbeat_at == cluster.clock.time()

    began = time.monotonic()
    for _ in range(10):  # ten seconds of the fake clock, each renewing the lease once
        cluster.clock.advance(HEARTBEAT_S)
        await eventually(renewed, "the lease renewed at the clock's time")
    assert time.monotonic() - began < 5  # no wall time spent waiting for the beats
    (listed,) = await a.nodes()
    assert alive(listed, cluster.clock.time()) and listed.dead_at is None
    assert a.task is not None and not a.task.done()
    await a.leave()
    assert a.task is None


async def test_every_node_sees_every_other(cluster: Cluster) -> None:
    nodes = [cluster.node(name) for name in ("c", "a", "b")]
    for node in nodes:
        await node.join()
    await nodes[0].beat()
    assert [n.name for n in await nodes[0].nodes()] == ["a", "b", "c"]
    assert not nodes[0].alone


async def test_each_fire_is_won_by_exactly_one_node(cluster: Cluster) -> None:
    nodes = [cluster.node(name) for name in ("a", "b", "c")]
    for node in nodes:
        await node.join()
    fires = [(f"t{i}", 1_800_000_000.0 + second) for i in range(20) for second in range(3)]
    won = await asyncio.gather(*(node.claim_fires(fires) for node in nodes))
    claimed = [fire for each in won for fire in each]
    assert sorted(claimed) == sorted(fires)  # every fire once, none twice
    assert await nodes[0].claim_fires(fires[:5]) == []  # claimed already


async def test_a_lone_node_wins_every_fire(cluster: Cluster) -> None:
    a = cluster.node("a")
    await a.join()
    fires = [("t1", 1_800_000_000.0), ("t1@a", 1_800_000_000.0), ("t2", 1_800_000_001.0)]
    assert sorted(await a.claim_fires(fires)) == sorted(fires)


async def test_messages_reach_every_other_node_typed_and_never_the_sender(cluster: Cluster) -> None:
    a, b, c = (cluster.node(name) for name in ("a", "b", "c"))
    for node in (a, b, c):
        await node.join()
    sent: list[Message] = [
        StopRuns("backup", "stopped through the API"),
        DropTask("backup", "hash-1"),
        StartRun("req-1", "b", "backup", {"target": "/srv", "n": 2}),
        Started("req-1", run_id="r1", state="queued"),
    ]
    for message in sent:
        await a.send(message)
    await eventually(lambda: len(cluster.inbox(b)) == 4 and len(cluster.inbox(c)) == 4, "the messages")
    assert cluster.inbox(b) == sent and cluster.inbox(c) == sent
    await asyncio.sleep(0.05)
    assert cluster.inbox(a) == []


async def test_a_message_that_cannot_be_read_is_dropped_and_logged(cluster: Cluster) -> None:
    a, b = cluster.node("a"), cluster.node("b")
    await a.join()
    await b.join()
    with structlog.testing.capture_logs() as logs:
        await a._send('{"op": "stop", "from": "someone", "task_id": 7}')  # the raw transport
        await a._send("not json")
        await a.send(StopRuns("t", "after the bad ones"))
        await eventually(lambda: len(cluster.inbox(b)) == 1, "the good message")
    assert cluster.inbox(b) == [StopRuns("t", "after the bad ones")]
    refused = sorted(line["error"] for line in logs if line["event"] == "control_message_refused")
    assert len(refused) == 4  # each bad payload, by each node (the sender cannot tell it is its own)
    assert "task_id: Input should be a valid string" in refused[0] and refused[2].startswith("not JSON")


async def test_a_live_node_keeps_its_name_and_a_dead_one_gives_it_up(cluster: Cluster) -> None:
    a = cluster.node("a")
    await a.beat()  # leases are moved by hand here: no heartbeat loop
    again = cluster.node("a")  # a second process with the same node.name
    with pytest.raises(NodeNameInUse, match="another live taskd is node 'a'"):
        await again.beat()
    cluster.clock.advance(LEASE_S + HEARTBEAT_S)  # `a` stopped renewing: its lease runs out
    await again.beat()
    (listed,) = await again.nodes()
    assert listed.incarnation == again.incarnation and listed.dead_at is None


async def test_a_node_that_stops_renewing_is_expired_and_its_runs_interrupted(cluster: Cluster) -> None:
    a, b = cluster.node("a"), cluster.node("b")
    await a.beat()  # leases are moved by hand here: no heartbeat loop
    await b.beat()
    held = await cluster.run("held", "a")
    kept = await cluster.run("kept", "b")
    done = await cluster.run("done", "a", RunState.COMPLETED)
    cluster.clock.advance(LEASE_S + HEARTBEAT_S)  # `a` is paused; `b` beats
    await b.beat()
    (dead, alive_b) = await b.nodes()
    assert dead.name == "a" and dead.dead_at == cluster.clock.time() and alive_b.dead_at is None
    interrupted = await cluster.store.get_run(held.id)
    assert interrupted is not None and interrupted.state is RunState.INTERRUPTED
    assert interrupted.error == "node a stopped renewing its lease while this run was running"
    assert [t.state for t in await cluster.store.transitions(held.id)][-1] == "interrupted"
    for untouched, state in ((kept, RunState.RUNNING), (done, RunState.COMPLETED)):
        stored = await cluster.store.get_run(untouched.id)
        assert stored is not None and stored.state is state
    # `a` comes back: its lease is gone, it stops what it held and joins again as a new node.
    before = a.incarnation
    await a.beat()
    assert cluster.lost == ["a"] and a.incarnation != before
    await a.beat()
    assert [(n.name, n.dead_at) for n in await b.nodes()] == [("a", None), ("b", None)]


async def test_a_restart_recovers_its_own_runs_and_leaves_the_others(cluster: Cluster) -> None:
    a, b = cluster.node("a"), cluster.node("b")
    await a.join()
    await b.join()
    mine, nobodys, theirs = await cluster.run("mine", "a"), await cluster.run("x", None), await cluster.run("y", "b")
    recovered = await a.recover(cluster.clock.time())
    assert sorted(run.id for run in recovered) == sorted([mine.id, nobodys.id])
    stored = await cluster.store.get_run(theirs.id)
    assert stored is not None and stored.state is RunState.RUNNING


async def test_what_other_nodes_hold_is_seen_from_every_node(cluster: Cluster) -> None:
    a, b = cluster.node("a"), cluster.node("b")
    await a.join()
    await b.join()
    older = await cluster.run("older", "a", RunState.COMPLETED, task="t")
    cluster.clock.advance(1)
    running = await cluster.run("running", "a", task="t")
    assert await a.active_elsewhere("t") == [] and await b.active_elsewhere("t") == [running.id]
    latest, active = await b.latest_elsewhere(["t", "never"])
    assert latest["t"].id == running.id != older.id and "never" not in latest
    assert active == {"t": ["running"]}


async def test_fires_a_dead_node_claimed_and_never_started_are_adopted_by_a_survivor(cluster: Cluster) -> None:
    a, b = cluster.node("a"), cluster.node("b")
    adopted: list[tuple[str, float]] = []
    b.attach(lambda: ("digest-1", 10, 0), lambda: None, lambda message: None, adopt=adopted.extend)
    await a.beat()
    await b.beat()
    now = cluster.clock.time()
    fires = [("lost", now), ("started", now), ("every@a", now)]
    assert sorted(await a.claim_fires(fires)) == sorted(fires)
    # `a` started one of them (its run is in the store), then died before the others.
    run = RunRecord(new_run_id(now), "started", Trigger.SCHEDULE, now, state=RunState.RUNNING, node="a")
    run.scheduled_at = now
    cluster.store.save_run(run)
    await cluster.store.flush()
    cluster.clock.advance(LEASE_S + HEARTBEAT_S)
    await b.beat()
    # Only the fire with no run, and not a's own copy of a placement-all fire.
    assert adopted == [("lost", now)]
    cluster.clock.advance(LEASE_S + HEARTBEAT_S)
    await b.beat()
    assert adopted == [("lost", now)]  # once


async def test_a_process_taking_over_a_dead_nodes_name_adopts_its_unstarted_fires(cluster: Cluster) -> None:
    """kill -9 and a restart under the same name, before any other node found the lease expired."""
    old, other = cluster.node("a"), cluster.node("b")
    await old.beat()
    await other.beat()
    now = cluster.clock.time()
    assert await old.claim_fires([("lost", now)]) == [("lost", now)]
    cluster.clock.advance(LEASE_S + HEARTBEAT_S)  # `old` died; the restarted process waited out its lease
    new = cluster.node("a")
    adopted: list[tuple[str, float]] = []
    new.attach(lambda: ("digest-1", 10, 0), lambda: None, lambda message: None, adopt=adopted.extend)
    await new.beat()
    assert adopted == [("lost", now)]


async def test_processes_joining_with_one_name_at_once_never_both_hold_it(cluster: Cluster) -> None:
    for attempt in range(5):
        twins = [cluster.node(f"twin{attempt}") for _ in range(2)]
        outcomes = await asyncio.gather(*(twin.beat() for twin in twins), return_exceptions=True)
        refused = [outcome for outcome in outcomes if isinstance(outcome, NodeNameInUse)]
        assert len(refused) == 1, outcomes
        assert all(outcome is None or isinstance(outcome, NodeNameInUse) for outcome in outcomes), outcomes


async def test_own_runs_are_the_runs_this_node_held_whatever_their_state_now(cluster: Cluster) -> None:
    """What a restarted node kills at start-up: the processes of its own runs, those another node
    already marked interrupted included, never another node's."""
    a, b = cluster.node("a"), cluster.node("b")
    await a.beat()
    await b.beat()
    mine = await cluster.run("mine", "a", RunState.INTERRUPTED)
    unplaced = await cluster.run("unplaced", None)
    theirs = await cluster.run("theirs", "b")
    asked = [mine.id, unplaced.id, theirs.id, "not-a-run"]
    assert sorted(await a.own_runs(asked)) == sorted([mine.id, unplaced.id])
    assert sorted(await b.own_runs(asked)) == sorted([unplaced.id, theirs.id])  # a run of no node: anyone's

"""Pools and requests: a run takes every unit it needs at once, in priority then FIFO order, with a
large request never passed over by small ones; the engine makes runs wait in `queued` for them
without holding a slot, says what they wait for, and refuses a configuration no run of it fits."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from support.cli import taskd
from support.engine import Gates, Harness

from taskd.clock import FakeClock
from taskd.cluster import HEARTBEAT_S, LEASE_S, Hub, LocalCoordinator
from taskd.config import load_config
from taskd.engine import Engine
from taskd.engine.timer import ManualTimer
from taskd.errors import ConfigError, Conflict
from taskd.models import RunState, Trigger
from taskd.resources import Resources
from taskd.store import MemoryStore, RunQuery

T0 = 1_800_000_000.0  # on a minute


async def test_a_run_takes_everything_at_once_in_order_and_a_large_need_is_not_passed_over() -> None:
    pools = Resources({"pool db": 1, "memory": 9})
    assert pools.try_acquire({"pool db": 1, "memory": 4})
    order: list[str] = []

    async def wait(name: str, needs: dict[str, int], priority: int = 0) -> None:
        await pools.acquire(needs, priority)
        order.append(name)

    big = asyncio.create_task(wait("big", {"memory": 8}))
    await asyncio.sleep(0)
    small = asyncio.create_task(wait("small", {"memory": 2}))  # fits now, but big came first
    urgent = asyncio.create_task(wait("urgent", {"pool db": 1}, priority=5))
    await asyncio.sleep(0)
    assert order == [] and pools.waits_for({"pool db": 1}) == ["pool db"]
    pools.release({"pool db": 1, "memory": 4})
    await asyncio.sleep(0)
    assert order == ["urgent", "big"]  # the db pool to the urgent one, the memory to the first in line
    pools.release({"memory": 8})
    await asyncio.gather(big, small, urgent)
    assert order == ["urgent", "big", "small"]
    assert {h.name: (h.held, h.holders) for h in pools.holdings()} == {"memory": (2, 1), "pool db": (1, 1)}
    assert pools.fits({"pool gpu": 1}) == "pool gpu does not exist"
    assert pools.fits({"memory": 10}) == "memory needs 10, more than its size 9"


async def test_a_cancelled_wait_gives_its_place_to_the_next() -> None:
    pools = Resources({"pool db": 1})
    assert pools.try_acquire({"pool db": 1})
    first = asyncio.create_task(pools.acquire({"pool db": 1}))
    second = asyncio.create_task(pools.acquire({"pool db": 1}))
    await asyncio.sleep(0)
    first.cancel()
    pools.release({"pool db": 1})
    await second
    assert first.cancelled() and pools.holdings()[0].held == 1


@pytest.fixture
async def harness(tmp_path: Path) -> AsyncIterator[Harness]:
    made = Harness(tmp_path, Gates())
    yield made
    await made.stop()


POOLED = """
  - {id: a, pipeline: gated, pools: [db], concurrency: allow}
  - {id: b, pipeline: gated, pools: {db: 1}}
  - {id: free, pipeline: note}
"""


async def test_a_pool_of_one_is_a_mutex_and_its_waiters_hold_no_slot(harness: Harness) -> None:
    harness.header = "pools: {db: 1}"
    engine = await harness.start(POOLED)
    first = engine.start_run("a", Trigger.MANUAL)
    second = engine.start_run("b", Trigger.MANUAL)
    third = engine.start_run("a", Trigger.MANUAL)
    async with asyncio.timeout(5):
        while not harness.gates.entered:  # noqa: ASYNC110  # polled with a deadline
            await asyncio.sleep(0.001)
    await asyncio.sleep(0.01)
    assert harness.gates.entered == [first.id]
    assert second.state == RunState.QUEUED and second.waiting_for == ["pool db"]
    assert third.waiting_for == ["pool db"] and first.waiting_for == []
    assert engine.slots.held == 1  # the waiting runs hold no slot
    done = engine.start_run("free", Trigger.MANUAL)  # a task without pools is not held up
    await done.done.wait()
    harness.gates.gate("g").set()
    await harness.settle()
    assert harness.gates.entered == [first.id, second.id, third.id]  # one at a time, in order


def test_pools_are_checked_at_load_time(tmp_path: Path) -> None:
    path = tmp_path / "taskd.yml"
    path.write_text(
        "pools: {db: 1, gpu: 2}\ntasks:\n  - {id: a, pipeline: p, pools: [dbb]}\n"
        "  - {id: b, pipeline: p, pools: {gpu: 3}}\n  - {id: c, pipeline: p, requests: {memory: lots}}\n"
        "pipelines: [{name: p, processors: [{log: {message: hi}}]}]\n"
    )
    with pytest.raises(ConfigError) as caught:
        load_config(path, {})
    text = "\n".join(caught.value.problems)
    assert "tasks[0].pools.dbb: unknown pool 'dbb' (did you mean 'db'?); defined pools: db, gpu" in text
    assert "tasks[1].pools.gpu: asks for 3 units of pool 'gpu', which has 2: it could never run" in text
    assert "tasks[2].requests.memory" in text and "expected a size such as 512M" in text


REQUESTS = """
  - {id: big, pipeline: gated, requests: {memory: 600M}, concurrency: allow}
  - {id: huge, pipeline: gated, requests: {memory: 2G}}
"""


async def test_a_request_waits_until_it_fits_and_one_that_never_fits_is_refused(harness: Harness) -> None:
    harness.header = "node: {capacity: {memory: 1G}}"
    with pytest.raises(ConfigError) as caught:
        await harness.start(REQUESTS)
    problems = "\n".join(caught.value.problems)
    assert "tasks.huge.requests.memory: 2 GiB is more than this node's capacity (1 GiB, node.capacity)" in problems
    engine = await harness.start(REQUESTS.replace("  - {id: huge, pipeline: gated, requests: {memory: 2G}}\n", ""))
    first = engine.start_run("big", Trigger.MANUAL)
    second = engine.start_run("big", Trigger.MANUAL)
    async with asyncio.timeout(5):
        while not harness.gates.entered:  # noqa: ASYNC110  # polled with a deadline
            await asyncio.sleep(0.001)
    assert second.waiting_for == ["memory"] and first.waiting_for == []
    harness.gates.gate("g").set()
    await harness.settle()
    assert harness.gates.entered == [first.id, second.id]


async def cluster(
    tmp_path: Path, capacities: dict[str, str], tasks: str, seconds: int = 0
) -> tuple[FakeClock, MemoryStore, dict[str, LocalCoordinator], dict[str, Engine]]:
    """Engines on one hub, memory store and fake clock, node name -> its memory capacity. The nodes
    join the hub before any engine starts: each finds others on the store (a request larger than
    itself is not a configuration error then)."""
    clock = FakeClock(T0 + 1)
    store = MemoryStore(clock=clock)
    clock.waits_for(store.settled)
    await store.open()
    hub = Hub()
    coordinators = {name: LocalCoordinator(store, name, {}, clock, hub) for name in capacities}
    engines: dict[str, Engine] = {}
    for name, coordinator in coordinators.items():
        (tmp_path / name).mkdir()
        (tmp_path / name / "taskd.yml").write_text(
            f"store: {{path: ':memory:'}}\nnode: {{name: {name}, capacity: {{memory: {capacities[name]}}}}}\n"
            f"tasks:\n{tasks}pipelines:\n  - {{name: p, processors: [{{sleep: {{duration: {seconds}}}}}]}}\n"
        )
        config = load_config(tmp_path / name / "taskd.yml", {})

        def timer(callback: Any) -> ManualTimer:
            return ManualTimer(callback, clock)

        engines[name] = Engine(config, store, clock=clock, timer=timer, coordinator=coordinator)
        await engines[name].start()
    return clock, store, coordinators, engines


async def test_a_fire_goes_to_the_node_its_request_fits_and_alone_a_node_records_why_not(tmp_path: Path) -> None:
    clock, store, _, engines = await cluster(
        tmp_path,
        {"large": "8G", "small": "1G"},
        "  - {id: big, pipeline: p, schedule: '* * * * *', requests: {memory: 4G}}\n",
    )
    await clock.run_for(2 * HEARTBEAT_S)  # each node has seen the other alive
    for minute in (60, 120, 180):
        clock.set(T0 + minute)
        for engine in (engines["small"], engines["large"]):  # the small node first: it never claims the fire
            assert isinstance(engine.firing.timer, ManualTimer)
            engine.firing.timer.fire_due()
        await clock.run_for(1)
    runs, _ = await store.list_runs(RunQuery(task_ids=("big",)))
    assert sorted(r.node for r in runs) == ["large"] * 3
    assert await store.fires("big") == []  # nothing refused: the small node left the fires alone
    with pytest.raises(Conflict, match="can never run on this node"):
        engines["small"].start_run("big", Trigger.MANUAL)

    await engines["large"].shutdown(1)  # alone now: the small node records the fires it cannot run
    await clock.run_for(LEASE_S + 2 * HEARTBEAT_S)
    clock.set(T0 + 300)
    small_timer = engines["small"].firing.timer
    assert isinstance(small_timer, ManualTimer)
    small_timer.fire_due()
    await clock.run_for(1)
    (refused,) = await store.fires("big")
    assert refused.reason.startswith("capacity: its requests can never fit this node (memory needs")
    await engines["small"].shutdown(1)
    await store.close()


async def test_a_node_where_the_request_does_not_fit_now_lets_one_where_it_fits_claim_first(tmp_path: Path) -> None:
    clock, store, _, engines = await cluster(
        tmp_path,
        {"busy": "8G", "idle": "8G"},
        "  - {id: big, pipeline: p, schedule: '* * * * *', requests: {memory: 5G}, concurrency: allow}\n"
        "  - {id: other, pipeline: p}\n",
        seconds=600,
    )
    await clock.run_for(2 * HEARTBEAT_S)
    busy, idle = engines["busy"], engines["idle"]
    held = busy.start_run("big", Trigger.MANUAL)  # 5G of busy's 8G: another 5G does not fit there now
    other = idle.start_run("other", Trigger.MANUAL)  # a slot each: as busy as each other but for memory
    await clock.run_for(0)
    assert not busy.fits_now("big") and idle.fits_now("big")
    await clock.run_for(T0 + 59.5 - clock.time())  # heartbeats go on: each node sees the other alive
    clock.set(T0 + 60)
    for engine in (busy, idle):  # busy is asked first, and still lets idle claim
        assert isinstance(engine.firing.timer, ManualTimer)
        engine.firing.timer.fire_due()
    await clock.run_for(1)
    runs, _ = await store.list_runs(RunQuery(task_ids=("big",), triggers=("schedule",)))
    assert [r.node for r in runs] == ["idle"]
    held.stop("the test is over")
    other.stop("the test is over")
    for engine in engines.values():
        await engine.shutdown(1)
    await store.close()


async def test_a_request_no_live_node_can_hold_is_refused_once_for_the_cluster(tmp_path: Path) -> None:
    clock, store, coordinators, engines = await cluster(
        tmp_path,
        {"n1": "1G", "n2": "1G"},
        "  - {id: huge, pipeline: p, schedule: '* * * * *', requests: {memory: 4G}}\n",
    )
    await clock.run_for(T0 + 59.5 - clock.time())
    assert [n.capacity["memory"] for n in coordinators["n2"].live_nodes] == [2**30, 2**30]  # each told its own
    clock.set(T0 + 60)
    for engine in engines.values():
        assert isinstance(engine.firing.timer, ManualTimer)
        engine.firing.timer.fire_due()
    await clock.run_for(1)
    assert (await store.list_runs(RunQuery(task_ids=("huge",))))[0] == []
    (refused,) = await store.fires("huge")  # one node says so, not each
    assert refused.reason.startswith("capacity: its requests fit no live node's capacity (memory needs")
    assert {n.name: n.capacity["memory"] for n in await coordinators["n1"].nodes()} == {"n1": 2**30, "n2": 2**30}
    for engine in engines.values():
        await engine.shutdown(1)
    await store.close()


async def test_a_run_kept_waiting_behind_a_larger_one_says_it_waits_for_the_pool(harness: Harness) -> None:
    harness.header = "pools: {gpu: 2}"
    engine = await harness.start(
        "  - {id: g1, pipeline: gated, pools: {gpu: 1}, concurrency: allow}\n"
        "  - {id: g2, pipeline: gated, pools: {gpu: 2}}\n"
    )
    first = engine.start_run("g1", Trigger.MANUAL)
    large = engine.start_run("g2", Trigger.MANUAL)
    small = engine.start_run("g1", Trigger.MANUAL)  # one unit is free, but kept for the larger one first
    async with asyncio.timeout(5):
        while not harness.gates.entered:  # noqa: ASYNC110  # polled with a deadline
            await asyncio.sleep(0.001)
    await asyncio.sleep(0.01)
    assert first.waiting_for == [] and large.waiting_for == ["pool gpu"] and small.waiting_for == ["pool gpu"]
    harness.gates.gate("g").set()
    await harness.settle()
    assert harness.gates.entered == [first.id, large.id, small.id]


def test_check_refuses_a_request_larger_than_the_node_without_saying_ok_first(tmp_path: Path) -> None:
    (tmp_path / "taskd.yml").write_text(
        "node: {capacity: {memory: 1G}}\ntasks:\n  - {id: r2, pipeline: p, requests: {memory: 2G}, limits: {cpu: 1}}\n"
        "pipelines: [{name: p, processors: [{log: {message: hi}}]}]\n"
    )
    refused = taskd("check", "-c", "taskd.yml", cwd=tmp_path)
    assert refused.returncode == 2 and refused.stdout == ""
    assert "tasks.r2.requests.memory: 2 GiB is more than this node's capacity (1 GiB, node.capacity)" in refused.stderr
    (tmp_path / "taskd.yml").write_text(
        "task: {cgroups: false}\ntasks:\n  - {id: r2, pipeline: p, requests: {memory: 512M}, limits: {cpu: 1}}\n"
        "pipelines: [{name: p, processors: [{log: {message: hi}}]}]\n"
    )
    checked = taskd("check", "-c", "taskd.yml", cwd=tmp_path).stdout
    assert "  limits:    cpu 1 (task: {cgroups: false}: cpu not enforced)" in checked
    assert "  requests:  memory 512 MiB" in checked

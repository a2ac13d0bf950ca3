"""The coordinator contract on the local coordinator: several nodes in one process sharing a hub
and a memory store, on a fake clock."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from contract_coordinator import *  # noqa: F403  # the contract's tests, run here
from contract_coordinator import Cluster

from taskd.clock import FakeClock
from taskd.cluster import Coordinator, Hub, LocalCoordinator
from taskd.store import MemoryStore


@pytest.fixture
async def cluster() -> AsyncIterator[Cluster]:
    clock = FakeClock(1_800_000_000.0)
    store = MemoryStore(clock=clock)
    await store.open()
    hub = Hub()

    def make(name: str, labels: dict[str, str]) -> Coordinator:
        return LocalCoordinator(store, name, labels, clock, hub)

    made = Cluster(store, clock, make)
    yield made
    for node in made.made:
        await node.leave()
    await store.close()


async def test_liveness_is_judged_on_the_leases_clock_not_the_nodes_own() -> None:
    """A node whose own clock runs ahead of the clock its leases are timed by (PostgreSQL's server)
    still sees the other nodes alive."""
    from taskd.cluster.base import Beat, NodeInfo

    ahead = FakeClock(1_800_000_100.0)  # 100 s ahead of the leases' clock
    store = MemoryStore()

    class Skewed(LocalCoordinator):
        async def _heartbeat(self, me: NodeInfo) -> Beat:
            other = NodeInfo("b", "i-b", {}, "v", "d", 0.0, 1, 0, heartbeat_at=1_800_000_000.0)
            return Beat(True, [], [me, other], now=1_800_000_000.5)

    node = Skewed(store, "a", {}, ahead)
    await node.beat()
    assert not node.alone

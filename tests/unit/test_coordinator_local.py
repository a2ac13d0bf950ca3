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

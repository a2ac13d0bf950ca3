"""The coordinator contract on PostgreSQL: each node with a store (a pool) of its own on one schema
of the local server, leases timed by a fake clock instead of the server's."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from conftest import POSTGRES_URL, postgres_schema
from contract_coordinator import *  # noqa: F403  # the contract's tests, run here
from contract_coordinator import Cluster

from taskd.clock import FakeClock
from taskd.cluster import Coordinator
from taskd.cluster.postgres import PostgresCoordinator
from taskd.store.postgres import PostgresStore


@pytest.fixture
async def cluster(request: pytest.FixtureRequest) -> AsyncIterator[Cluster]:
    schema = await postgres_schema(request)
    clock = FakeClock(1_800_000_000.0)
    stores: list[PostgresStore] = []

    async def store() -> PostgresStore:
        opened = PostgresStore(POSTGRES_URL, schema=schema, clock=clock)
        await opened.open()
        stores.append(opened)
        return opened

    first = await store()
    pending: list[PostgresStore] = []

    def make(name: str, labels: dict[str, str]) -> Coordinator:
        own = pending.pop() if pending else first
        return PostgresCoordinator(own, name, labels, clock, server_time=False)

    # Nodes after the first get a pool of their own, as separate processes would.
    pending.extend([await store() for _ in range(3)])
    made = Cluster(first, clock, make)
    yield made
    for node in made.made:
        await node.leave()
    for opened in stores:
        await opened.close()

"""The coordinator contract on PostgreSQL: each node with a store (a pool) of its own on one schema
of the local server, leases timed by a fake clock instead of the server's."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from conftest import POSTGRES_URL, postgres_schema
from contract_coordinator import *  # noqa: F403  # the contract's tests, run here
from contract_coordinator import Cluster

from taskd.clock import FakeClock
from taskd.cluster import Coordinator, NodeNameInUse
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


async def test_a_process_refused_its_node_name_listens_to_nothing(cluster: Cluster) -> None:
    """Only the process that holds a name hears what is said to it: a second one, refused, opens
    no listening connection, and what its attempts opened is closed."""
    a = cluster.node("a")
    await a.beat()
    again = cluster.node("a")
    with pytest.raises(NodeNameInUse):
        await again.beat()
    assert isinstance(again, PostgresCoordinator) and again._listener is None
    assert a._listener is not None and not a._listener.is_closed()  # type: ignore[attr-defined]


async def test_an_engine_on_a_postgresql_store_coordinates_through_it(cluster: Cluster, tmp_path: Path) -> None:
    from taskd.config import load_config
    from taskd.engine import Engine

    (tmp_path / "taskd.yml").write_text("tasks: []\npipelines: []\n")
    engine = Engine(load_config(tmp_path / "taskd.yml", {}), cluster.store)
    assert isinstance(engine.coordinator, PostgresCoordinator)

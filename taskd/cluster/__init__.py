"""Coordination of the nodes that share a store: the `Coordinator` interface and its records
(base), typed control messages (messages), the coordinator of a store no other process shares
(local), and the PostgreSQL one (postgres). `coordinator_for` picks the one a store needs."""

from __future__ import annotations

from collections.abc import Mapping

from taskd.clock import Clock
from taskd.cluster.base import HEARTBEAT_S, LEASE_S, Coordinator, NodeInfo, NodeNameInUse, alive, differs
from taskd.cluster.local import Hub, LocalCoordinator
from taskd.store.base import Store


def coordinator_for(store: Store, name: str, labels: Mapping[str, str], clock: Clock) -> Coordinator:
    """The coordinator of this node on `store`: PostgreSQL's for a PostgreSQL store (other nodes may
    share it), the local one for any other."""
    try:  # asyncpg is optional (the `postgres` extra): without it there is no PostgreSQL store either
        from taskd.cluster.postgres import PostgresCoordinator
        from taskd.store.postgres import PostgresStore
    except ImportError:
        return LocalCoordinator(store, name, labels, clock)
    if isinstance(store, PostgresStore):
        return PostgresCoordinator(store, name, labels, clock)
    return LocalCoordinator(store, name, labels, clock)


__all__ = [
    "HEARTBEAT_S",
    "LEASE_S",
    "Coordinator",
    "Hub",
    "LocalCoordinator",
    "NodeInfo",
    "NodeNameInUse",
    "alive",
    "coordinator_for",
    "differs",
]

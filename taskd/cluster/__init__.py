"""Coordination of the nodes that share a store: the `Coordinator` interface and its records
(base), typed control messages (messages), the coordinator of a store no other process shares
(local), and the PostgreSQL one (postgres). `coordinator_for` picks the one a store needs."""

from __future__ import annotations

import sys
from collections.abc import Mapping

from taskd.clock import Clock
from taskd.cluster.base import HEARTBEAT_S, LEASE_S, Coordinator, NodeInfo, NodeNameInUse, alive, differs
from taskd.cluster.local import Hub, LocalCoordinator
from taskd.store.base import Store


def coordinator_for(store: Store, name: str, labels: Mapping[str, str], clock: Clock) -> Coordinator:
    """The coordinator of this node on `store`: PostgreSQL's for a PostgreSQL store (other nodes may
    share it), the local one for any other."""
    # A PostgreSQL store's module is imported by whoever made the store: when it is not imported,
    # the store is another kind, and asyncpg (the `postgres` extra, 3 MB) is left unimported.
    postgres = sys.modules.get("taskd.store.postgres")
    if postgres is not None and isinstance(store, postgres.PostgresStore):
        from taskd.cluster.postgres import PostgresCoordinator

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

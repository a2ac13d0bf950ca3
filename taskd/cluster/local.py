"""The coordinator of a node whose store no other process shares (SQLite, memory).

Alone, it wins every fire it claims and hears no messages. Several nodes may also share one `Hub`
inside one process (and one store): the in-memory twin of the PostgreSQL coordinator, with the same
leases, claims and messages, which lets tests run a cluster without a database server.
"""

from __future__ import annotations

import asyncio
import dataclasses
import heapq
from collections.abc import Mapping, Sequence

from taskd.clock import Clock
from taskd.cluster.base import LEASE_S, ORPHANS_WITHIN_S, Beat, Coordinator, NodeInfo, NodeNameInUse, lease_expired
from taskd.store.base import Store

CLAIMS_KEPT_S = 600.0
"""How long a hub remembers a claimed fire: its nodes fire the same instants within moments."""


class Hub:
    """What the nodes of one process share: their descriptions, claimed fires and message inboxes."""

    def __init__(self) -> None:
        self.nodes: dict[str, NodeInfo] = {}
        self.members: list[LocalCoordinator] = []
        self.claims: dict[tuple[str, float], tuple[str, float]] = {}  # (key, instant) -> (node, claimed at)
        self._claimed: list[tuple[float, str]] = []  # (instant, key), to forget old claims in order
        self.holds: dict[str, tuple[str, dict[str, int]]] = {}  # run id -> (node, pool -> units)


class LocalCoordinator(Coordinator):
    """This node, alone on its store or among the nodes of one process sharing a `Hub`."""

    def __init__(
        self,
        store: Store,
        name: str,
        labels: Mapping[str, str],
        clock: Clock,
        hub: Hub | None = None,
    ) -> None:
        super().__init__(store, name, labels, clock)
        self._private = hub is None
        self.hub = hub if hub is not None else Hub()
        self.hub.members.append(self)
        self._registered: str | None = None  # the incarnation this coordinator registered

    @property
    def shared(self) -> bool:
        return len(self.hub.members) > 1

    async def _heartbeat(self, me: NodeInfo) -> Beat:
        now = self.clock.time()
        nodes = self.hub.nodes
        held = nodes.get(me.name)
        heirs_of: list[str] = []  # the previous process of this name, dead: its orphans are ours
        if held is None or (held.incarnation != me.incarnation and self._registered != me.incarnation):
            if held is not None and held.dead_at is None and held.heartbeat_at >= now - LEASE_S:
                raise NodeNameInUse(
                    f"another live taskd is node {me.name!r} (its last heartbeat was "
                    f"{now - held.heartbeat_at:.1f} s ago); give each node its own node.name"
                )
            nodes[me.name] = dataclasses.replace(me, heartbeat_at=now)
            if held is not None and held.incarnation != me.incarnation:
                heirs_of.append(me.name)
            self._registered = me.incarnation
            kept = True
        else:
            kept = held.incarnation == me.incarnation and held.dead_at is None
            if kept:
                nodes[me.name] = dataclasses.replace(me, heartbeat_at=now)
        expired = [n.name for n in nodes.values() if n.dead_at is None and n.heartbeat_at < now - LEASE_S]
        for name in expired:
            nodes[name] = dataclasses.replace(nodes[name], dead_at=now)
            await self.store.interrupt_runs_of(name, now, lease_expired(name))
        gone = {*expired, *heirs_of}
        for run_id in [run_id for run_id, (node, _) in self.hub.holds.items() if node in gone]:
            del self.hub.holds[run_id]  # a dead node's runs hold no pool any more
        adopted = await self._adopt_orphans([*expired, *heirs_of], now)
        return Beat(kept, expired, await self.nodes(), now, adopted)

    async def _adopt_orphans(self, expired: list[str], now: float) -> list[tuple[str, float]]:
        """The recent claims of the expired nodes that have no run become this node's."""
        if not expired:
            return []
        claims = self.hub.claims
        orphans = [
            claim
            for claim, (node, claimed_at) in claims.items()
            if node in expired and "@" not in claim[0] and claimed_at >= now - ORPHANS_WITHIN_S
        ]
        started = await self.store.scheduled_runs(orphans)
        adopted = [claim for claim in orphans if claim not in started]
        for claim in adopted:
            claims[claim] = (self.name, now)
        return adopted

    async def nodes(self) -> list[NodeInfo]:
        return [self.hub.nodes[name] for name in sorted(self.hub.nodes)]

    def claim_at_once(self, claims: Sequence[tuple[str, float]]) -> list[tuple[str, float]] | None:
        return None if self.shared else list(claims)

    async def claim_fires(self, claims: Sequence[tuple[str, float]]) -> list[tuple[str, float]]:
        if not self.shared:
            return list(claims)  # nobody to compete with
        hub, won = self.hub, []
        for claim in claims:
            if claim not in hub.claims:
                hub.claims[claim] = (self.name, self.clock.time())
                heapq.heappush(hub._claimed, (claim[1], claim[0]))
                won.append(claim)
        horizon = self.clock.time() - CLAIMS_KEPT_S
        while hub._claimed and hub._claimed[0][0] < horizon:
            instant, key = heapq.heappop(hub._claimed)
            hub.claims.pop((key, instant), None)
        return won

    async def claim_pools(self, run_id: str, pools: Mapping[str, int], sizes: Mapping[str, int]) -> bool:
        if not self.shared:
            return True
        hub = self.hub
        live = {name for name, node in hub.nodes.items() if node.dead_at is None}
        for name, units in pools.items():
            held = sum(held.get(name, 0) for node, held in hub.holds.values() if node in live)
            if held + units > sizes.get(name, 0):
                return False
        hub.holds[run_id] = (self.name, dict(pools))
        return True

    async def release_pools(self, run_id: str) -> None:
        self.hub.holds.pop(run_id, None)

    async def _send(self, payload: str) -> None:
        loop = asyncio.get_running_loop()
        for member in self.hub.members:  # the sender too, as NOTIFY does: it knows its own
            loop.call_soon(member._heard, payload)  # later, as a notification arrives

    async def _left(self) -> None:
        if not self._private and self in self.hub.members:
            self.hub.members.remove(self)

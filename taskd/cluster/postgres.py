"""The coordinator of nodes sharing one PostgreSQL database (one schema of it), on the store's pool.

Leases are rows renewed by heartbeats, timed by the server's clock so that the nodes' clocks do not
matter; a fire is claimed by inserting its (key, instant) row, which the primary key lets only one
node do; control messages go over LISTEN/NOTIFY on a channel of the schema's own.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any

import asyncpg

from taskd.clock import Clock
from taskd.cluster.base import LEASE_S, ORPHANS_WITHIN_S, Beat, Coordinator, NodeInfo, NodeNameInUse, lease_expired, log
from taskd.store.postgres import PostgresStore

CONTROL_CHANNEL = "taskd_control"
"""The LISTEN/NOTIFY channel on which nodes tell each other to stop a task's runs or drop a task,
followed by the schema's name: NOTIFY reaches the whole database, and each schema is a cluster."""
CLAIMS_KEPT_S = 86_400.0
"""How long a claimed fire is remembered: longer than any clock skew or catch-up could ask again."""
CLAIMS_PRUNED_EVERY_S = 3600.0

NODE_LOCK_CLASS = 0x7461736B
"""The first key of the advisory locks that serialize heartbeats of one node name ("task")."""
POOL_LOCK_CLASS = 0x706F6F6C
"""The first key of the advisory locks that serialize the claims of one pool ("pool")."""

SQL = {
    "lock_node_name": "SELECT pg_advisory_xact_lock($1::int, hashtext($2))",
    "server_now": "SELECT extract(epoch FROM clock_timestamp())::double precision",
    "node_row": "SELECT * FROM nodes WHERE name = $1 FOR UPDATE",
    "join_node": """
        INSERT INTO nodes (name, incarnation, labels, version, config_digest, started_at, slots, slots_in_use,
                           capacity, heartbeat_at, dead_at)
        VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, NULL)
        ON CONFLICT (name) DO UPDATE SET incarnation = excluded.incarnation, labels = excluded.labels,
            version = excluded.version, config_digest = excluded.config_digest, started_at = excluded.started_at,
            slots = excluded.slots, slots_in_use = excluded.slots_in_use, capacity = excluded.capacity,
            heartbeat_at = excluded.heartbeat_at, dead_at = NULL, draining = FALSE
    """,
    "renew_node": """
        UPDATE nodes SET heartbeat_at = $3, slots_in_use = $4, slots = $5, config_digest = $6, draining = $7
        WHERE name = $1 AND incarnation = $2 AND dead_at IS NULL RETURNING name
    """,
    # A row another transaction holds (its node renewing it, another node expiring it) is left for
    # the next beat: two nodes expiring each other at once would otherwise deadlock.
    "expire_nodes": """
        UPDATE nodes SET dead_at = $1 WHERE name IN (
            SELECT name FROM nodes WHERE dead_at IS NULL AND heartbeat_at < $2 ORDER BY name FOR UPDATE SKIP LOCKED
        ) RETURNING name
    """,
    "nodes": "SELECT * FROM nodes ORDER BY name",
    "lock_pool": "SELECT pg_advisory_xact_lock($1::int, hashtext($2))",
    "pool_held": """
        SELECT coalesce(sum(h.units), 0) FROM pool_holds h JOIN nodes n ON n.name = h.node
        WHERE h.pool = $1 AND n.dead_at IS NULL
    """,
    "hold_pool": """
        INSERT INTO pool_holds (pool, run_id, node, units, held_at) VALUES ($1, $2, $3, $4, $5)
        ON CONFLICT (pool, run_id) DO UPDATE SET units = excluded.units, node = excluded.node
    """,
    "release_pools": "DELETE FROM pool_holds WHERE run_id = $1",
    "drop_holds_of": "DELETE FROM pool_holds WHERE node = ANY($1::text[])",
    "claim_fires": """
        INSERT INTO fire_claims (task_id, instant, node, claimed_at)
        SELECT c.task_id, c.instant, $3, coalesce($4::double precision, extract(epoch FROM clock_timestamp()))
        FROM unnest($1::text[], $2::double precision[]) AS c(task_id, instant)
        ON CONFLICT DO NOTHING RETURNING task_id, instant
    """,
    "delete_claims": "DELETE FROM fire_claims WHERE instant < $1",
    # A placement-all claim (`task@node`) is the dead node's own copy of the fire: not adopted.
    "adopt_claims": """
        UPDATE fire_claims c SET node = $2, claimed_at = $3::double precision
        WHERE c.node = ANY($1::text[]) AND c.claimed_at >= $3::double precision - $4::double precision
          AND position('@' in c.task_id) = 0
          AND NOT EXISTS (SELECT 1 FROM runs r WHERE r.task_id = c.task_id AND r.scheduled_at = c.instant)
        RETURNING c.task_id, c.instant
    """,
}


class PostgresCoordinator(Coordinator):
    """This node among the nodes sharing a PostgreSQL store."""

    def __init__(
        self,
        store: PostgresStore,
        name: str,
        labels: Mapping[str, str],
        clock: Clock,
        server_time: bool = True,
    ) -> None:
        super().__init__(store, name, labels, clock)
        self._pg = store
        self._server_time = server_time  # False: leases on `clock` (tests move a fake one)
        self._registered: str | None = None  # the incarnation this coordinator registered
        self._listener: asyncpg.Connection | None = None
        self._channel: str | None = None
        self._pruned_at = 0.0

    @property
    def shared(self) -> bool:
        return True

    async def _heartbeat(self, me: NodeInfo) -> Beat:
        async with self._pg.transaction() as tx:
            db = tx.db
            # Two processes given the same name at once take turns here: the second sees the first's
            # fresh lease and is refused, where both would otherwise find the name free.
            await db.execute(SQL["lock_node_name"], NODE_LOCK_CLASS, me.name)
            now = float(await db.fetchval(SQL["server_now"])) if self._server_time else self.clock.time()
            held = await db.fetchrow(SQL["node_row"], me.name)
            heirs_of: list[str] = []  # the previous process of this name, dead: its orphans are ours
            if held is None or (held["incarnation"] != me.incarnation and self._registered != me.incarnation):
                if held is not None and held["dead_at"] is None and held["heartbeat_at"] >= now - LEASE_S:
                    raise NodeNameInUse(
                        f"another live taskd is node {me.name!r} (its last heartbeat was "
                        f"{now - held['heartbeat_at']:.1f} s ago); give each node its own node.name"
                    )
                await db.execute(SQL["join_node"], *_node_params(me), now)
                if held is not None and held["incarnation"] != me.incarnation:
                    heirs_of.append(me.name)
                self._registered = me.incarnation
                kept = True
            else:
                current = (me.slots_in_use, me.slots, me.config_digest, me.draining)
                kept = await db.fetchval(SQL["renew_node"], me.name, me.incarnation, now, *current) is not None
            expired = [r["name"] for r in await db.fetch(SQL["expire_nodes"], now, now - LEASE_S)]
            for name in expired:
                await self._pg.interrupt(tx, "node = ?", [name], now, lease_expired(name))
            if expired or heirs_of:  # a dead node's runs hold no pool any more
                await db.execute(SQL["drop_holds_of"], [*expired, *heirs_of])
            adopted: list[tuple[str, float]] = []
            if expired or heirs_of:
                rows = await db.fetch(SQL["adopt_claims"], [*expired, *heirs_of], me.name, now, ORPHANS_WITHIN_S)
                adopted = [(r["task_id"], r["instant"]) for r in rows]
            nodes = [_node(r) for r in await db.fetch(SQL["nodes"])]
        await self._listen()  # once the node holds its name: a refused process hears nothing
        await self._prune_claims(now)
        return Beat(kept, expired, nodes, now, adopted)

    async def _prune_claims(self, now: float) -> None:
        """Forget old fire claims, hourly, outside the lease's transaction: a slow delete never holds
        the lease back, and a failed one never fails the heartbeat."""
        if now - self._pruned_at < CLAIMS_PRUNED_EVERY_S:
            return
        try:
            await self._pool().execute(SQL["delete_claims"], now - CLAIMS_KEPT_S)
        except Exception as exc:  # tried again at the next beat
            log.warning("claims_prune_failed", error=f"{type(exc).__name__}: {exc}")
            return
        self._pruned_at = now

    async def nodes(self) -> list[NodeInfo]:
        return [_node(r) for r in await self._pool().fetch(SQL["nodes"])]

    async def claim_fires(self, claims: Sequence[tuple[str, float]]) -> list[tuple[str, float]]:
        if not claims:
            return []
        keys, instants = [key for key, _ in claims], [instant for _, instant in claims]
        at = None if self._server_time else self.clock.time()
        rows = await self._pool().fetch(SQL["claim_fires"], keys, instants, self.name, at)
        return [(r["task_id"], r["instant"]) for r in rows]

    async def claim_pools(self, run_id: str, pools: Mapping[str, int], sizes: Mapping[str, int]) -> bool:
        async with self._pg.transaction() as tx:
            db = tx.db
            for name in sorted(pools):  # locked in one order: two claims never wait on each other
                await db.execute(SQL["lock_pool"], POOL_LOCK_CLASS, name)
            for name, units in pools.items():
                held = int(await db.fetchval(SQL["pool_held"], name))
                if held + units > sizes.get(name, 0):
                    return False
            now = self.clock.time()
            for name, units in pools.items():
                await db.execute(SQL["hold_pool"], name, run_id, self.name, units, now)
        return True

    async def release_pools(self, run_id: str) -> None:
        await self._pool().execute(SQL["release_pools"], run_id)

    async def _send(self, payload: str) -> None:
        await self._pool().execute("SELECT pg_notify($1, $2)", await self._channel_name(), payload)

    async def _listen(self) -> None:
        """LISTEN on the control channel on a connection of its own, made again if it dropped
        (each heartbeat checks)."""
        if self._listener is not None and not self._listener.is_closed():
            return
        channel = await self._channel_name()
        listener = await asyncpg.connect(self._pg.url, server_settings=self._pg.server_settings)
        await listener.add_listener(channel, lambda _db, _pid, _channel, payload: self._heard(payload))
        self._listener = listener

    async def _channel_name(self) -> str:
        if self._channel is None:
            schema = await self._pool().fetchval("SELECT current_schema()")
            self._channel = f"{CONTROL_CHANNEL}_{schema}"[:63]
        return self._channel

    async def _left(self) -> None:
        listener, self._listener = self._listener, None
        if listener is not None and not listener.is_closed():
            await listener.close()

    def _pool(self) -> asyncpg.Pool:
        return self._pg.require()


def _node_params(node: NodeInfo) -> tuple[Any, ...]:
    labels = json.dumps(dict(node.labels))
    return (
        node.name,
        node.incarnation,
        labels,
        node.version,
        node.config_digest,
        node.started_at,
        node.slots,
        node.slots_in_use,
        json.dumps(dict(node.capacity)),
    )


def _node(r: asyncpg.Record) -> NodeInfo:
    return NodeInfo(
        name=r["name"],
        incarnation=r["incarnation"],
        labels=json.loads(r["labels"]),
        version=r["version"],
        config_digest=r["config_digest"],
        started_at=r["started_at"],
        slots=r["slots"],
        slots_in_use=r["slots_in_use"],
        heartbeat_at=r["heartbeat_at"],
        dead_at=r["dead_at"],
        capacity=json.loads(r["capacity"]),
        draining=r["draining"],
    )

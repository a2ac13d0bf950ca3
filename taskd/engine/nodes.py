"""This process as a node of the cluster that shares its store: a lease renewed by heartbeats, the
other nodes seen at each beat, and what to do when the lease is lost.

With a store no other process shares (SQLite, memory), the node is alone: the heartbeat only keeps
its own description current for `GET /nodes`.
"""

from __future__ import annotations

import asyncio
import collections
import uuid
from collections.abc import Callable, Mapping

import structlog

from taskd import __version__
from taskd.clock import Clock
from taskd.store.base import NodeInfo, NodeNameInUse, Store, StoreError

log = structlog.get_logger("taskd.engine")

HEARTBEAT_S = 1.0
"""How often the lease is renewed."""
LEASE_S = 5.0
"""A node whose lease has not been renewed for this long is dead: another node interrupts its runs
(so within LEASE_S + HEARTBEAT_S of its death) and its fires go to the others."""


class Membership:
    """The node's identity and lease."""

    def __init__(
        self,
        store: Store,
        clock: Clock,
        name: str,
        labels: Mapping[str, str],
        describe: Callable[[], tuple[str, int, int]],
        lease_lost: Callable[[], None],
    ) -> None:
        self._store = store
        self._clock = clock
        self.name = name
        self.labels = dict(labels)
        self._describe = describe  # -> (config digest, slots, slots in use)
        self._lease_lost = lease_lost
        self.incarnation = uuid.uuid4().hex
        self.started_at = clock.time()
        self._differing: frozenset[str] = frozenset()
        self._task: asyncio.Task[None] | None = None

    def info(self) -> NodeInfo:
        digest, slots, in_use = self._describe()
        return NodeInfo(
            name=self.name,
            incarnation=self.incarnation,
            labels=self.labels,
            version=__version__,
            config_digest=digest,
            started_at=self.started_at,
            slots=slots,
            slots_in_use=in_use,
        )

    async def join(self) -> None:
        """The first heartbeat (once). A process that held this node name and died a moment ago
        (kill -9, then a restart) still has a lease: wait it out. Raises NodeNameInUse when the
        holder keeps renewing it: another live process has this node's name."""
        if self._task is not None:
            return
        deadline = self._clock.time() + LEASE_S + 2 * HEARTBEAT_S
        while True:
            try:
                await self.beat()
                break
            except NodeNameInUse:
                if self._clock.time() >= deadline:
                    raise
                log.info("waiting_for_lease", node=self.name, reason="this node's previous process may still hold it")
                await asyncio.sleep(HEARTBEAT_S)
        self._task = asyncio.create_task(self._run(), name="taskd-heartbeat")

    @property
    def task(self) -> asyncio.Task[None] | None:
        return self._task

    async def leave(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)

    async def beat(self) -> None:
        kept, expired = await self._store.heartbeat(self.info(), LEASE_S)
        if expired:
            log.warning("nodes_expired", nodes=expired, action="their active runs are marked interrupted")
        if not kept:
            log.error("lease_lost", node=self.name, action="stopping this node's runs; another node took them over")
            self.incarnation = uuid.uuid4().hex  # join again, as a new node
            self._lease_lost()
        if self._store.clustered:
            self._compare(await self._store.nodes())

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(HEARTBEAT_S)
            try:
                await self.beat()
            except asyncio.CancelledError:
                raise
            except StoreError:
                raise  # another live process took this node's name: the daemon must stop
            except Exception as exc:  # the store is unreachable for now: keep trying
                log.warning("heartbeat_failed", node=self.name, error=f"{type(exc).__name__}: {exc}")

    def _compare(self, nodes: list[NodeInfo]) -> None:
        """Log once whenever the set of live nodes whose tasks and pipelines differ changes."""
        differing = frozenset(differs(nodes, self._clock.time()))
        if differing != self._differing:
            self._differing = differing
            if differing:
                log.warning(
                    "nodes_differ",
                    nodes=sorted(differing),
                    reason="their tasks and pipelines differ from most live nodes'; give every node the same config",
                )


def alive(node: NodeInfo, now: float) -> bool:
    return node.dead_at is None and now - node.heartbeat_at < LEASE_S


def differs(nodes: list[NodeInfo], now: float) -> list[str]:
    """The live nodes whose config digest is not the most common one among live nodes."""
    live = [node for node in nodes if alive(node, now)]
    counts = collections.Counter(node.config_digest for node in live)
    if len(counts) < 2:
        return []
    usual = max(counts.items(), key=lambda item: (item[1], item[0]))[0]
    return [node.name for node in live if node.config_digest != usual]

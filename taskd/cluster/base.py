"""The coordinator: this process as a node among the nodes that share its store. It keeps the node's
lease (renewed by heartbeats on the clock), claims fires so that each runs on one node, carries
control messages between nodes, and answers what other nodes hold. The engine talks to whichever
coordinator it was given and never asks how many nodes there are.
"""

from __future__ import annotations

import asyncio
import collections
import uuid
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field

import structlog

from taskd import __version__
from taskd.clock import Clock
from taskd.cluster.messages import Envelope, Message, MessageError, decode, encode
from taskd.models import ACTIVE_STATES, RunRecord
from taskd.store.base import RunQuery, Store, StoreError

log = structlog.get_logger("taskd.cluster")

HEARTBEAT_S = 1.0
"""How often the lease is renewed."""
LEASE_S = 5.0
"""A node whose lease has not been renewed for this long is dead: another node interrupts its runs
(so within LEASE_S + HEARTBEAT_S of its death) and its fires go to the others."""
ORPHANS_WITHIN_S = 60.0
"""How recent a dead node's fire claims must be (claimed this long before its lease was found
expired, at most) to be adopted when it has no run: older claims are of fires long dealt with,
whose runs retention may have removed."""


class NodeNameInUse(StoreError):
    """Another process that is still renewing its lease holds this node name."""


@dataclass(frozen=True)
class NodeInfo:
    """One taskd process sharing the store, as it describes itself at each heartbeat."""

    name: str
    incarnation: str  # new at every start: a node that comes back is not taken for its old self
    labels: Mapping[str, str]
    version: str
    config_digest: str  # of its tasks and pipelines: nodes that differ are flagged
    started_at: float
    slots: int
    slots_in_use: int
    heartbeat_at: float = 0.0
    dead_at: float | None = None  # when another node found its lease expired
    capacity: Mapping[str, int] = field(default_factory=dict)
    """What it offers runs' requests: memory (bytes), cpu (millicores)."""
    draining: bool = False
    """Shutting down: it fires nothing more and lets its runs finish."""


@dataclass(frozen=True)
class Beat:
    """What a heartbeat found: whether this node still holds its lease (False: another node found
    it expired and took over its runs), the nodes whose lease this beat found expired, every node, and
    the time of the beat on the clock leases are timed by."""

    kept: bool
    expired: list[str]
    nodes: list[NodeInfo]
    now: float  # on the clock the leases are timed by (PostgreSQL's: the server's)
    adopted: list[tuple[str, float]] = field(default_factory=list)
    """Fires the expired nodes had claimed and not started (no run): now this node's to run."""


Describe = Callable[[], tuple[str, int, int]]
"""What the heartbeat tells the other nodes: config digest, slot limit, slots in use."""


class Coordinator(ABC):
    """This node's membership, fire claims, control messages and view of the other nodes' runs."""

    def __init__(self, store: Store, name: str, labels: Mapping[str, str], clock: Clock) -> None:
        self.store = store
        self.name = name
        self.labels = dict(labels)
        self.clock = clock
        self.incarnation = uuid.uuid4().hex
        self.started_at = clock.time()
        self._describe: Describe = lambda: ("", 1, 0)
        self._lease_lost: Callable[[], None] = lambda: None
        self._on_message: Callable[[Message], None] | None = None
        self._adopt: Callable[[list[tuple[str, float]]], None] = lambda fires: None
        self._task: asyncio.Task[None] | None = None
        self._joined = False
        self._differing: frozenset[str] = frozenset()
        self._others_alive = False
        self.capacity: dict[str, int] = {}
        """What this node offers runs' requests (the engine sets it), told at every heartbeat."""
        self.live_nodes: list[NodeInfo] = []
        """The nodes alive at the last heartbeat, this one among them."""
        self.draining = False
        """Shutting down (the engine sets it), told at every heartbeat until the node leaves."""

    def attach(
        self,
        describe: Describe,
        lease_lost: Callable[[], None],
        on_message: Callable[[Message], None],
        adopt: Callable[[list[tuple[str, float]]], None] | None = None,
    ) -> None:
        """The engine's side: how to describe this node, what to do when its lease is lost, who
        hears the messages other nodes send, and who runs the fires a dead node claimed and never
        started (their claims are this node's once its heartbeat finds that node dead)."""
        self._describe, self._lease_lost, self._on_message = describe, lease_lost, on_message
        if adopt is not None:
            self._adopt = adopt

    # -- what a coordinator supplies -----------------------------------------------------------------
    @property
    @abstractmethod
    def shared(self) -> bool:
        """Whether other nodes may hold runs in this store."""

    @abstractmethod
    async def _heartbeat(self, me: NodeInfo) -> Beat:
        """Register or renew this node's lease; expire the leases of nodes that stopped renewing
        theirs (interrupting their runs). Raises NodeNameInUse when another live process holds the name."""

    @abstractmethod
    async def nodes(self) -> list[NodeInfo]:
        """Every node that has joined, the dead ones too, by name."""

    @abstractmethod
    async def claim_fires(self, claims: Sequence[tuple[str, float]]) -> list[tuple[str, float]]:
        """Of the (key, instant) fires given, those this node won and must run: each is won by one
        node only, whatever the number asking."""

    @property
    def single_node(self) -> bool:
        """Whether no other node can ever share this store (and run what this one cannot)."""
        return not self.shared

    def claim_at_once(self, claims: Sequence[tuple[str, float]]) -> list[tuple[str, float]] | None:
        """The claims won, when no other node can compete for them (no round trip needed); else None
        and the fires are claimed with `claim_fires`."""
        return None

    async def claim_pools(self, run_id: str, pools: Mapping[str, int], sizes: Mapping[str, int]) -> bool:
        """Hold `pools` (name -> units) for `run_id` if the units the runs of live nodes hold leave
        room in each (of `sizes`); all or nothing. Alone on its store, the node's own count is
        exact already: every claim is held."""
        return True

    async def release_pools(self, run_id: str) -> None:  # noqa: B027  # alone: nothing is held in the store
        """Give back what `run_id` holds."""

    @abstractmethod
    async def _send(self, payload: str) -> None:
        """Deliver an encoded message to every other node."""

    async def _left(self) -> None:  # noqa: B027  # most coordinators hold nothing more
        """Release what the coordinator holds once the node has left."""

    # -- membership --------------------------------------------------------------------------------
    def info(self) -> NodeInfo:
        digest, slots, in_use = self._describe()
        return NodeInfo(
            self.name,
            self.incarnation,
            self.labels,
            __version__,
            digest,
            self.started_at,
            slots,
            in_use,
            capacity=dict(self.capacity),
            draining=self.draining,
        )

    async def join(self) -> None:
        """The first heartbeat (once), then one every HEARTBEAT_S. A process that held this node
        name and died a moment ago (kill -9, then a restart) still has a lease: wait it out. Raises
        NodeNameInUse when the holder keeps renewing it: another live process has this node's name."""
        if self._joined:
            return
        deadline = self.clock.time() + LEASE_S + 2 * HEARTBEAT_S
        while True:
            try:
                await self.beat()
                break
            except NodeNameInUse:
                if self.clock.time() >= deadline:
                    await self._left()
                    raise
                log.info("waiting_for_lease", node=self.name, reason="this node's previous process may still hold it")
                await self.clock.sleep(HEARTBEAT_S)
        self._joined = True
        self._task = asyncio.create_task(self._beating(), name="taskd-heartbeat")

    @property
    def task(self) -> asyncio.Task[None] | None:
        """The heartbeat loop; the daemon watches it and stops if it dies."""
        return self._task

    async def leave(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
        self._joined = False
        await self._left()

    async def beat(self) -> None:
        found = await self._heartbeat(self.info())
        if found.expired:
            log.warning("nodes_expired", nodes=found.expired, action="their active runs are marked interrupted")
        if found.adopted:
            log.warning(
                "fires_adopted",
                fires=len(found.adopted),
                from_nodes=found.expired,
                reason="claimed by a node that died before starting them: run here",
            )
            self._adopt(found.adopted)
        if not found.kept:
            log.error("lease_lost", node=self.name, action="stopping this node's runs; another node took them over")
            self.incarnation = uuid.uuid4().hex  # join again, as a new node
            self._lease_lost()
        # Liveness on the leases' own clock: a node whose clock is off does not take the others for dead.
        self._others_alive = any(n.name != self.name and alive(n, found.now) for n in found.nodes)
        self.live_nodes = [n for n in found.nodes if alive(n, found.now)]
        self._compare(found.nodes, found.now)

    async def _beating(self) -> None:
        while True:
            await self.clock.sleep(HEARTBEAT_S)
            try:
                await self.beat()
            except StoreError:
                raise  # another live process took this node's name: the daemon must stop
            except Exception as exc:  # the store is unreachable for now: keep trying
                log.warning("heartbeat_failed", node=self.name, error=f"{type(exc).__name__}: {exc}")

    @property
    def alone(self) -> bool:
        """Whether no other node was alive at the last heartbeat."""
        return not self._others_alive

    def _compare(self, nodes: list[NodeInfo], now: float) -> None:
        """Log once whenever the set of live nodes whose tasks and pipelines differ changes."""
        differing = frozenset(differs(nodes, now))
        if differing != self._differing:
            self._differing = differing
            if differing:
                log.warning(
                    "nodes_differ",
                    nodes=sorted(differing),
                    reason="their tasks and pipelines differ from most live nodes'; give every node the same config",
                )

    # -- messages ----------------------------------------------------------------------------------
    async def send(self, message: Message) -> None:
        """Tell every other node (they act on what concerns them)."""
        await self._send(encode(self.incarnation, message))

    def _heard(self, payload: str | bytes) -> None:
        """An encoded message arrived: checked, then handed to the engine unless it is this node's own."""
        try:
            envelope: Envelope = decode(payload)
        except MessageError as exc:
            log.warning("control_message_refused", error=str(exc), payload=str(payload)[:200])
            return
        if envelope.sender != self.incarnation and self._on_message is not None:
            self._on_message(envelope.message)

    # -- runs held elsewhere -------------------------------------------------------------------------
    async def recover(self, now: float) -> list[RunRecord]:
        """Runs a previous process of this node left active, marked interrupted: alone on the store,
        every active run; with other nodes, only this node's (and runs of no node)."""
        return await self.store.recover_interrupted(now, self.name if self.shared else None)

    async def own_runs(self, run_ids: Iterable[str]) -> list[str]:
        """Of these run ids, those of runs in the store that this node held (alone on the store:
        every run in it). A run another node found this node dead and interrupted is one of them."""
        own: list[str] = []
        for run_id in run_ids:
            run = await self.store.get_run(run_id)
            if run is not None and (not self.shared or run.node in (None, self.name)):
                own.append(run_id)
        return own

    async def latest_elsewhere(self, task_ids: Sequence[str]) -> tuple[dict[str, RunRecord], dict[str, list[str]]]:
        """Of these tasks, as every node sees them: the latest run of each and the states of its
        active runs. Alone on the store this node knows them already: nothing to add."""
        if not self.shared or not task_ids:
            return {}, {}
        return await self.store.latest_runs(task_ids)

    async def active_elsewhere(self, task_id: str) -> list[str]:
        """The ids of the task's active runs that other nodes hold."""
        if not self.shared:
            return []
        query = RunQuery(task_ids=(task_id,), states=tuple(str(s) for s in ACTIVE_STATES), limit=10_000)
        runs, _ = await self.store.list_runs(query)
        return [run.id for run in runs if run.node != self.name]


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


def lease_expired(node: str) -> Callable[[RunRecord], str]:
    """Why a run of `node` is interrupted by another node."""
    return lambda run: f"node {node} stopped renewing its lease while this run was {run.state}"

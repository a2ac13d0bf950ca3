"""The engine's dealings with other nodes: what they ask of this one (stop a task's runs, drop a
deleted task, start a run for them), and asking them the same. Alone on its store the node has
nobody to tell, and these calls cost nothing."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Mapping
from typing import Any, Protocol

import structlog

from taskd.clock import Clock
from taskd.cluster import LEASE_S, Coordinator, alive
from taskd.cluster.messages import DrainNode, DropTask, Message, Started, StartRun, StopRuns
from taskd.engine.policy import eligible
from taskd.engine.registry import TaskEntry
from taskd.engine.runs import RunTable
from taskd.errors import Conflict, UnknownTask
from taskd.models import ACTIVE_STATES, Trigger
from taskd.runner import Run
from taskd.store.base import Store

log = structlog.get_logger("taskd.engine")

FORWARD_TIMEOUT_S = 5.0
"""How long a manual start forwarded to another node waits for its answer."""
REMOTE_POLL_S = 0.05
"""How often the end of runs that other nodes hold is looked for in the store."""


class Host(Protocol):
    """What the engine lets other nodes do here."""

    def entry(self, task_id: str) -> TaskEntry: ...

    def has_task(self, task_id: str) -> bool: ...

    def start_run(
        self, task_id: str, trigger: Trigger, params: Mapping[str, Any] | None = None, scheduled_at: float | None = None
    ) -> Run: ...

    def drop(self, task_id: str, definition_hash: str) -> list[Run]: ...

    def track(self, task: asyncio.Task[None]) -> None: ...

    def drain(self) -> None: ...


class Remote:
    """Control messages between this node and the others."""

    def __init__(self, host: Host, coordinator: Coordinator, store: Store, runs: RunTable, clock: Clock) -> None:
        self._host = host
        self._coordinator = coordinator
        self._store = store
        self._runs = runs
        self._clock = clock
        self._requests: dict[str, asyncio.Future[Started]] = {}  # starts asked of other nodes

    # -- what other nodes ask ------------------------------------------------------------------------
    def heard(self, message: Message) -> None:
        """A message from another node (already checked, never this node's own)."""
        match message:
            case Started(request=request):
                waiting = self._requests.get(request)
                if waiting is not None and not waiting.done():
                    waiting.set_result(message)
            case StartRun(to=to) if to == self._coordinator.name:
                self._start_for_another(message)
            case StopRuns(task_id=task_id, reason=reason, run_id=run_id):
                for run in self._runs.active(task_id):
                    if run_id is None or run.id == run_id:
                        run.stop(reason or "stopped from another node")
            case DrainNode(to=to) if to == self._coordinator.name:
                log.info("drain_requested", by="another node")
                self._host.drain()
            case DropTask(task_id=task_id, definition_hash=definition_hash) if self._host.has_task(task_id):
                stopped = self._host.drop(task_id, definition_hash)
                log.info("task_deleted", task_id=task_id, stopped=[r.id for r in stopped], by="another node")

    def _start_for_another(self, message: StartRun) -> None:
        try:
            run = self._host.start_run(message.task_id, Trigger.MANUAL, params=message.params)
            reply = Started(message.request, run_id=run.id, state=str(run.state))
        except (Conflict, UnknownTask) as exc:
            reply = Started(message.request, error=str(exc), reason=getattr(exc, "reason", "not_found"))
        self._host.track(asyncio.get_running_loop().create_task(self._coordinator.send(reply)))

    # -- asking other nodes --------------------------------------------------------------------------
    async def stop(self, task_id: str, reason: str, run_id: str | None = None) -> None:
        """Ask the other nodes to stop the task's runs (or that one run). When the message cannot
        be sent (the store's connection is down) their runs go on: `wait` does not see them end."""
        try:
            await self._coordinator.send(StopRuns(task_id, reason, run_id))
        except Exception as exc:
            if not self._store.owns(exc):
                raise
            log.warning("stop_not_sent", task_id=task_id, error=f"{type(exc).__name__}: {exc}")

    async def drain(self, node: str) -> None:
        """Ask another node to drain."""
        await self._coordinator.send(DrainNode(node))

    async def drop(self, task_id: str, definition_hash: str) -> None:
        await self._coordinator.send(DropTask(task_id, definition_hash))

    async def wait(self, run_ids: list[str], grace_s: float, most_s: float | None = None) -> list[str]:
        """Wait until the store shows that other nodes have ended these runs: at most `grace_s`
        and a lease (a dead holder's runs are marked interrupted by then), or `most_s` when that
        is shorter. Returns the runs not seen ended: still active, or not readable."""
        limit = grace_s + LEASE_S if most_s is None else min(grace_s + LEASE_S, most_s)
        deadline = self._clock.time() + limit
        pending = list(run_ids)
        while pending and self._clock.time() < deadline:
            await self._clock.sleep(min(REMOTE_POLL_S, deadline - self._clock.time()))
            pending = await self._not_ended(pending)
        return pending

    async def _not_ended(self, run_ids: list[str]) -> list[str]:
        """Of these runs, those the store does not show in a final state (all of them while the
        store cannot be read: an end nobody can see is not confirmed)."""
        found = await asyncio.gather(*(self._store.get_run(run_id) for run_id in run_ids), return_exceptions=True)
        pending = []
        for run_id, run in zip(run_ids, found, strict=True):
            if isinstance(run, BaseException):
                if not self._store.owns(run):
                    raise run
                pending.append(run_id)
            elif run is None or run.state in ACTIVE_STATES:
                pending.append(run_id)
        return pending

    async def start(self, task_id: str, params: Mapping[str, Any] | None) -> tuple[str, str]:
        """Start a manual run on a live node the task's placement allows, when this node may not
        run it; answers (run id, state). Raises Conflict when no such node answers in time."""
        entry = self._host.entry(task_id)
        now = self._clock.time()
        nodes = [
            node
            for node in await self._coordinator.nodes()
            if node.name != self._coordinator.name
            and alive(node, now)
            and not node.draining
            and eligible(entry.config.placement, node.name, node.labels)
        ]
        if not nodes:
            raise Conflict(f"task {task_id!r} may not run on this node, and no live node it may run on", "placement")
        target = min(nodes, key=lambda node: node.slots_in_use / max(node.slots, 1))  # the least loaded
        request = uuid.uuid4().hex
        answer: asyncio.Future[Started] = asyncio.get_running_loop().create_future()
        self._requests[request] = answer
        try:
            await self._coordinator.send(StartRun(request, target.name, task_id, dict(params or {})))
            async with self._clock.timeout(FORWARD_TIMEOUT_S):
                reply = await answer
        except TimeoutError:
            raise Conflict(f"node {target.name} did not answer within {FORWARD_TIMEOUT_S:g} s", "placement") from None
        finally:
            self._requests.pop(request, None)
        if reply.error or reply.run_id is None:
            raise Conflict(str(reply.error), str(reply.reason or "conflict"))
        return reply.run_id, str(reply.state)

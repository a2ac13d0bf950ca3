"""Dependencies (`after:`) at work: an upstream run that ends the way a downstream task waits for is
staged with its end (one commit keeps both), and the downstream task's runs take the pending
upstream runs they are due, each in one transaction with the run's insert, so that every upstream
run triggers its downstream task once, whatever restarts, reloads or nodes meanwhile.

Pending upstream runs are looked at when one ends here, when a run of a downstream task ends (it
may have been waiting for it), at start-up, after a reload, and every SWEEP_S (other nodes' runs,
runs this node may not run, loads that passed).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Mapping, Sequence
from typing import Any, Protocol

import structlog

from taskd import dependencies
from taskd.clock import Clock
from taskd.cluster import Coordinator
from taskd.config import Config
from taskd.dependencies import Graph
from taskd.engine.policy import eligible
from taskd.engine.registry import TaskEntry
from taskd.engine.runs import Prepared, RunTable
from taskd.errors import Conflict
from taskd.models import Trigger, UpstreamRun
from taskd.runner import Run
from taskd.store.base import Store


class Launcher(Protocol):
    """What dependencies need of the engine: its tasks and runs, and preparing and launching a run."""

    @property
    def tasks(self) -> Mapping[str, TaskEntry]: ...

    @property
    def accepting(self) -> bool: ...

    @property
    def runs(self) -> RunTable: ...

    def prepare(
        self,
        task_id: str,
        trigger: Trigger,
        params: Mapping[str, Any] | None = None,
        scheduled_at: float | None = None,
        environment: Mapping[str, str] | None = None,
    ) -> Prepared: ...

    def launch(self, prepared: Prepared, queue: bool = False) -> Run: ...


log = structlog.get_logger("taskd.engine")

SWEEP_S = 5.0
"""With other nodes on the store: how often pending upstream runs are looked at again."""
ALONE_SWEEP_S = 30.0
"""Alone on the store: the same, for the runs an overload or a busy task held back."""


class Downstream:
    """Stages the upstream runs downstream tasks wait for, and starts their runs."""

    def __init__(self, engine: Launcher, store: Store, clock: Clock, coordinator: Coordinator) -> None:
        self._engine = engine
        self._store = store
        self._clock = clock
        self._coordinator = coordinator
        self.graph = Graph({}, {})
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._waiting: dict[str, list[str]] = {}  # task id -> upstream tasks with no pending run (mode all)

    def configure(self, config: Config) -> None:
        self.graph = Graph.of(config.tasks)
        self.kick()

    # -- what the engine tells -----------------------------------------------------------------------
    def run_ended(self, run: Run) -> None:
        """Called as a run ends, before the loop turns: its end and what it stages here share a commit."""
        record = run.record
        downstream = self.graph.downstream.get(record.task_id, ())
        staged = False
        for task_id in downstream:
            entry = self._engine.tasks.get(task_id)
            after = entry.config.after if entry is not None else None
            if after is None or entry is None or not entry.config.enabled:
                continue
            if not dependencies.counts(after, str(record.state)):
                continue
            context, why = dependencies.passable(run.recorder.redactor.data(run.context))  # its secrets masked
            if why is not None:
                run.recorder.write("log", f"{why}: {task_id} gets no params from this run")
            finished = record.finished_at if record.finished_at is not None else self._clock.time()
            self._store.save_upstream(
                UpstreamRun(task_id, record.id, record.task_id, str(record.state), finished, context)
            )
            staged = True
        if staged or record.task_id in self.graph.upstream:
            self.kick()

    def kick(self) -> None:
        """Look at the pending upstream runs soon."""
        self._wake.set()

    def waiting_on(self, task_id: str) -> list[str]:
        """The upstream tasks that cannot run now (deleted or disabled) and that the task cannot do
        without: any of them with `mode: all`, all of them with `mode: any`."""
        upstream = self.graph.upstream.get(task_id)
        entry = self._engine.tasks.get(task_id)
        if not upstream or entry is None or entry.config.after is None:
            return []
        tasks = self._engine.tasks
        gone = [t for t in upstream if t not in tasks or not tasks[t].config.enabled]
        if entry.config.after.mode == "any" and len(gone) < len(upstream):
            return []
        return gone

    def waiting_for(self, task_id: str) -> list[str]:
        """With `mode: all`, the upstream tasks that have no run it has not taken yet (as of the
        last look at the pending ones)."""
        return self._waiting.get(task_id, [])

    # -- the loop ------------------------------------------------------------------------------------
    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._loop(), name="taskd-dependencies")
            self.kick()

    async def close(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def _loop(self) -> None:
        while True:
            every = ALONE_SWEEP_S if self._coordinator.alone else SWEEP_S
            with contextlib.suppress(TimeoutError):
                async with self._clock.timeout(every):
                    await self._wake.wait()
            self._wake.clear()
            if not self._engine.accepting:
                continue
            try:
                await self.process()
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # the store is down for now: the next look tries again
                log.warning("dependencies_check_failed", error=f"{type(exc).__name__}: {exc}")

    async def process(self) -> int:
        """Start the downstream runs that are due; return how many started."""
        if not self.graph.upstream:
            self._waiting = {}
            return 0
        pending: dict[str, list[UpstreamRun]] = {}
        for upstream in await self._store.pending_upstreams():
            pending.setdefault(upstream.task_id, []).append(upstream)
        started = 0
        waiting: dict[str, list[str]] = {}
        for task_id in sorted(self.graph.upstream):
            entry = self._engine.tasks.get(task_id)
            if entry is None or entry.config.after is None:
                continue
            rows = pending.get(task_id, [])
            stale = dependencies.stale(entry.config.after, rows)
            if stale:  # its after: changed since they ended: they count no more
                await self._store.discard_upstreams(stale)
                rows = [u for u in rows if u not in stale]
            waiting[task_id] = dependencies.waiting_for(entry.config.after, rows)
            if rows and entry.config.enabled:
                started += await self._start_due(task_id, entry.config.after, rows)
        self._waiting = waiting
        return started

    async def _start_due(self, task_id: str, after: Any, rows: Sequence[UpstreamRun]) -> int:
        engine, me = self._engine, self._coordinator
        entry = engine.tasks[task_id]
        if not eligible(entry.config.placement, me.name, me.labels):
            return 0  # another node takes them
        started = 0
        for taken in dependencies.takes(after, rows):
            if engine.runs.active(task_id) and entry.config.concurrency == "forbid":
                return started  # its active run ends first; its end looks again
            params = dependencies.params_from(taken)
            try:
                prepared = engine.prepare(
                    task_id, Trigger.DEPENDENCY, params or None, environment=dependencies.environment(taken)
                )
            except Conflict as exc:  # an overload, a full queue, a shutdown: they stay pending
                log.info("dependency_run_deferred", task_id=task_id, reason=str(exc))
                return started
            if not await self._store.take_upstreams(prepared.record, taken):
                self.kick()  # another node took them: look again at what is left
                return started
            if not engine.accepting:  # shut down meanwhile: the run is recorded, and recovered as never started
                return started
            run = engine.launch(prepared, queue=True)
            ids = [u.upstream_run_id for u in taken]
            log.info("dependency_run", task_id=task_id, run_id=run.id, upstream_run_ids=ids)
            started += 1
        return started


def describe(after: Any, downstream: Mapping[str, Sequence[str]], task_id: str) -> dict[str, Any]:
    """A task's dependencies as the API shows them."""
    upstream = None if after is None else {"tasks": list(after.tasks), "when": after.when, "mode": after.mode}
    return {"upstream": upstream, "downstream": list(downstream.get(task_id, ()))}

"""The engine: the facade the daemon and the API talk to.

It wires a timer (when schedules are due), the registry (which tasks exist, reloads, tombstones),
the policies (what a fire or a start becomes) and the live run table, all reading one clock.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import uuid
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from types import MappingProxyType
from typing import Any

import structlog

from taskd.clock import Clock, SystemClock, utc
from taskd.config import Config
from taskd.engine.nodes import LEASE_S, Membership, alive
from taskd.engine.policy import FirePlan, admit, catch_up, claim_key, eligible, overload, plan_fire, task_status
from taskd.engine.registry import RegistryDiff, StepBuilder, TaskEntry, diff
from taskd.engine.runs import RunTable, stop_grace, wait_runs
from taskd.engine.timer import APSchedulerTimer, FireCallback, Timer
from taskd.errors import Conflict, Overloaded, UnknownTask
from taskd.live import LiveHub
from taskd.metrics import Metrics
from taskd.models import ACTIVE_STATES, RunRecord, RunSummary, Trigger, new_run_id
from taskd.processor import ProcessorType
from taskd.processors import registry
from taskd.runner import Run
from taskd.slots import SlotPool
from taskd.store.base import Fire, LogLine, RunQuery, Store

log = structlog.get_logger("taskd.engine")
FORWARD_TIMEOUT_S = 5.0
"""How long a manual start forwarded to another node waits for its answer."""
CLAIM_DELAY_S = 0.05
"""With several nodes, a node with every slot busy waits this long before claiming a fire (one half
busy, half as long): the least loaded node tends to claim first."""
FIRE_CHUNK = 250
"""A fire starts its tasks' runs this many at a time, letting the event loop serve the API and
begin the runs already started in between, so a fire of thousands of tasks does not hold the
loop for the whole burst."""
_DEBUG = logging.getLogger("taskd.engine")

TimerFactory = Callable[[FireCallback], Timer]

__all__ = ["Conflict", "Engine", "Overloaded", "TaskEntry", "UnknownTask"]


class Engine:
    """Owns the registry of tasks, the timer that fires them, and every active run."""

    def __init__(
        self,
        config: Config,
        store: Store,
        kinds: Mapping[str, ProcessorType] | None = None,
        clock: Clock | None = None,
        timer: TimerFactory = APSchedulerTimer,
        metrics: Metrics | None = None,
        live: LiveHub | None = None,
    ) -> None:
        if kinds is None:
            kinds = registry().types
        self.config = config
        self.store = store
        self.kinds = kinds
        self.clock: Clock = clock or SystemClock()
        self.metrics = metrics
        self.live = live or LiveHub()
        self._events = _RunEvents(metrics, self.live)
        self.slots = SlotPool(config.task.max_concurrent_tasks)
        self.runs = RunTable()
        self.started_at = self.clock.time()
        self._builder = StepBuilder()
        self._tasks: dict[str, TaskEntry] = {}
        self._held_back: dict[str, str] = {}
        self._tombstones: dict[str, str] = {}
        self._groups: dict[str, dict[str, None]] = {}  # timer job -> task ids, in order
        self._sorted: tuple[TaskEntry, ...] | None = None
        self._accepting = False
        self._hurry = asyncio.Event()
        self._digest = config_digest(config)
        self._claims: set[asyncio.Task[None]] = set()  # fires being claimed, replies being sent
        self._requests: dict[str, asyncio.Future[dict[str, Any]]] = {}  # starts asked of other nodes
        self.membership = Membership(
            store, self.clock, config.node.name, config.node.labels, self._describe, self._lease_lost
        )
        self._overload: str | None = None  # why new runs are refused, while they are
        self._overload_since = 0.0
        self._shed = 0  # runs refused since the overload began
        self.timer: Timer = timer(self.on_group_fire)

    # -- lifecycle -------------------------------------------------------------------------------
    async def start(self) -> None:
        """Register the configured tasks, start firing, and catch up on missed fires."""
        self._tombstones = await self.store.tombstones()
        self.runs.seed(await self.store.last_runs())
        if self.metrics is not None:
            self.metrics.seed_last_successes(await self.store.last_successes())
        self._apply(self.config)
        await self.membership.join()
        if self.store.clustered:
            await self.store.listen(self._on_control)
        self._accepting = True
        self.timer.start()
        await self._catch_up()

    @property
    def scheduler_running(self) -> bool:
        return self.timer.running and self._accepting

    async def shutdown(self, grace_s: float) -> None:
        """Stop firing; let active runs finish for up to `grace_s` (or until `hurry()`), then stop them."""
        self._accepting = False
        self.timer.shutdown()
        if len(self.runs):
            log.info("draining_runs", count=len(self.runs), grace_s=grace_s)
        for claim in list(self._claims):
            claim.cancel()
        await self.runs.drain(grace_s, f"daemon shutdown after the {grace_s:g}s grace period", self._hurry)
        await self.membership.leave()
        await self.store.flush()

    def hurry(self) -> None:
        """Cut a shutdown's grace period short: the runs still active are stopped now."""
        self._hurry.set()

    @property
    def hurried(self) -> bool:
        return self._hurry.is_set()

    # -- configuration -----------------------------------------------------------------------------
    def _apply(self, config: Config) -> RegistryDiff:
        """Make the registry match `config`. Active runs are not touched."""
        wanted = [self._builder.entry(config, task) for task in config.tasks]
        change = diff(self._tasks, wanted, self._tombstones)
        for task_id in change.restored:
            self.store.remove_tombstone(task_id)
            del self._tombstones[task_id]
            log.info("task_restored", task_id=task_id, reason="definition changed since it was deleted")
        for task_id in change.removed:
            self._unschedule(task_id)
            if self.metrics is not None:
                self.metrics.forget_task(task_id)
        for task_id in (*change.added, *change.changed):
            self._schedule(change.tasks[task_id])
        self._tasks = dict(change.tasks)
        self._held_back = dict(change.held_back)
        self._digest = config_digest(config)
        self.config = config
        self._sorted = None
        self.slots.set_limit(config.task.max_concurrent_tasks)
        if change.held_back:
            log.warning(
                "tasks_held_back",
                task_ids=sorted(change.held_back),
                reason="deleted through the API; edit their YAML definition to bring them back",
            )
        return change

    def reload(self, config: Config) -> dict[str, list[str]]:
        """Switch to a new, already validated config. Runs in progress keep their definition."""
        changes = self._apply(config).summary()
        log.info("config_reloaded", **{k: v for k, v in changes.items() if v})
        return changes

    def _schedule(self, entry: TaskEntry) -> None:
        self._unschedule(entry.id)
        group = entry.group
        if group is None or entry.schedule is None:
            return
        members = self._groups.get(group)
        if members is None:
            members = self._groups[group] = {}
            self.timer.add(group, entry.schedule)
        members[entry.id] = None

    def _unschedule(self, task_id: str) -> None:
        for group, members in list(self._groups.items()):
            if task_id in members:
                del members[task_id]
                if not members:
                    del self._groups[group]
                    self.timer.remove(group)
                return

    # -- fires -----------------------------------------------------------------------------------
    def on_group_fire(self, group: str, run_times: list[datetime]) -> None:
        """Called by the timer when a schedule is due: fire its tasks, higher priority first."""
        members = self._groups.get(group)
        if not members or not self._accepting or not run_times:
            return
        fire = plan_fire([t.timestamp() for t in run_times])
        ordered = sorted(members, key=lambda task_id: -self._tasks[task_id].config.priority)
        if any(self._tasks[task_id].config.placement != "any" for task_id in ordered):
            ordered = self._placed(ordered, fire)
        if self.store.clustered:
            claim = asyncio.get_running_loop().create_task(self._claimed_fire(ordered, fire))
            self._claims.add(claim)
            claim.add_done_callback(self._claims.discard)
        else:
            self._fire_from(ordered, 0, fire)

    def _placed(self, ordered: list[str], fire: FirePlan) -> list[str]:
        """The tasks of a fire that may run on this node. Alone on its store, the node records
        the others as skipped: no other node could run them."""
        me, labels = self.membership.name, self.membership.labels
        placed = [t for t in ordered if eligible(self._tasks[t].config.placement, me, labels)]
        if not self.store.clustered and len(placed) < len(ordered):
            now = self.clock.time()
            for task_id in set(ordered) - set(placed):
                why = f"placement: this node ({me}) is not one the task may run on"
                self._skip(Fire(task_id, fire.instant, "skipped", why, now), "placement")
        return placed

    async def _claimed_fire(self, ordered: list[str], fire: FirePlan) -> None:
        """With nodes sharing the store, each fire runs on the one node that claims it first (or,
        for `placement: all`, once on every node). A busier node waits a little before claiming,
        so that the least loaded node tends to win."""
        me = self.membership.name
        keys = {claim_key(task_id, self._tasks[task_id].config.placement, me): task_id for task_id in ordered}
        busy = self.slots.held / self.slots.limit
        if busy > 0:
            await asyncio.sleep(CLAIM_DELAY_S * min(busy, 1.0))
        try:
            won = await self.store.claim_fires(me, [(key, fire.instant) for key in keys])
        except Exception as exc:  # the store is unreachable: another node may claim these fires
            log.warning("fire_claim_failed", tasks=len(ordered), error=f"{type(exc).__name__}: {exc}")
            return
        mine = {keys[key] for key, _ in won}
        if mine and self._accepting:
            self._fire_from([task_id for task_id in ordered if task_id in mine and task_id in self._tasks], 0, fire)

    def _fire_from(self, ordered: list[str], start: int, fire: FirePlan) -> None:
        """Fire `ordered[start:]`, FIRE_CHUNK tasks now and the rest in later turns of the loop."""
        end = start + FIRE_CHUNK
        for task_id in ordered[start:end]:
            if task_id in self._tasks:  # a reload or a DELETE between two chunks may remove it
                self._fire(task_id, fire)
        if end < len(ordered):
            asyncio.get_running_loop().call_soon(self._fire_from, ordered, end, fire)

    def _fire(self, task_id: str, fire: FirePlan) -> None:
        """`task_id` is due: one run for the fire's instant, the coalesced instants recorded."""
        now = self.clock.time()
        self.store.set_last_fire(task_id, fire.instant)
        for missed in fire.coalesced:
            self._skip(Fire(task_id, missed, "skipped", "coalesced: the event loop was late", now), "coalesced")
        try:
            self.start_run(task_id, Trigger.SCHEDULE, scheduled_at=fire.instant)
        except Conflict as exc:
            self._skip(Fire(task_id, fire.instant, "skipped", str(exc), now), exc.reason)
            if not isinstance(exc, Overloaded):  # an overload is logged once, when it begins and ends
                log.info("fire_skipped", task_id=task_id, reason=str(exc))

    def _skip(self, fire: Fire, reason: str) -> None:
        """A fire that did not become a run: recorded, and counted by reason."""
        self.store.record_fire(fire)
        if self.metrics is not None:
            self.metrics.fire_skipped(fire.task_id, reason)

    async def _catch_up(self) -> None:
        """At start-up, deal with fires missed while the daemon was down (misfire policy)."""
        last_fires = await self.store.last_fires()
        now = utc(self.clock)
        due = []
        me, labels = self.membership.name, self.membership.labels
        for entry in list(self._tasks.values()):
            if not eligible(entry.config.placement, me, labels):
                continue
            last = last_fires.get(entry.id)
            schedule = entry.schedule if entry.config.enabled else None
            missed = catch_up(schedule, entry.config.misfire, _instant(last), now)
            if missed is not None:
                due.append((entry, missed))
        if self.store.clustered and due:  # a missed fire is dealt with once in the cluster too
            claims = [(claim_key(e.id, e.config.placement, me), m.instant.timestamp()) for e, m in due]
            won = set(await self.store.claim_fires(me, claims))
            due = [(e, m) for (e, m), claim in zip(due, claims, strict=True) if claim in won]
        for entry, missed in due:
            latest = missed.instant.timestamp()
            self.store.set_last_fire(entry.id, latest)
            if missed.run:
                log.info("catch_up_run", task_id=entry.id, missed=missed.count, more=missed.capped)
                try:
                    self.start_run(entry.id, Trigger.CATCH_UP, scheduled_at=latest)
                except Conflict as exc:
                    self._skip(Fire(entry.id, latest, "skipped", str(exc), self.clock.time()), exc.reason)
            else:
                self._skip(Fire(entry.id, latest, "missed", missed.reason, self.clock.time()), "missed_while_down")
                log.info("fires_missed", task_id=entry.id, missed=missed.count, more=missed.capped)

    # -- runs ------------------------------------------------------------------------------------
    def start_run(
        self,
        task_id: str,
        trigger: Trigger,
        params: Mapping[str, Any] | None = None,
        scheduled_at: float | None = None,
    ) -> Run:
        """Create a run and start it, applying the task's concurrency policy."""
        if not self._accepting:
            raise Conflict("taskd is shutting down", "shutting_down")
        entry = self.entry(task_id)
        me = self.membership.name
        if entry.config.placement != "any" and not eligible(entry.config.placement, me, self.membership.labels):
            raise Conflict(f"task {task_id!r} may not run on this node ({me}): see its placement", "placement")
        self._admit_load()
        task = entry.config
        # `allow` never needs the list of active runs; with thousands of them, building it costs.
        active = self.runs.active_states(task_id) if task.concurrency != "allow" else []
        admission = admit(task_id, task.concurrency, active)
        for run_id in admission.stop:
            replaced = self.runs.get(run_id)
            if replaced is not None:
                replaced.stop("replaced by a newer run")
        after = [run for run in map(self.runs.get, admission.after) if run is not None]
        now = self.clock.time()
        record = RunRecord(
            id=new_run_id(now),
            task_id=task_id,
            trigger=trigger,
            queued_at=now,
            scheduled_at=scheduled_at,
            params={**entry.params, **params} if params else dict(entry.params),
            priority=task.priority,
            node=self.membership.name,
        )
        run = Run(record, entry.plan, self.store, self.slots, self.clock, self._events)
        run.queue()
        self.runs.add(run)
        run.start(after)
        if _DEBUG.isEnabledFor(logging.DEBUG):
            log.debug("run_queued", task_id=task_id, run_id=run.id, trigger=str(trigger))
        return run

    def _describe(self) -> tuple[str, int, int]:
        """What the heartbeat tells the cluster: config digest, slot limit, slots in use."""
        return self._digest, self.slots.limit, self.slots.held

    def _lease_lost(self) -> None:
        """Another node found this node's lease expired and took over its runs: stop them here."""
        for run in self.runs.unfinished():
            run.stop("this node lost its lease; another node took over its runs")

    def _load(self) -> str | None:
        config = self.config
        waiting = len(self.runs) - self.slots.held
        return overload(
            self.store.pending_writes,
            config.store.max_pending,
            waiting,
            config.task.max_waiting_runs,
            self._overload is not None,
        )

    def _admit_load(self) -> None:
        """Refuse a new run (Overloaded) while the store or the slots cannot keep up."""
        why = self._load()
        if why is None:
            if self._overload is not None:
                log.warning(
                    "overload_ended",
                    refused=self._shed,
                    lasted_s=round(self.clock.time() - self._overload_since, 3),
                )
                self._overload = None
            return
        if self._overload is None:
            self._overload_since, self._shed = self.clock.time(), 0
            log.warning("overloaded", reason=why, action="new runs are refused until it has caught up")
        self._overload = why
        self._shed += 1
        raise Overloaded(f"taskd is overloaded: {why}; try again later", retry_after_s=1)

    @property
    def overloaded(self) -> str | None:
        """Why taskd refuses new runs now, or None (as the next start would find it)."""
        return self._load()

    async def stop_task(self, task_id: str, reason: str) -> list[str]:
        """Stop every active run of the task, on every node; wait (bounded by their stop grace)
        until they end."""
        entry = self.entry(task_id)
        active = self.runs.active(task_id)
        remote = await self._remote_active(task_id)
        if not active and not remote:
            raise Conflict(f"task {task_id!r} has no active run")
        for run in active:
            run.stop(reason)
        if remote:
            await self._tell({"op": "stop", "task_id": task_id, "reason": reason})
        await asyncio.gather(wait_runs(active, stop_grace(active)), self._wait_remote(remote, entry.plan.stop_grace_s))
        return [run.id for run in active] + remote

    async def delete_task(self, task_id: str) -> list[str]:
        """Stop active runs (on every node), remove the task (from every node), and keep a
        tombstone so it stays deleted."""
        entry = self.entry(task_id)
        remote = await self._remote_active(task_id)
        active = self._drop(task_id, entry.definition_hash)
        self.store.add_tombstone(task_id, entry.definition_hash, self.clock.time())
        if self.store.clustered:
            await self._tell({"op": "delete", "task_id": task_id, "definition_hash": entry.definition_hash})
        await asyncio.gather(wait_runs(active, stop_grace(active)), self._wait_remote(remote, entry.plan.stop_grace_s))
        await self.store.flush()
        log.info("task_deleted", task_id=task_id, stopped=[r.id for r in active] + remote)
        return [run.id for run in active] + remote

    def _drop(self, task_id: str, definition_hash: str) -> list[Run]:
        """Stop the task's runs here and take it out of the registry; return the runs stopped."""
        active = self.runs.active(task_id)
        for run in active:
            run.stop("task deleted")
        self._unschedule(task_id)
        self._tasks.pop(task_id, None)
        self._sorted = None
        self._tombstones[task_id] = definition_hash
        self._held_back[task_id] = definition_hash
        if self.metrics is not None:
            self.metrics.forget_task(task_id)
        return active

    # -- other nodes (a shared PostgreSQL store) -----------------------------------------------------
    def _start_for_another(self, message: dict[str, Any]) -> None:
        reply: dict[str, Any] = {"op": "started", "request": message.get("request")}
        try:
            params = message.get("params")
            run = self.start_run(
                str(message.get("task_id")), Trigger.MANUAL, params=params if isinstance(params, dict) else None
            )
            reply |= {"run_id": run.id, "state": str(run.state)}
        except (Conflict, UnknownTask) as exc:
            reply |= {"error": str(exc), "reason": getattr(exc, "reason", "not_found")}
        task = asyncio.get_running_loop().create_task(self._tell(reply))
        self._claims.add(task)
        task.add_done_callback(self._claims.discard)

    async def _remote_active(self, task_id: str) -> list[str]:
        """The task's active runs that other nodes hold."""
        if not self.store.clustered:
            return []
        runs, _ = await self.store.list_runs(
            RunQuery(task_ids=(task_id,), states=tuple(str(s) for s in ACTIVE_STATES), limit=10_000)
        )
        return [run.id for run in runs if run.node != self.membership.name]

    async def _tell(self, message: dict[str, Any]) -> None:
        await self.store.notify({**message, "from": self.membership.incarnation})

    async def _wait_remote(self, run_ids: list[str], grace_s: float) -> None:
        """Wait (at most `grace_s` and a lease) until other nodes have ended these runs."""
        deadline = self.clock.time() + grace_s + LEASE_S
        pending = list(run_ids)
        while pending and self.clock.time() < deadline:
            await asyncio.sleep(0.05)
            runs = await asyncio.gather(*(self.store.get_run(run_id) for run_id in pending))
            pending = [run.id for run in runs if run is not None and run.state in ACTIVE_STATES]

    async def start_elsewhere(self, task_id: str, params: Mapping[str, Any] | None) -> tuple[str, str]:
        """Start a manual run on a live node the task's placement allows, when this node may not
        run it; answers (run id, state). Raises Conflict when no such node answers in time."""
        entry = self.entry(task_id)
        now = self.clock.time()
        nodes = [
            node
            for node in await self.store.nodes()
            if node.name != self.membership.name
            and alive(node, now)
            and eligible(entry.config.placement, node.name, node.labels)
        ]
        if not nodes:
            raise Conflict(f"task {task_id!r} may not run on this node, and no live node it may run on", "placement")
        target = min(nodes, key=lambda node: node.slots_in_use / max(node.slots, 1))  # the least loaded
        request = uuid.uuid4().hex
        answer: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self._requests[request] = answer
        try:
            await self._tell(
                {"op": "start", "to": target.name, "task_id": task_id, "params": dict(params or {}), "request": request}
            )
            reply = await asyncio.wait_for(answer, FORWARD_TIMEOUT_S)
        except TimeoutError:
            raise Conflict(f"node {target.name} did not answer within {FORWARD_TIMEOUT_S:g} s", "placement") from None
        finally:
            self._requests.pop(request, None)
        if reply.get("error"):
            raise Conflict(str(reply["error"]), str(reply.get("reason") or "conflict"))
        return str(reply["run_id"]), str(reply["state"])

    def _on_control(self, message: dict[str, Any]) -> None:
        """What another node asks of this one."""
        if message.get("from") == self.membership.incarnation:
            return
        if message.get("op") == "started":
            waiting = self._requests.get(str(message.get("request")))
            if waiting is not None and not waiting.done():
                waiting.set_result(message)
            return
        if message.get("op") == "start":
            if message.get("to") == self.membership.name:
                self._start_for_another(message)
            return
        task_id = str(message.get("task_id"))
        if message.get("op") == "stop":
            for run in self.runs.active(task_id):
                run.stop(str(message.get("reason") or "stopped from another node"))
        elif message.get("op") == "delete" and task_id in self._tasks:
            stopped = self._drop(task_id, str(message.get("definition_hash")))
            log.info("task_deleted", task_id=task_id, stopped=[r.id for r in stopped], by="another node")

    # -- reading the registry ----------------------------------------------------------------------
    def entry(self, task_id: str) -> TaskEntry:
        entry = self._tasks.get(task_id)
        if entry is None:
            raise UnknownTask(f"task {task_id!r} does not exist")
        return entry

    def entries(self) -> tuple[TaskEntry, ...]:
        """Every task, by id; cached until the registry changes."""
        if self._sorted is None:
            self._sorted = tuple(self._tasks[k] for k in sorted(self._tasks))
        return self._sorted

    @property
    def task_count(self) -> int:
        return len(self._tasks)

    @property
    def held_back(self) -> Mapping[str, str]:
        """Tasks kept deleted by a tombstone: id -> definition hash."""
        return MappingProxyType(self._held_back)

    def knows(self, task_id: str) -> bool:
        """Whether the task is defined, or deleted and held back (its history is still asked for)."""
        return task_id in self._tasks or task_id in self._held_back

    def status(self, task_id: str) -> str:
        entry = self._tasks[task_id]
        last = self.runs.last(task_id)
        return task_status(
            entry.config.enabled,
            (run.state for run in self.runs.active(task_id)),
            None if last is None else str(last.state),
            scheduled=entry.schedule is not None,
        )

    def last_run(self, task_id: str) -> RunRecord | RunSummary | None:
        return self.runs.last(task_id)

    def active_runs(self, task_id: str) -> list[Run]:
        return self.runs.active(task_id)

    def live_run(self, run_id: str) -> Run | None:
        return self.runs.get(run_id)


class _RunEvents:
    """What runs tell as they go: counted by the metrics, streamed to live followers."""

    def __init__(self, metrics: Metrics | None, live: LiveHub) -> None:
        self._metrics = metrics
        self._live = live

    def run_finished(self, task_id: str, state: str, duration_s: float | None, finished_at: float) -> None:
        if self._metrics is not None:
            self._metrics.run_finished(task_id, state, duration_s, finished_at)

    def first_step_started(self, lateness_s: float) -> None:
        if self._metrics is not None:
            self._metrics.first_step_started(lateness_s)

    def state_entered(self, run_id: str, task_id: str, state: str, at: float, error: str | None) -> None:
        self._live.state_entered(run_id, task_id, state, at, error)

    def line_written(self, line: LogLine) -> None:
        self._live.line_written(line)


def config_digest(config: Config) -> str:
    """A digest of every task's definition (with its pipeline): nodes with the same one run the
    same tasks the same way."""
    lines = sorted(f"{task.id} {config.definition_hash(task)}" for task in config.tasks)
    return hashlib.sha256("\n".join(lines).encode()).hexdigest()[:16]


def _instant(epoch: float | None) -> datetime | None:
    return None if epoch is None else datetime.fromtimestamp(epoch, UTC)

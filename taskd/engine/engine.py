"""The engine: the facade the daemon and the API talk to.

It keeps the registry of tasks (reloads, tombstones), starts runs under the concurrency and load
policies, and stops and deletes them, here and, through its coordinator, on the other nodes.
Firing (`firing`) and the dealings with other nodes (`remote`) are its parts; everything reads one
clock.
"""

from __future__ import annotations

import asyncio
import collections
import hashlib
import json
import logging
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any

import structlog

from taskd.alerter import Alerter
from taskd.capacity import detect as detect_capacity
from taskd.clock import Clock, SystemClock
from taskd.cluster import Coordinator, NodeInfo, alive, coordinator_for
from taskd.config import Config
from taskd.engine.downstream import Downstream
from taskd.engine.firing import Firing, TimerFactory
from taskd.engine.policy import admit, eligible, overload, requests_too_large, task_status
from taskd.engine.registry import RegistryDiff, StepBuilder, TaskEntry, diff
from taskd.engine.remote import Remote
from taskd.engine.runs import Prepared, RunTable, stop_grace, wait_runs
from taskd.engine.timer import APSchedulerTimer
from taskd.errors import ConfigError, Conflict, Overloaded, UnknownRun, UnknownTask
from taskd.faults import STORE_FILE, STORE_UNREACHABLE, STORE_WRITE, Faults
from taskd.live import LiveHub
from taskd.metrics import Metrics
from taskd.models import ACTIVE_STATES, ReloadOutcome, RunRecord, RunState, RunSummary, Trigger, new_run_id
from taskd.processor import ProcessorType
from taskd.processors import registry
from taskd.redact import MASK, NONE, Redactor, masked_params, secret_values
from taskd.resources import Resources
from taskd.runner import Run
from taskd.slots import SlotPool
from taskd.store.base import GIVEN_BACK, LogLine, Store, StoreError, never_started

log = structlog.get_logger("taskd.engine")
_DEBUG = logging.getLogger("taskd.engine")
MANUAL_COMMIT_WAIT_S = 10.0
"""How long a manual start waits for its run to be committed before it is refused (503) and stopped."""
ALERTS_CLOSE_WAIT_S = 5.0
"""At shutdown, how long alerts being delivered may take to go out."""
STOP_WAIT_S = 10.0
"""How long a stop waits, at most, for the runs it stopped to end before it answers with those
still stopping. A run ends within its stop grace (its slowest step's, a second more: for a shell
step SIGTERM, `kill_grace`, 5 s by default, then SIGKILL); another node's once its holder has
stopped it and committed its end, or a lease after a dead holder's last heartbeat (about 6 s).
10 s covers those, and keeps the answer within what HTTP clients and proxies wait for whatever
grace a step asks; `taskd stop` polls the runs still stopping."""
DRAIN_POLL_S = 0.1
"""How often a drain looks whether anything is left to run."""


@dataclass(frozen=True)
class TaskState:
    """A task's status and last run, as every node sees them."""

    status: str
    last_run: RunRecord | RunSummary | None


@dataclass(frozen=True)
class StopOutcome:
    """What a stop did: the runs that have ended, and those told to stop that have not yet."""

    stopped: list[str]
    stopping: list[str]


@dataclass(frozen=True)
class Load:
    """How busy the engine is now."""

    slots: int
    slots_in_use: int
    slots_waiting: int
    active: Mapping[str, int]  # unfinished runs by state
    overloaded: str | None  # why new runs are refused, while they are

    @property
    def active_runs(self) -> int:
        return sum(self.active.values())


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
        coordinator: Coordinator | None = None,
        environ: Mapping[str, str] | None = None,
    ) -> None:
        self.config = config
        self.store = store
        self.kinds = kinds if kinds is not None else registry().types
        self.clock: Clock = clock or SystemClock()
        self.metrics = metrics
        self.live = live or LiveHub()
        self._events = _RunEvents(metrics, self.live)
        self.slots = SlotPool(config.task.max_concurrent_tasks)
        capacity = config.node.capacity
        self.capacity = detect_capacity(capacity.memory, capacity.cpu)
        self.resources = Resources()
        self.runs = RunTable(on_end=self._run_ended)
        self.started_at = self.clock.time()
        self.faults = Faults(self.clock.time)
        store.fault_observer = self._store_fault
        # What the tasks' processes start from: the daemon's environment, filtered per task.
        self._builder = StepBuilder(os.environ if environ is None else environ)
        self._secrets: dict[str, None] = {}  # every configuration's secrets since the start, in order
        self._redactors: dict[str, tuple[TaskEntry, int, list[str], Redactor]] = {}
        self._tasks: dict[str, TaskEntry] = {}
        self._held_back: dict[str, str] = {}
        self._tombstones: dict[str, str] = {}
        self._sorted: tuple[TaskEntry, ...] | None = None
        self._accepting = False
        self._draining: asyncio.Task[None] | None = None
        self.on_drained: Callable[[], None] | None = None
        self.drain_outcome: asyncio.Future[str] | None = None
        """Set once a drain ends: "drained", or why it was cut short."""
        """Called once a drain has nothing left to run (the daemon stops, exit 0)."""
        self._hurry = asyncio.Event()
        self._digest = config_digest(config)
        self.coordinator = coordinator or coordinator_for(store, config.node.name, config.node.labels, self.clock)
        self._remote = Remote(self, self.coordinator, store, self.runs, self.clock)
        self.alerter = Alerter(store, self.clock, self.coordinator, metrics, self.faults)
        self.downstream = Downstream(self, store, self.clock, self.coordinator)
        self.coordinator.attach(
            self._describe, self._lease_lost, self._remote.heard, adopt=lambda fires: self.firing.adopt(fires)
        )
        self.firing = Firing(self, timer, self.coordinator, store, self.slots, self.clock, metrics)
        self.resources.claims = self.coordinator  # pools are exact across every node sharing the store
        self.coordinator.capacity = self.capacity.sizes()  # told to the other nodes at every heartbeat
        self.last_reload: ReloadOutcome | None = None
        """What the last reload did (the daemon records it; /health shows it)."""
        self._overload: str | None = None  # why new runs are refused, while they are
        self._overload_since = 0.0
        self._shed = 0  # runs refused since the overload began

    # -- lifecycle -------------------------------------------------------------------------------
    async def start(self) -> None:
        """Register the configured tasks, start firing, and catch up on missed fires."""
        self._tombstones = await self.store.tombstones()
        self.runs.seed(await self.store.last_runs())
        successes = await self.store.last_successes()  # read once: the metrics and the alerter
        if self.metrics is not None:
            self.metrics.seed_last_successes(successes)
        self._apply(self.config)
        await self.coordinator.join()
        await self.alerter.start(successes)
        self._accepting = True
        self.firing.timer.start()
        await self.firing.catch_up()
        self.downstream.start()

    @property
    def accepting(self) -> bool:
        return self._accepting

    @property
    def scheduler_running(self) -> bool:
        """Firing, or paused by a drain (which is not a fault)."""
        return (self.firing.timer.running or self.draining) and self._accepting

    @property
    def draining(self) -> bool:
        return self._draining is not None

    def drain(self) -> None:
        """Fire nothing more (the other nodes claim the fires), start no manual run here (they
        go to another node), take no upstream run; let the runs here finish, then call
        `on_drained`. Asked again, nothing more happens."""
        if self._draining is not None or not self._accepting:
            return
        log.info("draining", active_runs=len(self.runs), action="no new fires here; exit once the runs end")
        self.coordinator.draining = True  # the other nodes see it at the next heartbeat
        self.firing.pause()
        loop = asyncio.get_running_loop()
        self.drain_outcome = loop.create_future()
        self._draining = loop.create_task(self._drained())

    async def _drained(self) -> None:
        await self.downstream.close()
        while len(self.runs) or self.firing.in_flight:
            await self.clock.sleep(DRAIN_POLL_S)
        log.info("drained", action="stopping")
        if self.drain_outcome is not None and not self.drain_outcome.done():
            self.drain_outcome.set_result("drained")
        if self.on_drained is not None:
            self.on_drained()

    async def shutdown(self, grace_s: float) -> None:
        """Stop firing; let active runs finish for up to `grace_s` (or until `hurry()`), then stop them."""
        self._accepting = False
        self.coordinator.draining = True  # the other nodes see it at the next heartbeat
        self.firing.stop()
        if self._draining is not None:
            self._draining.cancel()
        if self.drain_outcome is not None and not self.drain_outcome.done():
            left = len(self.runs)
            self.drain_outcome.set_result(
                f"the daemon was stopped before the drain ended ({left} run(s) left, stopped after the grace period)"
            )
        await self.downstream.close()
        if len(self.runs):
            log.info("draining_runs", count=len(self.runs), grace_s=grace_s)
        await self.runs.drain(grace_s, f"daemon shutdown after the {grace_s:g}s grace period", self._hurry)
        await self.alerter.close(0.0 if self._hurry.is_set() else ALERTS_CLOSE_WAIT_S)
        await self.coordinator.leave()
        if not self.store.failing:  # else closing the store makes its last attempt, and says what is lost
            await self.store.flush()

    def hurry(self) -> None:
        """Cut a shutdown's grace period short: the runs still active are stopped now."""
        self._hurry.set()

    @property
    def hurried(self) -> bool:
        return self._hurry.is_set()

    def track(self, task: asyncio.Task[None]) -> None:
        self.firing.track(task)

    # -- configuration -----------------------------------------------------------------------------
    def redactor_for(self, entry: TaskEntry, runtime: Sequence[str] = ()) -> Redactor:
        """What a run of `entry` masks, in this order (the first ones win when there are too many
        to search for): the configuration's secrets, the task's default secret params', `runtime`'s,
        then those of earlier configurations (a rotated token's old value stays secret)."""
        if not (self._secrets or entry.plan.secrets or runtime):
            return NONE
        current = sorted(self.config.secrets)
        ordered = (*current, *entry.plan.secrets, *runtime, *self._secrets)
        if runtime:
            return Redactor(ordered)
        cached = self._redactors.get(entry.id)
        if cached is None or cached[0] is not entry or cached[1] != len(self._secrets) or cached[2] != current:
            cached = self._redactors[entry.id] = (entry, len(self._secrets), current, Redactor(ordered))
        return cached[3]

    def _apply(self, config: Config) -> RegistryDiff:
        """Make the registry match `config`. Active runs are not touched. Raises ConfigError, and
        changes nothing, when a task requests more than this node has and no other node may run it."""
        sizes = {**{f"pool {name}": size for name, size in config.pool_sizes().items()}, **self.capacity.sizes()}
        self._check_requests(config, sizes)
        self._secrets.update(dict.fromkeys(sorted(config.secrets)))
        wanted = [self._builder.entry(config, task) for task in config.tasks]
        change = diff(self._tasks, wanted, self._tombstones)
        for task_id in change.restored:
            self.store.remove_tombstone(task_id)
            del self._tombstones[task_id]
            log.info("task_restored", task_id=task_id, reason="definition changed since it was deleted")
        for task_id in change.removed:
            self.firing.unschedule(task_id)
            self._redactors.pop(task_id, None)
            if self.metrics is not None:
                self.metrics.forget_task(task_id)
        for task_id in (*change.added, *change.changed):
            self.firing.schedule(change.tasks[task_id])
        self._tasks = dict(change.tasks)
        self._held_back = dict(change.held_back)
        self._digest = config_digest(config)
        self.config = config
        self._sorted = None
        self.slots.set_limit(config.task.max_concurrent_tasks)
        self.resources.set_sizes(sizes)
        self.alerter.configure(config, change.held_back)
        self.downstream.configure(config)
        if change.held_back:
            log.warning(
                "tasks_held_back",
                task_ids=sorted(change.held_back),
                reason="deleted through the API; edit their YAML definition to bring them back",
            )
        return change

    def _check_requests(self, config: Config, sizes: Mapping[str, int]) -> None:
        """Alone on its store, a node that could never run a task's runs refuses the configuration;
        with other nodes, one of them may: the task's runs are refused here, with the reason."""
        problems = requests_too_large(config, self.capacity)
        if problems and self.coordinator.single_node:
            raise ConfigError(problems)
        for problem in problems:
            log.warning("request_too_large_here", problem=problem, action="its runs are refused on this node")

    def reload(self, config: Config) -> dict[str, list[str]]:
        """Switch to a new, already validated config. Runs in progress keep their definition."""
        changes = self._apply(config).summary()
        log.info("config_reloaded", **{k: v for k, v in changes.items() if v})
        return changes

    # -- runs ------------------------------------------------------------------------------------
    def start_run(
        self,
        task_id: str,
        trigger: Trigger,
        params: Mapping[str, Any] | None = None,
        scheduled_at: float | None = None,
    ) -> Run:
        """Create a run and start it, applying the task's concurrency policy."""
        return self.launch(self.prepare(task_id, trigger, params, scheduled_at))

    def never_fits(self, task_id: str) -> str | None:
        """Why the task's requests can never fit this node, or None."""
        needs = self.entry(task_id).plan.needs
        return self.resources.fits(needs) if needs else None

    def fits_nowhere(self, task_id: str) -> bool:
        """Whether no live node (as the last heartbeat saw them) offers what the task requests."""
        needs = self.entry(task_id).plan.needs
        asked = {name: units for name, units in needs.items() if name in ("memory", "cpu")}
        nodes = self.coordinator.live_nodes
        return (
            bool(asked)
            and bool(nodes)
            and not any(all(units <= node.capacity.get(name, 0) for name, units in asked.items()) for node in nodes)
        )

    def fits_now(self, task_id: str) -> bool:
        """Whether the task's requests fit beside what runs here now."""
        needs = self.entry(task_id).plan.needs
        return not needs or not self.resources.waits_for(needs)

    def prepare(
        self,
        task_id: str,
        trigger: Trigger,
        params: Mapping[str, Any] | None = None,
        scheduled_at: float | None = None,
        environment: Mapping[str, str] | None = None,
    ) -> Prepared:
        """A run of the task, checked against the load and the task's placement and concurrency
        (Conflict when refused), not started yet: nothing has changed."""
        if not self._accepting:
            raise Conflict("taskd is shutting down", "shutting_down")
        entry = self.entry(task_id)
        me = self.coordinator.name
        if self.draining and trigger is Trigger.MANUAL:
            if self.coordinator.alone:
                raise Conflict(f"node {me} is draining, and no other node is alive to take the run", "draining")
            raise Conflict(f"node {me} is draining: a manual run starts on another node", "placement")
        if entry.config.placement != "any" and not eligible(entry.config.placement, me, self.coordinator.labels):
            raise Conflict(f"task {task_id!r} may not run on this node ({me}): see its placement", "placement")
        never = self.resources.fits(entry.plan.needs) if entry.plan.needs else None
        if never is not None:
            raise Conflict(f"task {task_id!r} can never run on this node ({me}): {never}", "capacity")
        self._admit_load()
        task = entry.config
        # `allow` never needs the list of active runs; with thousands of them, building it costs.
        active = self.runs.active_states(task_id) if task.concurrency != "allow" else []
        admission = admit(task_id, task.concurrency, active)
        now = self.clock.time()
        given = {**entry.params, **params} if params else dict(entry.params)
        runtime = secret_values(params, task.secret_params) if params and task.secret_params else ()
        redactor = self.redactor_for(entry, runtime)
        shown = masked_params(given, task.secret_params, redactor) if redactor or task.secret_params else given
        record = RunRecord(
            id=new_run_id(now),
            task_id=task_id,
            trigger=trigger,
            queued_at=now,
            scheduled_at=scheduled_at,
            params=shown,
            priority=task.priority,
            node=me,
        )
        return Prepared(entry, record, given, redactor, admission, environment)

    def launch(self, prepared: Prepared, queue: bool = False) -> Run:
        """Start a prepared run: the runs it replaces are stopped, and it waits for those it must.
        With `queue` (a run already promised, prepared before an await), it also waits for the
        task's runs that began meanwhile, unless the task allows runs side by side."""
        entry, record, admission = prepared.entry, prepared.record, prepared.admission
        for run_id in admission.stop:
            replaced = self.runs.get(run_id)
            if replaced is not None:
                replaced.stop("replaced by a newer run")
        after = [run for run in map(self.runs.get, admission.after) if run is not None]
        if queue and entry.config.concurrency != "allow":
            after += [run for run in self.runs.active(record.task_id) if run not in after]
        run = Run(
            record,
            entry.plan,
            self.store,
            self.slots,
            self.clock,
            self._events,
            prepared.given,
            prepared.redactor,
            prepared.environment,
            self.resources,
        )
        run.queue()
        self.runs.add(run)
        run.start(after)
        if _DEBUG.isEnabledFor(logging.DEBUG):
            log.debug("run_queued", task_id=record.task_id, run_id=run.id, trigger=str(record.trigger))
        return run

    async def start_manual(self, task_id: str, params: Mapping[str, Any] | None = None) -> tuple[str, str]:
        """Start a manual run here, or on a node the task's placement allows when it excludes this
        one; answers (run id, state) once the run is committed. While the store cannot commit, or
        when the commit does not come within MANUAL_COMMIT_WAIT_S, the start is refused
        (StoreError: 503) and nothing of it runs: a run the caller was told about survives a crash."""
        if self.store.failing:
            self._admit_load()  # an overload says so first: it tells when to try again
            raise StoreError("the store cannot commit (see /health); manual starts are refused until it can")
        try:
            run = self.start_run(task_id, Trigger.MANUAL, params=params)
        except Conflict as exc:
            if exc.reason != "placement" or self.coordinator.alone:
                raise
            return await self._remote.start(task_id, params)
        try:
            async with self.clock.timeout(MANUAL_COMMIT_WAIT_S):
                await self.store.flush()  # raises when the commit holding the run fails
        except (TimeoutError, StoreError) as exc:
            why = "its start could not be committed" + (
                f" within {MANUAL_COMMIT_WAIT_S:g} s" if isinstance(exc, TimeoutError) else ""
            )
            run.stop(why)  # its steps wait for that commit: none has begun
            raise StoreError(f"the store did not commit the run; it was stopped ({why})") from None
        return run.id, str(run.state)

    async def check_store(self) -> None:
        """Ask the store what is wrong with it now (gone, replaced, unreachable): raise or clear
        those faults. Commit failures are reported by the store's writer as they happen."""
        found = await self.store.problem()
        for kind in (STORE_FILE, STORE_UNREACHABLE):
            if found is not None and found[0] == kind:
                self.faults.set(*found)
            else:
                self.faults.clear(kind)

    def _run_ended(self, run: Run) -> None:
        """A run has ended: the downstream tasks waiting for it stage it (with its end's commit),
        the alerter hears of it, and the metrics count what it used."""
        record = run.record
        if not self._accepting and record.state is RunState.STOPPED and never_started(record):
            # Stopped by the shutdown before it began: the task still runs for its upstream runs.
            record.error = (record.error or "stopped") + GIVEN_BACK
            self.store.save_run(record)
            self.store.give_back(record.id)
        self.downstream.run_ended(run)
        self.alerter.run_finished(run)
        usage = run.record.usage
        if self.metrics is not None and usage is not None and usage.processes:
            self.metrics.run_used(run.record.task_id, usage.cpu_s, usage.peak_memory_bytes)

    def _store_fault(self, reason: str | None) -> None:
        if reason is None:
            self.faults.clear(STORE_WRITE)
        else:
            self.faults.set(STORE_WRITE, reason)

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

    def load(self) -> Load:
        """Slots, waiting and active runs, and whether new runs are refused, as of now."""
        slots = self.slots
        active = collections.Counter(str(run.state) for run in self.runs.unfinished())
        return Load(slots.limit, slots.held, slots.waiting, active, self._load())

    async def stop_task(self, task_id: str, reason: str) -> StopOutcome:
        """Stop every active run of the task, on every node; wait until they end, for their stop
        grace (and a lease, for another node's) but `STOP_WAIT_S` at most. A run counts as stopped
        once it has reached its final state: here, or for another node's, in the store."""
        entry = self.entry(task_id)
        active = self.runs.active(task_id)
        remote = await self.coordinator.active_elsewhere(task_id)
        if not active and not remote:
            raise Conflict(f"task {task_id!r} has no active run")
        for run in active:
            run.stop(reason)
        if remote:
            await self._remote.stop(task_id, reason)
        _, unseen = await asyncio.gather(
            wait_runs(active, min(stop_grace(active), STOP_WAIT_S), clock=self.clock),
            self._remote.wait(remote, entry.plan.stop_grace_s, STOP_WAIT_S),
        )
        outcome = StopOutcome(
            stopped=[run.id for run in active if run.finished] + [run_id for run_id in remote if run_id not in unseen],
            stopping=[run.id for run in active if not run.finished] + unseen,
        )
        if outcome.stopping:
            log.warning("runs_still_stopping", task_id=task_id, run_ids=outcome.stopping, reason=reason)
        return outcome

    async def stop_run(self, run_id: str, reason: str) -> StopOutcome:
        """Stop one active run, here or on the node that holds it; wait as `stop_task` does."""
        live = self.runs.get(run_id)
        done: bool
        if live is not None and not live.finished:
            live.stop(reason)
            await wait_runs([live], min(stop_grace([live]), STOP_WAIT_S), clock=self.clock)
            done = live.finished
        else:
            record = await self.store.get_run(run_id)
            if record is None:
                raise UnknownRun(run_id)
            if record.state not in ACTIVE_STATES:
                raise Conflict(f"run {run_id!r} is not active: it {record.state}")
            await self._remote.stop(record.task_id, reason, run_id)
            grace = self.entry(record.task_id).plan.stop_grace_s if self.has_task(record.task_id) else 0.0
            done = not await self._remote.wait([run_id], grace, STOP_WAIT_S)
        if not done:
            log.warning("runs_still_stopping", run_ids=[run_id], reason=reason)
        return StopOutcome(stopped=[run_id] if done else [], stopping=[] if done else [run_id])

    async def rerun(self, run_id: str) -> tuple[str, str, list[str]]:
        """Start the run's task again, manually, with the params the run was given; answers the
        new run's id and state, and the params not repeated: a secret is never stored, so a
        secret param, or a param whose stored value had a secret masked in it, takes the task's
        default rather than the mask."""
        record = self.runs.get(run_id)
        known = record.record if record is not None else await self.store.get_run(run_id)
        if known is None:
            raise UnknownRun(run_id)
        entry = self.entry(known.task_id)
        secret = set(entry.config.secret_params)
        dropped = sorted(k for k, v in known.params.items() if k in secret or MASK in json.dumps(v, default=str))
        params = {k: v for k, v in known.params.items() if k not in dropped}
        started, state = await self.start_manual(known.task_id, params)
        return started, state, dropped

    async def drain_node(self, name: str) -> bool:
        """Drain this node, or ask node `name` to: False when it is not a live node."""
        if name == self.coordinator.name:
            self.drain()
            return True
        now = self.clock.time()
        found = next((node for node in await self.coordinator.nodes() if node.name == name), None)
        if found is None or not alive(found, now):
            return False
        await self._remote.drain(name)
        return True

    async def delete_task(self, task_id: str) -> list[str]:
        """Stop active runs (on every node), remove the task (from every node), and keep a
        tombstone so it stays deleted."""
        entry = self.entry(task_id)
        remote = await self.coordinator.active_elsewhere(task_id)
        active = self.drop(task_id, entry.definition_hash)
        self.store.add_tombstone(task_id, entry.definition_hash, self.clock.time())
        await self._remote.drop(task_id, entry.definition_hash)
        await asyncio.gather(wait_runs(active, stop_grace(active)), self._remote.wait(remote, entry.plan.stop_grace_s))
        await self.store.flush()
        log.info("task_deleted", task_id=task_id, stopped=[r.id for r in active] + remote)
        return [run.id for run in active] + remote

    def drop(self, task_id: str, definition_hash: str) -> list[Run]:
        """Stop the task's runs here and take it out of the registry; return the runs stopped."""
        active = self.runs.active(task_id)
        for run in active:
            run.stop("task deleted")
        self.firing.unschedule(task_id)
        self._tasks.pop(task_id, None)
        self._sorted = None
        self._tombstones[task_id] = definition_hash
        self._held_back[task_id] = definition_hash
        self.alerter.deleted(task_id)
        if self.metrics is not None:
            self.metrics.forget_task(task_id)
        return active

    # -- reading the registry ----------------------------------------------------------------------
    @property
    def tasks(self) -> Mapping[str, TaskEntry]:
        return self._tasks

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

    def has_task(self, task_id: str) -> bool:
        return task_id in self._tasks

    def knows(self, task_id: str) -> bool:
        """Whether the task is defined, or deleted and held back (its history is still asked for)."""
        return task_id in self._tasks or task_id in self._held_back

    def status(self, task_id: str) -> str:
        """The task's status as this node knows it."""
        return self._state(self._tasks[task_id], None, ()).status

    async def task_states(self, entries: Sequence[TaskEntry]) -> dict[str, TaskState]:
        """Each task's status and last run as the nodes sharing the store see them: another node
        may have run it since this one last did."""
        latest, elsewhere = await self.coordinator.latest_elsewhere([entry.id for entry in entries])
        return {entry.id: self._state(entry, latest.get(entry.id), elsewhere.get(entry.id, ())) for entry in entries}

    def _state(self, entry: TaskEntry, other: RunRecord | None, elsewhere: Sequence[str]) -> TaskState:
        """The task's state from this node's runs, the latest run another node reported and the
        states of the active runs other nodes hold."""
        last = self.runs.last(entry.id)
        if other is not None and (last is None or other.id >= last.id):  # ids grow with the time queued
            last = other
        active = [run.state for run in self.runs.active(entry.id)] + [RunState(state) for state in elsewhere]
        final = None if last is None else str(last.state)
        status = task_status(
            entry.config.enabled,
            active,
            final,
            scheduled=entry.schedule is not None or entry.config.after is not None,
            overdue=self.alerter.overdue(entry.id),
            waiting=bool(self.downstream.waiting_on(entry.id)),
        )
        return TaskState(status, last)

    def active_runs(self, task_id: str) -> list[Run]:
        return self.runs.active(task_id)

    def live_run(self, run_id: str) -> Run | None:
        return self.runs.get(run_id)

    @property
    def node_name(self) -> str:
        return self.coordinator.name

    @property
    def nodes_alive(self) -> int:
        """Nodes sharing the store whose lease is live, this one included, as its last heartbeat saw them."""
        return max(1, len(self.coordinator.live_nodes))

    async def nodes(self) -> list[NodeInfo]:
        """The nodes sharing the store (this one alone, on a store no other process shares)."""
        return await self.coordinator.nodes()


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

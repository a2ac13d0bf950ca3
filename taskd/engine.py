"""The live registry of tasks: APScheduler fires, the slot pool, concurrency and misfire policies,
manual starts and stops, deletion with tombstones, reload, and draining on shutdown.

APScheduler only decides *when* a task is due. A small executor hands each fire (with its scheduled
instants) to the engine synchronously; the engine creates and owns the runs, because APScheduler 3
can neither cancel nor drain running coroutines.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import structlog
from apscheduler.executors.base import BaseExecutor
from apscheduler.schedulers.asyncio import AsyncIOScheduler

from taskd.config import Config, PipelineConfig, Source, TaskConfig, thaw
from taskd.errors import TaskdError
from taskd.models import ACTIVE_STATES, RunRecord, RunState, RunSummary, Trigger, new_run_id
from taskd.pipeline import ProcessorType, Step, builtin_types
from taskd.runner import Run, RunPlan
from taskd.schedule import Schedule
from taskd.slots import SlotPool
from taskd.store import Fire, Store
from taskd.trigger import ScheduleTrigger

log = structlog.get_logger("taskd.engine")
_DEBUG = logging.getLogger("taskd.engine")

MAX_QUEUED_PER_TASK = 100


class UnknownTask(TaskdError):
    """No task with that id (never defined, removed, or deleted)."""


class Conflict(TaskdError):
    """The request contradicts the task's state or policy (e.g. `forbid` with a run active)."""


@dataclass(frozen=True)
class TaskEntry:
    """A task as the engine runs it: its config plus what was built from it."""

    config: TaskConfig
    pipeline: PipelineConfig
    steps: tuple[Step, ...]
    schedule: Schedule | None
    time_zone: str
    definition_hash: str
    source: Source | None
    plan: RunPlan
    params: Mapping[str, Any]

    @property
    def id(self) -> str:
        return self.config.id

    @functools.cached_property
    def static_view(self) -> dict[str, Any]:
        """The part of the task's API view that only a config change can change."""
        return {
            "id": self.id,
            "name": self.config.display_name,
            "enabled": self.config.enabled,
            "schedule": self.config.schedule,
            "time_zone": self.time_zone,
            "pipeline": self.pipeline.name,
            "priority": self.config.priority,
            "concurrency": self.config.concurrency,
        }

    @property
    def group(self) -> tuple[str, str] | None:
        """Tasks firing on the same schedule in the same zone share one scheduler job."""
        if self.schedule is None or not self.config.enabled:
            return None
        return (self.schedule.expression, self.time_zone)


class _FireExecutor(BaseExecutor):
    """Hands due jobs straight to the engine, with every instant they were due at."""

    def __init__(self, engine: Engine) -> None:
        super().__init__()
        self._engine = engine

    def _do_submit_job(self, job: Any, run_times: list[datetime]) -> None:
        try:
            self._engine.on_group_fire(job.id, run_times)
        finally:
            self._run_job_success(job.id, [])


class Engine:
    """Owns the scheduler, the registry of tasks and every active run."""

    def __init__(self, config: Config, store: Store, kinds: Mapping[str, ProcessorType] | None = None) -> None:
        self.config = config
        self.store = store
        self.kinds = kinds if kinds is not None else builtin_types()
        self.slots = SlotPool(config.task.max_concurrent_tasks)
        self.tasks: dict[str, TaskEntry] = {}
        self.held_back: dict[str, str] = {}
        self.runs: dict[str, Run] = {}
        self.by_task: dict[str, dict[str, Run]] = {}  # task id -> its unfinished runs, oldest first
        self.last_runs: dict[str, RunRecord | RunSummary] = {}  # the live record while it runs
        self._tombstones: dict[str, str] = {}
        self._groups: dict[str, dict[str, None]] = {}  # scheduler job id -> task ids, in order
        self._built: dict[str, tuple[str, tuple[Step, ...]]] = {}  # pipeline -> (digest, steps)
        self._sorted: tuple[TaskEntry, ...] | None = None
        self._next: dict[int, tuple[Schedule, datetime, datetime | None, str | None]] = {}
        self._accepting = False
        self.started_at = time.time()
        self.scheduler = AsyncIOScheduler(
            timezone=UTC,
            executors={"default": _FireExecutor(self)},
            job_defaults={"coalesce": False, "misfire_grace_time": None, "max_instances": 1_000_000},
        )

    # -- lifecycle -------------------------------------------------------------------------------
    async def start(self) -> None:
        """Register the configured tasks, start firing, and catch up on missed fires."""
        self._tombstones = await self.store.tombstones()
        self.last_runs = {k: RunSummary.of(v) for k, v in (await self.store.last_runs()).items()}
        self._apply(self.config)
        self._accepting = True
        self.scheduler.start()
        await self._catch_up()

    @property
    def scheduler_running(self) -> bool:
        return bool(self.scheduler.running) and self._accepting

    async def shutdown(self, grace_s: float) -> None:
        """Stop firing; let active runs finish for up to `grace_s`, then stop them."""
        self._accepting = False
        if self.scheduler.running:
            self.scheduler.shutdown(wait=False)
        active = [run for run in self.runs.values() if not run.done.is_set()]
        if active:
            log.info("draining_runs", count=len(active), grace_s=grace_s)
            await _wait_runs(active, grace_s)
        left = [run for run in self.runs.values() if not run.done.is_set()]
        for run in left:
            run.stop(f"daemon shutdown after the {grace_s:g}s grace period")
        if left:
            await _wait_runs(left, 30)
        await self.store.flush()

    # -- configuration -----------------------------------------------------------------------------
    def _steps(self, pipeline: PipelineConfig) -> tuple[Step, ...]:
        """The built steps of a pipeline, shared by every task that uses it (processors hold no
        per-run state); rebuilt when the pipeline's definition changes."""
        cached = self._built.get(pipeline.name)
        if cached is not None and cached[0] == pipeline.digest:
            return cached[1]
        steps = tuple(
            Step(index=i, type=p.type, processor=self.kinds[p.type].build(p.options), policy=p.policy)
            for i, p in enumerate(pipeline.processors)
        )
        self._built[pipeline.name] = (pipeline.digest, steps)
        return steps

    def _build(self, config: Config, task: TaskConfig) -> TaskEntry:
        pipeline = config.pipelines[task.pipeline]
        steps = self._steps(pipeline)
        zone = config.zone_for(task)
        return TaskEntry(
            config=task,
            pipeline=pipeline,
            steps=steps,
            schedule=config.schedule_for(task),
            time_zone=zone,
            definition_hash=config.definition_hash(task),
            source=config.task_sources.get(task.id),
            plan=RunPlan(task=task, steps=steps, base_dir=pipeline.base_dir, time_zone=zone),
            params=thaw(task.params),
        )

    def _apply(self, config: Config) -> dict[str, list[str]]:
        """Make the registry match `config`; return what changed. Active runs are not touched."""
        wanted: dict[str, TaskEntry] = {}
        held: dict[str, str] = {}
        for task in config.tasks:
            entry = self._build(config, task)
            tombstone = self._tombstones.get(task.id)
            if tombstone is not None:
                if tombstone == entry.definition_hash:
                    held[task.id] = tombstone
                    continue
                # The YAML definition changed since the task was deleted: it comes back.
                self.store.remove_tombstone(task.id)
                del self._tombstones[task.id]
                log.info("task_restored", task_id=task.id, reason="definition changed since it was deleted")
            wanted[task.id] = entry
        changes: dict[str, list[str]] = {"added": [], "changed": [], "removed": [], "held_back": sorted(held)}
        for task_id in list(self.tasks):
            if task_id not in wanted:
                self._unschedule(task_id)
                del self.tasks[task_id]
                changes["removed"].append(task_id)
        for task_id, entry in wanted.items():
            old = self.tasks.get(task_id)
            if old is not None and old.definition_hash == entry.definition_hash:
                continue
            self.tasks[task_id] = entry
            self._schedule(entry)
            changes["changed" if old is not None else "added"].append(task_id)
        self.held_back = held
        self.config = config
        self._sorted = None
        self.slots.set_limit(config.task.max_concurrent_tasks)
        if held:
            log.warning(
                "tasks_held_back",
                task_ids=sorted(held),
                reason="deleted through the API; edit their YAML definition to bring them back",
            )
        return changes

    def reload(self, config: Config) -> dict[str, list[str]]:
        """Switch to a new, already validated config. Runs in progress keep their definition."""
        changes = self._apply(config)
        log.info("config_reloaded", **{k: v for k, v in changes.items() if v})
        return changes

    def _schedule(self, entry: TaskEntry) -> None:
        self._unschedule(entry.id)
        group = entry.group
        if group is None or entry.schedule is None:
            return
        job_id = f"{group[1]} {group[0]}"
        members = self._groups.get(job_id)
        if members is None:
            members = self._groups[job_id] = {}
            self.scheduler.add_job(
                _never_called, ScheduleTrigger(entry.schedule), id=job_id, name=job_id, replace_existing=True
            )
        members[entry.id] = None

    def _unschedule(self, task_id: str) -> None:
        for job_id, members in list(self._groups.items()):
            if task_id in members:
                del members[task_id]
                if not members:
                    del self._groups[job_id]
                    if self.scheduler.get_job(job_id) is not None:
                        self.scheduler.remove_job(job_id)
                return

    # -- fires -----------------------------------------------------------------------------------
    def on_group_fire(self, job_id: str, run_times: list[datetime]) -> None:
        """Called by APScheduler (through the executor) when a schedule is due: fire its tasks,
        higher priority first."""
        members = self._groups.get(job_id)
        if not members:
            return
        ordered = sorted(members, key=lambda task_id: -self.tasks[task_id].config.priority)
        for task_id in ordered:
            self.on_fire(task_id, run_times)

    def on_fire(self, task_id: str, run_times: list[datetime]) -> None:
        """Called by APScheduler (through the executor) when `task_id` is due."""
        entry = self.tasks.get(task_id)
        if entry is None or not self._accepting or not run_times:
            return
        now = time.time()
        instants = [t.timestamp() for t in run_times]
        self.store.set_last_fire(task_id, instants[-1])
        for missed in instants[:-1]:
            # More than one instant came due at once: the loop was blocked. One run, the rest recorded.
            self.store.record_fire(Fire(task_id, missed, "skipped", "coalesced: the event loop was late", now))
        try:
            self.start_run(task_id, Trigger.SCHEDULE, scheduled_at=instants[-1])
        except Conflict as exc:
            self.store.record_fire(Fire(task_id, instants[-1], "skipped", str(exc), now))
            log.info("fire_skipped", task_id=task_id, reason=str(exc))

    async def _catch_up(self) -> None:
        """At start-up, deal with fires missed while the daemon was down (misfire policy)."""
        last_fires = await self.store.last_fires()
        now = datetime.now(UTC)
        for entry in list(self.tasks.values()):
            last = last_fires.get(entry.id)
            if entry.schedule is None or not entry.config.enabled or last is None:
                continue
            count, latest_fire = missed_fires(entry.schedule, datetime.fromtimestamp(last, UTC), now)
            if latest_fire is None:
                continue
            latest = latest_fire.timestamp()
            self.store.set_last_fire(entry.id, latest)
            if entry.config.misfire == "run_once":
                log.info("catch_up_run", task_id=entry.id, missed=count)
                try:
                    self.start_run(entry.id, Trigger.CATCH_UP, scheduled_at=latest)
                except Conflict as exc:
                    self.store.record_fire(Fire(entry.id, latest, "skipped", str(exc), time.time()))
            else:
                reason = f"missed while the daemon was down ({count} fire(s)); misfire policy is skip"
                self.store.record_fire(Fire(entry.id, latest, "missed", reason, time.time()))
                log.info("fires_missed", task_id=entry.id, missed=count)

    # -- runs ------------------------------------------------------------------------------------
    def active_runs(self, task_id: str) -> list[Run]:
        runs = self.by_task.get(task_id)
        return [run for run in runs.values() if not run.done.is_set()] if runs else []

    def entry(self, task_id: str) -> TaskEntry:
        entry = self.tasks.get(task_id)
        if entry is None:
            raise UnknownTask(f"task {task_id!r} does not exist")
        return entry

    def start_run(
        self,
        task_id: str,
        trigger: Trigger,
        params: Mapping[str, Any] | None = None,
        scheduled_at: float | None = None,
    ) -> Run:
        """Create a run and start it, applying the task's concurrency policy."""
        if not self._accepting:
            raise Conflict("taskd is shutting down")
        entry = self.entry(task_id)
        task = entry.config
        # `allow` never needs the list of active runs; with thousands of them, building it costs.
        active = self.active_runs(task_id) if task.concurrency != "allow" else []
        after: list[Run] = []
        if active:
            if task.concurrency == "forbid":
                raise Conflict(f"task {task_id!r} already has an active run ({active[0].id}); concurrency is forbid")
            if task.concurrency == "replace":
                for run in active:
                    run.stop("replaced by a newer run")
                after = active
            elif task.concurrency == "queue":
                waiting = sum(1 for run in active if run.state is RunState.QUEUED)
                if waiting >= MAX_QUEUED_PER_TASK:
                    raise Conflict(f"task {task_id!r} already has {waiting} queued runs; concurrency is queue")
                after = active
        merged = {**entry.params, **params} if params else dict(entry.params)
        record = RunRecord(
            id=new_run_id(),
            task_id=task_id,
            trigger=trigger,
            queued_at=time.time(),
            scheduled_at=scheduled_at,
            params=merged,
            priority=task.priority,
        )
        run = Run(record, entry.plan, self.store, self.slots)
        run.queue()
        self.runs[run.id] = run
        self.by_task.setdefault(task_id, {})[run.id] = run
        self.last_runs[task_id] = record
        run.start(after)
        assert run.task is not None
        run.task.add_done_callback(lambda _: self._forget(run))
        if _DEBUG.isEnabledFor(logging.DEBUG):
            log.debug("run_queued", task_id=task_id, run_id=run.id, trigger=str(trigger))
        return run

    def _forget(self, run: Run) -> None:
        self.runs.pop(run.id, None)
        task_id = run.record.task_id
        if self.last_runs.get(task_id) is run.record:
            self.last_runs[task_id] = RunSummary.of(run.record)
        runs = self.by_task.get(run.record.task_id)
        if runs is not None:
            runs.pop(run.id, None)
            if not runs:
                del self.by_task[run.record.task_id]

    async def stop_task(self, task_id: str, reason: str, wait_s: float = 10.0) -> list[str]:
        """Stop every active run of the task; wait (bounded) until they have ended."""
        self.entry(task_id)
        active = self.active_runs(task_id)
        if not active:
            raise Conflict(f"task {task_id!r} has no active run")
        for run in active:
            run.stop(reason)
        await _wait_runs(active, wait_s)
        return [run.id for run in active]

    async def delete_task(self, task_id: str) -> list[str]:
        """Stop active runs, remove the task, and keep a tombstone so it stays deleted."""
        entry = self.entry(task_id)
        active = self.active_runs(task_id)
        for run in active:
            run.stop("task deleted")
        self._unschedule(task_id)
        del self.tasks[task_id]
        self._sorted = None
        self._tombstones[task_id] = entry.definition_hash
        self.held_back[task_id] = entry.definition_hash
        self.store.add_tombstone(task_id, entry.definition_hash, time.time())
        await _wait_runs(active, 10)
        await self.store.flush()
        log.info("task_deleted", task_id=task_id, stopped=[r.id for r in active])
        return [run.id for run in active]

    # -- views -----------------------------------------------------------------------------------
    def sorted_entries(self) -> tuple[TaskEntry, ...]:
        """Every task, by id; cached until the registry changes."""
        if self._sorted is None:
            self._sorted = tuple(self.tasks[k] for k in sorted(self.tasks))
        return self._sorted

    def status(self, task_id: str) -> str:
        entry = self.tasks[task_id]
        if not entry.config.enabled:
            return "disabled"
        states = {run.state for run in self.active_runs(task_id)}
        for state in (RunState.RUNNING, RunState.RETRYING, RunState.QUEUED):
            if state in states:
                return str(state)
        last = self.last_runs.get(task_id)
        if last is not None and last.state not in ACTIVE_STATES:
            return str(last.state)
        return "scheduled"

    def next_fire(self, task_id: str, now: datetime | None = None) -> datetime | None:
        entry = self.tasks[task_id]
        schedule = entry.schedule
        if schedule is None or not entry.config.enabled:
            return None
        now = now or datetime.now(UTC)
        # Tasks share parsed schedules, so one answer serves a whole group while it holds:
        # the next fire after `now` is the same for every `now` in [asked_at, answer).
        return self._next_cached(schedule, now)[0]

    def next_fire_iso(self, task_id: str, now: datetime | None = None) -> str | None:
        """next_fire() as ISO-8601, formatted once per schedule and answer."""
        entry = self.tasks[task_id]
        if entry.schedule is None or not entry.config.enabled:
            return None
        return self._next_cached(entry.schedule, now or datetime.now(UTC))[1]

    def _next_cached(self, schedule: Schedule, now: datetime) -> tuple[datetime | None, str | None]:
        cached = self._next.get(id(schedule))
        if cached is not None and cached[0] is schedule and cached[1] <= now and (cached[2] is None or now < cached[2]):
            return cached[2], cached[3]
        answer = schedule.next_after(now)
        text = answer.isoformat() if answer is not None else None
        self._next[id(schedule)] = (schedule, now, answer, text)
        return answer, text


def _never_called() -> None:  # the fire executor never calls job functions
    raise AssertionError("taskd's fire executor does not call job functions")


def missed_fires(schedule: Schedule, last: datetime, now: datetime, cap: int = 1000) -> tuple[str, datetime | None]:
    """Fires after `last` and up to `now`: how many (counted up to `cap`, then "cap+") and the
    latest one, found without walking a long outage instant by instant."""
    count = 0
    current = schedule.next_after(last)
    latest = None
    while current is not None and current <= now and count < cap:
        latest, count = current, count + 1
        current = schedule.next_after(current)
    if current is None or current > now:
        return str(count), latest
    # More than `cap`: look for the latest fire in growing windows that end at `now`.
    for window in (
        timedelta(minutes=1),
        timedelta(hours=1),
        timedelta(days=1),
        timedelta(days=32),
        timedelta(days=400),
    ):
        start = max(last, now - window)
        probe = schedule.next_after(start)
        found = None
        while probe is not None and probe <= now:
            found = probe
            probe = schedule.next_after(probe)
        if found is not None:
            return f"{cap}+", found
    return f"{cap}+", latest


async def _wait_runs(runs: Iterable[Run], limit_s: float) -> None:
    """Wait until every run has ended, or `limit_s` seconds have passed."""
    waits = [asyncio.ensure_future(run.done.wait()) for run in runs]
    if not waits:
        return
    _, pending = await asyncio.wait(waits, timeout=limit_s)
    for future in pending:
        future.cancel()

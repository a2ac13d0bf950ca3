"""Schedules becoming runs: the timer's jobs (one per schedule and zone, shared by the tasks on it),
the claim of each fire among the nodes, starting the fired tasks in chunks, and catching up at
start-up with fires missed while the daemon was down."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Mapping
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any, Protocol

import structlog

from taskd.clock import Clock, utc
from taskd.cluster import Coordinator
from taskd.engine.policy import Claimant, FirePlan, catch_up, claim_key, eligible, owner, plan_fire
from taskd.engine.registry import TaskEntry
from taskd.engine.timer import FireCallback, Timer
from taskd.errors import Conflict, Overloaded
from taskd.metrics import Metrics
from taskd.models import Trigger
from taskd.slots import SlotPool
from taskd.store.base import Fire, Store

log = structlog.get_logger("taskd.engine")

SHARE_WAIT_S = 0.2
"""With other nodes alive, a node claims first the fires it owns (`policy.owner`), and the rest
this much later: by then their owners have claimed them, and only those of a node that did not
(dead, draining, behind) are left to take."""
CATCH_UP_LEAVES_S = 1.0
"""With other nodes alive, a node starting up leaves the fires of this last second to them."""
CLAIM_DELAY_S = 0.05
"""With other nodes alive, a node with every slot busy waits this long before claiming a fire (one
half busy, half as long): the least loaded node tends to claim first."""
FIRE_CHUNK = 25
"""A fire starts its tasks' runs this many at a time, letting the event loop serve the API and
begin the runs already started in between, so a fire of thousands of tasks does not hold the
loop for the whole burst."""

TimerFactory = Callable[[FireCallback], Timer]


CLAIM_TIMEOUT_S = 10.0
"""How long a fire's claim may wait for the store before the fire is skipped as store_unavailable."""


class Starter(Protocol):
    """What firing needs of the engine: its tasks, whether it takes new runs, and starting one."""

    @property
    def tasks(self) -> Mapping[str, TaskEntry]: ...

    @property
    def accepting(self) -> bool: ...

    def start_run(
        self, task_id: str, trigger: Trigger, params: Mapping[str, Any] | None = None, scheduled_at: float | None = None
    ) -> object: ...

    def never_fits(self, task_id: str) -> str | None:
        """Why the task's requests can never fit this node, or None."""

    def fits_now(self, task_id: str) -> bool:
        """Whether the task's requests fit beside what runs here now."""

    def fits_nowhere(self, task_id: str) -> bool:
        """Whether no live node offers what the task requests."""


class Firing:
    """The timer's jobs and what each fire becomes."""

    def __init__(
        self,
        engine: Starter,
        timer: TimerFactory,
        coordinator: Coordinator,
        store: Store,
        slots: SlotPool,
        clock: Clock,
        metrics: Metrics | None,
    ) -> None:
        self._engine = engine
        self._coordinator = coordinator
        self._store = store
        self._slots = slots
        self._clock = clock
        self._metrics = metrics
        self._groups: dict[str, dict[str, None]] = {}  # timer job -> task ids, in order
        # timer job -> its task ids by priority, and whether all of them may run on any node
        self._orders: dict[str, tuple[list[str], bool]] = {}
        self._claims: set[asyncio.Task[None]] = set()
        self._adopted: list[tuple[str, float]] = []  # adopted before the engine accepted runs
        # task id -> reason -> the summary of its fires refused since its last run began
        self._refused: dict[str, dict[str, Fire]] = {}
        self._sized: set[str] = set()  # the tasks with requests: a node where they never fit claims none
        self.timer: Timer = timer(self.on_group_fire)

    # -- the timer's jobs --------------------------------------------------------------------------
    def schedule(self, entry: TaskEntry) -> None:
        self.unschedule(entry.id)
        self._orders.clear()
        if "memory" in entry.plan.needs or "cpu" in entry.plan.needs:
            self._sized.add(entry.id)
        group = entry.group
        if group is None or entry.schedule is None:
            return
        members = self._groups.get(group)
        if members is None:
            members = self._groups[group] = {}
            self.timer.add(group, entry.schedule)
        members[entry.id] = None

    def unschedule(self, task_id: str) -> None:
        self._orders.clear()
        self._refused.pop(task_id, None)
        self._sized.discard(task_id)
        for group, members in list(self._groups.items()):
            if task_id in members:
                del members[task_id]
                if not members:
                    del self._groups[group]
                    self.timer.remove(group)
                return

    @property
    def groups(self) -> Mapping[str, Mapping[str, None]]:
        return self._groups

    def pause(self) -> None:
        """No more fires; the claims in flight go on, and their runs start (a drain)."""
        self.timer.shutdown()

    @property
    def in_flight(self) -> int:
        """Claims (or answers to other nodes) not done yet."""
        return len(self._claims)

    def stop(self) -> None:
        """No more fires: the timer stops and the claims in flight are dropped."""
        self.timer.shutdown()
        for claim in list(self._claims):
            claim.cancel()

    def track(self, task: asyncio.Task[None]) -> None:
        """Keep a background step of firing (or of answering another node) until it is done."""
        self._claims.add(task)
        task.add_done_callback(self._claims.discard)

    # -- fires -------------------------------------------------------------------------------------
    def on_group_fire(self, group: str, run_times: list[datetime]) -> None:
        """Called by the timer when a schedule is due: fire its tasks, higher priority first."""
        members = self._groups.get(group)
        if not members or not self._engine.accepting or not run_times:
            return
        tasks = self._engine.tasks
        fire = plan_fire([t.timestamp() for t in run_times])
        ordered, anywhere = self._ordered(group, members)
        if not anywhere:
            ordered = self._placed(ordered, fire)
        if self._sized and not self._sized.isdisjoint(members):
            ordered = self._fitting(ordered, fire)
        me = self._coordinator.name
        if anywhere:  # each task is claimed under its own id
            keys = dict(zip(ordered, ordered, strict=True))
        else:
            keys = {claim_key(task_id, tasks[task_id].config.placement, me): task_id for task_id in ordered}
        instant = fire.instant
        claims = [(key, instant) for key in keys]
        won = self._coordinator.claim_at_once(claims)
        if won is not None:  # nobody to compete with: the fire starts now, on this turn of the loop
            self._fire_won(ordered, keys, won, fire)
        else:
            self.track(asyncio.get_running_loop().create_task(self._claimed_fire(ordered, keys, claims, fire)))

    def _ordered(self, group: str, members: Mapping[str, None]) -> tuple[list[str], bool]:
        """The group's tasks, higher priority first, and whether every one may run on any node:
        worked out once until a task is scheduled or unscheduled again (never changed in place)."""
        found = self._orders.get(group)
        if found is None:
            tasks = self._engine.tasks
            ordered = sorted(members, key=lambda task_id: -tasks[task_id].config.priority)
            anywhere = all(tasks[task_id].config.placement == "any" for task_id in ordered)
            found = self._orders[group] = (ordered, anywhere)
        return found

    def _placed(self, ordered: list[str], fire: FirePlan) -> list[str]:
        """The tasks of a fire that may run on this node. With no other node alive, the node records
        the others as skipped: no node could run them."""
        me, labels, tasks = self._coordinator.name, self._coordinator.labels, self._engine.tasks
        placed = [t for t in ordered if eligible(tasks[t].config.placement, me, labels)]
        if self._coordinator.alone and len(placed) < len(ordered):
            now = self._clock.time()
            for task_id in set(ordered) - set(placed):
                why = f"placement: this node ({me}) is not one the task may run on"
                self.skip(Fire(task_id, fire.instant, "skipped", why, now), "placement")
        return placed

    def _fitting(self, ordered: list[str], fire: FirePlan) -> list[str]:
        """The tasks of a fire whose requests can fit this node: the others are left to the nodes
        they fit (not claimed here); with no other node alive, they are recorded as skipped."""
        fitting = []
        for task_id in ordered:
            why = self._engine.never_fits(task_id) if task_id in self._sized else None
            if why is None:
                fitting.append(task_id)
            elif self._coordinator.alone:
                reason = f"capacity: its requests can never fit this node ({why})"
                self.skip(Fire(task_id, fire.instant, "skipped", reason, self._clock.time()), "capacity")
            elif self._engine.fits_nowhere(task_id) and self._first_alive():
                # No node can run it: one of them (the first by name) says so, for the cluster.
                reason = f"capacity: its requests fit no live node's capacity ({why} here)"
                self.skip(Fire(task_id, fire.instant, "skipped", reason, self._clock.time()), "capacity")
        return fitting

    def _first_alive(self) -> bool:
        nodes = self._coordinator.live_nodes
        return bool(nodes) and min(node.name for node in nodes) == self._coordinator.name

    async def _claimed_fire(
        self, ordered: list[str], keys: dict[str, str], claims: list[tuple[str, float]], fire: FirePlan
    ) -> None:
        """Each fire runs on the one node that claims it first (or, for `placement: all`, once on
        every node). The fires this node owns are claimed at once; the rest a moment later, a
        busier node waiting a little longer, so that the least loaded node tends to win them; so
        does a node where a task's request does not fit now."""
        first, rest, shared = self._shares(ordered, keys, claims, fire)
        if first:
            await self._claim(ordered, keys, first, fire)
        if not rest:
            return
        busy = self._slots.held / self._slots.limit
        if self._sized and any(task_id in self._sized and not self._engine.fits_now(task_id) for task_id in ordered):
            busy = 1.0  # a request that does not fit here now: a node where it does claims first
        wait = (SHARE_WAIT_S if shared else 0.0) + CLAIM_DELAY_S * min(busy, 1.0)
        if wait > 0 and not self._coordinator.alone:
            await self._clock.sleep(wait)
        await self._claim(ordered, keys, rest, fire)

    def _shares(
        self, ordered: list[str], keys: dict[str, str], claims: list[tuple[str, float]], fire: FirePlan
    ) -> tuple[list[tuple[str, float]], list[tuple[str, float]], bool]:
        """The claims this node makes at once (the fires it owns, and its own copies of
        `placement: all` fires), those it leaves to their owners first, and whether there are
        other owners (other live nodes that claim)."""
        me, tasks = self._coordinator.name, self._engine.tasks
        nodes = [
            Claimant(node.name, node.labels, max(node.slots - node.slots_in_use, 0))
            for node in self._coordinator.live_nodes
            if node.name != me and not node.draining
        ]
        if not nodes:
            return [], claims, False
        nodes.append(Claimant(me, self._coordinator.labels, max(self._slots.limit - self._slots.held, 0)))
        first: list[tuple[str, float]] = []
        rest: list[tuple[str, float]] = []
        for claim in claims:
            task = tasks.get(keys[claim[0]])
            placement = task.config.placement if task is not None else "any"
            mine = placement == "all" or owner(claim[0], fire.instant, placement, nodes) == me
            if mine and task is not None and task.id in self._sized and not self._engine.fits_now(task.id):
                mine = False  # its request does not fit here now: a node where it does claims it first
            (first if mine else rest).append(claim)
        return first, rest, True

    async def _claim(
        self, ordered: list[str], keys: dict[str, str], claims: list[tuple[str, float]], fire: FirePlan
    ) -> bool:
        """Claim these fires and start the runs of those won; False when the store could not be
        reached (the fires are recorded as skipped)."""
        try:
            async with self._clock.timeout(CLAIM_TIMEOUT_S):
                won = await self._coordinator.claim_fires(claims)
        except Exception as exc:  # the store is unreachable: recorded (when it is back) and counted
            error = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
            log.warning("fire_claim_failed", tasks=len(claims), error=error, action="skipped: store_unavailable")
            now = self._clock.time()
            why = f"store_unavailable: this node could not reach the store to claim the fire ({error})"
            asked = {keys[key] for key, _ in claims}
            for task_id in ordered:
                if task_id in asked:
                    self.skip(Fire(task_id, fire.instant, "skipped", why, now), "store_unavailable")
            return False
        self._fire_won(ordered, keys, won, fire)
        return True

    def _fire_won(self, ordered: list[str], keys: dict[str, str], won: list[tuple[str, float]], fire: FirePlan) -> None:
        if not won or not self._engine.accepting:
            return
        if len(won) == len(keys):  # every claim won (alone, say): all of them, in order
            self._fire_from(ordered, 0, fire)
            return
        mine = {keys[key] for key, _ in won}
        self._fire_from([task_id for task_id in ordered if task_id in mine], 0, fire)

    def _fire_from(self, ordered: list[str], start: int, fire: FirePlan) -> None:
        """Fire `ordered[start:]`, FIRE_CHUNK tasks now and the rest in later turns of the loop."""
        end = start + FIRE_CHUNK
        tasks = self._engine.tasks
        for task_id in ordered[start:end]:
            if task_id in tasks:  # a reload or a DELETE between two chunks may remove it
                self._fire(task_id, fire)
        if end < len(ordered):
            asyncio.get_running_loop().call_soon(self._fire_from, ordered, end, fire)

    def _fire(self, task_id: str, fire: FirePlan) -> None:
        """`task_id` is due: one run for the fire's instant, the coalesced instants recorded."""
        now = self._clock.time()
        self._store.set_last_fire(task_id, fire.instant)
        for missed in fire.coalesced:
            self.skip(Fire(task_id, missed, "skipped", "coalesced: the event loop was late", now), "coalesced")
        try:
            self._engine.start_run(task_id, Trigger.SCHEDULE, scheduled_at=fire.instant)
        except Conflict as exc:
            began = self.skip(Fire(task_id, fire.instant, "skipped", str(exc), now), exc.reason)
            # Logged when a run of refusals begins (an overload once, when it begins and ends).
            if began and not isinstance(exc, Overloaded):
                log.info("fire_skipped", task_id=task_id, reason=str(exc))
        else:
            self._refused.pop(task_id, None)  # a run began: the next refusal starts a new summary

    def adopt(self, fires: list[tuple[str, float]]) -> None:
        """Run the fires a dead node claimed and never started (the coordinator made them this
        node's claims). A task this node does not have, or may not run, is recorded as skipped."""
        if not self._engine.accepting:  # a node taking over its dead predecessor's name: at start-up
            self._adopted.extend(fires)
            return
        tasks, me, labels = self._engine.tasks, self._coordinator.name, self._coordinator.labels
        for task_id, instant in sorted(fires, key=lambda fire: fire[1]):
            entry = tasks.get(task_id)
            if entry is None or not eligible(entry.config.placement, me, labels):
                why = f"adopted from a dead node, but this node ({me}) does not have the task or may not run it"
                self.skip(Fire(task_id, instant, "skipped", why, self._clock.time()), "placement")
                continue
            log.warning("fire_adopted", task_id=task_id, instant=instant)
            self._fire(task_id, FirePlan(instant))

    def skip(self, fire: Fire, reason: str) -> bool:
        """A fire that did not become a run: counted by reason, and recorded in the summary of the
        task's refusals for that reason since its last run began (one row, updated in place, not a
        row per fire: under overload a schedule every second would add 86,400 rows a day). True
        when this fire begins a new summary."""
        if self._metrics is not None:
            self._metrics.fire_skipped(fire.task_id, reason)
        by_reason = self._refused.setdefault(fire.task_id, {})
        summary = by_reason.get(reason)
        if summary is None:
            key = f"{self._coordinator.name}|{fire.task_id}|{reason}|{fire.instant!r}"
            summary = replace(fire, key=key)
        else:
            last = max(fire.instant, summary.last_instant or summary.instant)
            summary = replace(
                summary, count=summary.count + 1, last_instant=last, reason=fire.reason, recorded_at=fire.recorded_at
            )
        by_reason[reason] = summary
        self._store.record_fire(summary)
        return summary.count == 1

    def _at_start(self) -> None:
        """The enabled tasks with `schedule: "@reboot"` run once now, on each node their placement allows."""
        me, labels = self._coordinator.name, self._coordinator.labels
        for entry in list(self._engine.tasks.values()):
            task = entry.config
            if task.at_start and task.enabled and eligible(task.placement, me, labels):
                log.info("startup_run", task_id=entry.id)
                try:
                    self._engine.start_run(entry.id, Trigger.STARTUP)
                except Conflict as exc:
                    self.skip(Fire(entry.id, self._clock.time(), "skipped", str(exc), self._clock.time()), exc.reason)

    async def catch_up(self) -> None:
        """At start-up, deal with fires missed while the daemon was down (misfire policy), each
        claimed so that it is dealt with once among the nodes. First, the fires adopted while
        joining (a dead predecessor's unstarted claims)."""
        adopted, self._adopted = self._adopted, []
        if adopted:
            self.adopt(adopted)
        self._at_start()
        last_fires = await self._store.last_fires()
        now = utc(self._clock)
        if not self._coordinator.alone:
            # The fires of the last moment belong to the live nodes' timers, which may be leaving
            # them to their owner for SHARE_WAIT_S: claimed here, they would count as missed.
            now -= timedelta(seconds=CATCH_UP_LEAVES_S)
        due = []
        me, labels = self._coordinator.name, self._coordinator.labels
        for entry in list(self._engine.tasks.values()):
            if not eligible(entry.config.placement, me, labels):
                continue
            schedule = entry.schedule if entry.config.enabled else None
            missed = catch_up(schedule, entry.config.misfire, _instant(last_fires.get(entry.id)), now)
            if missed is not None:
                due.append((entry, missed))
        if due:
            claims = [(claim_key(e.id, e.config.placement, me), m.instant.timestamp()) for e, m in due]
            won = set(await self._coordinator.claim_fires(claims))
            due = [(e, m) for (e, m), claim in zip(due, claims, strict=True) if claim in won]
        for entry, missed in due:
            latest = missed.instant.timestamp()
            self._store.set_last_fire(entry.id, latest)
            if missed.run:
                log.info("catch_up_run", task_id=entry.id, missed=missed.count, more=missed.capped)
                try:
                    self._engine.start_run(entry.id, Trigger.CATCH_UP, scheduled_at=latest)
                except Conflict as exc:
                    self.skip(Fire(entry.id, latest, "skipped", str(exc), self._clock.time()), exc.reason)
            else:
                self.skip(Fire(entry.id, latest, "missed", missed.reason, self._clock.time()), "missed_while_down")
                log.info("fires_missed", task_id=entry.id, missed=missed.count, more=missed.capped)


def _instant(epoch: float | None) -> datetime | None:
    return None if epoch is None else datetime.fromtimestamp(epoch, UTC)

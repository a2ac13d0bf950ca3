"""The alerter: hears every run that ends, checks every task's `expect:` on the clock, changes alert
states in the store (over the version it read, so that of several nodes one decides each change)
and delivers the notices `taskd.alerts` decides on, with retries, never holding a run back.

A delivery is tried DELIVERY_TRIES times with backoff, unless the channel refused it for good;
each outcome is counted in `taskd_alerts_sent_total{channel,outcome}` and written to the run's
log (overdue notices, which have no run, to the daemon's log only).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import functools
import socket
from collections.abc import Callable, Coroutine, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import structlog

from taskd.alerts import (
    OVERDUE,
    Notice,
    Route,
    RunFacts,
    after_check,
    after_run,
    email_text,
    first_state,
    is_overdue,
    message,
    next_check,
    route_for,
    slack,
    tracked,
)
from taskd.channels import DeliveryFailed, describe_channel, in_thread, send_email, send_webhook
from taskd.clock import Clock
from taskd.cluster import Coordinator
from taskd.config import Config, TaskConfig
from taskd.faults import ALERTS, Faults
from taskd.metrics import Metrics
from taskd.models import AlertState, RunState
from taskd.processor import Context, StepFailed, describe
from taskd.redact import NONE, Redactor
from taskd.retry import backoff_delay
from taskd.store.base import Store

if TYPE_CHECKING:
    from taskd.runner import Run

log = structlog.get_logger("taskd.alerts")

DELIVERY_TRIES = 4
"""Tries per channel for one notice: the first and three retries."""
DELIVERY_BACKOFF_S = 2.0
"""The wait before the first retry of a delivery, doubling after each (2, 4, 8 s)."""
DELIVERY_MAX_BACKOFF_S = 60.0
CHECK_EVERY_S = 30.0
"""Expectations are checked at least this often (another node's success changes them), and at
once when one falls due."""
MIN_CHECK_S = 0.2
SWAP_TRIES = 8
"""Attempts at storing one change while other nodes keep changing the same state."""
CLOSE_WAIT_S = 5.0
"""At shutdown, how long deliveries under way may take to finish."""
STEP_SUBJECT_FIELDS = "[taskd] {task.id} {outcome.event}"
"""The subject of an alert e-mail unless the channel gives one (fields as in step options)."""


@dataclass(frozen=True)
class Change:
    before: AlertState
    after: AlertState
    event: str | None


class _NoLog:
    def write(self, stream: str, text: str) -> None:
        return None


class Alerter:
    """Alert states and notices for every task, on this node."""

    def __init__(
        self,
        store: Store,
        clock: Clock,
        coordinator: Coordinator,
        metrics: Metrics | None = None,
        faults: Faults | None = None,
        host: str | None = None,
    ) -> None:
        self.store = store
        self.clock = clock
        self._coordinator = coordinator
        self._metrics = metrics
        self._faults = faults
        self._undelivered: dict[str, str] = {}  # channel -> why its last delivery failed
        self.host = host or socket.gethostname()
        self._config: Config | None = None
        self._routes: dict[str, Route | None] = {}  # task id -> its route, for the tasks that have alert states
        self._deleted: set[str] = set()
        self._redactor: Redactor = NONE  # the configuration's secrets (a webhook URL from a credential)
        self._lanes: dict[tuple[str, str], asyncio.Lock] = {}  # (task, channel): its notices go in order
        self._states: dict[str, AlertState] = {}
        self._last_success: dict[str, float] = {}
        self._overdue: dict[str, bool] = {}
        self._locks: dict[str, asyncio.Lock] = {}
        self._work: set[asyncio.Task[None]] = set()
        self._checker: asyncio.Task[None] | None = None
        self._wake = asyncio.Event()

    # -- lifecycle ----------------------------------------------------------------------------------
    def configure(self, config: Config, deleted: Mapping[str, str]) -> None:
        """A configuration applied (at the start, at each reload); `deleted` are the tasks held back."""
        self._config = config
        self._deleted = set(deleted)
        self._redactor = Redactor(sorted(config.secrets)) if config.secrets else NONE
        routes = {task.id: route_for(config.alerts, task) for task in config.tasks if tracked(config.alerts, task)}
        for task_id in self._routes.keys() - routes.keys():
            self._untrack(task_id)
        self._routes = routes
        channels = {describe_channel(*channel) for route in routes.values() if route for channel in route.channels}
        for gone in self._undelivered.keys() - channels:
            self._delivered(gone, None)  # a channel no route names any more is no fault
        self._wake.set()

    def deleted(self, task_id: str) -> None:
        """The task was deleted through the API: its overdue notices say so."""
        self._deleted.add(task_id)

    def _untrack(self, task_id: str) -> None:
        """The task no longer has alerts (`alerts: false`): its state starts over as ok, so that
        when its alerts come back they tell what happens from then on, not what happened before."""
        held = self._states.get(task_id)
        if held is None or (held.status == AlertState.OK and held.overdue_at is None):
            return
        now = self.clock.time()
        fresh = dataclasses.replace(first_state(task_id, now), first_seen=held.first_seen)
        self._spawn(self._forget(task_id, fresh, now))

    async def _forget(self, task_id: str, fresh: AlertState, now: float) -> None:
        await self._change(task_id, lambda state: (dataclasses.replace(fresh, version=state.version), None), now)

    async def start(self, last_successes: Mapping[str, float]) -> None:
        """Load the states, check every expectation at once (a daemon that was down for two days
        says so now), then keep checking. `last_successes`: each task's, as the store has them."""
        self._last_success.update(last_successes)
        try:
            self._states = await self.store.alert_states()
        except Exception as exc:
            log.warning("alert_states_unreadable", error=describe(exc), action="starting from ok; read again later")
        await self._check_safely()
        self._checker = asyncio.create_task(self._checking(), name="taskd-alert-checks")

    async def close(self, wait_s: float = CLOSE_WAIT_S) -> None:
        """Stop checking; let deliveries under way finish for up to `wait_s`."""
        checker, self._checker = self._checker, None
        if checker is not None:
            checker.cancel()
            await asyncio.gather(checker, return_exceptions=True)
        if self._work:
            await asyncio.wait(list(self._work), timeout=wait_s)
        for task in list(self._work):
            task.cancel()
        if self._work:
            await asyncio.gather(*self._work, return_exceptions=True)

    @property
    def pending(self) -> int:
        """Changes and deliveries under way."""
        return len(self._work)

    def overdue(self, task_id: str) -> bool:
        """Whether the task's last success is older than its `expect: {success_within}`."""
        return self._overdue.get(task_id, False)

    def overdue_tasks(self) -> dict[str, bool]:
        """Every task with an expectation: whether it is overdue (the metrics)."""
        return dict(self._overdue)

    def state(self, task_id: str) -> AlertState | None:
        return self._states.get(task_id)

    def last_success(self, task_id: str) -> float | None:
        """When the task last succeeded, as far as this node has heard."""
        return self._last_success.get(task_id)

    # -- runs ---------------------------------------------------------------------------------------
    def run_finished(self, run: Run) -> None:
        """A run of this node ended: a completed or failed one may change its task's alert state."""
        state = run.record.state
        if state not in (RunState.COMPLETED, RunState.FAILED) or run.record.task_id not in self._routes:
            return  # stopped and interrupted runs say nothing of the task's health
        task = run.plan.task
        succeeded = state is RunState.COMPLETED
        if succeeded:
            at = run.record.finished_at or self.clock.time()
            self._last_success[task.id] = max(at, self._last_success.get(task.id, at))
            if self._overdue.get(task.id):
                self._overdue[task.id] = False
                self._wake.set()  # the checker counts the expectation from this success
            held = self._states.get(task.id)
            calm = held is None or (held.status == AlertState.OK and held.overdue_at is None)
            if calm and not self._coordinator.shared:
                return  # nothing to change: the common case costs no write and no read
        self._spawn(self._after_run(run, succeeded))

    async def _after_run(self, run: Run, succeeded: bool) -> None:
        config = self._config
        assert config is not None  # a task has a route once a configuration is applied
        task = run.plan.task
        route = self._routes.get(task.id)
        repeat = route.repeat_s if route is not None else config.alerts.repeat_interval
        now = run.record.finished_at or self.clock.time()
        change = await self._change(task.id, lambda state: after_run(state, succeeded, now, repeat), now)
        if change is None or change.event is None or route is None:
            return
        record = run.record
        facts = RunFacts(
            record.id,
            str(record.trigger),
            record.attempts,
            str(record.state),
            record.error,
            run.recorder.recent_lines(),
        )
        self._deliver(route, self._notice(change, task, now, config, run=facts), run)

    def _notice(
        self, change: Change, task: TaskConfig, now: float, config: Config, run: RunFacts | None = None
    ) -> Notice:
        """What to tell of a change: the task, this node, and the run that caused it, if any."""
        assert change.event is not None
        return Notice(
            change.event,
            task.id,
            task.display_name,
            change.before,
            change.after,
            now,
            self._coordinator.name,
            self.host,
            run=run,
            last_success=self._last_success.get(task.id),
            success_within_s=task.expect.success_within if task.expect else None,
            public_url=config.api.public_url,
            defined=task.id not in self._deleted,
        )

    # -- expectations -------------------------------------------------------------------------------
    async def _checking(self) -> None:
        while True:
            delay = await self._check_safely()
            self._wake.clear()
            with contextlib.suppress(TimeoutError):
                async with self.clock.timeout(delay):
                    await self._wake.wait()

    async def _check_safely(self) -> float:
        try:
            return await self.check()
        except Exception as exc:  # the store is away: try again later
            log.warning("alert_check_failed", error=describe(exc))
            return CHECK_EVERY_S

    async def check(self) -> float:
        """Check every task's expectation once; send the overdue notices due. Returns how long
        until the next check is due."""
        config = self._config
        if config is None:
            return CHECK_EVERY_S
        expecting = [task for task in config.tasks if task.expect is not None]
        if not expecting:
            self._overdue = {}
            return CHECK_EVERY_S
        for task_id, at in (await self.store.last_successes()).items():
            self._last_success[task_id] = max(at, self._last_success.get(task_id, at))
        if self._coordinator.shared:  # other nodes change states too: read them all at once
            self._states.update(await self.store.alert_states())
        now = self.clock.time()
        soonest = now + CHECK_EVERY_S
        overdue: dict[str, bool] = {}
        for task in expecting:
            assert task.expect is not None
            within = task.expect.success_within
            route = self._routes.get(task.id)
            repeat = route.repeat_s if route is not None else config.alerts.repeat_interval
            last = self._last_success.get(task.id)
            decide = functools.partial(after_check, last_success=last, within_s=within, now=now, repeat_s=repeat)
            change = await self._change(task.id, decide, now, reread=False)
            state = self._states.get(task.id)
            if state is None:
                continue
            overdue[task.id] = is_overdue(state, last, within, now)
            soonest = min(soonest, next_check(state, last, within, now, repeat))
            if change is not None and change.event == OVERDUE and route is not None:
                self._deliver(route, self._notice(change, task, now, config), None)
        self._overdue = overdue
        return max(MIN_CHECK_S, soonest - now)

    # -- states -------------------------------------------------------------------------------------
    async def _change(
        self,
        task_id: str,
        decide: Callable[[AlertState], tuple[AlertState, str | None]],
        now: float,
        reread: bool | None = None,
    ) -> Change | None:
        """Decide the task's next state from the stored one and store it over the version read;
        when another node changed it meanwhile, read it again and decide again. None: no change
        (or the store could not be reached, which is logged). The state is read from the store
        first when other nodes may have changed it (`reread`: by default, when the store is shared)."""
        if reread is None:
            reread = self._coordinator.shared
        lock = self._locks.setdefault(task_id, asyncio.Lock())
        try:
            async with lock:
                state = self._states.get(task_id)
                if state is None or reread:
                    state = await self.store.alert_state(task_id)
                if state is None:
                    state = first_state(task_id, now)
                for _ in range(SWAP_TRIES):
                    after, event = decide(state)
                    if after == state and state.version > 0:
                        self._states[task_id] = state
                        return None
                    after = dataclasses.replace(after, version=state.version + 1)
                    if await self.store.swap_alert_state(after, state.version):
                        self._states[task_id] = after
                        return Change(state, after, event)
                    state = await self.store.alert_state(task_id) or first_state(task_id, now)
        except Exception as exc:
            log.warning("alert_state_failed", task_id=task_id, error=describe(exc), action="no alert for this change")
            return None
        log.warning("alert_state_contended", task_id=task_id, tries=SWAP_TRIES)
        return None

    # -- delivery -----------------------------------------------------------------------------------
    def _spawn(self, work: Coroutine[Any, Any, None]) -> None:
        task = asyncio.create_task(work, name="taskd-alert")
        self._work.add(task)
        task.add_done_callback(self._work.discard)

    def _deliver(self, route: Route, notice: Notice, run: Run | None) -> None:
        # The run's secrets, or (for an overdue notice) the configuration's, are masked.
        body = (run.recorder.redactor if run is not None else self._redactor).data(message(notice))
        for kind, channel in route.channels:
            self._spawn(self._send(kind, channel, body, run))

    async def _send(self, kind: str, channel: Any, body: dict[str, Any], run: Run | None) -> None:
        """Deliver one notice to one channel, after the task's earlier notices to it (a retried
        `failing` never arrives after the `recovered` that followed it)."""
        what = self._redactor.text(describe_channel(kind, channel))
        lane = self._lanes.setdefault((body["task"]["id"], what), asyncio.Lock())
        try:
            async with lane:
                await self._send_in_turn(kind, channel, body, run, what)
        except asyncio.CancelledError:  # the daemon is stopping: say what is lost
            self._failed(kind, what, body, run, "taskd stopped before it was delivered", 0)
            raise

    async def _send_in_turn(self, kind: str, channel: Any, body: dict[str, Any], run: Run | None, what: str) -> None:
        event, task_id = body["event"], body["task"]["id"]
        for attempt in range(1, DELIVERY_TRIES + 1):
            try:
                result = await self._send_once(kind, channel, body)
            except DeliveryFailed as exc:
                error: DeliveryFailed = exc
            except Exception as exc:  # a bug, or an error no channel foresaw: reported, never raised
                error = DeliveryFailed(describe(exc))
            else:
                self._count(kind, "sent")
                self._delivered(what, None)
                self._note(run, f"alert {event} sent: {self._redactor.text(result)}")
                log.info("alert_sent", task_id=task_id, alert=event, channel=what, tries=attempt)
                return
            if error.permanent or attempt == DELIVERY_TRIES:
                self._failed(kind, what, body, run, self._redactor.text(str(error)), attempt)
                return
            await self.clock.sleep(backoff_delay(DELIVERY_BACKOFF_S, attempt, DELIVERY_MAX_BACKOFF_S))

    def _failed(self, kind: str, what: str, body: dict[str, Any], run: Run | None, error: str, tries: int) -> None:
        event, task_id = body["event"], body["task"]["id"]
        self._count(kind, "failed")
        self._delivered(what, error if what in error else f"{what}: {error}")
        after = f" ({_tries(tries)})" if tries else ""
        self._note(run, f"alert {event} not delivered to {what}{after}: {error}")
        log.warning("alert_failed", task_id=task_id, alert=event, channel=what, tries=tries, error=error)

    async def _send_once(self, kind: str, channel: Any, body: dict[str, Any]) -> str:
        if kind == "webhook":
            return await send_webhook(channel, slack(body) if channel.format == "slack" else body)
        if kind == "email":
            subject = _subject(channel.subject or STEP_SUBJECT_FIELDS, body)
            return await in_thread(send_email, channel, subject, email_text(body), body)
        fields = {("alert" if k == "event" else k): v for k, v in body.items() if k != "text"}
        getattr(log, channel.level)("alert", **fields, summary=body["text"])
        return "log"

    def _delivered(self, channel: str, failure: str | None) -> None:
        """Keep the `alerts` fault while some channel's last delivery failed."""
        if failure is None:
            self._undelivered.pop(channel, None)
        else:
            self._undelivered[channel] = failure
        if self._faults is None:
            return
        if self._undelivered:
            self._faults.set(ALERTS, "; ".join(self._undelivered.values()))
        else:
            self._faults.clear(ALERTS)

    def _count(self, kind: str, outcome: str) -> None:
        if self._metrics is not None:
            self._metrics.alert_delivered(kind, outcome)

    @staticmethod
    def _note(run: Run | None, text: str) -> None:
        if run is not None:
            run.recorder.write("log", text)


def _tries(count: int) -> str:
    return "1 try" if count == 1 else f"{count} tries"


def _subject(template: str, body: dict[str, Any]) -> str:
    """An e-mail subject from its template, with the fields step options have (and {outcome.event})."""
    ctx = Context(
        task_id=body["task"]["id"],
        task_name=body["task"]["name"],
        run_id=body["run_id"] or "",
        attempt=body["attempts"] or 0,
        trigger=body["trigger"] or "",
        params={},
        log=_NoLog(),
        base_dir=Path("."),
        time_zone="UTC",
        outcome={"event": body["event"], "state": body["state"], "error": body["error"]},
    )
    try:
        return ctx.format(template, "email.subject")
    except StepFailed:
        return ctx.format(STEP_SUBJECT_FIELDS, "email.subject")

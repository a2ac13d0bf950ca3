"""One run's control flow: waiting for a slot, attempts under a timeout, backoff between them,
the final phase, and stop. What happens is written down by the run's `RunRecorder`."""

from __future__ import annotations

import asyncio
import functools
import logging
import traceback
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import structlog

from taskd.chain import Step, run_final, run_main
from taskd.clock import Clock, utc
from taskd.config import TaskConfig
from taskd.durations import format_duration
from taskd.models import RunLimits, RunRecord, RunState, StepState, Usage
from taskd.processor import Context, StepFailed, describe
from taskd.recorder import RunObserver, RunRecorder, RunSink
from taskd.redact import NONE, Redactor
from taskd.resources import Claims, Resources
from taskd.retry import backoff_delay
from taskd.slots import SlotPool

_DEBUG = logging.getLogger("taskd.run")  # isEnabledFor is cached by the logging module
_LOG = structlog.get_logger("taskd.run")


@dataclass(frozen=True, slots=True)
class RunPlan:
    """Everything a run needs, frozen when it is created: later reloads do not change it. One per
    task, kept for as long as the task is configured: slots, and shared mappings where tasks agree."""

    task: TaskConfig
    steps: tuple[Step, ...]
    base_dir: Path
    time_zone: str
    environment: Mapping[str, str] = field(default_factory=dict)
    """The variables the task's processes start with (see taskd.environment)."""
    secrets: tuple[str, ...] = ()
    """The values of the task's default secret params: every run masks them."""
    needs: Mapping[str, int] = field(default_factory=dict)
    """What each attempt holds besides a slot: pool units and requests (see taskd.resources)."""
    limits: RunLimits = field(default_factory=RunLimits)
    """What its step processes may not pass."""
    has_final_phase: bool = field(init=False, repr=False, compare=False)
    stop_grace_s: float = field(init=False, repr=False, compare=False)
    """How long a stopped run may take to end: its slowest step to stop, plus a second."""

    def __post_init__(self) -> None:
        object.__setattr__(self, "has_final_phase", any(step.policy.when is not None for step in self.steps))
        object.__setattr__(self, "stop_grace_s", 1.0 + max((step.stop_grace_s for step in self.steps), default=0.0))


CLAIM_POLL_S = 0.25
"""How often a run waiting for pool units other nodes hold asks again."""
RELEASE_TRIES = 5
_RELEASES: set[asyncio.Task[None]] = set()


async def _release_pools(claims: Claims, run_id: str) -> None:
    """Give back a run's pool units in the store, trying again while it cannot be reached (the
    node's death gives them back otherwise)."""
    for attempt in range(RELEASE_TRIES):
        try:
            await claims.release_pools(run_id)
            return
        except Exception as exc:
            _LOG.warning(
                "pool_release_failed", run_id=run_id, attempt=attempt + 1, error=f"{type(exc).__name__}: {exc}"
            )
            await asyncio.sleep(2**attempt)


def _pool_label(name: str) -> str:
    """`db` -> `pool db`; the cluster's slots (`*slots`) -> `cluster slot`."""
    return "cluster slot" if name.startswith("*") else f"pool {name}"


class Run:
    """A live run. The engine creates it; `execute()` drives it to a final state."""

    def __init__(
        self,
        record: RunRecord,
        plan: RunPlan,
        sink: RunSink,
        slots: SlotPool,
        clock: Clock,
        observer: RunObserver | None = None,
        params: Mapping[str, Any] | None = None,
        redactor: Redactor = NONE,
        environment: Mapping[str, str] | None = None,
        resources: Resources | None = None,
    ) -> None:
        self.record = record
        self.plan = plan
        self.environment = plan.environment if not environment else {**plan.environment, **environment}
        """The variables its processes start with: the plan's, and the run's own (its upstream runs')."""
        self.context: dict[str, Any] = {}
        """What the steps of its last attempt put in the context, once it has ended."""
        self.params = record.params if params is None else params
        """The params the steps get; the record holds them as shown, secrets masked."""
        self.recorder = RunRecorder(record, sink, clock, observer, redactor)
        self._sink = sink
        self._slots = slots
        self._resources = resources if plan.needs else None
        self._held = False  # what plan.needs asks is held (taken with the slot, given back with it)
        self._claiming = False  # waiting for pool units held on other nodes
        self._claimed = False  # pool units held in the store, for the nodes sharing it
        self._clock = clock
        self._done: asyncio.Event | None = None  # made when someone waits: most runs are never waited for
        self.finished = False
        self.stop_reason: str | None = None
        self.task: asyncio.Task[None] | None = None
        self.on_finished: Callable[[Run], None] | None = None  # told once the final state is recorded
        self._begun = False
        self._slot_held = False
        self._mark: int | None = None  # the store's mark once the run is recorded as queued

    @property
    def id(self) -> str:
        return self.record.id

    @property
    def state(self) -> RunState:
        return self.record.state

    @property
    def done(self) -> asyncio.Event:
        """Set once the run has reached its final state."""
        if self._done is None:
            self._done = asyncio.Event()
            if self.finished:
                self._done.set()
        return self._done

    def queue(self) -> None:
        """Record the run as queued (its first state)."""
        self.recorder.enter(RunState.QUEUED, f"trigger {self.record.trigger}", self.record.queued_at)
        self._mark = self._sink.mark()

    def start(self, after: Sequence[Run] = ()) -> None:
        """Schedule execute() on the loop; with `after`, wait for those runs to end first.

        A run with nothing to wait for that finds a free slot takes it and begins its first
        attempt right here; its pipeline runs when the loop gets to its task.
        """
        if not after and self._take_at_once():
            self._slot_held = True
            self.recorder.open_attempt(1)
        self.task = asyncio.create_task(self.execute(after), name=f"run-{self.record.task_id}-{self.id}")

    def stop(self, reason: str) -> bool:
        """Ask the run to stop; the pipeline is cancelled and child processes killed."""
        if self.finished or self.task is None:
            return False
        if self.stop_reason is None:
            self.stop_reason = reason
        if not self._begun:
            # Cancelling a task whose coroutine has not started yet never runs its body,
            # so the run ends here, the way execute() would have ended it.
            self._give_back_slot()
            self.recorder.close_attempt(StepState.STOPPED, "stopped")
            self._finish(RunState.STOPPED, f"stopped: {reason}")
        self.task.cancel(reason)
        return True

    # -- the run ---------------------------------------------------------------------------------
    async def execute(self, after: Sequence[Run] = ()) -> None:
        self._begun = True
        if self.finished:
            return
        task = self.plan.task
        total = 1 + task.retry.count
        try:
            # The run's start is committed before its first step can begin: after a crash, every
            # run that did anything is in the store (and is marked interrupted at the restart).
            await self._sink.durable(self._mark)
            for previous in after:
                await previous.done.wait()
            for attempt in range(1, total + 1):
                if self._slot_held:  # taken when the run was started
                    self._slot_held = False
                else:
                    await self._take(task.priority)
                try:
                    state, error, ctx, permanent = await self._attempt(attempt)
                    last = state is StepState.COMPLETED or attempt == total
                    if permanent:
                        if not last:
                            self.recorder.write("log", f"attempt {attempt} failed for good; not retried")
                        error, last = f"not retried: {error}", True
                    final = RunState.COMPLETED if state is StepState.COMPLETED else RunState.FAILED
                    if last and self.plan.has_final_phase:
                        await self._final_phase(ctx, final, error)
                    if last:
                        self.context = ctx.data
                finally:
                    self._give_back()
                if last:
                    self._finish(final, error)
                    return
                await self._back_off(attempt, total, error)
        except asyncio.CancelledError:
            reason = self.stop_reason or "cancelled"
            self.recorder.write("log", f"stopped: {reason}")
            self._finish(RunState.STOPPED, f"stopped: {reason}")
            if self.stop_reason is None:
                raise
        except Exception as exc:  # a bug in taskd itself: never leave the run active
            self.recorder.log.exception("run_crashed")
            self._finish(RunState.FAILED, f"internal error: {type(exc).__name__}: {exc}")

    async def _back_off(self, attempt: int, total: int, error: str | None) -> None:
        policy = self.plan.task.retry
        delay = backoff_delay(policy.backoff, attempt, policy.max_backoff, policy.jitter)
        self.record.error = error
        wait = format_duration(delay)
        self.recorder.enter(RunState.RETRYING, f"retry {attempt} of {policy.count} in {wait}")
        self.recorder.write("log", f"attempt {attempt} of {total} failed; retrying in {wait}")
        self.recorder.log.info("run_retrying", attempt=attempt, delay_s=round(delay, 3), error=error)
        await self._clock.sleep(delay)

    def _context(self, number: int) -> Context:
        record, plan, recorder = self.record, self.plan, self.recorder
        return Context(
            task_id=plan.task.id,
            task_name=plan.task.display_name,
            run_id=record.id,
            attempt=number,
            trigger=str(record.trigger),
            params=self.params,
            log=recorder,
            base_dir=plan.base_dir,
            time_zone=plan.time_zone,
            environment=self.environment,
            scheduled_at=record.scheduled_at,
            make_logger=lambda: recorder.log.bind(attempt=number),
            redactor=recorder.redactor,
            recent_log=recorder.recent_lines,
            now=lambda: utc(self._clock),
            permanent_exit_codes=frozenset(plan.task.retry.permanent_exit_codes),
            usage=self._usage(),
            limits=plan.limits,
            retry_on_limit=plan.task.retry.on_limit,
        )

    def _usage(self) -> Usage:
        """The run's usage, made when its first attempt begins."""
        if self.record.usage is None:
            self.record.usage = Usage()
        return self.record.usage

    async def _attempt(self, number: int) -> tuple[StepState, str | None, Context, bool]:
        """One attempt; returns its state, error, context, and whether its failure is permanent."""
        recorder = self.recorder
        opened = recorder.attempt
        if opened is None or opened.number != number:
            recorder.open_attempt(number)
        ctx = self._context(number)
        permanent = False
        timeout = self.plan.task.timeout
        state, error = StepState.COMPLETED, None
        deadline = self._clock.timeout(timeout) if timeout is not None else None
        try:
            if deadline is None:
                await run_main(self.plan.steps, ctx, recorder, self._clock)
            else:
                async with deadline:
                    await run_main(self.plan.steps, ctx, recorder, self._clock)
        except TimeoutError:
            if deadline is not None and deadline.expired():
                state, error = StepState.TIMED_OUT, f"attempt {number} timed out after {format_duration(timeout or 0)}"
                recorder.steps_timed_out(number)
            else:
                state, error = StepState.FAILED, "a processor raised TimeoutError"
        except asyncio.CancelledError:
            recorder.close_attempt(StepState.STOPPED, "stopped")
            raise
        except StepFailed as exc:
            state, error, permanent = StepState.FAILED, str(exc), exc.permanent
        except Exception as exc:
            state, error = StepState.FAILED, describe(exc)
            for line in "".join(traceback.format_exception(exc)).splitlines():
                recorder.write("stderr", line)
        if error is not None:
            error = recorder.shown(error)
            failed = recorder.failing_step(number)
            if failed is not None and state is StepState.FAILED:
                error = f"step {failed.index + 1} ({failed.type}): {error}"
            recorder.write("log", f"attempt {number} {state.replace('_', ' ')}: {error}")
        recorder.close_attempt(state, error)
        if error is not None or _DEBUG.isEnabledFor(logging.DEBUG):
            recorder.log.log(
                logging.INFO if error else logging.DEBUG,
                "attempt_finished",
                attempt=number,
                state=str(state),
                error=error,
            )
        return state, error, ctx, permanent

    async def _final_phase(self, ctx: Context, state: RunState, error: str | None) -> None:
        """Run the `when:` steps once, after the last attempt, with the outcome in the context."""
        outcome = {
            "state": str(state),
            "error": error,
            "attempts": self.record.attempts,
            "duration": round(self.record.elapsed(self._clock.time()) or 0.0, 3),
        }
        await run_final(self.plan.steps, ctx, outcome, self.recorder, self._clock)

    def _give_back_slot(self) -> None:
        if self._slot_held:
            self._slot_held = False
            self._give_back()

    # -- what an attempt holds: its needs (pools, requests), then a slot ------------------------
    def _take_at_once(self) -> bool:
        """Take the needs and a slot now if all are free; never waits (pools shared with other
        nodes are claimed in the store: that waits)."""
        resources = self._resources
        if resources is not None and resources.claims is not None and self._pools:
            return False
        if resources is not None:
            if not resources.try_acquire(self.plan.needs):
                return False
            if not self._slots.try_acquire():
                resources.release(self.plan.needs)
                return False
            self._held = True
            return True
        return self._slots.try_acquire()

    async def _take(self, priority: int) -> None:
        """Wait for the needs, then for a slot: a run waiting for a pool holds no slot."""
        resources = self._resources
        if resources is not None:
            await resources.acquire(self.plan.needs, priority, self.record.task_id)
            self._held = True
            try:
                await self._claim_shared(resources)
                await self._slots.acquire(priority)
            except BaseException:
                self._give_back_needs()
                raise
            return
        await self._slots.acquire(priority)

    @functools.cached_property
    def _pools(self) -> dict[str, int]:
        return {name[5:]: units for name, units in self.plan.needs.items() if name.startswith("pool ")}

    async def _claim_shared(self, resources: Resources) -> None:
        """With other nodes on the store: wait until the pools' units are claimed there too."""
        claims = resources.claims
        if claims is None or not self._pools:
            return
        self._claiming = True
        try:
            while not await claims.claim_pools(self.id, self._pools, resources.pool_sizes()):
                await self._clock.sleep(CLAIM_POLL_S)
            self._claimed = True
        finally:
            self._claiming = False

    def _give_back_needs(self) -> None:
        resources = self._resources
        if self._held and resources is not None:
            self._held = False
            resources.release(self.plan.needs)
        if self._claimed and resources is not None and resources.claims is not None:
            self._claimed = False
            release = asyncio.get_running_loop().create_task(_release_pools(resources.claims, self.id))
            _RELEASES.add(release)
            release.add_done_callback(_RELEASES.discard)

    def _give_back(self) -> None:
        self._slots.release()
        self._give_back_needs()

    @property
    def waiting_for(self) -> list[str]:
        """What a run waiting to begin an attempt waits for: its needs not free (`pool db`,
        `memory`), else a slot; nothing while it runs or backs off."""
        if self.finished or self.record.state is not RunState.QUEUED:
            return []
        if self._resources is not None and not self._held:
            # What is not free; or, all of it free but kept for a run queued before this one, all of it.
            wanted = self._resources.waits_for(self.plan.needs) or list(self.plan.needs)
            return [_pool_label(name[5:]) if name.startswith("pool ") else name for name in wanted]
        if self._claiming:
            return [_pool_label(name) + " (on another node)" for name in self._pools]
        return [] if self._slot_held else ["slot"]

    def _finish(self, state: RunState, error: str | None) -> None:
        self.recorder.finish(state, error)
        self.finished = True
        if self._done is not None:
            self._done.set()
        if self.on_finished is not None:
            self.on_finished(self)

"""One run: waiting for a slot, attempts under a timeout, backoff between them, stop, and the
state transitions of DESIGN.md, each reported to the store as it happens."""

from __future__ import annotations

import asyncio
import collections
import functools
import logging
import random
import time
import traceback
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import structlog

from taskd.config import RetryPolicy, TaskConfig
from taskd.durations import format_duration
from taskd.models import AttemptRecord, RunRecord, RunState, StepRecord, StepState
from taskd.pipeline import Context, Step, StepFailed, describe, run_final, run_main
from taskd.slots import SlotPool
from taskd.store import LogLine, Store, Transition

_STDLIB = logging.getLogger("taskd.run")  # isEnabledFor is cached: a cheap check before structlog
MAX_LOG_LINES = 10_000
MAX_LINE_CHARS = 8_192
RECENT_LINES = 20


def backoff_delay(policy: RetryPolicy, retry: int, rng: random.Random | None = None) -> float:
    """Seconds to wait before retry number `retry` (1-based): backoff * 2**(retry-1), capped,
    and with full jitter (uniform between 0 and that) when the policy asks for it."""
    delay = min(policy.max_backoff, policy.backoff * (2 ** (retry - 1)))
    if policy.jitter:
        delay = (rng or random).uniform(0, delay)
    return delay


@dataclass(frozen=True)
class RunPlan:
    """Everything a run needs, frozen when it is created: later reloads do not change it."""

    task: TaskConfig
    steps: tuple[Step, ...]
    base_dir: Path
    time_zone: str

    @functools.cached_property
    def has_final_phase(self) -> bool:
        return any(step.policy.when is not None for step in self.steps)


class Run:
    """A live run. The engine creates it; `execute()` drives it to a final state."""

    def __init__(self, record: RunRecord, plan: RunPlan, store: Store, slots: SlotPool) -> None:
        self.record = record
        self.plan = plan
        self._store = store
        self._slots = slots
        self.done = asyncio.Event()
        self.stop_reason: str | None = None
        self.task: asyncio.Task[None] | None = None
        self._begun = False
        self._step_records: dict[tuple[int, int], StepRecord] = {}
        self._recent: collections.deque[str] | None = None  # made on the first log line
        self._transitions = 0
        self._log_seq = 0
        self._bound: Any = None
        self._attempt_no = 0
        self._opened: AttemptRecord | None = None
        self._slot_held = False

    @property
    def id(self) -> str:
        return self.record.id

    @property
    def log(self) -> Any:
        """The daemon logger bound to this run (bound on first use: most runs never log)."""
        if self._bound is None:
            self._bound = structlog.get_logger("taskd.run").bind(task_id=self.record.task_id, run_id=self.record.id)
        return self._bound

    @property
    def state(self) -> RunState:
        return self.record.state

    def queue(self) -> None:
        """Record the run as queued (its first state)."""
        self._enter(RunState.QUEUED, f"trigger {self.record.trigger}", self.record.queued_at)

    def start(self, after: Sequence[Run] = ()) -> None:
        """Schedule execute() on the loop; with `after`, wait for those runs to end first.

        A run with nothing to wait for that finds a free slot takes it and begins its first
        attempt right here; its pipeline runs when the loop gets to its task.
        """
        if not after and self._slots.try_acquire():
            self._slot_held = True
            self._open_attempt(1)
        self.task = asyncio.create_task(self.execute(after), name=f"run-{self.record.task_id}-{self.id}")

    def stop(self, reason: str) -> bool:
        """Ask the run to stop; the pipeline is cancelled and child processes killed."""
        if self.done.is_set() or self.task is None:
            return False
        if self.stop_reason is None:
            self.stop_reason = reason
        if not self._begun:
            # Cancelling a task whose coroutine has not started yet never runs its body,
            # so the final state is recorded here.
            if self._slot_held:
                self._slot_held = False
                self._slots.release()
                attempt = self._opened
                if attempt is not None:
                    attempt.state, attempt.finished_at, attempt.error = StepState.STOPPED, time.time(), "stopped"
                    self._store.save_attempt(attempt)
            self._finish(RunState.STOPPED, f"stopped: {reason}")
        self.task.cancel(reason)
        return True

    # -- the run ---------------------------------------------------------------------------------
    async def execute(self, after: Sequence[Run] = ()) -> None:
        self._begun = True
        if self.done.is_set():
            return
        record, task = self.record, self.plan.task
        total = 1 + task.retry.count
        try:
            for previous in after:
                await previous.done.wait()
            for attempt in range(1, total + 1):
                if self._slot_held:  # taken when the run was started
                    self._slot_held = False
                else:
                    await self._slots.acquire(task.priority)
                try:
                    state, error, ctx = await self._attempt(attempt)
                    last = state is StepState.COMPLETED or attempt == total
                    final = RunState.COMPLETED if state is StepState.COMPLETED else RunState.FAILED
                    if last and self.plan.has_final_phase:
                        await self._final_phase(ctx, final, error)
                finally:
                    self._slots.release()
                if last:
                    self._finish(final, error)
                    return
                delay = backoff_delay(task.retry, attempt)
                record.error = error
                self._enter(RunState.RETRYING, f"retry {attempt} of {task.retry.count} in {format_duration(delay)}")
                self.write("log", f"attempt {attempt} of {total} failed; retrying in {format_duration(delay)}")
                self.log.info("run_retrying", attempt=attempt, delay_s=round(delay, 3), error=error)
                await asyncio.sleep(delay)
        except asyncio.CancelledError:
            reason = self.stop_reason or "cancelled"
            self.write("log", f"stopped: {reason}")
            self._finish(RunState.STOPPED, f"stopped: {reason}")
            if self.stop_reason is None:
                raise
        except Exception as exc:  # a bug in taskd itself: never leave the run active
            self.log.exception("run_crashed")
            self._finish(RunState.FAILED, f"internal error: {type(exc).__name__}: {exc}")

    def _open_attempt(self, number: int) -> AttemptRecord:
        """Enter `running` and record the attempt as begun."""
        record = self.record
        now = time.time()
        if record.started_at is None:
            record.started_at = now
        record.attempts = number
        self._enter(RunState.RUNNING, f"attempt {number}", now)
        attempt = self._opened = AttemptRecord(record.id, number, now)
        self._store.save_attempt(attempt)
        self._attempt_no = number
        if _STDLIB.isEnabledFor(logging.DEBUG):
            self.log.debug("attempt_started", attempt=number)
        return attempt

    async def _attempt(self, number: int) -> tuple[StepState, str | None, Context]:
        record, plan = self.record, self.plan
        opened = self._opened
        attempt = opened if opened is not None and opened.number == number else self._open_attempt(number)
        ctx = Context(
            task_id=plan.task.id,
            task_name=plan.task.display_name,
            run_id=record.id,
            attempt=number,
            trigger=str(record.trigger),
            params=record.params,
            log=self,
            base_dir=plan.base_dir,
            time_zone=plan.time_zone,
            scheduled_at=record.scheduled_at,
            make_logger=lambda: self.log.bind(attempt=number),
            recent_log=lambda: list(self._recent or ()),
        )
        timeout = plan.task.timeout
        state, error = StepState.COMPLETED, None
        deadline = asyncio.timeout(timeout) if timeout is not None else None
        try:
            if deadline is None:
                await run_main(plan.steps, ctx, self)
            else:
                async with deadline:
                    await run_main(plan.steps, ctx, self)
        except TimeoutError:
            if deadline is not None and deadline.expired():
                state, error = StepState.TIMED_OUT, f"attempt {number} timed out after {format_duration(timeout or 0)}"
                for step in self._step_records.values():
                    if step.attempt == number and step.state is StepState.STOPPED:
                        step.state, step.error = StepState.TIMED_OUT, "timed out"
                        self._store.save_step(step)
            else:
                state, error = StepState.FAILED, "a processor raised TimeoutError"
        except asyncio.CancelledError:
            attempt.state, attempt.finished_at, attempt.error = StepState.STOPPED, time.time(), "stopped"
            self._store.save_attempt(attempt)
            raise
        except StepFailed as exc:
            state, error = StepState.FAILED, str(exc)
        except Exception as exc:
            state, error = StepState.FAILED, describe(exc)
            if not isinstance(exc, StepFailed):
                self.write("stderr", "".join(traceback.format_exception(exc)).rstrip())
        if error is not None:
            # The step that ended the chain is the last failure (earlier ones said on_error: continue).
            failed = max(
                (
                    r
                    for r in self._step_records.values()
                    if r.attempt == number and r.state in (StepState.FAILED, StepState.TIMED_OUT)
                ),
                key=lambda r: r.index,
                default=None,
            )
            if failed is not None and state is StepState.FAILED:
                error = f"step {failed.index + 1} ({failed.type}): {error}"
            self.write("log", f"attempt {number} {state.replace('_', ' ')}: {error}")
        attempt.state, attempt.finished_at, attempt.error = state, time.time(), error
        self._store.save_attempt(attempt)
        if error is not None or _STDLIB.isEnabledFor(logging.DEBUG):
            self.log.log(
                logging.INFO if error else logging.DEBUG,
                "attempt_finished",
                attempt=number,
                state=str(state),
                error=error,
            )
        return state, error, ctx

    async def _final_phase(self, ctx: Context, state: RunState, error: str | None) -> None:
        """Run the `when:` steps once, after the last attempt, with the outcome in the context."""
        outcome = {
            "state": str(state),
            "error": error,
            "attempts": self.record.attempts,
            "duration": round(self.record.duration or 0.0, 3),
        }
        await run_final(self.plan.steps, ctx, outcome, self)

    # -- StepHooks: how the pipeline reports the steps of the current attempt --------------------
    def started(self, step: Step) -> None:
        record = StepRecord(self.record.id, self._attempt_no, step.index, step.type, time.time())
        self._step_records[(self._attempt_no, step.index)] = record
        self._store.save_step(record)

    def ended(self, step: Step, state: str, exc: BaseException | None) -> None:
        key = (self._attempt_no, step.index)
        record = self._step_records.get(key)
        now = time.time()
        if record is None:  # skipped without starting
            record = StepRecord(self.record.id, self._attempt_no, step.index, step.type, now)
            self._step_records[key] = record
        record.finished_at = now
        record.state = StepState(state)
        record.error = None if exc is None else ("stopped" if state == "stopped" else describe(exc))
        self._store.save_step(record)

    def _enter(self, state: RunState, detail: str | None = None, at: float | None = None) -> None:
        """Move the run to `state`, recording the transition with its time."""
        at = time.time() if at is None else at
        self.record.state = state
        self._transitions += 1
        self._store.record_transition(Transition(self.record.id, self._transitions, at, str(state), detail))
        self._store.save_run(self.record)

    def _finish(self, state: RunState, error: str | None) -> None:
        record = self.record
        record.finished_at = time.time()
        if error is not None or state is RunState.COMPLETED:
            record.error = error
        self._enter(state, error, record.finished_at)
        if _STDLIB.isEnabledFor(logging.INFO):
            self.log.info("run_finished", state=str(state), error=error, duration_s=round(record.duration or 0, 3))
        self.done.set()

    # -- RunLog ----------------------------------------------------------------------------------
    def write(self, stream: str, text: str) -> None:
        """Append a line to the run's log (capped, so a chatty child cannot fill the disk)."""
        if self._log_seq > MAX_LOG_LINES:
            return
        self._log_seq += 1
        if self._log_seq > MAX_LOG_LINES:
            stream, text = "log", f"log truncated after {MAX_LOG_LINES} lines"
        if len(text) > MAX_LINE_CHARS:
            text = text[:MAX_LINE_CHARS] + " [line truncated]"
        self._store.append_log(LogLine(self.record.id, self._log_seq, time.time(), stream, text))
        if self._recent is None:
            self._recent = collections.deque(maxlen=RECENT_LINES)
        self._recent.append(f"[{stream}] {text}")
        if _STDLIB.isEnabledFor(logging.DEBUG):
            self.log.debug("run_output", stream=stream, line=text)

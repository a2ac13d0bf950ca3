"""What a run records: its state transitions, attempts, steps and capped log, reported to a sink
(the store) as they happen. The runner decides; the recorder writes down."""

from __future__ import annotations

import collections
import logging
import re
from typing import Any, Protocol

import structlog

from taskd.chain import Step
from taskd.clock import Clock
from taskd.models import AttemptRecord, RunRecord, RunState, StepRecord, StepState
from taskd.processor import describe
from taskd.redact import NONE, Redactor
from taskd.store.base import LogLine, Transition

_STDLIB = logging.getLogger("taskd.run")  # isEnabledFor is cached: a cheap check before structlog
# task.log_task_execution: the line per ending run, for failures and for completed runs apart
_EXECUTION = logging.getLogger("taskd.run.execution")
_EXECUTION_LOG = structlog.get_logger("taskd.run.execution")
_COMPLETED = logging.getLogger("taskd.run.execution.completed")  # only a gate: the line keeps one name
MAX_LOG_LINES = 10_000
MAX_LINE_CHARS = 8_192
RECENT_LINES = 20


_CONTROL = re.compile(r"[\x00-\x08\x0a-\x1f\x7f-\x9f\u2028\u2029]")


def escape_line(text: str) -> str:
    """One log line stays one line: a newline, carriage return or other control character in the
    text (a param's CRLF or NEL, a child's escape sequences, C0 and C1) is written as an escape,
    so nothing in it can start a line of its own, forge a stamp and stream, or drive a terminal."""
    if not _CONTROL.search(text):
        return text
    return _CONTROL.sub(_escaped, text)


def _escaped(match: re.Match[str]) -> str:
    char = match.group()
    if char == "\n":
        return "\\n"
    if char == "\r":
        return "\\r"
    code = ord(char)
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"


class RunSink(Protocol):
    """Where a run's records go; the store implements it."""

    def save_run(self, run: RunRecord) -> None: ...

    def save_attempt(self, attempt: AttemptRecord) -> None: ...

    def save_step(self, step: StepRecord) -> None: ...

    def append_log(self, line: LogLine) -> None: ...

    def record_transition(self, transition: Transition) -> None: ...

    async def durable(self, mark: int | None = None) -> None:
        """Wait until what was recorded so far (or before `mark`) is committed."""

    def mark(self) -> int:
        """A mark of what was recorded so far."""


class RunObserver(Protocol):
    """Who hears of a run as it goes: the metrics count it, live followers watch it."""

    def run_finished(self, task_id: str, state: str, duration_s: float | None, finished_at: float) -> None: ...

    def first_step_started(self, lateness_s: float) -> None: ...

    def state_entered(self, run_id: str, task_id: str, state: str, at: float, error: str | None) -> None: ...

    def line_written(self, line: LogLine) -> None: ...


class RunRecorder:
    """The records of one run. Also the chain's `Hooks` and the processors' `RunLog`."""

    def __init__(
        self,
        record: RunRecord,
        sink: RunSink,
        clock: Clock,
        observer: RunObserver | None = None,
        redactor: Redactor = NONE,
    ) -> None:
        self.record = record
        self.redactor = redactor
        """Every text recorded (log lines, errors) passes through it: the run's secrets become ***."""
        self._sink = sink
        self._clock = clock
        self._observer = observer
        self._first_step = True
        self._steps: dict[tuple[int, int], StepRecord] = {}
        self._recent: collections.deque[str] | None = None  # made on the first log line
        self._transitions = 0
        self._log_seq = 0
        self._bound: Any = None
        self.attempt: AttemptRecord | None = None

    @property
    def log(self) -> Any:
        """The daemon logger bound to this run (bound on first use: most runs never log)."""
        if self._bound is None:
            bound = structlog.get_logger("taskd.run").bind(task_id=self.record.task_id, run_id=self.record.id)
            # The daemon log's processor masks this run's secrets in whatever its steps log.
            self._bound = bound.bind(_redactor=self.redactor) if self.redactor else bound
        return self._bound

    def shown(self, text: str | None) -> str | None:
        """An error as it is recorded: the run's secrets masked, control characters escaped."""
        return None if text is None else escape_line(self.redactor.text(text))

    def recent_lines(self) -> list[str]:
        """The run's last log lines, for alerts."""
        return list(self._recent or ())

    # -- states ----------------------------------------------------------------------------------
    def enter(self, state: RunState, detail: str | None = None, at: float | None = None) -> None:
        """Move the run to `state`, recording the transition with its time."""
        at = self._clock.time() if at is None else at
        self.record.state = state
        self._transitions += 1
        self._sink.record_transition(Transition(self.record.id, self._transitions, at, str(state), detail))
        self._sink.save_run(self.record)
        if self._observer is not None:
            record = self.record
            self._observer.state_entered(record.id, record.task_id, state, at, record.error)

    def finish(self, state: RunState, error: str | None) -> None:
        """Enter a final state; the error stays from the last failed attempt unless given."""
        record = self.record
        record.finished_at = self._clock.time()
        error = self.shown(error)
        if error is not None or state is RunState.COMPLETED:
            record.error = error
        self.enter(state, error, record.finished_at)
        if self._observer is not None:
            self._observer.run_finished(record.task_id, str(state), record.duration, record.finished_at)
        completed = state is RunState.COMPLETED
        if (_COMPLETED if completed else _EXECUTION).isEnabledFor(logging.INFO):
            _EXECUTION_LOG.info(
                "run_finished",
                task_id=record.task_id,
                run_id=record.id,
                state=str(state),
                error=error,
                duration_s=round(record.duration or 0, 3),
            )

    # -- attempts --------------------------------------------------------------------------------
    def open_attempt(self, number: int) -> AttemptRecord:
        """Enter `running` and record attempt `number` as begun."""
        record = self.record
        now = self._clock.time()
        if record.started_at is None:
            record.started_at = now
        record.attempts = number
        self.enter(RunState.RUNNING, f"attempt {number}", now)
        attempt = self.attempt = AttemptRecord(record.id, number, now)
        self._sink.save_attempt(attempt)
        if _STDLIB.isEnabledFor(logging.DEBUG):
            self.log.debug("attempt_started", attempt=number)
        return attempt

    def close_attempt(self, state: StepState, error: str | None) -> None:
        """Record the open attempt as ended in `state`."""
        attempt = self.attempt
        if attempt is None:
            return
        attempt.state, attempt.finished_at = state, self._clock.time()
        attempt.error = self.shown(error)
        self._sink.save_attempt(attempt)

    def steps_timed_out(self, number: int) -> None:
        """The steps of attempt `number` that the attempt's timeout stopped were timed out."""
        for step in self._steps.values():
            if step.attempt == number and step.state is StepState.STOPPED:
                step.state, step.error = StepState.TIMED_OUT, "timed out"
                self._sink.save_step(step)

    def failing_step(self, number: int) -> StepRecord | None:
        """The step that ended attempt `number`'s chain: its last failure (earlier failures said
        `on_error: continue`)."""
        failed = [
            r
            for r in self._steps.values()
            if r.attempt == number and r.state in (StepState.FAILED, StepState.TIMED_OUT)
        ]
        return max(failed, key=lambda r: r.index, default=None)

    # -- Hooks: how the chain reports the steps of the current attempt --------------------------
    def _attempt_number(self) -> int:
        return self.attempt.number if self.attempt is not None else 0

    def started(self, step: Step) -> None:
        number = self._attempt_number()
        now = self._clock.time()
        record = StepRecord(self.record.id, number, step.index, step.type, now)
        self._steps[(number, step.index)] = record
        self._sink.save_step(record)
        if self._first_step:
            self._first_step = False
            scheduled = self.record.scheduled_at
            if scheduled is not None and self._observer is not None:
                self._observer.first_step_started(now - scheduled)

    def ended(self, step: Step, state: str, exc: BaseException | None) -> None:
        key = (self._attempt_number(), step.index)
        now = self._clock.time()
        record = self._steps.get(key)
        if record is None:  # skipped without starting
            record = self._steps[key] = StepRecord(self.record.id, key[0], step.index, step.type, now)
        record.finished_at = now
        record.state = StepState(state)
        record.error = None if exc is None else ("stopped" if state == "stopped" else self.shown(describe(exc)))
        self._sink.save_step(record)

    # -- RunLog ----------------------------------------------------------------------------------
    def write(self, stream: str, text: str) -> None:
        """Append a line to the run's log (capped, so a chatty child cannot fill the disk)."""
        if self._log_seq > MAX_LOG_LINES:
            return
        self._log_seq += 1
        if self._log_seq > MAX_LOG_LINES:
            stream, text = "log", f"log truncated after {MAX_LOG_LINES} lines"
        if len(text) > MAX_LINE_CHARS + self.redactor.longest:  # what is cut off is never shown: not searched
            text = text[: MAX_LINE_CHARS + self.redactor.longest]
        text = escape_line(self.redactor.text(text))
        if len(text) > MAX_LINE_CHARS:
            text = text[:MAX_LINE_CHARS] + " [line truncated]"
        line = LogLine(self.record.id, self._log_seq, self._clock.time(), stream, text)
        self._sink.append_log(line)
        if self._observer is not None:
            self._observer.line_written(line)
        if self._recent is None:
            self._recent = collections.deque(maxlen=RECENT_LINES)
        self._recent.append(f"[{stream}] {text}")
        if _STDLIB.isEnabledFor(logging.DEBUG):
            self.log.debug("run_output", stream=stream, line=text)

"""The run vocabulary shared by the runner, the engine, the store and the API."""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any, ClassVar, NamedTuple


class RunState(StrEnum):
    """States of a run (see DESIGN.md for the transitions)."""

    QUEUED = "queued"
    RUNNING = "running"
    RETRYING = "retrying"
    COMPLETED = "completed"
    FAILED = "failed"
    STOPPED = "stopped"
    INTERRUPTED = "interrupted"


ACTIVE_STATES = frozenset({RunState.QUEUED, RunState.RUNNING, RunState.RETRYING})
FINAL_STATES = (RunState.COMPLETED, RunState.FAILED, RunState.STOPPED, RunState.INTERRUPTED)


class Trigger(StrEnum):
    """What started a run."""

    SCHEDULE = "schedule"
    MANUAL = "manual"
    CATCH_UP = "catch_up"
    STARTUP = "startup"
    """A task with `schedule: "@reboot"`, once at each start of the daemon."""
    DEPENDENCY = "dependency"
    """A task with `after:`, once the runs of its upstream tasks it waits for have ended."""


class StepState(StrEnum):
    """States of an attempt or of one step inside it."""

    RUNNING = "running"
    COMPLETED = "completed"
    FAILED = "failed"
    TIMED_OUT = "timed_out"
    STOPPED = "stopped"
    SKIPPED = "skipped"
    INTERRUPTED = "interrupted"


def new_run_id(now: float) -> str:
    """A time-ordered run id: 12 hex digits of `now` in milliseconds, then 8 random ones. An
    identifier, not a secret (the API's token is what guards access): the fast random source will do."""
    return f"{int(now * 1000):012x}{random.getrandbits(32):08x}"


def iso(ts: float | None) -> str | None:
    """Epoch seconds -> ISO-8601 UTC with milliseconds (None stays None)."""
    if ts is None:
        return None
    return datetime.fromtimestamp(ts, tz=UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


@dataclass(frozen=True, slots=True)
class RunLimits:
    """What a run's step processes may not pass (a task's `limits`)."""

    memory: int | None = None
    """Bytes."""
    cpu: float | None = None
    """Cores."""
    processes: int | None = None

    def __bool__(self) -> bool:
        return self.memory is not None or self.cpu is not None or self.processes is not None


USAGE_SOURCES = ("rusage", "cgroup", "none")
"""Where a run's usage figures come from: wait4's rusage of its step processes, the run's cgroup,
or nowhere (this system cannot tell)."""


@dataclass(slots=True)
class Usage:
    """What a run's step processes used: CPU seconds (user + system) of every process they started
    and waited for, the largest resident set among them, and how many step processes ran. A step
    that runs inside taskd (`python`) cannot be told apart from taskd itself: it is named in
    `unknown`, and a run of only such steps has no figures (None), never zeros.

    rusage's largest resident set starts from the parent's: a process taskd starts reports at least
    taskd's own peak. A figure at or under it says nothing of the process, so the peak is then
    unknown (None) and `peak_memory_at_most` says how large it could have been."""

    cpu_s: float | None = None
    peak_known: int | None = None
    """The largest peak known to be the process's own."""
    processes: int = 0
    source: str = "none"
    unknown: list[str] = field(default_factory=list)
    peak_bound: int | None = None
    """The largest floor among the processes whose peak is unknown."""

    def add_process(self, cpu_s: float, peak_memory_bytes: int, source: str, floor: int = 0) -> None:
        """A step process's figures; `floor` is the peak its source starts from (taskd's own, for
        rusage), at or under which its peak is unknown."""
        self.cpu_s = (self.cpu_s or 0.0) + cpu_s
        self.processes += 1
        self.source = source
        if peak_memory_bytes > floor:
            self.peak_known = max(self.peak_known or 0, peak_memory_bytes)
        else:
            self.peak_bound = max(self.peak_bound or 0, floor)

    @property
    def peak_memory_bytes(self) -> int | None:
        """The run's peak, when it is known: no process's peak could have been larger."""
        if self.peak_known is not None and (self.peak_bound is None or self.peak_known >= self.peak_bound):
            return self.peak_known
        return None

    @property
    def peak_memory_at_most(self) -> int | None:
        """When the peak is unknown: how large it could have been."""
        if self.peak_memory_bytes is not None or self.peak_bound is None:
            return None
        return max(self.peak_bound, self.peak_known or 0)

    def add_unknown(self, step: str) -> None:
        if step not in self.unknown:
            self.unknown.append(step)

    def to_json(self) -> dict[str, Any]:
        return {
            "cpu_s": None if self.cpu_s is None else round(self.cpu_s, 3),
            "peak_memory_bytes": self.peak_memory_bytes,
            "processes": self.processes,
            "source": self.source,
            "unknown": list(self.unknown),
            "peak_memory_at_most": self.peak_memory_at_most,
        }


@dataclass(slots=True)
class RunRecord:
    """A run as stored; the runner mutates it and hands it to the store after each change."""

    id: str
    task_id: str
    trigger: Trigger
    queued_at: float
    state: RunState = RunState.QUEUED
    scheduled_at: float | None = None
    started_at: float | None = None
    finished_at: float | None = None
    attempts: int = 0
    error: str | None = None
    params: dict[str, Any] = field(default_factory=dict)
    priority: int = 0
    node: str | None = None  # the node that ran it (node.name)
    usage: Usage | None = None  # None until its first attempt began

    @property
    def duration(self) -> float | None:
        """Seconds from the first attempt's start to the end (None until the run has ended)."""
        if self.started_at is None or self.finished_at is None:
            return None
        return self.finished_at - self.started_at

    def elapsed(self, now: float) -> float | None:
        """The duration, or for a run still going the time it has been running at `now`."""
        if self.started_at is None:
            return None
        return (self.finished_at if self.finished_at is not None else now) - self.started_at

    def to_json(self, now: float) -> dict[str, Any]:
        """The run as the API shows it; `now` gives a running run's duration so far."""
        elapsed = self.elapsed(now)
        return {
            "id": self.id,
            "task_id": self.task_id,
            "trigger": str(self.trigger),
            "state": str(self.state),
            "scheduled_at": iso(self.scheduled_at),
            "queued_at": iso(self.queued_at),
            "started_at": iso(self.started_at),
            "finished_at": iso(self.finished_at),
            "duration": None if elapsed is None else round(elapsed, 3),
            "attempts": self.attempts,
            "error": self.error,
            "params": self.params,
            "priority": self.priority,
            "node": self.node,
            "usage": None if self.usage is None else self.usage.to_json(),
        }


@dataclass(slots=True)
class AttemptRecord:
    """One pass through the pipeline inside a run."""

    run_id: str
    number: int
    started_at: float
    state: StepState = StepState.RUNNING
    finished_at: float | None = None
    error: str | None = None


@dataclass(slots=True)
class StepRecord:
    """One processor's execution inside an attempt."""

    run_id: str
    attempt: int
    index: int
    type: str
    started_at: float
    state: StepState = StepState.RUNNING
    finished_at: float | None = None
    error: str | None = None


class RunSummary(NamedTuple):
    """What the task list shows of a task's last finished run. A tuple of strings and floats:
    the garbage collector stops tracking it, so 10,000 of them cost no collection time."""

    id: str
    state: str
    trigger: str
    started_at: float | None
    finished_at: float | None

    @property
    def duration(self) -> float | None:
        if self.started_at is None or self.finished_at is None:
            return None
        return self.finished_at - self.started_at

    @classmethod
    def of(cls, run: RunRecord) -> RunSummary:
        return cls(run.id, str(run.state), str(run.trigger), run.started_at, run.finished_at)


@dataclass(frozen=True)
class UpstreamRun:
    """An upstream run that ended the way a downstream task waits for (`after:`), as the store keeps
    it: pending until a run of the downstream task takes it (`run_id`), exactly once."""

    task_id: str
    """The downstream task."""
    upstream_run_id: str
    upstream_task_id: str
    state: str
    """The upstream run's final state."""
    finished_at: float
    context: dict[str, Any] = field(default_factory=dict)
    """The values the upstream run's steps put in its context: the downstream run's params."""
    run_id: str | None = None
    """The downstream run it triggered; None while it waits."""

    @property
    def key(self) -> tuple[str, str]:
        return self.task_id, self.upstream_run_id

    def to_json(self) -> dict[str, Any]:
        return {
            "task_id": self.task_id,
            "run_id": self.run_id,
            "upstream_task_id": self.upstream_task_id,
            "upstream_run_id": self.upstream_run_id,
            "upstream_state": self.state,
            "upstream_finished_at": iso(self.finished_at),
        }


@dataclass(frozen=True)
class AlertState:
    """A task's alert state, as the store keeps it (taskd.alerts decides its changes)."""

    OK: ClassVar[str] = "ok"
    FAILING: ClassVar[str] = "failing"

    task_id: str
    status: str = "ok"
    since: float = 0.0
    """When the current status began: failing since, or recovered at (first seen, at first)."""
    first_seen: float = 0.0
    """When alerting first knew the task: a task that never succeeded is overdue from here."""
    failures: int = 0
    """Failed runs since the task began failing."""
    unreported: int = 0
    """Failed runs since the last notice."""
    notified_at: float | None = None
    """When the last failing notice or reminder went out."""
    overdue_at: float | None = None
    """When the last overdue notice went out; None while the task is not known to be overdue."""
    version: int = 0
    """Grows with every change: a change is stored only over the version it was decided from."""


@dataclass(frozen=True)
class ReloadOutcome:
    """What the last reload did: when, whether the new configuration runs, the errors that kept
    the previous one, and what changed (task ids added, changed, removed)."""

    at: float
    applied: bool
    errors: tuple[str, ...] = ()
    changes: dict[str, list[str]] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {
            "at": iso(self.at),
            "outcome": "applied" if self.applied else "refused",
            "errors": list(self.errors),
            "changes": {kind: ids for kind, ids in self.changes.items() if ids},
        }

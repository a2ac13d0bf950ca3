"""The store interface: what the engine, runner and API need from run history.

Writes are fire-and-forget (`save_*`, `append_log`, `record_fire`, ...): they are staged in memory
and committed in batches by the implementation's writer, so a busy daemon does not pay one commit
per event. Reads first wait until everything written before them is committed.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Any, NamedTuple

from taskd.models import AttemptRecord, RunRecord, StepRecord


class LogLine(NamedTuple):
    """One line of a run's log. A tuple in column order: it goes to the database as it is."""

    run_id: str
    seq: int
    ts: float
    stream: str
    line: str


class Transition(NamedTuple):
    """A run entering a state, with when and why. A tuple in column order, like LogLine."""

    run_id: str
    seq: int
    at: float
    state: str
    detail: str | None = None


@dataclass(frozen=True)
class Fire:
    """A fire that did not become a run."""

    task_id: str
    instant: float
    kind: str
    reason: str
    recorded_at: float


@dataclass(frozen=True)
class RunQuery:
    task_id: str | None = None
    state: str | None = None
    trigger: str | None = None
    since: float | None = None
    until: float | None = None
    limit: int = 50
    offset: int = 0
    fresh: bool = True  # False: may miss the last ~25 ms of writes, never waits for a commit


class Store(ABC):
    """Run history, fire events, tombstones and scheduler state."""

    @abstractmethod
    async def open(self) -> None:
        """Create or migrate the schema and start the writer."""

    @abstractmethod
    async def close(self) -> None:
        """Commit everything staged and close."""

    @abstractmethod
    async def recover_interrupted(self, now: float) -> list[RunRecord]:
        """Mark runs left queued/running/retrying by a dead process as interrupted; return them."""

    # -- writes (staged, batched) --------------------------------------------------------------
    @abstractmethod
    def save_run(self, run: RunRecord) -> None: ...

    @abstractmethod
    def save_attempt(self, attempt: AttemptRecord) -> None: ...

    @abstractmethod
    def save_step(self, step: StepRecord) -> None: ...

    @abstractmethod
    def append_log(self, line: LogLine) -> None: ...

    @abstractmethod
    def record_transition(self, transition: Transition) -> None: ...

    @abstractmethod
    def record_fire(self, fire: Fire) -> None: ...

    @abstractmethod
    def set_last_fire(self, task_id: str, instant: float) -> None: ...

    @abstractmethod
    def add_tombstone(self, task_id: str, definition_hash: str, deleted_at: float) -> None: ...

    @abstractmethod
    def remove_tombstone(self, task_id: str) -> None: ...

    @abstractmethod
    async def flush(self) -> None:
        """Wait until every write staged so far is committed."""

    # -- reads -----------------------------------------------------------------------------------
    @abstractmethod
    async def ping(self) -> bool: ...

    @abstractmethod
    async def get_run(self, run_id: str) -> RunRecord | None: ...

    @abstractmethod
    async def list_runs(self, query: RunQuery) -> tuple[list[RunRecord], int]: ...

    @abstractmethod
    async def attempts(self, run_id: str) -> list[AttemptRecord]: ...

    @abstractmethod
    async def steps(self, run_id: str) -> list[StepRecord]: ...

    @abstractmethod
    async def run_log(self, run_id: str, after_seq: int = 0) -> list[LogLine]: ...

    @abstractmethod
    async def transitions(self, run_id: str) -> list[Transition]: ...

    @abstractmethod
    async def fires(self, task_id: str, limit: int = 50) -> list[Fire]:
        """The task's latest skipped or missed fires (may lag the last batch of writes)."""

    @abstractmethod
    async def last_runs(self) -> dict[str, RunRecord]:
        """The most recent run of every task that has one."""

    @abstractmethod
    async def task_stats(self, task_id: str) -> dict[str, Any]:
        """Run count, success rate, mean and p95 duration of finished runs (may lag the last
        batch of writes)."""

    @abstractmethod
    async def tombstones(self) -> dict[str, str]:
        """task id -> definition hash of every deleted task."""

    @abstractmethod
    async def last_fires(self) -> dict[str, float]:
        """task id -> the last instant it fired."""

    @abstractmethod
    async def prune(self, now: float, days: int, max_runs_per_task: int) -> int:
        """Apply retention; return how many runs were removed."""

"""The store interface: what the engine, runner and API need from run history, and its records.

Writes are fire-and-forget (`save_*`, `append_log`, `record_fire`, ...): they are staged in memory
and committed in batches by the implementation's writer, so a busy daemon does not pay one commit
per event. Reads first wait until everything written before them is committed.
"""

from __future__ import annotations

import asyncio
import math
from abc import ABC, abstractmethod
from collections.abc import AsyncIterator, Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple

from taskd.errors import TaskdError
from taskd.faults import STORE_UNREACHABLE
from taskd.models import AlertState, AttemptRecord, RunRecord, RunState, StepRecord, Trigger, UpstreamRun

MEMORY = ":memory:"
"""The location of a store that lives in memory only (nothing survives the process)."""


class StoreError(TaskdError):
    """The store cannot be opened or used."""


def redacted(location: str) -> str:
    """A store location fit for logs and messages: a URL's password replaced by ***."""
    scheme, sep, rest = location.partition("://")
    credentials, at, host = rest.rpartition("@")
    if not sep or not at or ":" not in credentials:
        return location
    return f"{scheme}{sep}{credentials.split(':', 1)[0]}:***@{host}"


GIVEN_BACK = "; it had not begun, so its upstream runs were given back: the task runs for them again"


def never_started(run: RunRecord) -> bool:
    """A dependency run that ended before its first attempt: its upstream runs are given back."""
    return run.trigger == Trigger.DEPENDENCY and run.started_at is None and run.attempts == 0


LOG_PAGE = 200
"""Log lines read from the store at once (lines are capped at 8 KiB: 1.6 MiB at most)."""


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


class AuditEntry(NamedTuple):
    """Something done through the API (a start, a stop, a delete, a reload) or refused to whoever
    asked (a wrong token, a role short of the action): who, from where, on what, and the answer's
    status. A tuple in column order, like Transition."""

    at: float
    action: str
    actor: str | None  # the token's name; None without tokens, or when none matched
    role: str | None
    remote: str | None
    target: str | None  # the task or run acted on
    status: int
    detail: str | None = None


@dataclass(frozen=True)
class AuditQuery:
    """A page of the audit trail, newest first; each filter given must hold."""

    actions: tuple[str, ...] = ()
    actor: str | None = None
    since: float | None = None
    until: float | None = None
    limit: int = 50
    offset: int = 0


@dataclass(frozen=True)
class Fire:
    """A fire that did not become a run; or, with `count` > 1, a task's fires refused one after
    the other for one reason (an overload, a run still going), from `instant` to `last_instant`."""

    task_id: str
    instant: float
    kind: str
    reason: str
    recorded_at: float
    count: int = 1
    last_instant: float | None = None
    key: str | None = None
    """Names the summary across its updates: each write of it replaces the last."""

    @property
    def row_key(self) -> str | int:
        return self.key if self.key is not None else id(self)


RUN_SORTS = ("queued_at", "started_at", "finished_at", "duration", "state", "task_id", "cpu_s", "peak_memory")
"""What run history can be sorted by. A run without the value (not started or not finished yet)
sorts before every value, so it comes first ascending and last descending. Runs with the same
value are ordered by when they were queued, then by id, in the same direction."""


@dataclass(frozen=True)
class RunQuery:
    """A filtered, sorted, paged slice of run history. Each filter given must hold; a tuple filter
    holds when the run matches any of its values."""

    task_ids: tuple[str, ...] = ()
    states: tuple[str, ...] = ()
    triggers: tuple[str, ...] = ()
    since: float | None = None  # queued at or after
    until: float | None = None  # queued before
    text: str | None = None
    """A case-insensitive substring of the run's error or params ..."""
    text_task_ids: tuple[str, ...] = ()
    """... or the run belongs to one of these tasks (the API passes those whose id or name holds it)."""
    sort: str = "queued_at"
    descending: bool = True
    limit: int = 50
    offset: int = 0
    fresh: bool = True  # False: may miss the last ~25 ms of writes, never waits for a commit
    counted: bool = True  # False: the caller needs the page only; the total may be just its end

    def __post_init__(self) -> None:
        if self.sort not in RUN_SORTS:
            raise ValueError(f"sort must be one of {', '.join(RUN_SORTS)}")


EXACT_UP_TO = 10_000
"""A search's total is exact up to this many runs; past it a store may estimate it."""
EXACT_TEXT_UP_TO = 1_000
"""The same for a text search, each of whose matches costs a check of its text."""


class RunPage(NamedTuple):
    runs: list[RunRecord]
    total: int
    exact: bool


class Store(ABC):
    """Run history, fire events, tombstones and scheduler state."""

    commit_observer: Callable[[float], None] | None = None
    """Told how long each commit took, in seconds (the metrics)."""
    fault_observer: Callable[[str | None], None] | None = None
    """Told why commits fail (after each failed commit), and None once one succeeds again."""

    @abstractmethod
    async def open(self) -> None:
        """Create or migrate the schema and start the writer."""

    @abstractmethod
    async def close(self) -> None:
        """Commit everything staged and close."""

    @property
    @abstractmethod
    def writer(self) -> asyncio.Task[None] | None:
        """The background task committing staged writes (None before open and after close); the
        daemon watches it and stops if it dies."""

    def staged_run(self, run_id: str) -> RunRecord | None:
        """The run's latest state as written and not yet committed (to be read, never changed);
        None when nothing of it is waiting for the writer."""
        return None

    @property
    @abstractmethod
    def pending_writes(self) -> int:
        """How many writes are staged and not yet committed."""

    @abstractmethod
    async def recover_interrupted(self, now: float, node: str | None = None) -> list[RunRecord]:
        """Mark runs left queued/running/retrying by a dead process as interrupted; return them.
        With `node`, only that node's runs (and runs of no node): other nodes may share the store.
        A dependency run that never started gives its upstream runs back (pending again): the
        downstream task still runs for them."""

    @abstractmethod
    async def interrupt_runs_of(self, node: str, now: float, why: Callable[[RunRecord], str]) -> list[RunRecord]:
        """Mark the active runs of `node` interrupted, each for the reason `why` gives (another node
        found the node's lease expired); return them."""

    # -- writes (staged, batched) --------------------------------------------------------------
    @abstractmethod
    def save_run(self, run: RunRecord) -> None:
        """Stage the run's current state (its state at commit time is what is kept)."""

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
    def give_back(self, run_id: str) -> None:
        """Stage the upstream runs `run_id` took as pending again: a dependency run that ended
        before it began (stopped by a shutdown), so that the task still runs for them."""

    @abstractmethod
    def save_upstream(self, upstream: UpstreamRun) -> None:
        """Stage an upstream run a downstream task waits for (pending). Staged with the upstream
        run's end, it is committed with it: a crash keeps both or neither."""

    @abstractmethod
    def record_audit(self, entry: AuditEntry) -> None:
        """Stage an audit trail entry (kept as long as runs are, by age)."""

    @abstractmethod
    def add_tombstone(self, task_id: str, definition_hash: str, deleted_at: float) -> None: ...

    @abstractmethod
    def remove_tombstone(self, task_id: str) -> None: ...

    @abstractmethod
    async def flush(self) -> None:
        """Wait until every write staged so far is committed."""

    @property
    def failing(self) -> bool:
        """Whether the last commit failed (writes are kept and retried)."""
        return False

    @abstractmethod
    async def durable(self, mark: int | None = None) -> None:
        """Like `flush`, but through commit failures: returns once the writes staged so far (or,
        with a `mark`, those staged before it was taken) are committed (or dropped for good as
        unwritable), however long the store is down."""

    def mark(self) -> int:
        """A mark of the writes staged so far, for `durable`: a run takes one once its first
        record is staged, and its first step waits for those writes only."""
        return 0

    # -- reads -----------------------------------------------------------------------------------
    @abstractmethod
    async def ping(self) -> bool: ...

    def owns(self, exc: BaseException) -> bool:
        """Whether `exc` came from the store (its database, its connection, its disk)."""
        return isinstance(exc, (StoreError, OSError))

    def explain(self, exc: BaseException) -> StoreError | None:
        """`exc`, raised by the database, as a StoreError that tells the operator what to do (a
        damaged file), or None when it says nothing about the store itself."""
        return None

    async def problem(self) -> tuple[str, str] | None:
        """What is wrong with the store right now, as a fault (kind, reason), or None."""
        return None if await self.ping() else (STORE_UNREACHABLE, "the store does not answer")

    @abstractmethod
    async def get_run(self, run_id: str) -> RunRecord | None: ...

    @abstractmethod
    async def list_runs(self, query: RunQuery) -> tuple[list[RunRecord], int]:
        """A page of runs and how many match in all, exactly."""

    async def search_runs(self, query: RunQuery) -> RunPage:
        """What the API answers: a page of runs and how many match, which a store may estimate
        when counting them exactly would cost more than the page (`exact` False); an estimate is
        never below EXACT_UP_TO (EXACT_TEXT_UP_TO for a text search)."""
        runs, total = await self.list_runs(query)
        return RunPage(runs, total, True)

    @abstractmethod
    async def attempts(self, run_id: str) -> list[AttemptRecord]: ...

    @abstractmethod
    async def steps(self, run_id: str) -> list[StepRecord]: ...

    @abstractmethod
    async def run_log(self, run_id: str, after_seq: int = 0, limit: int = LOG_PAGE) -> list[LogLine]:
        """The run's log lines after `after_seq`, at most `limit` of them, in order."""

    async def log_pages(
        self, run_id: str, after_seq: int = 0, limit: int | None = None
    ) -> AsyncIterator[list[LogLine]]:
        """The run's log lines after `after_seq` (all, or `limit`), a page at a time: a log of
        80 MB is never in memory whole."""
        left = limit
        while left is None or left > 0:
            wanted = LOG_PAGE if left is None else min(left, LOG_PAGE)
            page = await self.run_log(run_id, after_seq, wanted)
            if page:
                yield page
            if len(page) < wanted:
                return
            after_seq = page[-1].seq
            if left is not None:
                left -= len(page)

    @abstractmethod
    async def transitions(self, run_id: str) -> list[Transition]: ...

    @abstractmethod
    async def fires(self, task_id: str, limit: int = 50) -> list[Fire]:
        """The task's latest skipped or missed fires (may lag the last batch of writes)."""

    @abstractmethod
    async def last_runs(self) -> dict[str, RunRecord]:
        """The most recent run of every task that has one."""

    @abstractmethod
    async def latest_runs(self, task_ids: Sequence[str]) -> tuple[dict[str, RunRecord], dict[str, list[str]]]:
        """Of these tasks: the latest run of each, and the states of its active runs, whichever
        node holds them (may lag the last batch of writes)."""

    @abstractmethod
    async def scheduled_runs(self, fires: Sequence[tuple[str, float]]) -> set[tuple[str, float]]:
        """Of these (task id, instant) fires, those that have a run (`scheduled_at` the instant)."""

    @abstractmethod
    async def last_successes(self) -> dict[str, float]:
        """task id -> when its latest completed run finished."""

    @abstractmethod
    async def task_stats(self, task_id: str) -> dict[str, Any]:
        """Run count, success rate, mean and p95 duration of finished runs (may lag the last
        batch of writes)."""

    @abstractmethod
    async def run_counts(self, since: float, bucket_s: int) -> list[tuple[int, str, int]]:
        """Runs that finished at or after `since`, counted by (bucket, final state): a bucket is
        `int(finished_at // bucket_s)`."""

    @abstractmethod
    async def audit(self, query: AuditQuery) -> tuple[list[AuditEntry], int]:
        """A page of the audit trail, newest first, and how many entries match in all."""

    @abstractmethod
    async def tombstones(self) -> dict[str, str]:
        """task id -> definition hash of every deleted task."""

    @abstractmethod
    async def last_fires(self) -> dict[str, float]:
        """task id -> the last instant it fired."""

    @abstractmethod
    async def prune(self, now: float, days: int, max_runs_per_task: int) -> int:
        """Apply retention; return how many runs were removed."""

    # -- dependencies (taken at once, not staged: each take needs its answer) ----------------------
    @abstractmethod
    async def pending_upstreams(self) -> list[UpstreamRun]:
        """The upstream runs no downstream run has taken yet, oldest first."""

    @abstractmethod
    async def take_upstreams(self, run: RunRecord, taken: Sequence[UpstreamRun]) -> bool:
        """In one transaction: mark `taken` (pending upstream runs of `run`'s task) as taken by
        `run`, and insert `run`. False, and nothing written, when any of them was taken already:
        of nodes taking the same upstream run at once, one does."""

    @abstractmethod
    async def discard_upstreams(self, upstreams: Sequence[UpstreamRun]) -> None:
        """Forget these pending upstream runs (those a task's changed `after:` no longer counts)."""

    @abstractmethod
    async def run_links(self, run_id: str) -> tuple[list[UpstreamRun], list[UpstreamRun]]:
        """The upstream runs that triggered this run, and the downstream tasks this run triggered
        (their `run_id`, or None while they wait)."""

    # -- alert states (written at once, not staged: each change needs its answer) -----------------
    @abstractmethod
    async def alert_states(self) -> dict[str, AlertState]:
        """Every task's alert state."""

    @abstractmethod
    async def alert_state(self, task_id: str) -> AlertState | None: ...

    @abstractmethod
    async def swap_alert_state(self, state: AlertState, version: int) -> bool:
        """Store `state` if the stored one is still at `version` (0: there is none yet); return
        whether it was stored. Of nodes deciding the same change at once, one wins."""


STATS_WINDOW = 1000
"""Task statistics consider the task's latest this many finished runs."""


def run_stats(total: int, finished: Iterable[tuple[str, float | None]]) -> dict[str, Any]:
    """`task_stats` from the run count and the latest finished runs as (state, duration)."""
    rows = list(finished)
    durations = sorted(d for _, d in rows if d is not None)
    completed = sum(1 for state, _ in rows if state == RunState.COMPLETED)
    return {
        "runs": total,
        "finished_considered": len(rows),
        "success_rate": round(completed / len(rows), 4) if rows else None,
        "mean_duration": round(sum(durations) / len(durations), 3) if durations else None,
        "p50_duration": _percentile(durations, 0.50),
        "p95_duration": _percentile(durations, 0.95),
    }


def _percentile(ordered: list[float], fraction: float) -> float | None:
    """The nearest-rank percentile of sorted values."""
    if not ordered:
        return None
    return round(ordered[max(0, math.ceil(fraction * len(ordered)) - 1)], 3)

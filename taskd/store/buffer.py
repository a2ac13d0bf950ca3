"""A backend-neutral write buffer: writes are staged in memory and committed in batches.

A busy daemon does not pay one commit per event: rows staged during a short window share one
transaction, repeated saves of the same record collapse into its latest state, and a flush (a
read, shutdown) cuts the window short. A batch that fails to commit for a reason that can pass
(the database locked or busy, the disk full) is staged again, ahead of what came since, and
retried with a growing pause: nothing is dropped while the store is down, and the engine sheds
load once `pending_writes` passes its limit. A backend supplies `_commit(batch)` and says which
failures can pass (`_retryable`).
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import math
import time
from abc import abstractmethod
from dataclasses import dataclass, field

import structlog

from taskd.clock import Clock, SystemClock
from taskd.models import AttemptRecord, RunRecord, StepRecord, UpstreamRun
from taskd.store.base import AuditEntry, Fire, LogLine, Store, StoreError, Transition

log = structlog.get_logger("taskd.store")
RETRY_PAUSE_S = 0.5
MAX_RETRY_PAUSE_S = 5.0
RELEASE_CHUNK = 16
"""Waiters released per turn of the loop after a commit: a burst of runs waiting for their start
to be committed resumes a slice at a time, and requests are answered between the slices."""


@dataclass
class Tombstone:
    """A task deleted through the API (`definition_hash` None: the tombstone is lifted)."""

    task_id: str
    definition_hash: str | None
    deleted_at: float = 0.0


@dataclass
class Batch:
    """Everything staged since the last commit. Runs, attempts and steps are deduplicated by key
    (the record's state at commit time is what is written); tombstones keep their order."""

    runs: dict[str, RunRecord] = field(default_factory=dict)
    attempts: dict[tuple[str, int], AttemptRecord] = field(default_factory=dict)
    steps: dict[tuple[str, int, int], StepRecord] = field(default_factory=dict)
    logs: list[LogLine] = field(default_factory=list)
    transitions: list[Transition] = field(default_factory=list)
    fires: dict[str | int, Fire] = field(default_factory=dict)
    last_fires: dict[str, float] = field(default_factory=dict)
    tombstones: list[Tombstone] = field(default_factory=list)
    upstreams: dict[tuple[str, str], UpstreamRun] = field(default_factory=dict)
    given_back: list[str] = field(default_factory=list)
    audit: list[AuditEntry] = field(default_factory=list)

    def absorb(self, newer: Batch) -> None:
        """Add the writes staged after this batch: a newer state of a record wins, rows keep
        their order (this batch's first)."""
        self.runs.update(newer.runs)
        self.attempts.update(newer.attempts)
        self.steps.update(newer.steps)
        self.logs.extend(newer.logs)
        self.transitions.extend(newer.transitions)
        self.fires.update(newer.fires)
        for task_id, instant in newer.last_fires.items():
            self.last_fires[task_id] = max(instant, self.last_fires.get(task_id, instant))
        self.tombstones.extend(newer.tombstones)
        for key, upstream in newer.upstreams.items():
            self.upstreams.setdefault(key, upstream)
        self.given_back.extend(newer.given_back)
        self.audit.extend(newer.audit)

    def __bool__(self) -> bool:  # asked at every run's start: stops at the first kind of write found
        return bool(
            self.runs
            or self.transitions
            or self.attempts
            or self.steps
            or self.logs
            or self.fires
            or self.last_fires
            or self.tombstones
            or self.upstreams
            or self.given_back
            or self.audit
        )

    def __len__(self) -> int:
        return (
            len(self.runs)
            + len(self.attempts)
            + len(self.steps)
            + len(self.logs)
            + len(self.transitions)
            + len(self.fires)
            + len(self.last_fires)
            + len(self.tombstones)
            + len(self.upstreams)
            + len(self.given_back)
            + len(self.audit)
        )


class BufferedStore(Store):
    """The staged writes, flush and the writer task of every store; `_commit` is the backend's."""

    def __init__(self, batch_window_s: float = 0.025, name: str = "store", clock: Clock | None = None) -> None:
        # After the first write of a burst the writer waits this long for more, so a burst of runs
        # shares one commit and the commit's work does not interleave with the burst. A flush
        # cuts the wait short. kill -9 loses at most this window of writes.
        self._batch_window_s = batch_window_s
        self._name = name
        self._clock: Clock = clock or SystemClock()
        self._batch = Batch()
        self._barriers: list[asyncio.Future[None]] = []
        # mark -> futures: released once the batch of that mark is committed (or dropped for good)
        self._durables: dict[int, list[asyncio.Future[None]]] = {}
        self._staging = 1  # the mark of the batch being staged; each commit takes one
        self._settled = 0  # every batch up to this mark is committed (or dropped for good)
        self._wakeup = asyncio.Event()
        self._urgent = asyncio.Event()
        self._closed = asyncio.Event()  # cuts a retry pause short
        self._closing = False
        self._committing = False
        self._writer: asyncio.Task[None] | None = None
        self._in_flight = 0  # writes in the batch being committed
        self._committed_batch: Batch | None = None  # that batch
        self.commits = 0
        self.failed_commits = 0
        self._failing = False

    @abstractmethod
    async def _commit(self, batch: Batch) -> None:
        """Write `batch` in one transaction, or raise and write none of it."""

    def _retryable(self, exc: Exception) -> bool:
        """Whether a commit that raised `exc` may succeed later (the batch is kept and retried);
        otherwise the batch is logged as lost and dropped, so one bad row cannot stop the store."""
        return isinstance(exc, OSError)

    # -- lifecycle helpers for the backend -------------------------------------------------------
    def _start_writer(self) -> None:
        self._closing = False
        self._closed.clear()
        self._writer = asyncio.create_task(self._write_loop(), name=f"taskd-{self._name}-writer")

    async def _stop_writer(self) -> None:
        """Stop the writer and commit what is still staged."""
        self._closing = True
        self._closed.set()
        self._wakeup.set()
        self._urgent.set()
        writer, self._writer = self._writer, None
        if writer is not None:
            with contextlib.suppress(asyncio.CancelledError):
                await writer
        try:
            await self._commit_pending()
        finally:
            durables, self._durables = self._durables, {}
            for future in itertools.chain.from_iterable(durables.values()):
                if not future.done():
                    future.set_exception(StoreError("the store closed before these writes could be committed"))

    @property
    def writer(self) -> asyncio.Task[None] | None:
        return self._writer

    @property
    def failing(self) -> bool:
        """Whether the last commit failed."""
        return self._failing

    def staged_run(self, run_id: str) -> RunRecord | None:
        found = self._batch.runs.get(run_id)
        if found is None and self._committed_batch is not None:
            found = self._committed_batch.runs.get(run_id)
        return found

    @property
    def pending_writes(self) -> int:
        """Writes staged or being committed."""
        return len(self._batch) + self._in_flight

    # -- staged writes ---------------------------------------------------------------------------
    def save_run(self, run: RunRecord) -> None:
        self._batch.runs[run.id] = run
        self._wakeup.set()

    def save_attempt(self, attempt: AttemptRecord) -> None:
        self._batch.attempts[(attempt.run_id, attempt.number)] = attempt
        self._wakeup.set()

    def save_step(self, step: StepRecord) -> None:
        self._batch.steps[(step.run_id, step.attempt, step.index)] = step
        self._wakeup.set()

    def append_log(self, line: LogLine) -> None:
        self._batch.logs.append(line)
        self._wakeup.set()

    def record_transition(self, transition: Transition) -> None:
        self._batch.transitions.append(transition)
        self._wakeup.set()

    def record_fire(self, fire: Fire) -> None:
        self._batch.fires[fire.row_key] = fire
        self._wakeup.set()

    def save_upstream(self, upstream: UpstreamRun) -> None:
        self._batch.upstreams.setdefault(upstream.key, upstream)
        self._wakeup.set()

    def give_back(self, run_id: str) -> None:
        self._batch.given_back.append(run_id)
        self._wakeup.set()

    def record_audit(self, entry: AuditEntry) -> None:
        self._batch.audit.append(entry)
        self._wakeup.set()

    def set_last_fire(self, task_id: str, instant: float) -> None:
        last_fires = self._batch.last_fires
        if instant > last_fires.get(task_id, -math.inf):
            last_fires[task_id] = instant
        self._wakeup.set()

    def add_tombstone(self, task_id: str, definition_hash: str, deleted_at: float) -> None:
        self._batch.tombstones.append(Tombstone(task_id, definition_hash, deleted_at))
        self._wakeup.set()

    def remove_tombstone(self, task_id: str) -> None:
        self._batch.tombstones.append(Tombstone(task_id, None))
        self._wakeup.set()

    async def flush(self) -> None:
        if self._writer is None:
            return
        if not self._batch and not self._barriers and not self._committing:
            return
        await self._next_commit(self._barriers)

    def mark(self) -> int:
        return self._staging

    async def durable(self, mark: int | None = None) -> None:
        """Wait until every write staged so far (or before `mark` was taken) is committed, however
        long the store takes to come back: a run's start is on disk before its first step begins.
        Runs starting together share one commit (a group commit: the write window is cut short,
        and what is staged while a commit is under way goes in the next one); a run whose start
        went out in an earlier commit does not wait for the one under way."""
        mark = self._staging if mark is None else mark
        if self._writer is None or mark <= self._settled or (not self._batch and not self._committing):
            return
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._durables.setdefault(mark, []).append(future)
        if mark == self._staging:  # its writes are still staged: commit them now
            self._wakeup.set()
            self._urgent.set()
        await future

    async def _next_commit(self, waiters: list[asyncio.Future[None]]) -> None:
        """Wait among `waiters` for the commit of what is staged now, which starts at once."""
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        waiters.append(future)
        self._wakeup.set()
        self._urgent.set()
        await future

    async def settled(self, limit_s: float = 1.0) -> None:
        """Wait (at most `limit_s` of real time) until no `durable()` is waiting: tests on a fake
        clock let its time pass only once the store has caught up."""
        waiting = [future for futures in self._durables.values() for future in futures if not future.done()]
        if waiting:
            await asyncio.wait(waiting, timeout=limit_s)

    # -- the writer ------------------------------------------------------------------------------
    async def _write_loop(self) -> None:
        failures = 0
        while True:
            await self._wakeup.wait()
            if not self._barriers and not self._durables and not self._closing and self._batch_window_s > 0:
                self._urgent.clear()
                with contextlib.suppress(TimeoutError):
                    async with self._clock.timeout(self._batch_window_s):
                        await self._urgent.wait()
            self._wakeup.clear()
            try:
                await self._commit_pending()
                if failures:
                    log.warning("store_write_recovered", store=self._name, failed_commits=failures)
                failures = 0
            except Exception:  # keep the daemon alive; a kept batch is retried after a pause
                failures += 1
                if self._closing:
                    return
                with contextlib.suppress(TimeoutError):
                    async with self._clock.timeout(min(RETRY_PAUSE_S * 2 ** (failures - 1), MAX_RETRY_PAUSE_S)):
                        await self._closed.wait()
                self._wakeup.set()
            if self._closing:
                return

    async def _commit_pending(self) -> None:
        """Commit everything staged so far, then release the flushes waiting for it."""
        barriers, self._barriers = self._barriers, []
        batch, self._batch = self._batch, Batch()
        mark, self._staging = self._staging, self._staging + 1
        if batch:
            self._committing = True
            self._in_flight = len(batch)
            self._committed_batch = batch
            started = time.perf_counter()
            try:
                await self._commit(batch)
                self.commits += 1
                recovered, self._failing = self._failing, False
                if self.commit_observer is not None:
                    self.commit_observer(time.perf_counter() - started)
            except BaseException as exc:
                self.failed_commits += 1
                self._failing = True
                kept = isinstance(exc, Exception) and self._retryable(exc)
                if kept:  # ahead of what was staged meanwhile, to be committed again
                    batch.absorb(self._batch)
                    self._batch = batch
                else:  # dropped for good (logged): waiting longer gains nothing
                    self._settled = mark
                if self.fault_observer is not None:
                    self.fault_observer(f"commits fail: {type(exc).__name__}: {exc}")
                log.error(
                    "store_write_failed",
                    store=self._name,
                    error=f"{type(exc).__name__}: {exc}",
                    writes=len(batch),
                    kept_for_retry=kept,
                    exc_info=not kept,
                )
                for barrier in barriers:
                    if not barrier.done():
                        barrier.set_exception(StoreError("the store could not commit; see the daemon log"))
                _release(self._settled_durables())
                raise
            finally:
                self._committing = False
                self._in_flight = 0
                self._committed_batch = None
            if recovered and self.fault_observer is not None:
                self.fault_observer(None)
        self._settled = mark
        _release([*barriers, *self._settled_durables()])

    def _settled_durables(self) -> list[asyncio.Future[None]]:
        """Take the `durable()` waiters whose writes are committed (or dropped for good)."""
        marks = sorted(mark for mark in self._durables if mark <= self._settled)
        return [future for mark in marks for future in self._durables.pop(mark)]


def _release(waiters: list[asyncio.Future[None]], start: int = 0) -> None:
    """Resolve `waiters[start:]`, RELEASE_CHUNK now and the rest in later turns of the loop."""
    end = start + RELEASE_CHUNK
    for waiter in waiters[start:end]:
        if not waiter.done():
            waiter.set_result(None)
    if end < len(waiters):
        asyncio.get_running_loop().call_soon(_release, waiters, end)

"""The live run table: every unfinished run by id and by task, each task's last run, and draining."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from taskd.clock import Clock
from taskd.engine.policy import Admission
from taskd.engine.registry import TaskEntry
from taskd.models import RunRecord, RunState, RunSummary
from taskd.redact import Redactor
from taskd.runner import Run


@dataclass(frozen=True)
class Prepared:
    """A run checked and made, not started yet (`Engine.prepare`, then `Engine.launch`)."""

    entry: TaskEntry
    record: RunRecord
    given: dict[str, Any]
    """The params its steps get (the record shows them with secrets masked)."""
    redactor: Redactor
    admission: Admission
    environment: Mapping[str, str] | None = None


class RunTable:
    """Unfinished runs (forgotten as they end) and the last run of every task."""

    def __init__(self, on_end: Callable[[Run], None] | None = None) -> None:
        self._on_end = on_end  # told of each run once it has ended and been forgotten
        self._runs: dict[str, Run] = {}
        self._by_task: dict[str, dict[str, Run]] = {}  # task id -> its unfinished runs, oldest first
        # The live record while a task's latest run goes on; a summary once it has ended.
        self._last: dict[str, RunRecord | RunSummary] = {}

    def __len__(self) -> int:
        return len(self._runs)

    def seed(self, last_runs: Mapping[str, RunRecord]) -> None:
        """Start from the last runs kept in the store."""
        self._last = {task_id: RunSummary.of(run) for task_id, run in last_runs.items()}

    def add(self, run: Run) -> None:
        """Track a run that has been queued, until it reaches its final state."""
        self._runs[run.id] = run
        self._by_task.setdefault(run.record.task_id, {})[run.id] = run
        self._last[run.record.task_id] = run.record
        run.on_finished = self._forget

    def _forget(self, run: Run) -> None:
        self._runs.pop(run.id, None)
        task_id = run.record.task_id
        if self._last.get(task_id) is run.record:
            self._last[task_id] = RunSummary.of(run.record)
        runs = self._by_task.get(task_id)
        if runs is not None:
            runs.pop(run.id, None)
            if not runs:
                del self._by_task[task_id]
        if self._on_end is not None:
            self._on_end(run)

    def get(self, run_id: str) -> Run | None:
        return self._runs.get(run_id)

    def active(self, task_id: str) -> list[Run]:
        """The task's runs that have not ended, oldest first."""
        runs = self._by_task.get(task_id)
        return [run for run in runs.values() if not run.finished] if runs else []

    def active_states(self, task_id: str) -> list[tuple[str, RunState]]:
        return [(run.id, run.state) for run in self.active(task_id)]

    def unfinished(self) -> list[Run]:
        return [run for run in self._runs.values() if not run.finished]

    def last(self, task_id: str) -> RunRecord | RunSummary | None:
        return self._last.get(task_id)

    async def drain(self, grace_s: float, reason: str, hurry: asyncio.Event | None = None) -> None:
        """Let every run finish for up to `grace_s` (less if `hurry` is set meanwhile); stop the rest
        and wait while they stop (bounded by their steps' own stop grace)."""
        active = self.unfinished()
        if active:
            await wait_runs(active, grace_s, hurry)
        left = self.unfinished()
        if hurry is not None and hurry.is_set():
            reason = "daemon shutdown, asked again while draining"
        for run in left:
            run.stop(reason)
        await wait_runs(left, stop_grace(left))


def stop_grace(runs: Iterable[Run]) -> float:
    """How long stopped runs may take to end: the slowest of them (a run keeps the plan it
    started with, so a reload does not change it)."""
    return max((run.plan.stop_grace_s for run in runs), default=0.0)


async def wait_runs(
    runs: Iterable[Run], limit_s: float, cut_short: asyncio.Event | None = None, clock: Clock | None = None
) -> None:
    """Wait until every run has ended, `limit_s` seconds have passed (of `clock`'s time, else the
    event loop's), or `cut_short` is set."""
    waits = [asyncio.ensure_future(run.done.wait()) for run in runs]
    if not waits:
        return
    everything = asyncio.ensure_future(asyncio.wait(waits))
    watched: list[asyncio.Future[Any]] = [everything]
    if cut_short is not None:
        watched.append(asyncio.ensure_future(cut_short.wait()))
    if clock is None:
        await asyncio.wait(watched, timeout=limit_s, return_when=asyncio.FIRST_COMPLETED)
    else:
        with contextlib.suppress(TimeoutError):
            async with clock.timeout(limit_s):
                await asyncio.wait(watched, return_when=asyncio.FIRST_COMPLETED)
    for future in watched:
        future.cancel()
    for wait in waits:
        wait.cancel()

"""An in-memory store with the SQLite store's behaviour, for tests and for trying taskd out.

It stages writes through the same write buffer and answers the same contract tests; nothing
survives the process. Data lives in the object, so closing and reopening it acts like a restart.
"""

from __future__ import annotations

import collections
import copy
import dataclasses
import json
from collections import defaultdict
from collections.abc import Callable, Sequence
from typing import Any

from taskd.clock import Clock
from taskd.models import (
    ACTIVE_STATES,
    AlertState,
    AttemptRecord,
    RunRecord,
    RunState,
    StepRecord,
    StepState,
    UpstreamRun,
)
from taskd.store.base import (
    GIVEN_BACK,
    LOG_PAGE,
    STATS_WINDOW,
    AuditEntry,
    AuditQuery,
    Fire,
    LogLine,
    RunQuery,
    StoreError,
    Transition,
    never_started,
    run_stats,
)
from taskd.store.buffer import Batch, BufferedStore


class MemoryStore(BufferedStore):
    """Run history in dictionaries."""

    def __init__(self, batch_window_s: float = 0.0, clock: Clock | None = None) -> None:
        super().__init__(batch_window_s, name="memory-store", clock=clock)
        self._open = False
        self._run_rows: dict[str, RunRecord] = {}
        self._attempt_rows: dict[tuple[str, int], AttemptRecord] = {}
        self._step_rows: dict[tuple[str, int, int], StepRecord] = {}
        self._log_rows: dict[str, dict[int, LogLine]] = defaultdict(dict)
        self._transition_rows: dict[str, dict[int, Transition]] = defaultdict(dict)
        self._fire_rows: dict[str | int, Fire] = {}
        self._tombstone_rows: dict[str, str] = {}
        self._last_fire_rows: dict[str, float] = {}
        self._alert_rows: dict[str, AlertState] = {}
        self._upstream_rows: dict[tuple[str, str], UpstreamRun] = {}
        self._audit_rows: list[AuditEntry] = []

    async def open(self) -> None:
        self._open = True
        self._start_writer()

    async def close(self) -> None:
        if not self._open:
            return
        await self._stop_writer()
        self._open = False

    async def _commit(self, batch: Batch) -> None:
        self._require()
        # Records are mutable and shared with the runner: keep copies, as a database would.
        for run in batch.runs.values():
            kept = self._run_rows.get(run.id)
            if kept is None or kept.state is not RunState.INTERRUPTED:  # as SQL: an interrupted run stays so
                self._run_rows[run.id] = _copied(run)
        for key, attempt in batch.attempts.items():
            self._attempt_rows[key] = copy.copy(attempt)
        for step_key, step in batch.steps.items():
            self._step_rows[step_key] = copy.copy(step)
        for line in batch.logs:
            self._log_rows[line.run_id].setdefault(line.seq, line)
        for transition in batch.transitions:
            self._transition_rows[transition.run_id].setdefault(transition.seq, transition)
        self._fire_rows.update(batch.fires)
        for task_id, instant in batch.last_fires.items():
            self._last_fire_rows[task_id] = max(instant, self._last_fire_rows.get(task_id, instant))
        for upstream in batch.upstreams.values():
            self._upstream_rows.setdefault(upstream.key, upstream)
        for run_id in batch.given_back:
            self._release(run_id)
        self._audit_rows.extend(batch.audit)
        for tombstone in batch.tombstones:
            if tombstone.definition_hash is None:
                self._tombstone_rows.pop(tombstone.task_id, None)
            else:
                self._tombstone_rows[tombstone.task_id] = tombstone.definition_hash

    def _require(self) -> None:
        if not self._open:
            raise StoreError("the store is not open")

    async def _read(self, fresh: bool = True) -> None:
        self._require()
        if fresh:
            await self.flush()

    async def recover_interrupted(self, now: float, node: str | None = None) -> list[RunRecord]:
        await self._read()
        return self._interrupt(
            lambda run: node is None or run.node in (None, node),
            now,
            lambda run: f"taskd exited while this run was {run.state}; marked interrupted at start-up",
        )

    async def interrupt_runs_of(self, node: str, now: float, why: Callable[[RunRecord], str]) -> list[RunRecord]:
        await self._read()
        return self._interrupt(lambda run: run.node == node, now, why)

    def _interrupt(
        self, which: Callable[[RunRecord], bool], now: float, why: Callable[[RunRecord], str]
    ) -> list[RunRecord]:
        found = []
        for run in self._run_rows.values():
            if run.state not in ACTIVE_STATES or not which(run):
                continue
            given_back = never_started(run)
            reason = why(run) + (GIVEN_BACK if given_back else "")
            run.error = f"{run.error}; {reason}" if run.error else reason
            run.state = RunState.INTERRUPTED
            run.finished_at = now
            transitions = self._transition_rows[run.id]
            seq = max(transitions, default=0) + 1
            transitions[seq] = Transition(run.id, seq, now, str(RunState.INTERRUPTED), reason)
            records: list[AttemptRecord | StepRecord] = [*self._attempt_rows.values(), *self._step_rows.values()]
            for record in records:
                if record.run_id == run.id and record.state is StepState.RUNNING:
                    record.state, record.finished_at = StepState.INTERRUPTED, now
            if given_back:
                self._release(run.id)
            found.append(copy.copy(run))
        return found

    def _release(self, run_id: str) -> None:
        for key, upstream in list(self._upstream_rows.items()):
            if upstream.run_id == run_id:
                self._upstream_rows[key] = dataclasses.replace(upstream, run_id=None)

    async def pending_upstreams(self) -> list[UpstreamRun]:
        await self._read()
        pending = [u for u in self._upstream_rows.values() if u.run_id is None]
        return sorted(pending, key=lambda u: (u.finished_at, u.upstream_run_id))

    async def take_upstreams(self, run: RunRecord, taken: Sequence[UpstreamRun]) -> bool:
        await self._read()
        rows = self._upstream_rows
        if any(u.key not in rows or rows[u.key].run_id is not None for u in taken):
            return False
        for upstream in taken:
            rows[upstream.key] = dataclasses.replace(rows[upstream.key], run_id=run.id)
        self._run_rows[run.id] = _copied(run)
        return True

    async def discard_upstreams(self, upstreams: Sequence[UpstreamRun]) -> None:
        await self._read()
        for upstream in upstreams:
            kept = self._upstream_rows.get(upstream.key)
            if kept is not None and kept.run_id is None:
                del self._upstream_rows[upstream.key]

    async def run_links(self, run_id: str) -> tuple[list[UpstreamRun], list[UpstreamRun]]:
        await self._read()
        rows = self._upstream_rows.values()
        upstream = sorted((u for u in rows if u.run_id == run_id), key=lambda u: u.finished_at)
        downstream = sorted((u for u in rows if u.upstream_run_id == run_id), key=lambda u: u.task_id)
        return upstream, downstream

    async def scheduled_runs(self, fires: Sequence[tuple[str, float]]) -> set[tuple[str, float]]:
        await self.flush()
        wanted = set(fires)
        found = ((r.task_id, r.scheduled_at) for r in self._run_rows.values() if r.scheduled_at is not None)
        return {fire for fire in found if fire in wanted}

    async def ping(self) -> bool:
        return self._open

    async def get_run(self, run_id: str) -> RunRecord | None:
        await self._read()
        run = self._run_rows.get(run_id)
        return copy.copy(run) if run is not None else None

    async def list_runs(self, query: RunQuery) -> tuple[list[RunRecord], int]:
        await self._read(query.fresh)
        needle = query.text.lower() if query.text else None
        matching = [
            run
            for run in self._run_rows.values()
            if (not query.task_ids or run.task_id in query.task_ids)
            and (not query.states or run.state in query.states)
            and (not query.triggers or run.trigger in query.triggers)
            and (query.since is None or run.queued_at >= query.since)
            and (query.until is None or run.queued_at < query.until)
            and (needle is None or needle in _searched_text(run) or run.task_id in query.text_task_ids)
        ]
        # ties: by the queued time, then the run id, in the same direction
        matching.sort(key=lambda run: (_sort_value(run, query.sort), run.queued_at, run.id), reverse=query.descending)
        page = matching[query.offset : query.offset + query.limit]
        return [copy.copy(run) for run in page], len(matching)

    async def attempts(self, run_id: str) -> list[AttemptRecord]:
        await self._read()
        rows = [a for (rid, _), a in self._attempt_rows.items() if rid == run_id]
        return [copy.copy(a) for a in sorted(rows, key=lambda a: a.number)]

    async def steps(self, run_id: str) -> list[StepRecord]:
        await self._read()
        rows = [s for (rid, _, _), s in self._step_rows.items() if rid == run_id]
        return [copy.copy(s) for s in sorted(rows, key=lambda s: (s.attempt, s.index))]

    async def run_log(self, run_id: str, after_seq: int = 0, limit: int = LOG_PAGE) -> list[LogLine]:
        await self._read()
        lines = self._log_rows.get(run_id, {})
        return [lines[seq] for seq in sorted(lines) if seq > after_seq][:limit]

    async def transitions(self, run_id: str) -> list[Transition]:
        await self._read()
        rows = self._transition_rows.get(run_id, {})
        return [rows[seq] for seq in sorted(rows)]

    async def fires(self, task_id: str, limit: int = 50) -> list[Fire]:
        await self._read(fresh=False)
        rows = [f for f in self._fire_rows.values() if f.task_id == task_id]
        return sorted(rows, key=lambda f: f.instant, reverse=True)[:limit]

    async def last_runs(self) -> dict[str, RunRecord]:
        await self._read()
        latest: dict[str, RunRecord] = {}
        for run in self._run_rows.values():
            best = latest.get(run.task_id)
            if best is None or run.queued_at >= best.queued_at:
                latest[run.task_id] = run
        return {task_id: copy.copy(run) for task_id, run in latest.items()}

    async def latest_runs(self, task_ids: Sequence[str]) -> tuple[dict[str, RunRecord], dict[str, list[str]]]:
        await self._read(fresh=False)
        wanted = set(task_ids)
        latest: dict[str, RunRecord] = {}
        active: dict[str, list[str]] = {}
        for run in self._run_rows.values():
            if run.task_id not in wanted:
                continue
            best = latest.get(run.task_id)
            if best is None or (run.queued_at, run.id) > (best.queued_at, best.id):
                latest[run.task_id] = run
            if run.state in ACTIVE_STATES:
                active.setdefault(run.task_id, []).append(str(run.state))
        return {task_id: copy.copy(run) for task_id, run in latest.items()}, active

    async def last_successes(self) -> dict[str, float]:
        await self._read()
        found: dict[str, float] = {}
        for run in self._run_rows.values():
            if run.state is RunState.COMPLETED and run.finished_at is not None:
                found[run.task_id] = max(run.finished_at, found.get(run.task_id, run.finished_at))
        return found

    async def task_stats(self, task_id: str) -> dict[str, Any]:
        await self._read(fresh=False)
        runs = [run for run in self._run_rows.values() if run.task_id == task_id]
        finished = sorted((r for r in runs if r.state not in ACTIVE_STATES), key=lambda r: r.queued_at, reverse=True)
        return run_stats(
            len(runs),
            [
                (str(r.state), None if r.started_at is None or r.finished_at is None else r.finished_at - r.started_at)
                for r in finished[:STATS_WINDOW]
            ],
        )

    async def run_counts(self, since: float, bucket_s: int) -> list[tuple[int, str, int]]:
        await self._read(fresh=False)
        counted = collections.Counter(
            (int(run.finished_at // bucket_s), str(run.state))
            for run in self._run_rows.values()
            if run.state not in ACTIVE_STATES and run.finished_at is not None and run.finished_at >= since
        )
        return [(bucket, state, count) for (bucket, state), count in counted.items()]

    async def audit(self, query: AuditQuery) -> tuple[list[AuditEntry], int]:
        await self._read()
        found = [
            entry
            for entry in self._audit_rows
            if (not query.actions or entry.action in query.actions)
            and (query.actor is None or entry.actor == query.actor)
            and (query.since is None or entry.at >= query.since)
            and (query.until is None or entry.at < query.until)
        ]
        # Newest first; entries at the same instant, the one written last first (as by id in SQL).
        ordered = [entry for _, entry in sorted(enumerate(found), key=lambda pair: (pair[1].at, pair[0]), reverse=True)]
        return ordered[query.offset : query.offset + query.limit], len(found)

    async def tombstones(self) -> dict[str, str]:
        await self._read()
        return dict(self._tombstone_rows)

    async def alert_states(self) -> dict[str, AlertState]:
        self._require()
        return dict(self._alert_rows)

    async def alert_state(self, task_id: str) -> AlertState | None:
        self._require()
        return self._alert_rows.get(task_id)

    async def swap_alert_state(self, state: AlertState, version: int) -> bool:
        self._require()
        held = self._alert_rows.get(state.task_id)
        if (held.version if held is not None else 0) != version:
            return False
        self._alert_rows[state.task_id] = state
        return True

    async def last_fires(self) -> dict[str, float]:
        await self._read()
        return dict(self._last_fire_rows)

    async def prune(self, now: float, days: int, max_runs_per_task: int) -> int:
        await self._read()
        doomed = self._prune_older(now - days * 86400) if days > 0 else set()
        if max_runs_per_task > 0:
            by_task: dict[str, list[RunRecord]] = defaultdict(list)
            for run in self._run_rows.values():
                by_task[run.task_id].append(run)
            for runs in by_task.values():
                runs.sort(key=lambda r: r.queued_at, reverse=True)
                doomed.update(r.id for r in runs[max_runs_per_task:] if r.state not in ACTIVE_STATES)
        for run_id in doomed:
            del self._run_rows[run_id]
            self._log_rows.pop(run_id, None)
            self._transition_rows.pop(run_id, None)
        self._attempt_rows = {k: v for k, v in self._attempt_rows.items() if k[0] not in doomed}
        self._step_rows = {k: v for k, v in self._step_rows.items() if k[0] not in doomed}
        self._prune_upstreams(lambda u: u.run_id in doomed)
        return len(doomed)

    def _prune_older(self, cutoff: float) -> set[str]:
        """Drop the rows older than `cutoff` but runs; answer the finished runs that are."""
        self._fire_rows = {k: f for k, f in self._fire_rows.items() if f.recorded_at >= cutoff}
        self._prune_upstreams(lambda u: u.run_id is None and u.finished_at < cutoff)
        self._audit_rows = [entry for entry in self._audit_rows if entry.at >= cutoff]
        return {
            run.id
            for run in self._run_rows.values()
            if run.state not in ACTIVE_STATES and run.finished_at is not None and run.finished_at < cutoff
        }

    def _prune_upstreams(self, doomed: Callable[[UpstreamRun], bool]) -> None:
        self._upstream_rows = {k: u for k, u in self._upstream_rows.items() if not doomed(u)}


def _copied(run: RunRecord) -> RunRecord:
    """A copy of the live record, as a database keeps it (its usage too: it changes as the run goes)."""
    kept = copy.copy(run)
    if run.usage is not None:
        kept.usage = dataclasses.replace(run.usage, unknown=list(run.usage.unknown))
    return kept


def _searched_text(run: RunRecord) -> str:
    """What a text search looks in, as the SQLite store indexes it: the error and the params."""
    return f"{run.error or ''} {json.dumps(run.params, default=str)}".lower()


def _sort_value(run: RunRecord, sort: str) -> tuple[int, float | str]:
    """A run's sort key; a missing value sorts before every value (as NULL does in SQLite)."""
    value: float | str | None
    if sort == "duration":
        value = run.duration
    elif sort in ("cpu_s", "peak_memory"):
        usage = run.usage
        value = None if usage is None else usage.cpu_s if sort == "cpu_s" else usage.peak_memory_bytes
    else:
        value = getattr(run, sort)
    return (0, 0.0) if value is None else (1, str(value) if sort in ("state", "task_id") else value)

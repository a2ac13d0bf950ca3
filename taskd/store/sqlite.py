"""The SQLite store: aiosqlite, WAL, versioned schema, one writer task committing in batches."""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import aiosqlite
import structlog

from taskd.errors import TaskdError
from taskd.models import (
    AttemptRecord,
    RunRecord,
    RunState,
    StepRecord,
    StepState,
    Trigger,
)
from taskd.store import Fire, LogLine, RunQuery, Store, Transition

log = structlog.get_logger("taskd.store")

# Each entry moves the schema from version i to i + 1; never edit one that has shipped.
MIGRATIONS: list[str] = [
    """
    CREATE TABLE runs (
        id TEXT PRIMARY KEY,
        task_id TEXT NOT NULL,
        trigger TEXT NOT NULL,
        state TEXT NOT NULL,
        scheduled_at REAL,
        queued_at REAL NOT NULL,
        started_at REAL,
        finished_at REAL,
        attempts INTEGER NOT NULL DEFAULT 0,
        error TEXT,
        params TEXT NOT NULL DEFAULT '{}',
        priority INTEGER NOT NULL DEFAULT 0
    );
    CREATE INDEX runs_by_task ON runs (task_id, queued_at);
    CREATE INDEX runs_by_queued ON runs (queued_at);
    CREATE INDEX runs_active ON runs (state) WHERE state IN ('queued', 'running', 'retrying');
    CREATE TABLE attempts (
        run_id TEXT NOT NULL,
        number INTEGER NOT NULL,
        state TEXT NOT NULL,
        started_at REAL NOT NULL,
        finished_at REAL,
        error TEXT,
        PRIMARY KEY (run_id, number)
    ) WITHOUT ROWID;
    CREATE TABLE steps (
        run_id TEXT NOT NULL,
        attempt INTEGER NOT NULL,
        idx INTEGER NOT NULL,
        type TEXT NOT NULL,
        state TEXT NOT NULL,
        started_at REAL NOT NULL,
        finished_at REAL,
        error TEXT,
        PRIMARY KEY (run_id, attempt, idx)
    ) WITHOUT ROWID;
    CREATE TABLE run_logs (
        run_id TEXT NOT NULL,
        seq INTEGER NOT NULL,
        ts REAL NOT NULL,
        stream TEXT NOT NULL,
        line TEXT NOT NULL,
        PRIMARY KEY (run_id, seq)
    ) WITHOUT ROWID;
    CREATE TABLE fires (
        id INTEGER PRIMARY KEY,
        task_id TEXT NOT NULL,
        instant REAL NOT NULL,
        kind TEXT NOT NULL,
        reason TEXT NOT NULL,
        recorded_at REAL NOT NULL
    );
    CREATE INDEX fires_by_task ON fires (task_id, instant);
    CREATE TABLE tombstones (
        task_id TEXT PRIMARY KEY,
        definition_hash TEXT NOT NULL,
        deleted_at REAL NOT NULL
    );
    CREATE TABLE task_state (
        task_id TEXT PRIMARY KEY,
        last_fire REAL NOT NULL
    );
    """,
    """
    CREATE TABLE run_transitions (
        run_id TEXT NOT NULL,
        seq INTEGER NOT NULL,
        at REAL NOT NULL,
        state TEXT NOT NULL,
        detail TEXT,
        PRIMARY KEY (run_id, seq)
    ) WITHOUT ROWID;
    INSERT INTO run_transitions (run_id, seq, at, state, detail)
        SELECT id, 1, queued_at, 'queued', NULL FROM runs;
    INSERT INTO run_transitions (run_id, seq, at, state, detail)
        SELECT id, 2, finished_at, state, error FROM runs WHERE finished_at IS NOT NULL;
    """,
]

SQL = {
    "save_run": """
        INSERT INTO runs (id, task_id, trigger, state, scheduled_at, queued_at, started_at, finished_at,
                          attempts, error, params, priority)
        VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
        ON CONFLICT (id) DO UPDATE SET state = excluded.state, started_at = excluded.started_at,
            finished_at = excluded.finished_at, attempts = excluded.attempts, error = excluded.error
    """,
    "save_attempt": """
        INSERT OR REPLACE INTO attempts (run_id, number, state, started_at, finished_at, error)
        VALUES (?, ?, ?, ?, ?, ?)
    """,
    "save_step": """
        INSERT OR REPLACE INTO steps (run_id, attempt, idx, type, state, started_at, finished_at, error)
        VALUES (?, ?, ?, ?, ?, ?, ?, ?)
    """,
    "append_log": "INSERT OR IGNORE INTO run_logs (run_id, seq, ts, stream, line) VALUES (?, ?, ?, ?, ?)",
    "record_transition": """
        INSERT OR IGNORE INTO run_transitions (run_id, seq, at, state, detail) VALUES (?, ?, ?, ?, ?)
    """,
    "transitions": "SELECT * FROM run_transitions WHERE run_id = ? ORDER BY seq",
    "delete_transitions": "DELETE FROM run_transitions WHERE run_id = ?",
    "record_fire": "INSERT INTO fires (task_id, instant, kind, reason, recorded_at) VALUES (?, ?, ?, ?, ?)",
    "set_last_fire": """
        INSERT INTO task_state (task_id, last_fire) VALUES (?, ?)
        ON CONFLICT (task_id) DO UPDATE SET last_fire = max(last_fire, excluded.last_fire)
    """,
    "add_tombstone": "INSERT OR REPLACE INTO tombstones (task_id, definition_hash, deleted_at) VALUES (?, ?, ?)",
    "remove_tombstone": "DELETE FROM tombstones WHERE task_id = ?",
    "active_runs": "SELECT * FROM runs WHERE state IN ('queued', 'running', 'retrying')",
    "interrupt_run": "UPDATE runs SET state = 'interrupted', finished_at = ?, error = ? WHERE id = ?",
    "interrupt_attempts": """
        UPDATE attempts SET state = 'interrupted', finished_at = ? WHERE run_id = ? AND state = 'running'
    """,
    "interrupt_steps": "UPDATE steps SET state = 'interrupted', finished_at = ? WHERE run_id = ? AND state = 'running'",
    "get_run": "SELECT * FROM runs WHERE id = ?",
    "attempts": "SELECT * FROM attempts WHERE run_id = ? ORDER BY number",
    "steps": "SELECT * FROM steps WHERE run_id = ? ORDER BY attempt, idx",
    "run_log": "SELECT * FROM run_logs WHERE run_id = ? AND seq > ? ORDER BY seq",
    "fires": "SELECT * FROM fires WHERE task_id = ? ORDER BY instant DESC LIMIT ?",
    "last_runs": """
        SELECT r.* FROM runs r
        JOIN (SELECT task_id, max(queued_at) AS latest FROM runs GROUP BY task_id) m
          ON r.task_id = m.task_id AND r.queued_at = m.latest
    """,
    "task_durations": """
        SELECT state, finished_at - started_at AS duration FROM runs
        WHERE task_id = ? AND state IN ('completed', 'failed', 'stopped', 'interrupted')
        ORDER BY queued_at DESC LIMIT 1000
    """,
    "task_run_count": "SELECT count(*) FROM runs WHERE task_id = ?",
    "tombstones": "SELECT task_id, definition_hash FROM tombstones",
    "last_fires": "SELECT task_id, last_fire FROM task_state",
    "old_runs": """
        SELECT id FROM runs WHERE finished_at IS NOT NULL AND finished_at < ?
        AND state NOT IN ('queued', 'running', 'retrying')
    """,
    "excess_runs": """
        SELECT id FROM (
            SELECT id, state, row_number() OVER (PARTITION BY task_id ORDER BY queued_at DESC) AS n FROM runs
        ) WHERE n > ? AND state NOT IN ('queued', 'running', 'retrying')
    """,
    "delete_runs": "DELETE FROM runs WHERE id = ?",
    "delete_attempts": "DELETE FROM attempts WHERE run_id = ?",
    "delete_steps": "DELETE FROM steps WHERE run_id = ?",
    "delete_logs": "DELETE FROM run_logs WHERE run_id = ?",
    "delete_fires": "DELETE FROM fires WHERE recorded_at < ?",
}


class StoreError(TaskdError):
    """The store cannot be opened or used."""


class SQLiteStore(Store):
    """Run history in one SQLite file. Writes are staged and committed by a single writer task."""

    def __init__(self, path: Path | str, batch_window_s: float = 0.025) -> None:
        self.path = Path(path)
        self._db: aiosqlite.Connection | None = None
        self._reader: aiosqlite.Connection | None = None
        # After the first write of a burst the writer waits this long for more, so a burst of runs
        # shares one commit and the commit's work does not interleave with the burst. A flush (a
        # read, shutdown) cuts the wait short. kill -9 loses at most this window of writes.
        self._batch_window_s = batch_window_s
        self._urgent = asyncio.Event()
        self._runs: dict[str, RunRecord] = {}
        self._attempts: dict[tuple[str, int], AttemptRecord] = {}
        self._steps: dict[tuple[str, int, int], StepRecord] = {}
        self._logs: list[LogLine] = []
        self._transitions: list[Transition] = []
        self._fires: list[tuple[Any, ...]] = []
        self._last_fires: dict[str, float] = {}
        self._ordered: list[tuple[str, tuple[Any, ...]]] = []
        self._barriers: list[asyncio.Future[None]] = []
        self._wakeup = asyncio.Event()
        self._closing = False
        self._committing = False
        self._writer: asyncio.Task[None] | None = None
        self._lock = asyncio.Lock()
        self.commits = 0

    # -- lifecycle -------------------------------------------------------------------------------
    async def open(self) -> None:
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._db = await aiosqlite.connect(self.path, isolation_level=None)
        except (OSError, aiosqlite.Error) as exc:
            raise StoreError(f"cannot open the store at {self.path}: {exc}") from exc
        db = self._db
        db.row_factory = aiosqlite.Row
        try:
            mode = await (await db.execute("PRAGMA journal_mode = WAL")).fetchone()
            if mode is None or str(mode[0]).lower() != "wal":
                log.warning("store_not_in_wal_mode", path=str(self.path), mode=mode and mode[0])
            await db.execute("PRAGMA synchronous = NORMAL")
            await db.execute("PRAGMA busy_timeout = 5000")
            await self._migrate()
        except (aiosqlite.Error, StoreError) as exc:
            await db.close()
            self._db = None
            if isinstance(exc, StoreError):
                raise
            raise StoreError(f"cannot prepare the store at {self.path}: {exc}") from exc
        try:
            # Queries get their own connection: in WAL mode a reader never waits for the writer.
            self._reader = await aiosqlite.connect(self.path, isolation_level=None)
            self._reader.row_factory = aiosqlite.Row
            await self._reader.execute("PRAGMA query_only = 1")
        except aiosqlite.Error as exc:
            await db.close()
            self._db = None
            raise StoreError(f"cannot open the store at {self.path} for reading: {exc}") from exc
        self._writer = asyncio.create_task(self._write_loop(), name="taskd-store-writer")

    async def _migrate(self) -> None:
        assert self._db is not None
        row = await (await self._db.execute("PRAGMA user_version")).fetchone()
        version = int(row[0]) if row else 0
        if version > len(MIGRATIONS):
            raise StoreError(
                f"the store at {self.path} has schema version {version}, newer than this taskd "
                f"understands ({len(MIGRATIONS)}); upgrade taskd or use another store.path"
            )
        for target, script in enumerate(MIGRATIONS[version:], start=version + 1):
            await self._db.executescript(f"BEGIN;\n{script}\nPRAGMA user_version = {target};\nCOMMIT;")
            log.info("store_migrated", path=str(self.path), version=target)

    async def close(self) -> None:
        if self._db is None:
            return
        self._closing = True
        self._wakeup.set()
        self._urgent.set()
        if self._writer is not None:
            with contextlib.suppress(asyncio.CancelledError):
                await self._writer
        await self._commit_pending()
        if self._reader is not None:
            await self._reader.close()
            self._reader = None
        await self._db.close()
        self._db = None

    async def recover_interrupted(self, now: float) -> list[RunRecord]:
        db = self._require()
        rows = await (await db.execute(SQL["active_runs"])).fetchall()
        runs = [_run_from_row(r) for r in rows]
        async with self._lock:
            await db.execute("BEGIN")
            for run in runs:
                reason = f"taskd exited while this run was {run.state}; marked interrupted at start-up"
                run.error = f"{run.error}; {reason}" if run.error else reason
                run.state = RunState.INTERRUPTED
                run.finished_at = now
                await db.execute(SQL["interrupt_run"], (now, run.error, run.id))
                await db.execute(
                    "INSERT INTO run_transitions (run_id, seq, at, state, detail) "
                    "SELECT ?, coalesce(max(seq), 0) + 1, ?, 'interrupted', ? FROM run_transitions WHERE run_id = ?",
                    (run.id, now, reason, run.id),
                )
                await db.execute(SQL["interrupt_attempts"], (now, run.id))
                await db.execute(SQL["interrupt_steps"], (now, run.id))
            await db.execute("COMMIT")
        return runs

    # -- staged writes ---------------------------------------------------------------------------
    def save_run(self, run: RunRecord) -> None:
        self._runs[run.id] = run
        self._wakeup.set()

    def save_attempt(self, attempt: AttemptRecord) -> None:
        self._attempts[(attempt.run_id, attempt.number)] = attempt
        self._wakeup.set()

    def save_step(self, step: StepRecord) -> None:
        self._steps[(step.run_id, step.attempt, step.index)] = step
        self._wakeup.set()

    def append_log(self, line: LogLine) -> None:
        self._logs.append(line)
        self._wakeup.set()

    def record_transition(self, transition: Transition) -> None:
        self._transitions.append(transition)
        self._wakeup.set()

    def record_fire(self, fire: Fire) -> None:
        self._fires.append((fire.task_id, fire.instant, fire.kind, fire.reason, fire.recorded_at))
        self._wakeup.set()

    def set_last_fire(self, task_id: str, instant: float) -> None:
        if instant > self._last_fires.get(task_id, -math.inf):
            self._last_fires[task_id] = instant
        self._wakeup.set()

    def add_tombstone(self, task_id: str, definition_hash: str, deleted_at: float) -> None:
        self._stage("add_tombstone", (task_id, definition_hash, deleted_at))

    def remove_tombstone(self, task_id: str) -> None:
        self._stage("remove_tombstone", (task_id,))

    def _stage(self, name: str, params: tuple[Any, ...]) -> None:
        self._ordered.append((name, params))
        self._wakeup.set()

    async def flush(self) -> None:
        if self._db is None:
            return
        if not self._pending() and not self._barriers and not self._committing:
            return
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._barriers.append(future)
        self._wakeup.set()
        self._urgent.set()
        await future

    def _pending(self) -> bool:
        return bool(
            self._runs
            or self._attempts
            or self._steps
            or self._logs
            or self._transitions
            or self._fires
            or self._last_fires
            or self._ordered
        )

    async def _write_loop(self) -> None:
        while True:
            await self._wakeup.wait()
            if not self._barriers and not self._closing and self._batch_window_s > 0:
                self._urgent.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._urgent.wait(), self._batch_window_s)
            self._wakeup.clear()
            try:
                await self._commit_pending()
            except Exception:  # keep the daemon alive; the next batch retries what it can
                log.exception("store_write_failed", path=str(self.path))
                await asyncio.sleep(0.5)
            if self._closing:
                return

    async def _commit_pending(self) -> None:
        """Write everything staged so far in one transaction, then release waiting flushes."""
        db = self._db
        if db is None:
            return
        barriers, self._barriers = self._barriers, []
        if not self._pending():
            for barrier in barriers:
                if not barrier.done():
                    barrier.set_result(None)
            return
        runs, self._runs = self._runs, {}
        attempts, self._attempts = self._attempts, {}
        steps, self._steps = self._steps, {}
        logs, self._logs = self._logs, []
        transitions, self._transitions = self._transitions, []
        fires, self._fires = self._fires, []
        last_fires, self._last_fires = self._last_fires, {}
        ordered, self._ordered = self._ordered, []
        batches: list[tuple[str, Sequence[tuple[Any, ...]]]] = [
            ("save_run", [_run_params(r) for r in runs.values()]),
            ("save_attempt", [_attempt_params(a) for a in attempts.values()]),
            ("save_step", [_step_params(s) for s in steps.values()]),
            ("append_log", logs),
            ("record_transition", transitions),
            ("record_fire", fires),
            ("set_last_fire", list(last_fires.items())),
        ]
        self._committing = True
        async with self._lock:
            try:
                await db.execute("BEGIN")
                for name, rows in batches:
                    if rows:
                        await db.executemany(SQL[name], rows)
                for name, params in ordered:
                    await db.execute(SQL[name], params)
                await db.execute("COMMIT")
                self.commits += 1
            except BaseException:
                with contextlib.suppress(Exception):
                    await db.execute("ROLLBACK")
                for barrier in barriers:
                    if not barrier.done():
                        barrier.set_exception(StoreError("the store could not commit; see the daemon log"))
                raise
            finally:
                self._committing = False
        for barrier in barriers:
            if not barrier.done():
                barrier.set_result(None)

    # -- reads -----------------------------------------------------------------------------------
    def _require(self) -> aiosqlite.Connection:
        if self._db is None:
            raise StoreError("the store is not open")
        return self._db

    def _read(self) -> aiosqlite.Connection:
        if self._reader is None:
            raise StoreError("the store is not open")
        return self._reader

    async def _fetch(self, name: str, params: tuple[Any, ...] = (), fresh: bool = True) -> list[aiosqlite.Row]:
        """Run a named query; `fresh` first waits for what was written before (read-your-writes)."""
        if fresh:
            await self.flush()
        async with self._read().execute(SQL[name], params) as cursor:
            return list(await cursor.fetchall())

    async def ping(self) -> bool:
        try:
            db = self._require()
            async with db.execute("SELECT 1") as cursor:
                return (await cursor.fetchone()) is not None
        except (StoreError, aiosqlite.Error, ValueError):
            return False

    async def get_run(self, run_id: str) -> RunRecord | None:
        rows = await self._fetch("get_run", (run_id,))
        return _run_from_row(rows[0]) if rows else None

    async def list_runs(self, query: RunQuery) -> tuple[list[RunRecord], int]:
        if query.fresh:
            await self.flush()
        db = self._read()
        where, params = [], []
        for column, value in (("task_id", query.task_id), ("state", query.state), ("trigger", query.trigger)):
            if value is not None:
                where.append(f"{column} = ?")
                params.append(value)
        if query.since is not None:
            where.append("queued_at >= ?")
            params.append(query.since)
        if query.until is not None:
            where.append("queued_at < ?")
            params.append(query.until)
        clause = f"WHERE {' AND '.join(where)}" if where else ""
        async with db.execute(f"SELECT count(*) FROM runs {clause}", params) as cursor:
            total = (await cursor.fetchone())[0]  # type: ignore[index]
        sql = f"SELECT * FROM runs {clause} ORDER BY queued_at DESC, id DESC LIMIT ? OFFSET ?"
        async with db.execute(sql, [*params, query.limit, query.offset]) as cursor:
            rows = await cursor.fetchall()
        return [_run_from_row(r) for r in rows], int(total)

    async def attempts(self, run_id: str) -> list[AttemptRecord]:
        return [
            AttemptRecord(
                r["run_id"], r["number"], r["started_at"], StepState(r["state"]), r["finished_at"], r["error"]
            )
            for r in await self._fetch("attempts", (run_id,))
        ]

    async def steps(self, run_id: str) -> list[StepRecord]:
        return [
            StepRecord(
                r["run_id"],
                r["attempt"],
                r["idx"],
                r["type"],
                r["started_at"],
                StepState(r["state"]),
                r["finished_at"],
                r["error"],
            )
            for r in await self._fetch("steps", (run_id,))
        ]

    async def run_log(self, run_id: str, after_seq: int = 0) -> list[LogLine]:
        return [
            LogLine(r["run_id"], r["seq"], r["ts"], r["stream"], r["line"])
            for r in await self._fetch("run_log", (run_id, after_seq))
        ]

    async def transitions(self, run_id: str) -> list[Transition]:
        return [
            Transition(r["run_id"], r["seq"], r["at"], r["state"], r["detail"])
            for r in await self._fetch("transitions", (run_id,))
        ]

    async def fires(self, task_id: str, limit: int = 50) -> list[Fire]:
        return [
            Fire(r["task_id"], r["instant"], r["kind"], r["reason"], r["recorded_at"])
            for r in await self._fetch("fires", (task_id, limit), fresh=False)
        ]

    async def last_runs(self) -> dict[str, RunRecord]:
        return {run.task_id: run for run in map(_run_from_row, await self._fetch("last_runs"))}

    async def task_stats(self, task_id: str) -> dict[str, Any]:
        total = (await self._fetch("task_run_count", (task_id,), fresh=False))[0][0]
        rows = await self._fetch("task_durations", (task_id,), fresh=False)
        durations = sorted(r["duration"] for r in rows if r["duration"] is not None)
        finished = len(rows)
        completed = sum(1 for r in rows if r["state"] == RunState.COMPLETED)
        return {
            "runs": int(total),
            "finished_considered": finished,
            "success_rate": round(completed / finished, 4) if finished else None,
            "mean_duration": round(sum(durations) / len(durations), 3) if durations else None,
            "p95_duration": round(durations[max(0, math.ceil(0.95 * len(durations)) - 1)], 3) if durations else None,
        }

    async def tombstones(self) -> dict[str, str]:
        return {r["task_id"]: r["definition_hash"] for r in await self._fetch("tombstones")}

    async def last_fires(self) -> dict[str, float]:
        return {r["task_id"]: r["last_fire"] for r in await self._fetch("last_fires")}

    async def prune(self, now: float, days: int, max_runs_per_task: int) -> int:
        await self.flush()
        db = self._require()
        doomed: set[str] = set()
        if days > 0:
            async with db.execute(SQL["old_runs"], (now - days * 86400,)) as cursor:
                doomed.update(r[0] for r in await cursor.fetchall())
        if max_runs_per_task > 0:
            async with db.execute(SQL["excess_runs"], (max_runs_per_task,)) as cursor:
                doomed.update(r[0] for r in await cursor.fetchall())
        async with self._lock:
            await db.execute("BEGIN")
            ids = [(run_id,) for run_id in doomed]
            for name in ("delete_runs", "delete_attempts", "delete_steps", "delete_logs", "delete_transitions"):
                await db.executemany(SQL[name], ids)
            if days > 0:
                await db.execute(SQL["delete_fires"], (now - days * 86400,))
            await db.execute("COMMIT")
        return len(doomed)


def _run_params(run: RunRecord) -> tuple[Any, ...]:
    return (
        run.id,
        run.task_id,
        str(run.trigger),
        str(run.state),
        run.scheduled_at,
        run.queued_at,
        run.started_at,
        run.finished_at,
        run.attempts,
        run.error,
        json.dumps(run.params, default=str),
        run.priority,
    )


def _attempt_params(a: AttemptRecord) -> tuple[Any, ...]:
    return (a.run_id, a.number, str(a.state), a.started_at, a.finished_at, a.error)


def _step_params(s: StepRecord) -> tuple[Any, ...]:
    return (s.run_id, s.attempt, s.index, s.type, str(s.state), s.started_at, s.finished_at, s.error)


def _run_from_row(row: aiosqlite.Row) -> RunRecord:
    return RunRecord(
        id=row["id"],
        task_id=row["task_id"],
        trigger=Trigger(row["trigger"]),
        queued_at=row["queued_at"],
        state=RunState(row["state"]),
        scheduled_at=row["scheduled_at"],
        started_at=row["started_at"],
        finished_at=row["finished_at"],
        attempts=row["attempts"],
        error=row["error"],
        params=json.loads(row["params"] or "{}"),
        priority=row["priority"],
    )

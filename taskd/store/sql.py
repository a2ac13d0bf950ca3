"""The SQL layer shared by the SQLite and PostgreSQL stores: the statements both speak, commit
assembly, readers, recovery, retention and the migration loop. A dialect brings its connections,
its DDL and migrations, the statements it words differently, and its own run search.

Statements are written once with `?` placeholders; PostgreSQL numbers them (`numbered`).
"""

from __future__ import annotations

import asyncio
import contextlib
import re
from abc import abstractmethod
from collections.abc import Callable, Iterable, Mapping, Sequence
from importlib.resources import files
from typing import Any, ClassVar, Protocol, TypeVar

import structlog

from taskd.models import AlertState, AttemptRecord, RunRecord, RunState, StepRecord, UpstreamRun
from taskd.store.base import (
    EXACT_UP_TO,
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
from taskd.store.rows import (
    Row,
    alert_state_from_row,
    attempt_from_row,
    attempt_params,
    audit_from_row,
    fire_from_row,
    log_from_row,
    run_from_row,
    run_params,
    step_from_row,
    step_params,
    transition_from_row,
    upstream_from_row,
    upstream_params,
)

log = structlog.get_logger("taskd.store")

ACTIVE = "state IN ('queued', 'running', 'retrying')"
FINISHED = "state IN ('completed', 'failed', 'stopped', 'interrupted')"

STATEMENTS: dict[str, str] = {
    "save_run": """
        INSERT INTO runs (id, task_id, trigger, state, scheduled_at, queued_at, started_at, finished_at,
                          attempts, error, params, priority, node, cpu_s, peak_memory_bytes, processes,
                          usage_source, usage_unknown, peak_memory_at_most)
        VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
        ON CONFLICT (id) DO UPDATE SET state = excluded.state, started_at = excluded.started_at,
            finished_at = excluded.finished_at, attempts = excluded.attempts, error = excluded.error,
            cpu_s = excluded.cpu_s, peak_memory_bytes = excluded.peak_memory_bytes, processes = excluded.processes,
            usage_source = excluded.usage_source, usage_unknown = excluded.usage_unknown,
            peak_memory_at_most = excluded.peak_memory_at_most
        WHERE runs.state <> 'interrupted'
    """,
    "save_attempt": """
        INSERT INTO attempts (run_id, number, state, started_at, finished_at, error) VALUES (?, ?, ?, ?, ?, ?)
        ON CONFLICT (run_id, number) DO UPDATE SET state = excluded.state, started_at = excluded.started_at,
            finished_at = excluded.finished_at, error = excluded.error
    """,
    "save_step": """
        INSERT INTO steps (run_id, attempt, idx, type, state, started_at, finished_at, error)
        VALUES (?, ?, ?, ?, ?, ?, ?, ?)
        ON CONFLICT (run_id, attempt, idx) DO UPDATE SET type = excluded.type, state = excluded.state,
            started_at = excluded.started_at, finished_at = excluded.finished_at, error = excluded.error
    """,
    "append_log": "INSERT INTO run_logs (run_id, seq, ts, stream, line) VALUES (?, ?, ?, ?, ?) ON CONFLICT DO NOTHING",
    "record_transition": """
        INSERT INTO run_transitions (run_id, seq, at, state, detail) VALUES (?, ?, ?, ?, ?) ON CONFLICT DO NOTHING
    """,
    "record_fire": """
        INSERT INTO fires (task_id, instant, kind, reason, recorded_at, refusals, last_instant, summary_key)
        VALUES (?, ?, ?, ?, ?, ?, ?, ?)
        ON CONFLICT (summary_key) DO UPDATE SET reason = excluded.reason, recorded_at = excluded.recorded_at,
            refusals = excluded.refusals, last_instant = excluded.last_instant""",
    "set_last_fire": """
        INSERT INTO task_state (task_id, last_fire) VALUES (?, ?)
        ON CONFLICT (task_id) DO UPDATE SET last_fire = CASE
            WHEN excluded.last_fire > task_state.last_fire THEN excluded.last_fire ELSE task_state.last_fire END
    """,
    "add_tombstone": """
        INSERT INTO tombstones (task_id, definition_hash, deleted_at) VALUES (?, ?, ?)
        ON CONFLICT (task_id) DO UPDATE SET definition_hash = excluded.definition_hash, deleted_at = excluded.deleted_at
    """,
    "remove_tombstone": "DELETE FROM tombstones WHERE task_id = ?",
    "interrupt_run": "UPDATE runs SET state = 'interrupted', finished_at = ?, error = ? WHERE id = ?",
    "interrupt_attempts": """
        UPDATE attempts SET state = 'interrupted', finished_at = ? WHERE run_id = ? AND state = 'running'
    """,
    "interrupt_steps": "UPDATE steps SET state = 'interrupted', finished_at = ? WHERE run_id = ? AND state = 'running'",
    "interrupt_transition": """
        INSERT INTO run_transitions (run_id, seq, at, state, detail)
        SELECT ?, coalesce(max(seq), 0) + 1, ?, 'interrupted', ? FROM run_transitions WHERE run_id = ?
    """,
    "get_run": "SELECT * FROM runs WHERE id = ?",
    "attempts": "SELECT * FROM attempts WHERE run_id = ? ORDER BY number",
    "steps": "SELECT * FROM steps WHERE run_id = ? ORDER BY attempt, idx",
    "run_log": "SELECT * FROM run_logs WHERE run_id = ? AND seq > ? ORDER BY seq LIMIT ?",
    "transitions": "SELECT * FROM run_transitions WHERE run_id = ? ORDER BY seq",
    "fires": "SELECT * FROM fires WHERE task_id = ? ORDER BY instant DESC, id DESC LIMIT ?",
    "task_durations": f"""
        SELECT state, finished_at - started_at AS duration FROM runs WHERE task_id = ? AND {FINISHED}
        ORDER BY queued_at DESC LIMIT {STATS_WINDOW}
    """,
    "task_run_count": "SELECT count(*) FROM runs WHERE task_id = ?",
    "task_run_count_capped": "SELECT count(*) FROM (SELECT 1 FROM runs WHERE task_id = ? LIMIT ?) AS capped",
    "last_successes": "SELECT task_id, max(finished_at) AS at FROM runs WHERE state = 'completed' GROUP BY task_id",
    "tombstones": "SELECT task_id, definition_hash FROM tombstones",
    "last_fires": "SELECT task_id, last_fire FROM task_state",
    "active_states": f"SELECT task_id, state FROM runs WHERE {ACTIVE} AND {{}}",
    "scheduled_run": "SELECT 1 FROM runs WHERE task_id = ? AND scheduled_at = ? LIMIT 1",
    "old_runs": f"SELECT id FROM runs WHERE finished_at IS NOT NULL AND finished_at < ? AND NOT {ACTIVE}",
    "excess_runs": f"""
        SELECT id FROM (
            SELECT id, state, row_number() OVER (PARTITION BY task_id ORDER BY queued_at DESC) AS n FROM runs
        ) ranked WHERE n > ? AND NOT {ACTIVE}
    """,
    "delete_fires": "DELETE FROM fires WHERE recorded_at < ?",
    "save_upstream": """
        INSERT INTO run_upstreams (task_id, upstream_run_id, upstream_task_id, upstream_state, finished_at, context,
                                   run_id)
        VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT DO NOTHING
    """,
    "pending_upstreams": "SELECT * FROM run_upstreams WHERE run_id IS NULL ORDER BY finished_at, upstream_run_id",
    "take_upstream": """
        UPDATE run_upstreams SET run_id = ? WHERE task_id = ? AND upstream_run_id = ? AND run_id IS NULL
        RETURNING upstream_run_id
    """,
    "release_upstreams": "UPDATE run_upstreams SET run_id = NULL WHERE run_id = ?",
    "discard_upstream": "DELETE FROM run_upstreams WHERE task_id = ? AND upstream_run_id = ? AND run_id IS NULL",
    "upstreams_of_run": "SELECT * FROM run_upstreams WHERE run_id = ? ORDER BY finished_at",
    "downstreams_of_run": "SELECT * FROM run_upstreams WHERE upstream_run_id = ? ORDER BY task_id",
    "delete_upstreams": "DELETE FROM run_upstreams WHERE run_id IS NULL AND finished_at < ?",
    "record_audit": """
        INSERT INTO audit (at, action, actor, role, remote, target, status, detail) VALUES (?, ?, ?, ?, ?, ?, ?, ?)
    """,
    "delete_audit": "DELETE FROM audit WHERE at < ?",
    "alert_states": "SELECT * FROM alert_state",
    "alert_state": "SELECT * FROM alert_state WHERE task_id = ?",
    "insert_alert_state": """
        INSERT INTO alert_state (task_id, status, since, first_seen, failures, unreported, notified_at, overdue_at,
                                 version)
        VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (task_id) DO NOTHING RETURNING task_id
    """,
    "update_alert_state": """
        UPDATE alert_state SET status = ?, since = ?, first_seen = ?, failures = ?, unreported = ?, notified_at = ?,
            overdue_at = ?, version = ?
        WHERE task_id = ? AND version = ? RETURNING task_id
    """,
}
"""The statements every dialect speaks alike. A dialect adds `active_runs` (its lock, `{}` for the
condition) and `latest_runs` (the latest run of each task, `{}` for a task filter)."""

SORT_COLUMNS = {
    "queued_at": "queued_at",
    "started_at": "started_at",
    "finished_at": "finished_at",
    "duration": "(finished_at - started_at)",
    "state": "state",
    "task_id": "task_id",
    "cpu_s": "cpu_s",
    "peak_memory": "peak_memory_bytes",
}
"""What each sort key of run search orders by."""


RUN_TABLES = {
    "runs": "id",
    "attempts": "run_id",
    "steps": "run_id",
    "run_logs": "run_id",
    "run_transitions": "run_id",
    "run_upstreams": "run_id",
}
"""Where a run's rows are, by the column holding its id."""
PRUNE_CHUNK = 1000
"""Retention deletes runs this many at a time."""


ROWS_PER_TURN = 100
"""A commit turns at most this many records into rows per turn of the event loop."""

_Record = TypeVar("_Record")


async def _sliced(to_row: Callable[[_Record], Sequence[Any]], records: Iterable[_Record]) -> list[Sequence[Any]]:
    """`records` as rows, ROWS_PER_TURN at a time, letting the loop serve others in between: a
    burst's batch of thousands of runs does not hold the loop while it becomes rows."""
    rows: list[Sequence[Any]] = []
    for count, record in enumerate(records, start=1):
        rows.append(to_row(record))
        if count % ROWS_PER_TURN == 0:
            await asyncio.sleep(0)
    return rows


def migrations(dialect: str) -> list[str]:
    """The dialect's schema migrations in order: the scripts `migrations/<dialect>/NNNN.sql`."""
    folder = files("taskd.store") / "migrations" / dialect
    return [
        script.read_text() for script in sorted(folder.iterdir(), key=lambda f: f.name) if script.name.endswith(".sql")
    ]


def numbered(sql: str) -> str:
    """`?` placeholders as PostgreSQL's `$1`, `$2`, ... (no statement here has `?` in a literal)."""
    parts = sql.split("?")
    return parts[0] + "".join(f"${i}{part}" for i, part in enumerate(parts[1:], 1))


class Tx(Protocol):
    """A connection inside a transaction, with aiosqlite's calls (asyncpg's are adapted)."""

    async def execute(self, sql: str, args: Sequence[Any], /) -> Any: ...

    async def executemany(self, sql: str, rows: Sequence[Sequence[Any]], /) -> Any: ...

    async def execute_fetchall(self, sql: str, args: Sequence[Any], /) -> Iterable[Row]: ...


_LONE_SURROGATE = re.compile("[\ud800-\udfff\x00]")
_LONE_SURROGATE_ESCAPE = re.compile(
    r"\\u[dD][89abAB][0-9a-fA-F]{2}(?!\\u[dD][c-fC-F][0-9a-fA-F]{2})"
    r"|(?<!\\u[dD][89abAB][0-9a-fA-F]{2})\\u[dD][c-fC-F][0-9a-fA-F]{2}"
    r"|\\u0000"
)


def mended(row: Sequence[Any]) -> tuple[Any, ...]:
    """`row` with text no database can store replaced by U+FFFD: lone surrogates (a str holding
    one cannot be encoded as UTF-8; escaped in JSON, PostgreSQL refuses it) and NUL characters
    (PostgreSQL's text cannot hold them)."""
    return tuple(
        _LONE_SURROGATE_ESCAPE.sub(r"\\ufffd", _LONE_SURROGATE.sub("\ufffd", value))
        if isinstance(value, str)
        else value
        for value in row
    )


Why = Callable[[RunRecord], str]
"""Why a run is marked interrupted, given the run as it was."""


class _Taken(Exception):
    """An upstream run was taken by another run meanwhile: the take is rolled back."""


class SQLStore(BufferedStore):
    """Run history in a SQL database; the dialect subclass supplies what differs."""

    SQL: ClassVar[Mapping[str, str]]
    MIGRATIONS: ClassVar[Sequence[str]]
    SORT_COLUMNS: ClassVar[Mapping[str, str]] = SORT_COLUMNS
    where: str
    """Where the store is, fit for messages and logs."""

    # -- what a dialect supplies ---------------------------------------------------------------------
    @abstractmethod
    def transaction(self) -> contextlib.AbstractAsyncContextManager[Tx]:
        """A transaction on a writing connection: committed at the end, rolled back on error."""

    @abstractmethod
    def _schema(self) -> contextlib.AbstractAsyncContextManager[Tx]:
        """A connection on which the schema is read and migrated, held against other processes
        migrating it at the same time."""

    @abstractmethod
    async def _version(self, db: Tx) -> int:
        """The schema's version (0: no schema yet)."""

    @abstractmethod
    async def _upgrade(self, db: Tx, script: str, target: int) -> None:
        """Run a migration script and record the version it leads to."""

    @abstractmethod
    async def _fetch_sql(self, sql: str, args: Sequence[Any]) -> list[Row]:
        """Run a query on a reading connection."""

    def _sql(self, text: str) -> str:
        """A statement made up at run time, in the dialect's placeholders."""
        return text

    @abstractmethod
    def _any(self, column: str, values: Sequence[str]) -> tuple[str, list[Any]]:
        """A condition that holds when `column` is one of `values`, with its arguments."""

    def _text_rows(self, batch: Batch) -> list[tuple[str, Sequence[Sequence[Any]]]]:
        """Statements that keep a text index in step with the runs of a batch (after they are saved)."""
        return []

    def _committed(self, batch: Batch) -> None:
        """Told once a batch is committed."""

    async def _reindex(self, tx: Tx, run_id: str) -> None:
        """Keep a text index in step with a run whose error was changed in place."""

    # -- run search: what both dialects' searches start from ----------------------------------------
    def _filters(self, query: RunQuery) -> list[tuple[str, str, list[Any]]]:
        """The search's conditions but its text: (column, condition with {} for the column, arguments)."""
        found = [
            (column, *self._any("{}", values))
            for column, values in (("task_id", query.task_ids), ("state", query.states), ("trigger", query.triggers))
            if values
        ]
        if query.since is not None:
            found.append(("queued_at", "{} >= ?", [query.since]))
        if query.until is not None:
            found.append(("queued_at", "{} < ?", [query.until]))
        return found

    def _order_by(self, query: RunQuery, nulls_descending: str = "", nulls_ascending: str = "") -> str:
        """The search's order; runs with the same value come by queued time, then id, the same way."""
        way = "DESC" if query.descending else "ASC"
        nulls = nulls_descending if query.descending else nulls_ascending
        ties = f"id {way}" if query.sort == "queued_at" else f"queued_at {way}, id {way}"
        return f"ORDER BY {self.SORT_COLUMNS[query.sort]} {way}{nulls}, {ties}"

    # -- the schema --------------------------------------------------------------------------------
    async def _migrate(self) -> None:
        async with self._schema() as db:
            version = await self._version(db)
            if version > len(self.MIGRATIONS):
                raise StoreError(
                    f"the store at {self.where} has schema version {version}, newer than this taskd "
                    f"understands ({len(self.MIGRATIONS)}); upgrade taskd or use another store"
                )
            for target, script in enumerate(self.MIGRATIONS[version:], start=version + 1):
                await self._upgrade(db, script, target)
                log.info("store_migrated", store=self.where, version=target)

    # -- writes ------------------------------------------------------------------------------------
    async def _commit(self, batch: Batch) -> None:
        rows: list[tuple[str, Sequence[Sequence[Any]]]] = [
            ("save_run", await _sliced(run_params, batch.runs.values())),
            *self._text_rows(batch),
            ("save_attempt", await _sliced(attempt_params, batch.attempts.values())),
            ("save_step", await _sliced(step_params, batch.steps.values())),
            ("append_log", batch.logs),
            ("record_transition", batch.transitions),
            (
                "record_fire",
                [
                    (f.task_id, f.instant, f.kind, f.reason, f.recorded_at, f.count, f.last_instant, f.key)
                    for f in batch.fires.values()
                ],
            ),
            ("set_last_fire", list(batch.last_fires.items())),
            ("save_upstream", [upstream_params(u) for u in batch.upstreams.values()]),
            ("release_upstreams", [(run_id,) for run_id in batch.given_back]),
            ("record_audit", batch.audit),
        ]
        tombstones: list[tuple[str, Sequence[Any]]] = [
            ("remove_tombstone", (t.task_id,))
            if t.definition_hash is None
            else ("add_tombstone", (t.task_id, t.definition_hash, t.deleted_at))
            for t in batch.tombstones
        ]
        try:
            async with self.transaction() as tx:
                for name, params in rows:
                    if params:
                        await self._write_many(tx, self.SQL[name], params)
                for name, args in tombstones:
                    await tx.execute(self.SQL[name], args)
        except Exception as exc:
            if self._retryable(exc):
                raise
            # One bad value (text the database cannot encode, say) must not cost the rest of the
            # batch: write it again row by row, and mend or drop only the rows that fail.
            log.warning("store_batch_refused", store=self.where, error=f"{type(exc).__name__}: {exc}")
            await self._commit_rows([(name, row) for name, params in rows for row in params] + tombstones)
        self._committed(batch)

    async def _commit_rows(self, rows: Sequence[tuple[str, Sequence[Any]]]) -> None:
        """Write each row under a savepoint, in one transaction: a row refused as it is is written
        again with its text mended, and dropped (and logged) only if that fails too."""
        dropped = 0
        async with self.transaction() as tx:
            for name, row in rows:
                for attempt in (row, mended(row)):
                    await tx.execute("SAVEPOINT taskd_row", ())
                    try:
                        await tx.execute(self.SQL[name], attempt)
                    except Exception as exc:
                        await tx.execute("ROLLBACK TO SAVEPOINT taskd_row", ())
                        if self._retryable(exc):
                            raise
                        error = f"{type(exc).__name__}: {exc}"
                        continue
                    await tx.execute("RELEASE SAVEPOINT taskd_row", ())
                    break
                else:
                    dropped += 1
                    log.error("store_row_dropped", store=self.where, statement=name, row=repr(row)[:500], error=error)
        if dropped:
            log.error("store_rows_dropped", store=self.where, rows=dropped, written=len(rows) - dropped)

    async def recover_interrupted(self, now: float, node: str | None = None) -> list[RunRecord]:
        def why(run: RunRecord) -> str:
            return f"taskd exited while this run was {run.state}; marked interrupted at start-up"

        async with self.transaction() as tx:
            if node is None:
                return await self.interrupt(tx, "TRUE", (), now, why)
            return await self.interrupt(tx, "(node IS NULL OR node = ?)", (node,), now, why)

    async def interrupt_runs_of(self, node: str, now: float, why: Why) -> list[RunRecord]:
        async with self.transaction() as tx:
            return await self.interrupt(tx, "node = ?", (node,), now, why)

    async def interrupt(self, tx: Tx, which: str, args: Sequence[Any], now: float, why: Why) -> list[RunRecord]:
        """Mark the active runs matching `which` interrupted, with their attempts, steps and a transition."""
        runs: list[RunRecord] = []
        for row in await tx.execute_fetchall(self._sql(self.SQL["active_runs"].format(which)), args):
            run = run_from_row(row)
            reason = why(run) + (GIVEN_BACK if never_started(run) else "")
            run.error = f"{run.error}; {reason}" if run.error else reason
            run.state, run.finished_at = RunState.INTERRUPTED, now
            await tx.execute(self.SQL["interrupt_run"], (now, run.error, run.id))
            await self._reindex(tx, run.id)
            await tx.execute(self.SQL["interrupt_transition"], (run.id, now, reason, run.id))
            await tx.execute(self.SQL["interrupt_attempts"], (now, run.id))
            await tx.execute(self.SQL["interrupt_steps"], (now, run.id))
            if never_started(run):
                await tx.execute(self.SQL["release_upstreams"], (run.id,))
            runs.append(run)
        return runs

    async def prune(self, now: float, days: int, max_runs_per_task: int) -> int:
        await self.flush()
        cutoff = now - days * 86400
        async with self.transaction() as tx:
            doomed: set[str] = set()
            if days > 0:
                doomed.update(r[0] for r in await tx.execute_fetchall(self.SQL["old_runs"], (cutoff,)))
            if max_runs_per_task > 0:
                doomed.update(r[0] for r in await tx.execute_fetchall(self.SQL["excess_runs"], (max_runs_per_task,)))
            ids = sorted(doomed)
            for start in range(0, len(ids), PRUNE_CHUNK):
                for table, column in RUN_TABLES.items():
                    condition, args = self._any(column, ids[start : start + PRUNE_CHUNK])
                    await tx.execute(self._sql(f"DELETE FROM {table} WHERE {condition}"), args)
            if days > 0:
                await tx.execute(self.SQL["delete_fires"], (cutoff,))
                await tx.execute(self.SQL["delete_upstreams"], (cutoff,))
                await tx.execute(self.SQL["delete_audit"], (cutoff,))
        return len(doomed)

    # -- reads -------------------------------------------------------------------------------------
    async def _fetch(self, name: str, *args: Any, fresh: bool = True) -> list[Row]:
        """Run a named query; `fresh` first waits for what was written before (read-your-writes)."""
        if fresh:
            await self.flush()
        return await self._fetch_sql(self.SQL[name], args)

    async def _write_many(self, tx: Tx, sql: str, rows: Sequence[Sequence[Any]]) -> None:
        """Run a write statement once per row, in the open transaction."""
        await tx.executemany(sql, rows)

    def _rows_now(self, sql: str, args: Sequence[Any]) -> list[Row] | None:
        """A short read answered at once, on the loop's own thread, or None where the backend has
        no such path (or the database is busy or failing right now)."""
        return None

    async def _short_read(self, sql: str, args: Sequence[Any]) -> list[Row]:
        """A read whose cost is bounded (an index lookup with a small LIMIT), which may miss the
        last ~25 ms of writes: answered at once where the backend can, so a page of the API does
        not wait behind the reader's queue and thread while a burst of runs holds the machine."""
        rows = self._rows_now(sql, args)
        return rows if rows is not None else await self._fetch_sql(sql, args)

    async def _number(self, sql: str, args: Sequence[Any] = ()) -> int:
        """The number a query answers (0 for NULL)."""
        rows = await self._fetch_sql(sql, args)
        return int(rows[0][0]) if rows and rows[0][0] is not None else 0

    async def get_run(self, run_id: str) -> RunRecord | None:
        rows = await self._fetch("get_run", run_id)
        return run_from_row(rows[0]) if rows else None

    async def attempts(self, run_id: str) -> list[AttemptRecord]:
        return [attempt_from_row(r) for r in await self._fetch("attempts", run_id)]

    async def steps(self, run_id: str) -> list[StepRecord]:
        return [step_from_row(r) for r in await self._fetch("steps", run_id)]

    async def run_log(self, run_id: str, after_seq: int = 0, limit: int = LOG_PAGE) -> list[LogLine]:
        return [log_from_row(r) for r in await self._fetch("run_log", run_id, after_seq, limit)]

    async def transitions(self, run_id: str) -> list[Transition]:
        return [transition_from_row(r) for r in await self._fetch("transitions", run_id)]

    async def fires(self, task_id: str, limit: int = 50) -> list[Fire]:
        return [fire_from_row(r) for r in await self._short_read(self.SQL["fires"], (task_id, limit))]

    async def last_runs(self) -> dict[str, RunRecord]:
        await self.flush()
        rows = await self._fetch_sql(self._sql(self.SQL["latest_runs"].format("TRUE")), ())
        return {run.task_id: run for run in map(run_from_row, rows)}

    async def latest_runs(self, task_ids: Sequence[str]) -> tuple[dict[str, RunRecord], dict[str, list[str]]]:
        if not task_ids:
            return {}, {}
        condition, args = self._any("task_id", task_ids)
        latest = await self._fetch_sql(self._sql(self.SQL["latest_runs"].format(condition)), args)
        active: dict[str, list[str]] = {}
        for row in await self._fetch_sql(self._sql(self.SQL["active_states"].format(condition)), args):
            active.setdefault(row["task_id"], []).append(row["state"])
        return {r["task_id"]: run_from_row(r) for r in latest}, active

    async def scheduled_runs(self, fires: Sequence[tuple[str, float]]) -> set[tuple[str, float]]:
        found: set[tuple[str, float]] = set()
        for task_id, instant in fires:  # a few at a time: the fires a dead node left unstarted
            if await self._fetch("scheduled_run", task_id, instant):
                found.add((task_id, instant))
        return found

    async def last_successes(self) -> dict[str, float]:
        return {r["task_id"]: r["at"] for r in await self._fetch("last_successes")}

    async def task_stats(self, task_id: str) -> dict[str, Any]:
        # Counted on the short path up to EXACT_UP_TO runs; a task with more is counted in full.
        capped = await self._short_read(self.SQL["task_run_count_capped"], (task_id, EXACT_UP_TO + 1))
        count = int(capped[0][0])
        if count > EXACT_UP_TO:
            count = int((await self._fetch("task_run_count", task_id, fresh=False))[0][0])
        rows = await self._short_read(self.SQL["task_durations"], (task_id,))
        return run_stats(count, [(r["state"], r["duration"]) for r in rows])

    async def run_counts(self, since: float, bucket_s: int) -> list[tuple[int, str, int]]:
        rows = await self._fetch("run_counts", float(bucket_s), since, fresh=False)
        return [(int(r[0]), str(r[1]), int(r[2])) for r in rows]

    async def audit(self, query: AuditQuery) -> tuple[list[AuditEntry], int]:
        await self.flush()
        conditions: list[str] = []
        args: list[Any] = []
        if query.actions:
            condition, values = self._any("action", list(query.actions))
            conditions.append(condition)
            args += values
        for sql, value in (("actor = ?", query.actor), ("at >= ?", query.since), ("at < ?", query.until)):
            if value is not None:
                conditions.append(sql)
                args.append(value)
        where = f"WHERE {' AND '.join(conditions)}" if conditions else ""
        total = await self._number(self._sql(f"SELECT count(*) FROM audit {where}"), args)
        rows = await self._fetch_sql(
            self._sql(
                f"SELECT at, action, actor, role, remote, target, status, detail FROM audit {where}"
                " ORDER BY at DESC, id DESC LIMIT ? OFFSET ?"
            ),
            [*args, query.limit, query.offset],
        )
        return [audit_from_row(row) for row in rows], total

    async def tombstones(self) -> dict[str, str]:
        return {r["task_id"]: r["definition_hash"] for r in await self._fetch("tombstones")}

    async def last_fires(self) -> dict[str, float]:
        return {r["task_id"]: r["last_fire"] for r in await self._fetch("last_fires")}

    async def pending_upstreams(self) -> list[UpstreamRun]:
        return [upstream_from_row(r) for r in await self._fetch("pending_upstreams")]

    async def take_upstreams(self, run: RunRecord, taken: Sequence[UpstreamRun]) -> bool:
        await self.flush()  # the upstream runs' rows are committed before they are taken
        try:
            async with self.transaction() as tx:
                for upstream in taken:
                    args = (run.id, upstream.task_id, upstream.upstream_run_id)
                    if not list(await tx.execute_fetchall(self.SQL["take_upstream"], args)):
                        raise _Taken
                # Its text is indexed by the writer, with the run's first staged save.
                await tx.execute(self.SQL["save_run"], run_params(run))
        except _Taken:
            return False
        return True

    async def discard_upstreams(self, upstreams: Sequence[UpstreamRun]) -> None:
        await self.flush()
        async with self.transaction() as tx:
            await tx.executemany(self.SQL["discard_upstream"], [u.key for u in upstreams])

    async def run_links(self, run_id: str) -> tuple[list[UpstreamRun], list[UpstreamRun]]:
        upstream = [upstream_from_row(r) for r in await self._fetch("upstreams_of_run", run_id)]
        downstream = [upstream_from_row(r) for r in await self._fetch("downstreams_of_run", run_id, fresh=False)]
        return upstream, downstream

    async def alert_states(self) -> dict[str, AlertState]:
        return {r["task_id"]: alert_state_from_row(r) for r in await self._fetch("alert_states", fresh=False)}

    async def alert_state(self, task_id: str) -> AlertState | None:
        rows = await self._fetch("alert_state", task_id, fresh=False)
        return alert_state_from_row(rows[0]) if rows else None

    async def swap_alert_state(self, state: AlertState, version: int) -> bool:
        values = (
            state.status,
            state.since,
            state.first_seen,
            state.failures,
            state.unreported,
            state.notified_at,
            state.overdue_at,
            state.version,
        )
        async with self.transaction() as tx:
            if version == 0:
                rows = await tx.execute_fetchall(self.SQL["insert_alert_state"], (state.task_id, *values))
            else:
                rows = await tx.execute_fetchall(self.SQL["update_alert_state"], (*values, state.task_id, version))
            return bool(list(rows))

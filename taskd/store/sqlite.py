"""The SQLite store: aiosqlite, WAL, versioned schema (`PRAGMA user_version`); staged writes
committed in batches by the write buffer; queries on a second, read-only connection. What SQLite
words its own way (its DDL, the latest runs, the trigram text index and run search) is here; the
rest is the shared SQL layer (`sql`)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiosqlite
import structlog

from taskd.clock import Clock
from taskd.models import ACTIVE_STATES, RunRecord, RunState, Trigger
from taskd.store.base import RunQuery, StoreError
from taskd.store.buffer import Batch
from taskd.store.rows import Row, run_from_row
from taskd.store.sql import ACTIVE, STATEMENTS, SQLStore

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
    # Run search: an index by state (with the time, for the newest first) of the runs that ended
    # badly, and a trigram full-text index of what `q` searches in a run (its error and params), kept
    # in step by triggers and linked by rowid. Active runs have `runs_active` already. Completed
    # runs, and runs with neither error nor params, are most runs and are not indexed: every index
    # costs each persisted run a write (about 10% of the run rate each, measured), even a partial
    # one whose runs pass through it while queued. Sorting by started_at, finished_at or duration
    # has no index for the same reason: it scans.
    """
    CREATE INDEX runs_ended_badly ON runs (state, queued_at) WHERE state IN ('failed', 'stopped', 'interrupted');
    CREATE VIRTUAL TABLE runs_text USING fts5(body, tokenize = 'trigram', detail = 'none');
    INSERT INTO runs_text (rowid, body)
        SELECT rowid, coalesce(error, '') || ' ' || params FROM runs WHERE error IS NOT NULL OR params != '{}';
    CREATE TRIGGER runs_text_insert AFTER INSERT ON runs
    WHEN new.error IS NOT NULL OR new.params != '{}' BEGIN
        INSERT INTO runs_text (rowid, body) VALUES (new.rowid, coalesce(new.error, '') || ' ' || new.params);
    END;
    CREATE TRIGGER runs_text_error AFTER UPDATE OF error ON runs WHEN new.error IS NOT old.error BEGIN
        DELETE FROM runs_text WHERE rowid = old.rowid;
        INSERT INTO runs_text (rowid, body)
        SELECT new.rowid, coalesce(new.error, '') || ' ' || new.params
        WHERE new.error IS NOT NULL OR new.params != '{}';
    END;
    CREATE TRIGGER runs_text_delete AFTER DELETE ON runs BEGIN
        DELETE FROM runs_text WHERE rowid = old.rowid;
    END;
    """,
    # The runs that ended badly by when they ended (a failure is looked for by when it happened);
    # partial like the index above, so a completed run never writes to it.
    """
    CREATE INDEX runs_ended_badly_by_end ON runs (finished_at)
        WHERE state IN ('failed', 'stopped', 'interrupted');
    """,
    # The node that ran each run (node.name).
    "ALTER TABLE runs ADD COLUMN node TEXT;",
    # Run search without a full scan: an index for each sort key, by state and by trigger (these two
    # with the queued time, so ties come in order). The state index takes over from the partial ones.
    # The text index is kept in step by the writer instead of triggers: with an insert or update
    # trigger on `runs`, each of its indexes cost a run's write about 5 us more (25 us a run with these
    # five, measured, against 10 us without the triggers). It now keeps the trigrams' positions, so a
    # substring is found as a phrase of trigrams, from the index alone (a LIKE reads every candidate's
    # text: 200 ms against 14 ms for a word in 300,000 runs).
    """
    DROP TRIGGER runs_text_insert;
    DROP TRIGGER runs_text_error;
    DROP TRIGGER runs_text_delete;
    DROP TABLE runs_text;
    CREATE VIRTUAL TABLE runs_text USING fts5(body, tokenize = 'trigram', detail = 'full');
    INSERT INTO runs_text (rowid, body)
        SELECT rowid, coalesce(error, '') || ' ' || params FROM runs WHERE error IS NOT NULL OR params != '{}';
    CREATE TRIGGER runs_text_delete AFTER DELETE ON runs BEGIN
        DELETE FROM runs_text WHERE rowid = old.rowid;
    END;
    DROP INDEX runs_active;
    DROP INDEX runs_ended_badly;
    CREATE INDEX runs_by_state ON runs (state, queued_at);
    CREATE INDEX runs_by_trigger ON runs (trigger, queued_at);
    CREATE INDEX runs_by_start ON runs (started_at);
    CREATE INDEX runs_by_end ON runs (finished_at);
    CREATE INDEX runs_by_duration ON runs ((finished_at - started_at));
    """,
]

SORT_COLUMNS = {
    "queued_at": "queued_at",
    "started_at": "started_at",
    "finished_at": "finished_at",
    "duration": "(finished_at - started_at)",
    "state": "state",
    "task_id": "task_id",
}

SQL = {
    **STATEMENTS,
    "active_runs": f"SELECT * FROM runs WHERE {ACTIVE} AND {{}}",
    "last_runs": """
        SELECT r.* FROM runs r
        JOIN (SELECT task_id, max(queued_at) AS latest FROM runs GROUP BY task_id) m
          ON r.task_id = m.task_id AND r.queued_at = m.latest
    """,
    "latest_runs": """
        SELECT r.* FROM runs r
        JOIN (SELECT task_id, max(queued_at) AS latest FROM runs WHERE {} GROUP BY task_id) m
          ON r.task_id = m.task_id AND r.queued_at = m.latest
    """,
    "unindex_text": "DELETE FROM runs_text WHERE rowid = (SELECT rowid FROM runs WHERE id = ?)",
    "index_text": """
        INSERT INTO runs_text (rowid, body)
        SELECT rowid, coalesce(error, '') || ' ' || params FROM runs
        WHERE id = ? AND (error IS NOT NULL OR params != '{}')
    """,
}


_Text = tuple[str | None, dict[str, Any]]
"""What a text search looks in: a run's error and params."""


@dataclass(frozen=True)
class _Term:
    """One condition of a run search. `sql` has {} where its column goes; `in_order` is how it is
    checked on each run instead, when the runs are read in the sort's order (default: the same
    condition on `+column`, which keeps the planner from looking it up through an index)."""

    column: str
    sql: str
    params: tuple[Any, ...]
    in_order: tuple[str, tuple[Any, ...]] | None = None
    alone: tuple[str, tuple[Any, ...]] | None = None  # counts the runs it matches, when it is the only term


def _where(terms: list[_Term], in_order_of: str | None = None) -> tuple[str, list[Any]]:
    """A WHERE clause of `terms` and its parameters; with `in_order_of` (a sort key), every term
    but one on that column is written to be checked run by run."""
    conditions: list[str] = []
    params: list[Any] = []
    for term in terms:
        if in_order_of is None or term.column == in_order_of:
            conditions.append(term.sql.format(term.column))
            params.extend(term.params)
        elif term.in_order is not None:
            conditions.append(term.in_order[0])
            params.extend(term.in_order[1])
        else:
            conditions.append(term.sql.format(f"+{term.column}"))
            params.extend(term.params)
    return (f"WHERE {' AND '.join(conditions)}" if conditions else ""), params


def _text_term(text: str, task_ids: tuple[str, ...]) -> _Term:
    """The runs whose error or params hold `text`, in any case, or that belong to `task_ids`. A
    text of three characters or more is a phrase of its trigrams, found in the index alone; a
    shorter one reads every indexed text. Run by run (ASCII text only, which LIKE folds the same
    way as the index), the run's own text is looked up and compared."""
    escaped = "%" + text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"
    if len(text) >= 3:
        found, pattern = "SELECT rowid FROM runs_text WHERE runs_text MATCH ?", '"' + text.replace('"', '""') + '"'
    else:
        found, pattern = "SELECT rowid FROM runs_text WHERE body LIKE ? ESCAPE '\\'", escaped
    own = "EXISTS (SELECT 1 FROM runs_text WHERE rowid = runs.rowid AND body LIKE ? ESCAPE '\\')"
    marks = ", ".join("?" * len(task_ids))
    tasks = f" OR task_id IN ({marks})" if task_ids else ""
    their_runs = f" UNION SELECT rowid FROM runs WHERE task_id IN ({marks})" if task_ids else ""
    return _Term(
        "rowid",
        f"({{}} IN ({found}){tasks})",
        (pattern, *task_ids),
        in_order=(f"({own}{tasks})", (escaped, *task_ids)) if text.isascii() else None,
        alone=(f"SELECT count(*) FROM ({found}{their_runs})", (pattern, *task_ids)),
    )


class _Tx:
    """aiosqlite's connection as the shared layer's `Tx`."""

    def __init__(self, db: aiosqlite.Connection) -> None:
        self._db = db

    async def execute(self, sql: str, args: Sequence[Any] = ()) -> None:
        await self._db.execute(sql, args)

    async def executemany(self, sql: str, rows: Sequence[Sequence[Any]]) -> None:
        await self._db.executemany(sql, rows)

    async def fetch(self, sql: str, args: Sequence[Any] = ()) -> list[Row]:
        async with self._db.execute(sql, args) as cursor:
            return list(await cursor.fetchall())


class _Schema:
    """The schema's version is `PRAGMA user_version`; each migration is a transaction of its own."""

    def __init__(self, db: aiosqlite.Connection) -> None:
        self._db = db

    async def version(self) -> int:
        row = await (await self._db.execute("PRAGMA user_version")).fetchone()
        return int(row[0]) if row else 0

    async def upgrade(self, script: str, target: int) -> None:
        await self._db.executescript(f"BEGIN;\n{script}\nPRAGMA user_version = {target};\nCOMMIT;")


class SQLiteStore(SQLStore):
    """Run history in one SQLite file."""

    SQL = SQL
    MIGRATIONS = MIGRATIONS

    def __init__(
        self,
        path: Path | str,
        batch_window_s: float = 0.025,
        busy_timeout_s: float = 5.0,
        clock: Clock | None = None,
    ) -> None:
        super().__init__(batch_window_s, name="store", clock=clock)
        self.path = Path(path)
        self.where = str(self.path)
        self._busy_timeout_ms = int(busy_timeout_s * 1000)  # how long a commit waits for a lock
        self._db: aiosqlite.Connection | None = None
        self._reader: aiosqlite.Connection | None = None
        self._lock = asyncio.Lock()  # one transaction at a time on the writing connection
        self._texts: dict[str, _Text] = {}  # of each active run written
        self._staged_texts: dict[str, _Text | None] = {}  # of the batch being committed

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
            await db.execute(f"PRAGMA busy_timeout = {self._busy_timeout_ms}")
            await self._migrate()
            # Queries get their own connection: in WAL mode a reader never waits for the writer.
            self._reader = await aiosqlite.connect(self.path, isolation_level=None)
            self._reader.row_factory = aiosqlite.Row
            await self._reader.execute("PRAGMA query_only = 1")
        except (aiosqlite.Error, StoreError) as exc:
            await db.close()
            self._db = None
            if isinstance(exc, StoreError):
                raise
            raise StoreError(f"cannot prepare the store at {self.path}: {exc}") from exc
        self._start_writer()

    async def close(self) -> None:
        if self._db is None:
            return
        await self._stop_writer()
        if self._reader is not None:
            await self._reader.close()
            self._reader = None
        await self._db.close()
        self._db = None

    def _retryable(self, exc: Exception) -> bool:
        """The database locked or busy, the disk full or failing: a later commit may succeed.
        A constraint or programming error would fail again: that batch is dropped (and logged)."""
        return isinstance(exc, (aiosqlite.OperationalError, OSError))

    # -- the shared layer's needs ----------------------------------------------------------------
    def _require(self) -> aiosqlite.Connection:
        if self._db is None:
            raise StoreError("the store is not open")
        return self._db

    def _read(self) -> aiosqlite.Connection:
        if self._reader is None:
            raise StoreError("the store is not open")
        return self._reader

    @contextlib.asynccontextmanager
    async def _transaction(self) -> AsyncIterator[_Tx]:
        db = self._require()
        async with self._lock:
            await db.execute("BEGIN")
            try:
                yield _Tx(db)
                await db.execute("COMMIT")
            except BaseException:
                with contextlib.suppress(Exception):
                    await db.execute("ROLLBACK")
                raise

    @contextlib.asynccontextmanager
    async def _schema(self) -> AsyncIterator[_Schema]:
        yield _Schema(self._require())

    async def _fetch_sql(self, sql: str, args: Sequence[Any]) -> list[Row]:
        async with self._read().execute(sql, args) as cursor:
            return list(await cursor.fetchall())

    def _any(self, column: str, values: Sequence[str]) -> tuple[str, list[Any]]:
        return f"{column} IN ({', '.join('?' * len(values))})", list(values)

    def _text_rows(self, batch: Batch) -> list[tuple[str, Sequence[Sequence[Any]]]]:
        unindexed, indexed, self._staged_texts = self._text_changes(batch.runs.values())
        return [("unindex_text", unindexed), ("index_text", indexed)]

    def _committed(self, batch: Batch) -> None:
        for run_id, text in self._staged_texts.items():
            if text is None:
                self._texts.pop(run_id, None)
            else:
                self._texts[run_id] = text
        self._staged_texts = {}

    async def _reindex(self, tx: _Tx, run_id: str) -> None:  # type: ignore[override]
        await tx.execute(SQL["unindex_text"], (run_id,))
        await tx.execute(SQL["index_text"], (run_id,))

    def _text_changes(
        self, runs: Iterable[RunRecord]
    ) -> tuple[list[tuple[str]], list[tuple[str]], dict[str, _Text | None]]:
        """What the text index needs for runs about to be saved: the runs whose text goes out, the
        runs whose text goes in, and what the store should remember once they are committed. A
        run's text (error and params) is remembered from its first write until its final one, so a
        run saved again unchanged costs the index nothing; a run's first write has nothing to take out."""
        unindexed: list[tuple[str]] = []
        indexed: list[tuple[str]] = []
        texts: dict[str, _Text | None] = {}
        for run in runs:
            text = (run.error, dict(run.params))
            before = self._texts.get(run.id)
            if before != text:
                if before is not None and (before[0] is not None or before[1]):
                    unindexed.append((run.id,))
                if run.error is not None or run.params:
                    indexed.append((run.id,))
            texts[run.id] = text if run.state in ACTIVE_STATES else None
        return unindexed, indexed, texts

    async def ping(self) -> bool:
        try:
            async with self._require().execute("SELECT 1") as cursor:
                return (await cursor.fetchone()) is not None
        except (StoreError, aiosqlite.Error, ValueError):
            return False

    # -- run search ------------------------------------------------------------------------------
    async def list_runs(self, query: RunQuery) -> tuple[list[RunRecord], int]:
        if query.fresh:
            await self.flush()
        terms: list[_Term] = []
        for column, values in (("task_id", query.task_ids), ("state", query.states), ("trigger", query.triggers)):
            if values:
                terms.append(_Term(column, f"{{}} IN ({', '.join('?' * len(values))})", values))
        if query.since is not None:
            terms.append(_Term("queued_at", "{} >= ?", (query.since,)))
        if query.until is not None:
            terms.append(_Term("queued_at", "{} < ?", (query.until,)))
        if query.text:
            terms.append(_text_term(query.text, query.text_task_ids))
        clause, params = _where(terms)
        if len(terms) == 1 and terms[0].alone is not None:
            total = await self._number(*terms[0].alone)
        else:
            total = await self._count(query, clause, params)
        if query.offset >= total:
            return [], total
        if terms and total * total > (query.offset + query.limit) * await self._size():
            # Many runs match: reading the runs in the order asked for, through the sort's index,
            # reaches the page after about (offset + limit) * all / matches runs, fewer than the
            # matches a filter's index would find and sort.
            clause, params = _where(terms, in_order_of=query.sort)
        order = "DESC" if query.descending else "ASC"
        ties = f"id {order}" if query.sort == "queued_at" else f"queued_at {order}, id {order}"
        sql = f"SELECT * FROM runs {clause} ORDER BY {SORT_COLUMNS[query.sort]} {order}, {ties} LIMIT ? OFFSET ?"
        rows = await self._fetch_sql(sql, [*params, query.limit, query.offset])
        return [run_from_row(r) for r in rows], total

    async def _size(self) -> int:
        """About how many runs there are (at least as many): the largest rowid, read off the end of
        the table, where count(*) would visit every page."""
        return await self._number("SELECT max(rowid) FROM runs")

    async def _count(self, query: RunQuery, clause: str, params: list[str | float]) -> int:
        """How many runs the search matches. Most runs completed and were scheduled: a search for
        those by state or by trigger alone counts all runs (SQLite counts a whole table without
        reading its rows) and takes away the runs with the other values, which are few."""
        narrowed = query.task_ids or query.since is not None or query.until is not None or query.text
        by_state = (query.states, RunState.COMPLETED, list(RunState), query.triggers)
        by_trigger = (query.triggers, Trigger.SCHEDULE, list(Trigger), query.states)
        for column, (values, usual, every, other) in (("state", by_state), ("trigger", by_trigger)):
            if values and usual in values and not other and not narrowed:
                others = sorted({str(value) for value in every} - set(values))
                marks = ", ".join("?" * len(others))
                sql = f"SELECT (SELECT count(*) FROM runs) - count(*) FROM runs WHERE {column} IN ({marks})"
                return await self._number(sql, others)
        return await self._number(f"SELECT count(*) FROM runs {clause}", params)

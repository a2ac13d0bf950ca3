"""The SQLite store: aiosqlite, WAL, versioned schema (`PRAGMA user_version`); staged writes
committed in batches by the write buffer; queries on a second, read-only connection. What SQLite
words its own way (the latest runs, the trigram text index and run search) is here, its DDL in
`migrations/sqlite/`; the rest is the shared SQL layer (`sql`)."""

from __future__ import annotations

import asyncio
import contextlib
import errno
import fcntl
import os
import re
import sqlite3
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiosqlite
import structlog

from taskd.clock import Clock
from taskd.faults import STORE_FILE
from taskd.models import ACTIVE_STATES, RunRecord, RunState, Trigger
from taskd.store.base import RunQuery, StoreError
from taskd.store.buffer import Batch
from taskd.store.rows import Row, run_from_row
from taskd.store.sql import ACTIVE, FINISHED, STATEMENTS, SQLStore, Tx, migrations

log = structlog.get_logger("taskd.store")

MIGRATIONS = migrations("sqlite")

SQL = {
    **STATEMENTS,
    "active_runs": f"SELECT * FROM runs WHERE {ACTIVE} AND {{}}",
    "run_counts": f"""
        SELECT CAST(finished_at / ? AS INTEGER), state, count(*) FROM runs WHERE finished_at >= ? AND {FINISHED}
        GROUP BY 1, 2
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


STATEMENT_ROWS = (512, 64, 8, 1)
"""How many rows one INSERT of a batch writes: a batch is cut into statements of these sizes,
largest first, so that each table has four shapes of statement at most (each prepared statement
is kept in the connection's cache: with a shape for every size, the cache held 8 MB). At most 19
values a row: far below SQLite's 32,766 a statement."""
_ONE_ROW = re.compile(r"\bVALUES\s*(\((?:\?,\s*)*\?\))", re.IGNORECASE)
"""The VALUES row of an INSERT of one row of parameters (the group is the row)."""

SHORT_PAGE = 1000
"""The largest page (offset + limit) of a task's latest runs read on the short path."""


def _short(query: RunQuery) -> bool:
    """Whether a search is a task's latest runs, the page alone, small: a bounded read. The states
    it may leave out are active ones, at most the task's runs under way, so the read passes over
    few runs it does not keep."""
    return (
        not query.counted
        and len(query.task_ids) == 1
        and not (query.triggers or query.text or query.since is not None or query.until is not None)
        and (not query.states or ACTIVE_STATES.union(query.states) >= set(RunState))
        and query.sort == "queued_at"
        and query.offset + query.limit <= SHORT_PAGE
    )


def _short_reads(path: Path) -> sqlite3.Connection:
    """A read-only connection for short reads on the event loop's own thread: it never waits for
    a lock (busy_timeout 0: a busy database sends the read to the reader's thread instead)."""
    connection = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    connection.row_factory = sqlite3.Row
    connection.execute("PRAGMA query_only = 1")
    connection.execute("PRAGMA busy_timeout = 0")
    return connection


def _identity(path: Path) -> tuple[int, int] | None:
    try:
        found = path.stat()
    except OSError:
        return None
    return found.st_dev, found.st_ino


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


class StoreLocked(StoreError):
    """Another process holds the store."""


class StoreCorrupt(StoreError):
    """The store's file is not a database SQLite can read."""


def _corrupt(path: Path, exc: BaseException) -> StoreCorrupt:
    return StoreCorrupt(
        f"the store at {path} is damaged ({exc}). To recover: stop taskd, then either check it with "
        f"`sqlite3 {path} 'PRAGMA integrity_check'` and rebuild it with `sqlite3 {path} .recover | sqlite3 "
        f"{path}.recovered`, put back a copy made by `taskd backup`, or move the file aside to start with "
        "an empty history"
    )


_CORRUPT_WORDS = ("malformed", "not a database", "file is encrypted", "disk image")


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
        self._now: sqlite3.Connection | None = None  # short reads, on the loop's thread (see _rows_now)
        self._lock = asyncio.Lock()  # one transaction at a time on the writing connection
        self._texts: dict[str, _Text] = {}  # of each active run written
        self._lock_fd: int | None = None
        self._file_fd: int | None = None
        self._identity: tuple[int, int] | None = None  # (device, inode) of the file opened
        self._staged_texts: dict[str, _Text | None] = {}  # of the batch being committed

    # -- lifecycle -------------------------------------------------------------------------------
    @property
    def lock_path(self) -> Path:
        return self.path.with_name(self.path.name + ".lock")

    def _take_lock(self) -> None:
        """One daemon per store: an exclusive lock on `<file>.lock`, held until close, with the
        holder's pid in it. The kernel drops it when the process dies, kill -9 included."""
        try:
            fd = os.open(self.lock_path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        except OSError as exc:
            raise StoreError(f"cannot open the store's lock file {self.lock_path}: {exc.strerror or exc}") from exc
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "unknown"
            os.close(fd)
            raise StoreLocked(
                f"the store {self.path} is in use by another taskd process (pid {holder}, holding "
                f"{self.lock_path}); stop it first, or give this one its own store.path"
            ) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        self._lock_fd = fd
        # The file itself too: another name for it (a hard link) has another lock file. SQLite locks
        # with fcntl(), which flock() does not touch; this descriptor is closed only after SQLite's.
        try:
            self._file_fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
            fcntl.flock(self._file_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            self._release_lock()
            if exc.errno in (errno.EWOULDBLOCK, errno.EAGAIN):
                raise StoreLocked(
                    f"the store {self.path} is in use by another taskd process under another name for the "
                    "same file (a hard link); stop it first, or give this one its own store.path"
                ) from None
            raise StoreError(f"cannot open the store at {self.path}: {exc.strerror or exc}") from exc

    def _release_lock(self) -> None:
        for name in ("_file_fd", "_lock_fd"):
            fd = getattr(self, name)
            setattr(self, name, None)
            if fd is not None:
                os.close(fd)

    async def open(self) -> None:
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise StoreError(f"cannot open the store at {self.path}: {exc}") from exc
        self._take_lock()
        try:
            await self._open()
        except BaseException:
            self._release_lock()
            raise

    async def _open(self) -> None:
        try:
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
            self._now = _short_reads(self.path)
        except (aiosqlite.Error, StoreError) as exc:
            await db.close()
            self._db = None
            if isinstance(exc, StoreError):
                raise
            if any(word in str(exc) for word in _CORRUPT_WORDS):
                raise _corrupt(self.path, exc) from None
            raise StoreError(f"cannot prepare the store at {self.path}: {exc}") from exc
        self._identity = _identity(self.path)
        self._start_writer()

    async def close(self) -> None:
        """Commit what is staged and close; the connections are closed and the lock released even
        when that last commit fails (its error is raised after)."""
        if self._db is None:
            return
        try:
            await self._stop_writer()
        finally:
            for connection in (self._reader, self._db):
                if connection is not None:
                    with contextlib.suppress(Exception):
                        await connection.close()
            if self._now is not None:
                self._now.close()
            self._reader = self._db = self._now = None
            self._release_lock()

    def _retryable(self, exc: Exception) -> bool:
        """The database locked or busy, the disk full or failing, the file damaged: the writes are
        kept (and the fault shown) until a commit succeeds or store.max_outage stops the daemon.
        A constraint or programming error would fail again: that row is mended or dropped."""
        return isinstance(exc, (aiosqlite.OperationalError, OSError)) or self.explain(exc) is not None

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
    async def transaction(self) -> AsyncIterator[aiosqlite.Connection]:
        db = self._require()
        async with self._lock:
            await db.execute("BEGIN")
            try:
                yield db
                await db.execute("COMMIT")
            except BaseException:
                with contextlib.suppress(Exception):
                    await db.execute("ROLLBACK")
                raise

    @contextlib.asynccontextmanager
    async def _schema(self) -> AsyncIterator[aiosqlite.Connection]:
        yield self._require()  # the schema's version is `PRAGMA user_version`

    async def _version(self, db: Tx) -> int:
        return int(next(iter(await db.execute_fetchall("PRAGMA user_version", ())))[0])

    async def _upgrade(self, db: Tx, script: str, target: int) -> None:
        await self._require().executescript(f"BEGIN;\n{script}\nPRAGMA user_version = {target};\nCOMMIT;")

    async def _fetch_sql(self, sql: str, args: Sequence[Any]) -> list[Row]:
        return list(await self._read().execute_fetchall(sql, args))

    async def _write_many(self, tx: Tx, sql: str, rows: Sequence[Sequence[Any]]) -> None:
        """An INSERT of one VALUES row is sent as INSERTs of many rows (STATEMENT_ROWS): SQLite
        writes them in one step, and the writer's thread needs the GIL once per statement rather
        than once per row (it waits for it while the event loop is busy)."""
        found = _ONE_ROW.search(sql)
        if found is None or len(rows) < 2:
            await super()._write_many(tx, sql, rows)
            return
        start = 0
        for size in STATEMENT_ROWS:
            if len(rows) - start < size:
                continue
            statement = f"{sql[: found.start(1)]}{', '.join([found.group(1)] * size)}{sql[found.end(1) :]}"
            while len(rows) - start >= size:
                chunk = rows[start : start + size]
                await tx.execute(statement, [value for row in chunk for value in row])
                start += size

    def _rows_now(self, sql: str, args: Sequence[Any]) -> list[Row] | None:
        if self._now is None:
            return None
        try:
            return self._now.execute(sql, args).fetchall()
        except sqlite3.Error:  # busy (it never waits), or failing: the reader answers, or says why
            return None

    def _any(self, column: str, values: Sequence[str]) -> tuple[str, list[Any]]:
        return f"{column} IN ({', '.join('?' * len(values))})", list(values)

    def _text_rows(self, batch: Batch) -> list[tuple[str, Sequence[Sequence[Any]]]]:
        """What the text index needs for the runs of a batch: the runs whose text goes out, and the
        runs whose text goes in. A run's text (error and params) is remembered from its first write
        until its final one, so a run saved again unchanged costs the index nothing."""
        out: list[tuple[str]] = []
        into: list[tuple[str]] = []
        self._staged_texts = {}
        texts = self._texts
        for run in batch.runs.values():
            if run.error is None and not run.params and run.id not in texts:
                continue  # no text now and none indexed: nothing goes out, in, or to remember
            text = (run.error, dict(run.params))
            before = texts.get(run.id)
            if before != text:
                if before is not None and (before[0] is not None or before[1]):
                    out.append((run.id,))
                if run.error is not None or run.params:
                    into.append((run.id,))
            self._staged_texts[run.id] = text if run.state in ACTIVE_STATES else None
        return [("unindex_text", out), ("index_text", into)]

    def _committed(self, batch: Batch) -> None:
        for run_id, text in self._staged_texts.items():
            if text is None:
                self._texts.pop(run_id, None)
            else:
                self._texts[run_id] = text

    async def _reindex(self, tx: Tx, run_id: str) -> None:
        await tx.execute(SQL["unindex_text"], (run_id,))
        await tx.execute(SQL["index_text"], (run_id,))

    async def ping(self) -> bool:
        try:
            async with self._require().execute("SELECT 1") as cursor:
                return (await cursor.fetchone()) is not None
        except (StoreError, aiosqlite.Error, ValueError):
            return False

    def owns(self, exc: BaseException) -> bool:
        return isinstance(exc, sqlite3.Error) or super().owns(exc)

    def explain(self, exc: BaseException) -> StoreError | None:
        if isinstance(exc, sqlite3.DatabaseError) and any(word in str(exc) for word in _CORRUPT_WORDS):
            return _corrupt(self.path, exc)
        return None

    async def problem(self) -> tuple[str, str] | None:
        if self._identity is not None and _identity(self.path) != self._identity:
            what = "removed" if not self.path.parent.exists() else "removed or replaced"
            return STORE_FILE, (
                f"the store file {self.path} (or its directory) was {what} while taskd had it open: "
                "what is written now is lost at the next start; restore the file or restart taskd"
            )
        return await super().problem()

    # -- run search ------------------------------------------------------------------------------
    async def list_runs(self, query: RunQuery) -> tuple[list[RunRecord], int]:
        if query.fresh:
            await self.flush()
        elif _short(query):
            return await self._latest_of_task(query)
        terms = [_Term(column, sql, tuple(args)) for column, sql, args in self._filters(query)]
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
        sql = f"SELECT * FROM runs {clause} {self._order_by(query)} LIMIT ? OFFSET ?"
        rows = await self._fetch_sql(sql, [*params, query.limit, query.offset])
        return [run_from_row(r) for r in rows], total

    async def _latest_of_task(self, query: RunQuery) -> tuple[list[RunRecord], int]:
        """A task's latest runs (in some states), the page alone: read through the index of the
        task's runs by queued time, a bounded read."""
        conditions, params = ["task_id = ?"], [query.task_ids[0]]
        if query.states:  # checked run by run (+): the task's index gives them in order
            conditions.append(f"+state IN ({', '.join('?' * len(query.states))})")
            params += query.states
        sql = f"SELECT * FROM runs WHERE {' AND '.join(conditions)} {self._order_by(query)} LIMIT ? OFFSET ?"
        rows = await self._short_read(sql, [*params, query.limit, query.offset])
        return [run_from_row(r) for r in rows], query.offset + len(rows)

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

"""The PostgreSQL store: asyncpg, a versioned schema migrated under an advisory lock (several taskd
processes may start at once), staged writes committed in batches by the write buffer, queries on
a small connection pool. What PostgreSQL words its own way (placeholders, the latest runs and run
search) is here, its DDL in `migrations/postgres/`; the rest is the shared SQL layer (`sql`). The
coordination of several nodes on one database is `taskd.cluster.postgres`, on this store's pool.

Chosen by `store: {url: "postgresql://user@host:5432/db"}`. asyncpg, not psycopg 3: measured here,
20,000 run upserts in batches of 1,000 took asyncpg 0.13 s (152,000 rows/s) and psycopg 3's
`executemany` 0.18-0.21 s (96,000-112,000 rows/s), and asyncpg brings its own pool.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator, Sequence
from typing import Any

import asyncpg
import structlog

from taskd.clock import Clock
from taskd.faults import STORE_UNREACHABLE
from taskd.models import RunRecord, RunState
from taskd.store.base import EXACT_TEXT_UP_TO, EXACT_UP_TO, RunPage, RunQuery, StoreError, redacted
from taskd.store.rows import PARTIAL_STATE_INDEXES, Row, run_from_row
from taskd.store.sql import ACTIVE, FINISHED, SORT_COLUMNS, STATEMENTS, SQLStore, Tx, migrations, numbered

log = structlog.get_logger("taskd.store")

MIGRATION_LOCK = 0x7461736B64  # "taskd": the advisory lock held while the schema is migrated

MIGRATIONS = migrations("postgres")

SORT = {
    **SORT_COLUMNS,
    "state": 'state COLLATE "C"',  # byte order, as SQLite and the memory store sort
    "task_id": 'task_id COLLATE "C"',
}

SQL = {
    name: numbered(sql)
    for name, sql in {
        **STATEMENTS,
        "active_runs": f"SELECT * FROM runs WHERE {ACTIVE} AND ({{}}) FOR UPDATE",
        "run_counts": f"""
            SELECT floor(finished_at / ?)::bigint, state, count(*) FROM runs WHERE finished_at >= ? AND {FINISHED}
            GROUP BY 1, 2
        """,
        "latest_runs": "SELECT DISTINCT ON (task_id) * FROM runs WHERE {} ORDER BY task_id, queued_at DESC, id DESC",
    }.items()
}

POOL_SIZE = 4
SEARCH_CONNECTIONS = 2
"""Of the pool's connections, how many run searches may hold at once: a burst of searches queues
here rather than for the pool, where the writer, the cluster's lease and /health's ping would
wait behind it (50 searches at once made /health say the store did not answer)."""
PING_TIMEOUT_S = 2.0
POOL_CLOSE_S = 10.0

RETRYABLE = (
    OSError,
    asyncpg.PostgresConnectionError,
    asyncpg.InterfaceError,
    asyncpg.exceptions.DiskFullError,
    asyncpg.exceptions.InsufficientResourcesError,
    asyncpg.exceptions.SerializationError,
    asyncpg.exceptions.DeadlockDetectedError,
    asyncpg.exceptions.LockNotAvailableError,
    asyncpg.exceptions.AdminShutdownError,
    asyncpg.exceptions.CannotConnectNowError,
    asyncpg.InternalClientError,  # a connection terminated in the middle of an operation
)
"""Failures a later commit may get past: the server gone or restarting, the disk full, a conflict."""


class _Tx:
    """An asyncpg connection with the calls the shared layer makes (aiosqlite's)."""

    def __init__(self, db: asyncpg.Connection) -> None:
        self.db = db

    async def execute(self, sql: str, args: Sequence[Any], /) -> None:
        await self.db.execute(sql, *args)

    async def executemany(self, sql: str, rows: Sequence[Sequence[Any]], /) -> None:
        await self.db.executemany(sql, rows)

    async def execute_fetchall(self, sql: str, args: Sequence[Any], /) -> list[Row]:
        return list(await self.db.fetch(sql, *args))


class PostgresStore(SQLStore):
    """Run history in a PostgreSQL database (or one schema of it)."""

    SQL = SQL
    MIGRATIONS = MIGRATIONS
    SORT_COLUMNS = SORT

    def __init__(
        self, url: str, batch_window_s: float = 0.025, schema: str | None = None, clock: Clock | None = None
    ) -> None:
        super().__init__(batch_window_s, name="store", clock=clock)
        self.url = url
        self.where = redacted(url)
        self.schema = schema
        self.pool: asyncpg.Pool | None = None
        self._indexing: asyncio.Task[None] | None = None  # the text index's first build
        self._watching: asyncio.Task[None] | None = None  # and what follows it
        self._abandoned: set[asyncio.Future[list[Row]]] = set()  # the slower of two plans, cancelled
        self._search_turns = asyncio.Semaphore(SEARCH_CONNECTIONS)
        self.text_index: str | None = None
        """How a text search (`q`) finds its runs: "pg_trgm" or "trigrams" (taskd's own index)
        once that index is there, else why not (the runs are scanned)."""

    @property
    def server_settings(self) -> dict[str, str] | None:
        """What every connection to this store sets (its schema first on the search path)."""
        return {"search_path": self.schema} if self.schema else None

    # -- lifecycle -------------------------------------------------------------------------------
    async def open(self) -> None:
        try:
            self.pool = await asyncpg.create_pool(
                self.url, min_size=1, max_size=POOL_SIZE, server_settings=self.server_settings, command_timeout=60
            )
        except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError, ValueError) as exc:
            raise StoreError(f"cannot open the store at {self.where}: {exc}") from exc
        try:
            await self._migrate()
        except BaseException:
            await self.pool.close()
            self.pool = None
            raise
        self._start_writer()
        loop = asyncio.get_running_loop()
        self._indexing = loop.create_task(self._index_text())
        self._watching = loop.create_task(self._watch_text_index())

    async def close(self) -> None:
        if self.pool is None:
            return
        background = [task for task in (self._indexing, self._watching) if task is not None]
        self._indexing = self._watching = None
        for task in background:
            task.cancel()
        await asyncio.gather(*background, return_exceptions=True)
        try:
            await self._stop_writer()
        finally:
            pool, self.pool = self.pool, None
            try:  # a server gone mid-query would keep a graceful close waiting
                await asyncio.wait_for(pool.close(), POOL_CLOSE_S)
            except Exception:
                pool.terminate()

    async def _index_text(self) -> None:
        """The index a text search (`ILIKE`) reads, built without blocking the writers
        (CONCURRENTLY), by one node at a time: pg_trgm's where the extension is there or this
        role may create it; else taskd's own, a GIN index of each run's trigrams (`taskd_trigrams`,
        built in), which finds the candidates of a text of three characters or more. Only the
        one in use is kept. If neither can be built, a text search scans the runs meanwhile, the
        log says why, and the build is tried again (`_watch_text_index`)."""
        try:
            async with self.require().acquire() as db:
                self.text_index = "being built"
                await _text_index_turn(db)
                try:
                    where = await _trigram_schema(db)
                    if where is None:
                        log.warning("text_search_without_pg_trgm", store=self.where, index=OWN_TEXT_INDEX)
                        await _build(db, self.where, OWN_TEXT_INDEX, f"USING gin ({OWN_TRIGRAMS})")
                        await _text_statistics(db, self.where)
                        self.text_index = "trigrams"
                    else:
                        built = await _build(
                            db, self.where, TRGM_TEXT_INDEX, f'USING gin ({TEXT} "{where}".gin_trgm_ops)'
                        )
                        await _drop_own_text_index(db, self.where)
                        if built:  # its expression's statistics, which ILIKE's estimates read
                            await db.execute("ANALYZE runs")
                        self.text_index = "pg_trgm"
                finally:
                    await db.execute("SELECT pg_advisory_unlock($1, hashtext(current_schema()))", TEXT_INDEX_LOCK)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # never fatal: the searches scan meanwhile
            self.text_index = f"{type(exc).__name__}: {exc}"
            log.warning("text_search_unindexed", store=self.where, reason=self.text_index, retry_s=TEXT_INDEX_CHECK_S)

    async def _watch_text_index(self) -> None:
        """After the first build, every TEXT_INDEX_CHECK_S: a build that failed is tried again,
        and a node on the store's own index notices when another node, started since with
        pg_trgm to hand, has moved the store to pg_trgm's index (and dropped the own one, whose
        condition would then only cost)."""
        if self._indexing is not None:
            await asyncio.wait([self._indexing])
        while True:
            await asyncio.sleep(TEXT_INDEX_CHECK_S)
            if self.text_index == "trigrams":
                with contextlib.suppress(*RETRYABLE, asyncpg.PostgresError, StoreError):
                    valid = await self.require().fetchval(INDEX_VALID, TRGM_TEXT_INDEX)
                    if valid:
                        self.text_index = "pg_trgm"
                        log.info("text_index_switched", store=self.where, index=TRGM_TEXT_INDEX)
            elif self.text_index != "pg_trgm":
                await self._index_text()

    def require(self) -> asyncpg.Pool:
        if self.pool is None:
            raise StoreError("the store is not open")
        return self.pool

    def _retryable(self, exc: Exception) -> bool:
        return isinstance(exc, RETRYABLE)

    # -- the shared layer's needs ----------------------------------------------------------------
    @contextlib.asynccontextmanager
    async def transaction(self) -> AsyncIterator[_Tx]:
        """A transaction on a connection of the pool (the cluster's coordinator writes through it too)."""
        async with self.require().acquire() as db, db.transaction():
            yield _Tx(db)

    @contextlib.asynccontextmanager
    async def _schema(self) -> AsyncIterator[_Tx]:
        """Every migration runs in the one transaction that holds the advisory lock."""
        async with self.transaction() as tx:
            # A role may own its schema without the right to create schemas in the database,
            # which CREATE SCHEMA IF NOT EXISTS asks for even when the schema is there.
            if self.schema and not await tx.execute_fetchall(
                "SELECT 1 FROM pg_namespace WHERE nspname = $1", (self.schema,)
            ):
                await tx.execute(f'CREATE SCHEMA IF NOT EXISTS "{self.schema}"', ())
            await tx.execute("SELECT pg_advisory_xact_lock($1)", (MIGRATION_LOCK,))
            await tx.execute("CREATE TABLE IF NOT EXISTS taskd_schema (version INTEGER NOT NULL)", ())
            yield tx

    async def _version(self, db: Tx) -> int:
        return int(next(iter(await db.execute_fetchall("SELECT max(version) FROM taskd_schema", ())))[0] or 0)

    async def _upgrade(self, db: Tx, script: str, target: int) -> None:
        await db.execute(script, ())
        await db.execute("INSERT INTO taskd_schema (version) VALUES ($1)", (target,))

    async def _fetch_sql(self, sql: str, args: Sequence[Any]) -> list[Row]:
        return list(await self.require().fetch(sql, *args))

    def _sql(self, text: str) -> str:
        return numbered(text)

    def _any(self, column: str, values: Sequence[str]) -> tuple[str, list[Any]]:
        return f"{column} = ANY(?::text[])", [list(values)]

    async def ping(self) -> bool:
        try:
            async with asyncio.timeout(PING_TIMEOUT_S):
                return bool(await self.require().fetchval("SELECT 1") == 1)
        except (StoreError, OSError, TimeoutError, asyncpg.PostgresError, asyncpg.InterfaceError):
            return False

    def owns(self, exc: BaseException) -> bool:
        # asyncpg raises InternalClientError ("cannot switch to state ...") on a connection the
        # server terminated in the middle of an operation: the store's failure, not the request's.
        owned = (asyncpg.PostgresError, asyncpg.InterfaceError, asyncpg.InternalClientError, TimeoutError)
        return isinstance(exc, owned) or super().owns(exc)

    async def problem(self) -> tuple[str, str] | None:
        if await self.ping():
            return None
        return STORE_UNREACHABLE, f"PostgreSQL at {self.where} does not answer (within {PING_TIMEOUT_S:g} s)"

    # -- run search ------------------------------------------------------------------------------
    async def list_runs(self, query: RunQuery) -> tuple[list[RunRecord], int]:
        if query.fresh:
            await self.flush()
        clause, args = self._where(query)
        page = f"SELECT * FROM runs {clause} {self._order_by(query, ' NULLS LAST', ' NULLS FIRST')} LIMIT ? OFFSET ?"
        rows = await self._fetch_sql(numbered(page), [*args, query.limit, query.offset])
        return [run_from_row(r) for r in rows], await self._count(query, clause, args)

    def _where(self, query: RunQuery, partial: bool = True, trigrams: bool = True) -> tuple[str, list[Any]]:
        """The search's WHERE clause and its arguments; with `partial`, the condition of the
        partial index by state that covers the states asked for, spelled out; with `trigrams`,
        the condition that reads the store's own trigram index, when that is the text index."""
        filters = self._filters(query)
        where = [sql.format(column) for column, sql, _ in filters]
        args = [arg for _, _, values in filters for arg in values]
        for states, term in PARTIAL_STATE_INDEXES if partial else ():
            if query.states and set(query.states) <= states:
                where.append(term)  # implied already; spelled as the partial index's condition
                break
        if query.text:
            escaped = query.text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
            matches, more = f"{TEXT} ILIKE ?", [f"%{escaped}%"]
            if trigrams and self.text_index == "trigrams" and len(query.text) >= 3:
                # What ILIKE matches holds the text lowered, so every trigram of it: the index's
                # candidates, each then checked by ILIKE.
                matches = f"({OWN_TRIGRAMS} @> taskd_trigrams(lower(?::text)) AND {matches})"
                more = [query.text, *more]
            if query.text_task_ids:
                tasks, ids = self._any("task_id", query.text_task_ids)
                matches, more = f"{matches} OR {tasks}", [*more, *ids]
            where.append(f"({matches})")
            args += more
        return (f"WHERE {' AND '.join(where)}" if where else ""), args

    async def search_runs(self, query: RunQuery) -> RunPage:
        """As `list_runs`, but a total past EXACT_UP_TO (EXACT_TEXT_UP_TO for a text search) is
        the planner's estimate: counting a million rows exactly costs far more than the page (the
        API says which it is). The page and the count are asked at once, on two connections.

        The planner cannot tell how many runs a filter keeps when its columns go together (an
        error's text is only ever on a failed run) or when it is a text search, and it guesses
        few: it then reads every match and sorts them, which for thousands of matches spread over
        the table means thousands of pages read. So when the count says the matches are many, the
        page is asked a second time, read in the sort's order through its index (sorting
        forbidden), which stops at the page; the first of the two answers is taken and the other
        query cancelled. Both give the same rows: only the plan differs."""
        if query.fresh:
            await self.flush()
        # The sort's and the filters' own indexes serve; with a text search, the partial index's
        # condition spelled out makes the planner combine the trigram index with the state's
        # (a bitmap of both) rather than read every run of the state through the sort's index.
        clause, args = self._where(query, partial=bool(query.text))
        order = self._order_by(query, " NULLS LAST", " NULLS FIRST")
        page = numbered(f"SELECT * FROM runs {clause} {order} LIMIT ? OFFSET ?")
        page_args = [*args, query.limit, query.offset]
        cap = EXACT_TEXT_UP_TO if query.text else EXACT_UP_TO
        # The count reads better without the hint: the planner walks the partial index and stops at the cap.
        unhinted, unhinted_args = self._where(query, partial=False)
        capped = numbered(f"SELECT count(*) FROM (SELECT 1 FROM runs {unhinted} LIMIT {cap + 1}) AS found")
        planned = asyncio.ensure_future(self._search(page, page_args))
        racing = [planned]
        try:
            counted = int((await self._search(capped, unhinted_args))[0][0])
            if counted > cap and clause and not planned.done():
                racing.append(asyncio.ensure_future(self._search(page, page_args, IN_SORT_ORDER)))
            rows = await _first_answer(racing)
        finally:
            for loser in racing:
                if not loser.done():  # cancelled on the server in the background, not waited for
                    loser.cancel()
                    self._abandoned.add(loser)
                    loser.add_done_callback(self._forget)
        runs = [run_from_row(r) for r in rows]
        if counted <= cap:
            return RunPage(runs, counted, True)
        # The estimate without the trigrams' condition: the planner takes each trigram as
        # independent of the others and expects next to nothing, where ILIKE alone it estimates
        # from the text's statistics.
        estimated, estimated_args = self._where(query, partial=False, trigrams=False)
        plan = await self._search(numbered(f"EXPLAIN (FORMAT JSON) SELECT 1 FROM runs {estimated}"), estimated_args)
        estimate = int(json.loads(plan[0][0])[0]["Plan"]["Plan Rows"])
        return RunPage(runs, max(estimate, cap + 1), False)

    def _forget(self, search: asyncio.Future[list[Row]]) -> None:
        self._abandoned.discard(search)
        if not search.cancelled():
            search.exception()  # retrieved: a query that failed as it was being cancelled is no news

    async def _search(self, sql: str, args: Sequence[Any], settings: str = "") -> list[Row]:
        """A query of a search, planned for its own values every time: a prepared statement's
        generic plan cannot see what a text search looks for (its trigrams are computed from the
        value), and after a few runs of the same statement PostgreSQL may switch to it (a word in
        a third of the runs took 500 ms that way, against 2 ms planned for its value). `settings`
        are more SET LOCAL statements for this query alone. No JIT: compiling a search's
        expressions takes longer than the search (5 ms against 3 for a page read in order)."""
        async with self._search_turns, self.require().acquire() as db, db.transaction():
            await db.execute(f"SET LOCAL plan_cache_mode = force_custom_plan; SET LOCAL jit = off; {settings}")
            return list(await db.fetch(sql, *args))

    async def _count(self, query: RunQuery, clause: str, args: list[Any]) -> int:
        narrowed = query.task_ids or query.triggers or query.since is not None or query.until is not None
        if query.states and RunState.COMPLETED in query.states and not narrowed and not query.text:
            others = {str(state) for state in RunState} - set(query.states)
            total = await self._number("SELECT count(*) FROM runs")
            for states, term in PARTIAL_STATE_INDEXES:
                wanted = sorted(others & states)
                if wanted:
                    total -= await self._number(
                        f"SELECT count(*) FROM runs WHERE {term} AND state = ANY($1::text[])", [wanted]
                    )
            return total
        return await self._number(numbered(f"SELECT count(*) FROM runs {clause}"), args)


TEXT_INDEX_LOCK = 0x74657874  # "text", with the schema: held while one node builds the trigram index

IN_SORT_ORDER = "SET LOCAL enable_sort = off; SET LOCAL max_parallel_workers_per_gather = 0"
"""A page read in its sort's order: with sorting forbidden to the planner, it walks the sort key's
index and stops at the page (alone: parallel workers take longer to start than that)."""

TEXT_INDEX_POLL_S = 0.25
"""How often a node waiting for another's text index build asks for its turn."""
TEXT_INDEX_CHECK_S = 60.0
"""How often a failed text index build is tried again, and a node on the own index checks for pg_trgm's."""
INDEX_VALID = "SELECT indisvalid FROM pg_index WHERE indexrelid = to_regclass($1)"

TEXT = "(coalesce(error, '') || ' ' || params)"
"""What a text search (`q`) looks in: a run's error and params, as both text indexes hold it."""
TRGM_TEXT_INDEX = "runs_text_trgm"
OWN_TEXT_INDEX = "runs_text_trigrams"
OWN_TRIGRAMS = f"taskd_trigrams(lower{TEXT})"
TEXT_STATISTICS = "runs_text_statistics"
"""The own index's expression, word for word as a search must spell it to be read through it."""


async def _text_statistics(db: asyncpg.Connection, where: str) -> None:
    """Statistics on the text a search looks in, which pg_trgm's index gives the planner and the
    own index (on the text's trigrams) does not: without them ILIKE is guessed to keep 0.5% of the
    runs, and a word found in a third of them is counted through its whole posting list (25 ms at
    a million runs) rather than by reading runs until the count's cap (2 ms). Gathered once here,
    then by autovacuum. PostgreSQL 14 or later; older servers search without them."""
    made = await db.fetchval(
        "SELECT 1 FROM pg_statistic_ext WHERE stxname = $1 AND stxnamespace = current_schema()::regnamespace",
        TEXT_STATISTICS,
    )
    if made:
        return
    try:
        await db.execute(f"CREATE STATISTICS IF NOT EXISTS {TEXT_STATISTICS} ON ({TEXT}) FROM runs")
        await db.execute("ANALYZE runs")
    except asyncpg.PostgresError as exc:
        log.warning("text_statistics_missing", store=where, reason=str(exc))


async def _build(db: asyncpg.Connection, where: str, name: str, how: str) -> bool:
    """Index `name` on runs, built without blocking the writers; a build cut short (the process
    stopped meanwhile) leaves an invalid index, which IF NOT EXISTS would keep for good: it is
    built again. True when it was built here."""
    valid = await db.fetchval(INDEX_VALID, name)
    if valid:
        return False
    if valid is False:
        await db.execute(f"DROP INDEX CONCURRENTLY {name}")
    log.info("text_index_building", store=where, index=name)
    await db.execute(f"CREATE INDEX CONCURRENTLY IF NOT EXISTS {name} ON runs {how}")
    log.info("text_index_built", store=where, index=name)
    return True


async def _drop_own_text_index(db: asyncpg.Connection, where: str) -> None:
    """The store's own trigram index and its statistics, once pg_trgm's index serves."""
    if await db.fetchval("SELECT to_regclass($1) IS NOT NULL", OWN_TEXT_INDEX):
        await db.execute(f"DROP INDEX CONCURRENTLY IF EXISTS {OWN_TEXT_INDEX}")
        log.info("text_index_dropped", store=where, index=OWN_TEXT_INDEX, replaced_by=TRGM_TEXT_INDEX)
    await db.execute(f"DROP STATISTICS IF EXISTS {TEXT_STATISTICS}")


async def _text_index_turn(db: asyncpg.Connection) -> None:
    """The advisory lock that lets one node at a time build the text index (per schema): asked
    for again and again rather than waited on. A node blocked in `pg_advisory_lock` is a
    transaction that began before the other node's CREATE INDEX CONCURRENTLY, which waits for
    every such transaction to end: PostgreSQL then fails one of the two (deadlock)."""
    while True:  # the other node is another process: nothing here to wait on but the lock itself
        if await db.fetchval("SELECT pg_try_advisory_lock($1, hashtext(current_schema()))", TEXT_INDEX_LOCK):
            return
        await asyncio.sleep(TEXT_INDEX_POLL_S)


async def _trigram_schema(db: asyncpg.Connection) -> str | None:
    """Where pg_trgm is installed, installing it if it is not and this role may (in `public`,
    else the store's own schema); None when it cannot be had."""
    found = await db.fetchval("SELECT extnamespace::regnamespace::text FROM pg_extension WHERE extname = 'pg_trgm'")
    if found is not None:
        return str(found).strip('"')
    for target in ("public", None):
        try:
            async with db.transaction():
                await db.execute("CREATE EXTENSION IF NOT EXISTS pg_trgm" + (f" SCHEMA {target}" if target else ""))
        except asyncpg.PostgresError:
            continue
        found = await db.fetchval("SELECT extnamespace::regnamespace::text FROM pg_extension WHERE extname = 'pg_trgm'")
        return None if found is None else str(found).strip('"')
    return None


async def _first_answer(racing: Sequence[asyncio.Future[list[Row]]]) -> list[Row]:
    """The rows of whichever query answers first; a failure counts only when none answers."""
    pending = set(racing)
    failure: BaseException | None = None
    while pending:
        done, pending = await asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED)
        for future in done:
            if future.exception() is None:
                return future.result()
            failure = failure or future.exception()
    assert failure is not None
    raise failure

"""The store contract on PostgreSQL: a schema of its own in the local server's `test` database,
dropped afterwards."""

from __future__ import annotations

import asyncio
import random
import uuid
from collections.abc import AsyncIterator
from typing import Any

import asyncpg
import pytest
from conftest import POSTGRES_URL, postgres_schema, until
from contract_store import *  # noqa: F403  # the contract's tests, run here
from contract_store import Reopen, opened, test_run_search_answers_as_the_reference_store_page_by_page

from taskd.models import RunRecord, RunState, Trigger, new_run_id
from taskd.store import MemoryStore, RunQuery, Store
from taskd.store import postgres as postgres_store
from taskd.store.base import RUN_SORTS
from taskd.store.postgres import PostgresStore
from taskd.store.sql import numbered


@pytest.fixture
async def backend(request: pytest.FixtureRequest) -> AsyncIterator[tuple[Store, Reopen]]:
    schema = await postgres_schema(request)
    async for made in opened(lambda: PostgresStore(POSTGRES_URL, schema=schema)):
        yield made


async def test_a_text_search_goes_through_the_trigram_index(store: Store) -> None:
    """pg_trgm's index is built in the background at open (one node at a time) and a text search
    of three characters or more reads it instead of every run."""
    assert isinstance(store, PostgresStore) and store._indexing is not None
    await store._indexing
    assert store.text_index == "pg_trgm"
    clause, args = store._where(RunQuery(text="disk full"))
    async with store.transaction() as tx:
        await tx.execute("SET LOCAL enable_seqscan = off", ())  # a tiny table: ask for the index's plan
        plan = await tx.execute_fetchall(numbered(f"EXPLAIN SELECT * FROM runs {clause}"), args)
    assert "runs_text_trgm" in "\n".join(row[0] for row in plan)


async def test_a_trigram_index_left_invalid_is_built_again(backend: tuple[Store, Reopen]) -> None:
    """A build cut short (the process stopped during CREATE INDEX CONCURRENTLY) leaves an invalid
    index, which IF NOT EXISTS would keep for good: the next open builds it again."""
    store, reopen = backend
    assert isinstance(store, PostgresStore) and store._indexing is not None
    await store._indexing
    async with store.transaction() as tx:  # as a superuser: mark it as a build cut short leaves it
        await tx.execute("UPDATE pg_index SET indisvalid = false WHERE indexrelid = to_regclass('runs_text_trgm')", ())
    store = await reopen()
    assert isinstance(store, PostgresStore) and store._indexing is not None
    await store._indexing
    async with store.transaction() as tx:
        [row] = await tx.execute_fetchall(
            "SELECT indisvalid FROM pg_index WHERE indexrelid = to_regclass('runs_text_trgm')", ()
        )
    assert row[0] is True and store.text_index == "pg_trgm"


async def test_a_connection_terminated_in_the_middle_of_an_operation_is_the_stores_failure(store: Store) -> None:
    """asyncpg's InternalClientError on a connection the server terminated mid-operation: a read
    answers 503 (the store's failure), a commit is tried again, never dropped row by row."""
    failure = asyncpg.InternalClientError("cannot switch to state 12; another operation (2) is in progress")
    assert isinstance(store, PostgresStore) and store.owns(failure) and store._retryable(failure)


@pytest.fixture
async def without_pg_trgm() -> AsyncIterator[str]:
    """A URL to a database of its own where pg_trgm is not installed, as a role that owns its
    schema (`taskd`) but may not create extensions (no CREATE on the database): what a managed
    server or a careful DBA hands out. The database and the role are dropped afterwards."""
    name = f"taskd_plain_{uuid.uuid4().hex[:10]}"
    admin = await asyncpg.connect(POSTGRES_URL)
    try:
        await admin.execute(f'CREATE ROLE "{name}" LOGIN')
        await admin.execute(f'CREATE DATABASE "{name}"')
        own = await asyncpg.connect(POSTGRES_URL.rsplit("/", 1)[0] + f"/{name}")
        try:
            await own.execute(f'CREATE SCHEMA taskd AUTHORIZATION "{name}"')
            await own.execute(f'REVOKE CREATE ON DATABASE "{name}" FROM PUBLIC')
        finally:
            await own.close()
        url = POSTGRES_URL.replace("//postgres@", f"//{name}@").rsplit("/", 1)[0] + f"/{name}"
        yield url
    finally:
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await admin.execute(f'DROP ROLE IF EXISTS "{name}"')
        await admin.close()


async def _opened_without_pg_trgm(url: str) -> PostgresStore:
    store = PostgresStore(url, schema="taskd")
    await store.open()
    assert store._indexing is not None
    await store._indexing
    return store


async def test_without_pg_trgm_a_text_search_reads_taskds_own_trigram_index(without_pg_trgm: str) -> None:
    """Where pg_trgm cannot be had, the store builds its own GIN index of each run's trigrams
    (built into PostgreSQL, no extension) and a text search of three characters or more reads it;
    ILIKE still decides, so case, accents, wildcards and short texts answer as before."""
    store = await _opened_without_pg_trgm(without_pg_trgm)
    try:
        assert store.text_index == "trigrams"
        texts = {
            "disk": "copy: Disk FULL on /srv",
            "accents": "Échec: DÉPASSÉ le délai",
            "wild": "100% done_ok",
            "params": None,
        }
        for i, (name, error) in enumerate(texts.items()):
            run = RunRecord(
                id=new_run_id(1000.0 + i),
                task_id=name,
                trigger=Trigger.MANUAL,
                queued_at=1000.0 + i,
                state=RunState.FAILED if error else RunState.COMPLETED,
                error=error,
                params={"target": "/srv/Mixed-Case-beta"} if error is None else {},
            )
            store.save_run(run)
        await store.flush()

        async def found(text: str) -> list[str]:
            page = await store.search_runs(RunQuery(text=text))
            return sorted(run.task_id for run in page.runs)

        assert await found("disk full") == ["disk"]
        assert await found("dépassé") == ["accents"]  # lowered the same way ILIKE lowers
        assert await found("mIXED-cASE-B") == ["params"]
        assert await found("0% d") == ["wild"] and await found("1000%") == []  # % is a character
        assert await found("d_n") == [] and await found("e_ok") == ["wild"]  # so is _ ("d_n" is not "don")
        assert await found("/s") == ["disk", "params"]  # shorter than a trigram: ILIKE alone
        assert await found("full on /srv/x") == []
        clause, args = store._where(RunQuery(text="disk full"))
        async with store.transaction() as tx:
            await tx.execute("SET LOCAL enable_seqscan = off", ())  # a tiny table: ask for the index's plan
            plan = await tx.execute_fetchall(numbered(f"EXPLAIN SELECT * FROM runs {clause}"), args)
            extension = await tx.execute_fetchall("SELECT 1 FROM pg_extension WHERE extname = 'pg_trgm'", ())
        assert "runs_text_trigrams" in "\n".join(row[0] for row in plan) and not extension
        # Each trigram is one number: its three code points, 21 bits each (exact, any script).
        async with store.transaction() as tx:
            [(short,), (grams,)] = await tx.execute_fetchall(
                "SELECT taskd_trigrams('ab') UNION ALL SELECT taskd_trigrams('abcé😀')", ()
            )
        points = [ord(c) for c in "abcé😀"]
        expected = [(points[i] << 42) | (points[i + 1] << 21) | points[i + 2] for i in range(len(points) - 2)]
        assert short == [] and grams == expected and len(set(expected)) == 3
    finally:
        await store.close()


async def test_without_pg_trgm_run_search_answers_as_the_reference_store(without_pg_trgm: str) -> None:
    """The contract's page-by-page comparison with the memory store, on the store's own trigram
    index."""
    store = await _opened_without_pg_trgm(without_pg_trgm)
    try:
        assert store.text_index == "trigrams"
        await test_run_search_answers_as_the_reference_store_page_by_page(store)
    finally:
        await store.close()


async def test_a_node_waiting_to_build_the_text_index_leaves_anothers_build_alone(without_pg_trgm: str) -> None:
    """While one node builds the text index (CREATE INDEX CONCURRENTLY, under the advisory lock),
    a node that starts meanwhile waits its turn without holding a snapshot: CONCURRENTLY waits for
    every transaction that began before it, a node blocked in `pg_advisory_lock` is one, and
    PostgreSQL broke that deadlock by failing one of the two (a node left searching with no
    index until its restart, or a build thrown away)."""
    store = await _opened_without_pg_trgm(without_pg_trgm)
    await store.close()
    other = await asyncpg.connect(without_pg_trgm, server_settings={"search_path": "taskd"})
    try:  # the other node, building
        await other.execute("SELECT pg_advisory_lock($1, hashtext(current_schema()))", postgres_store.TEXT_INDEX_LOCK)
        store = PostgresStore(without_pg_trgm, schema="taskd")
        await store.open()
        assert store._indexing is not None
        await asyncio.sleep(0.5)  # waiting for its turn
        assert not store._indexing.done() and store.text_index == "being built"
        await asyncio.wait_for(other.execute("CREATE INDEX CONCURRENTLY built_meanwhile ON runs (id)"), 10)
        await other.execute("SELECT pg_advisory_unlock($1, hashtext(current_schema()))", postgres_store.TEXT_INDEX_LOCK)
    finally:
        await other.close()
    try:
        await store._indexing
        assert store.text_index == "trigrams"
    finally:
        await store.close()


async def test_once_pg_trgm_can_be_had_its_index_replaces_the_own_one(
    without_pg_trgm: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An operator who installs pg_trgm later gets its index at the next start of a node, which
    drops the store's own index and statistics (only the index in use is kept up to date) and
    analyzes the runs (ILIKE's estimates read the new index's statistics); a node not restarted
    notices and stops asking for the own index's condition."""
    monkeypatch.setattr(postgres_store, "TEXT_INDEX_CHECK_S", 0.1)
    staying = await _opened_without_pg_trgm(without_pg_trgm)
    try:
        run = RunRecord(id=new_run_id(1000.0), task_id="t", trigger=Trigger.MANUAL, queued_at=1000.0)
        run.state, run.error = RunState.FAILED, "copy: Disk FULL on /srv"
        staying.save_run(run)
        await staying.flush()
        name = without_pg_trgm.rsplit("/", 1)[1]
        admin = await asyncpg.connect(POSTGRES_URL.rsplit("/", 1)[0] + f"/{name}")
        try:
            await admin.execute("CREATE EXTENSION pg_trgm")
        finally:
            await admin.close()
        restarted = await _opened_without_pg_trgm(without_pg_trgm)
        try:
            assert restarted.text_index == "pg_trgm"
            async with restarted.transaction() as tx:
                indexes = {row[0] for row in await tx.execute_fetchall("SELECT indexname FROM pg_indexes", ())}
                statistics = await tx.execute_fetchall("SELECT stxname FROM pg_statistic_ext", ())
                analyzed = await tx.execute_fetchall("SELECT 1 FROM pg_stats WHERE tablename = 'runs_text_trgm'", ())
            assert "runs_text_trgm" in indexes and "runs_text_trigrams" not in indexes
            assert statistics == [] and analyzed
        finally:
            await restarted.close()
        await until(lambda: staying.text_index == "pg_trgm", "the node not restarted to move to pg_trgm")
        assert [r.id for r in (await staying.search_runs(RunQuery(text="disk full"))).runs] == [run.id]
    finally:
        await staying.close()


async def test_a_text_index_build_that_failed_is_tried_again(
    without_pg_trgm: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A build that fails (the server restarting, a lock, a full disk) leaves text searches to
    scan, says why in the log, and is tried again: the node gets its index without a restart."""
    monkeypatch.setattr(postgres_store, "TEXT_INDEX_CHECK_S", 0.1)
    build = postgres_store._build
    failures = [asyncpg.exceptions.DiskFullError("could not extend file: No space left on device")]

    async def failing_once(*args: Any) -> bool:
        if failures:
            raise failures.pop()
        return await build(*args)

    monkeypatch.setattr(postgres_store, "_build", failing_once)
    store = PostgresStore(without_pg_trgm, schema="taskd")
    await store.open()
    try:
        assert store._indexing is not None
        await store._indexing
        assert store.text_index is not None and store.text_index.startswith("DiskFullError")
        await until(lambda: store.text_index == "trigrams", "the build to be tried again")
    finally:
        await store.close()


async def test_a_burst_of_searches_leaves_connections_to_the_rest_of_the_store(store: Store) -> None:
    """Searches hold at most SEARCH_CONNECTIONS of the pool's connections: ten searches stuck
    behind a lock on `runs` leave the ping (/health) and the cluster's lease a connection."""
    assert isinstance(store, PostgresStore) and store.pool is not None and store._indexing is not None
    assert postgres_store.SEARCH_CONNECTIONS < postgres_store.POOL_SIZE
    await store._indexing  # its CREATE INDEX CONCURRENTLY would wait for the lock below
    async with store.transaction() as tx:  # an ALTER TABLE's lock, say: every search waits for it
        await tx.execute("LOCK TABLE runs IN ACCESS EXCLUSIVE MODE", ())
        searches = [asyncio.ensure_future(store.search_runs(RunQuery(states=("failed",)))) for _ in range(10)]
        await asyncio.sleep(0.5)
        assert not any(search.done() for search in searches)
        assert await store.ping()
    pages = await asyncio.gather(*searches)
    assert [page.total for page in pages] == [0] * 10


async def test_many_matches_are_read_in_the_sorts_order_with_the_same_answer(
    store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    """When the count says a search matches many runs, the page is also read in the sort's order
    (the planner forbidden to sort) and the first answer wins: either way it is the reference
    store's page. The exact-count limits are lowered so that 300 runs are many."""
    assert isinstance(store, PostgresStore)
    monkeypatch.setattr(postgres_store, "EXACT_UP_TO", 5)
    monkeypatch.setattr(postgres_store, "EXACT_TEXT_UP_TO", 5)
    rng = random.Random(5)
    reference = MemoryStore()
    await reference.open()
    try:
        for i in range(300):
            state = rng.choice([RunState.COMPLETED] * 6 + [RunState.FAILED, RunState.STOPPED])
            run = RunRecord(
                id=new_run_id(1000.0 + rng.random() * 300),
                task_id=rng.choice("abc"),
                trigger=rng.choice([Trigger.SCHEDULE, Trigger.MANUAL]),
                queued_at=1000.0 + i // 2,
                state=state,
                started_at=1000.0 + i // 2,
                finished_at=1001.0 + i // 2 + rng.randrange(4),
                attempts=1,
                error="disk full" if state is RunState.FAILED else None,
            )
            store.save_run(run)
            reference.save_run(run)
        await store.flush()
        specs: list[dict[str, Any]] = [
            {"states": ("failed",)},
            {"states": ("failed", "stopped"), "task_ids": ("a", "b")},
            {"text": "disk"},
            {"text": "DISK FULL", "states": ("failed",)},
            {"triggers": ("manual",)},
        ]
        for spec in specs:
            for sort in RUN_SORTS:
                for descending in (True, False):
                    for limit, offset in ((10, 0), (7, 14)):
                        query = RunQuery(**spec, sort=sort, descending=descending, limit=limit, offset=offset)
                        want, expected = await reference.list_runs(query)
                        page = await store.search_runs(query)
                        assert [r.id for r in page.runs] == [r.id for r in want], query
                        assert page.exact is (expected <= 5), query
                        clause, args = store._where(query, partial=bool(query.text))
                        order = store._order_by(query, " NULLS LAST", " NULLS FIRST")
                        sql = numbered(f"SELECT * FROM runs {clause} {order} LIMIT ? OFFSET ?")
                        in_order = await store._search(sql, [*args, limit, offset], postgres_store.IN_SORT_ORDER)
                        assert [row["id"] for row in in_order] == [r.id for r in want], query
    finally:
        await reference.close()

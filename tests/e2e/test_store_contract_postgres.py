"""The store contract on PostgreSQL: a schema of its own in the local server's `test` database,
dropped afterwards."""

from __future__ import annotations

from collections.abc import AsyncIterator

import asyncpg
import pytest
from conftest import POSTGRES_URL, postgres_schema
from contract_store import *  # noqa: F403  # the contract's tests, run here
from contract_store import Reopen, opened

from taskd.store import RunQuery, Store
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

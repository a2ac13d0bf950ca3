"""The store contract on PostgreSQL: a schema of its own in the local server's `test` database,
dropped afterwards."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from conftest import POSTGRES_URL, postgres_schema
from contract_store import *  # noqa: F403  # the contract's tests, run here
from contract_store import Reopen, opened

from taskd.store import Store
from taskd.store.postgres import PostgresStore


@pytest.fixture
async def backend(request: pytest.FixtureRequest) -> AsyncIterator[tuple[Store, Reopen]]:
    schema = await postgres_schema(request)
    async for made in opened(lambda: PostgresStore(POSTGRES_URL, schema=schema)):
        yield made

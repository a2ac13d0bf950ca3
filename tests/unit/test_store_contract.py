"""The store contract on the in-memory store and on SQLite in a real file."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from contract_store import *  # noqa: F403  # the contract's tests, run here
from contract_store import Reopen, opened

from taskd.store import MemoryStore, SQLiteStore, Store


@pytest.fixture(params=["memory", "sqlite"])
async def backend(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[tuple[Store, Reopen]]:
    memory = MemoryStore()  # data lives in the object: reopening it acts like a restart
    async for made in opened(lambda: memory if request.param == "memory" else SQLiteStore(tmp_path / "t.db")):
        yield made

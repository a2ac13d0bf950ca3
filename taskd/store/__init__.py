"""Run history: the `Store` interface and its records (base), the backend-neutral write buffer,
an in-memory store, the SQLite store and the PostgreSQL store. `open_store` picks the backend for
a location."""

from __future__ import annotations

from pathlib import Path

from taskd.clock import Clock
from taskd.store.base import MEMORY, Fire, LogLine, RunQuery, Store, StoreError, Transition
from taskd.store.memory import MemoryStore
from taskd.store.sqlite import SQLiteStore


def open_store(location: str | Path, clock: Clock | None = None) -> Store:
    """The store for `location`: `:memory:` for the in-memory store, a `postgresql://` URL for
    PostgreSQL, else a SQLite file path. The store is returned unopened; `await store.open()`
    creates or migrates it. Its write window and retries are timed on `clock`."""
    text = str(location)
    if text == MEMORY:
        return MemoryStore(clock=clock)
    if text.startswith(("postgresql://", "postgres://")):
        try:  # asyncpg is an optional dependency (the `postgres` extra): imported only when asked for
            from taskd.store.postgres import PostgresStore
        except ImportError as exc:
            raise StoreError(
                f"store.url needs the asyncpg driver ({exc}); install taskd with the postgres extra: "
                "pip install 'taskd[postgres]'"
            ) from None
        return PostgresStore(text, clock=clock)
    return SQLiteStore(location, clock=clock)


__all__ = [
    "MEMORY",
    "Fire",
    "LogLine",
    "MemoryStore",
    "RunQuery",
    "SQLiteStore",
    "Store",
    "StoreError",
    "Transition",
    "open_store",
]

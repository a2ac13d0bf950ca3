"""Run history: the `Store` interface and its records (base), the backend-neutral write buffer,
an in-memory store and the SQLite store. `open_store` picks the backend for a location."""

from __future__ import annotations

from pathlib import Path

from taskd.store.base import MEMORY, Fire, LogLine, RunQuery, Store, StoreError, Transition
from taskd.store.memory import MemoryStore
from taskd.store.sqlite import SQLiteStore


def open_store(location: str | Path) -> Store:
    """The store for `location`: `:memory:` for the in-memory store, else a SQLite file path.
    The store is returned unopened; `await store.open()` creates or migrates it."""
    if str(location) == MEMORY:
        return MemoryStore()
    return SQLiteStore(location)


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

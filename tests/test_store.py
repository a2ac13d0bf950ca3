"""What only the SQLite store has: a file in WAL mode, a versioned schema and its migrations.
What every store does is in test_store_contract.py."""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any

import pytest

from taskd.models import RunState
from taskd.store import MEMORY, MemoryStore, RunQuery, StoreError, open_store
from taskd.store.rows import PARTIAL_STATE_INDEXES
from taskd.store.sqlite import MIGRATIONS, SQLiteStore


async def test_creates_the_file_and_directory_in_wal_mode_with_a_schema_version(tmp_path: Path) -> None:
    path = tmp_path / "deep" / "er" / "taskd.db"
    store = SQLiteStore(path)
    await store.open()
    await store.close()
    with sqlite3.connect(path) as db:
        assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        assert db.execute("PRAGMA user_version").fetchone()[0] == len(MIGRATIONS)
    again = SQLiteStore(path)  # opening twice migrates nothing
    await again.open()
    await again.close()


async def test_a_version_1_store_is_migrated_forward_keeping_its_data(tmp_path: Path) -> None:
    path = tmp_path / "v1.db"
    with sqlite3.connect(path) as db:
        db.executescript(MIGRATIONS[0] + "PRAGMA user_version = 1;")
        db.execute(
            "INSERT INTO runs (id, task_id, trigger, state, queued_at, finished_at, error) "
            "VALUES ('r1', 't', 'manual', 'failed', 10.0, 12.0, 'boom')"
        )
    store = SQLiteStore(path)
    await store.open()
    try:
        run = await store.get_run("r1")
        assert run is not None and run.error == "boom"
        assert [(t.state, t.at) for t in await store.transitions("r1")] == [("queued", 10.0), ("failed", 12.0)]
        found, total = await store.list_runs(RunQuery(text="BOOM"))  # older runs are searchable too
        assert total == 1 and found[0].id == "r1"
    finally:
        await store.close()
    with sqlite3.connect(path) as db:
        assert db.execute("PRAGMA user_version").fetchone()[0] == len(MIGRATIONS)


async def test_a_newer_schema_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "t.db"
    with sqlite3.connect(path) as db:
        db.execute(f"PRAGMA user_version = {len(MIGRATIONS) + 5}")
    with pytest.raises(StoreError, match="newer than this taskd understands"):
        await SQLiteStore(path).open()


async def test_an_unwritable_location_is_a_clear_error(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    with pytest.raises(StoreError, match="cannot open the store"):
        await SQLiteStore(blocker / "taskd.db").open()


def test_open_store_picks_the_backend_by_location(tmp_path: Path) -> None:
    assert isinstance(open_store(MEMORY), MemoryStore)
    sqlite_store = open_store(tmp_path / "t.db")
    assert isinstance(sqlite_store, SQLiteStore) and sqlite_store.path == tmp_path / "t.db"


@pytest.mark.parametrize(
    ("states", "index"),
    [
        (("failed",), "runs_ended_badly"),
        (("stopped", "interrupted"), "runs_ended_badly"),
        (("running",), "runs_active"),
    ],
)
async def test_a_search_by_state_uses_the_partial_index_for_those_states(
    tmp_path: Path, states: tuple[str, ...], index: str
) -> None:
    """Completed runs (most runs) are in no state index; the others are found through one."""
    store = SQLiteStore(tmp_path / "t.db")
    await store.open()
    try:
        captured: list[str] = []
        reader = store._read()
        original = reader.execute

        def spy(sql: str, parameters: Any = ()) -> Any:
            captured.append(sql)
            return original(sql, parameters)

        reader.execute = spy  # type: ignore[method-assign]
        await store.list_runs(RunQuery(states=states))
        reader.execute = original  # type: ignore[method-assign]
        count_sql = next(sql for sql in captured if sql.startswith("SELECT count(*)"))
        params = [*states]
        with sqlite3.connect(tmp_path / "t.db") as db:
            plan = " ".join(row[-1] for row in db.execute(f"EXPLAIN QUERY PLAN {count_sql}", params))
        assert index in plan, plan
    finally:
        await store.close()


def test_the_partial_state_indexes_cover_every_state_but_completed() -> None:
    """A search for completed runs is counted as all runs minus those in these indexes."""
    covered = set().union(*(states for states, _ in PARTIAL_STATE_INDEXES))
    assert covered | {"completed"} == {str(state) for state in RunState}
    assert "completed" not in covered

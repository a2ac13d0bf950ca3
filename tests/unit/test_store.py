"""What only the SQLite store has: a file in WAL mode, a versioned schema and its migrations.
What every store does is in test_store_contract.py."""

from __future__ import annotations

import dataclasses
import math
import os
import random
import sqlite3
from pathlib import Path
from typing import Any

import pytest

from taskd.models import RunRecord, RunState, Trigger, new_run_id
from taskd.store import MEMORY, MemoryStore, RunQuery, StoreError, open_store
from taskd.store.base import RUN_SORTS, LogLine
from taskd.store.rows import PARTIAL_STATE_INDEXES
from taskd.store.sqlite import MIGRATIONS, SQLiteStore, StoreLocked


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


SEARCHES = {
    "newest": RunQuery(),
    "oldest": RunQuery(descending=False),
    "one state": RunQuery(states=("failed",)),
    "a rare state": RunQuery(states=("running",)),
    "states with completed": RunQuery(states=("completed", "failed")),
    "tasks": RunQuery(task_ids=("a", "b")),
    "manual trigger": RunQuery(triggers=("manual",)),
    "schedule trigger": RunQuery(triggers=("schedule",)),
    "since and until": RunQuery(since=100.0, until=200.0),
    "failed by end": RunQuery(states=("failed",), sort="finished_at"),
    "text": RunQuery(text="disk full"),
    "text or task": RunQuery(text="disk", text_task_ids=("a",)),
    "deep page": RunQuery(offset=5000),
    **{f"sort {key}{' ascending' * up}": RunQuery(sort=key, descending=not up) for key in RUN_SORTS for up in (0, 1)},
}


@pytest.mark.parametrize("name", SEARCHES)
async def test_every_run_search_reads_through_an_index_and_sorts_only_a_few_runs(tmp_path: Path, name: str) -> None:
    """With a million runs stored, a scan of the table or a sort of many runs is what takes a search
    past 50 ms (bench/run_search.py). So every query `GET /runs` sends reads through an index, and
    sorts its matches only when they are few: when they are many, it reads the runs in the order
    asked for and stops at the page."""
    query = SEARCHES[name]
    store = SQLiteStore(tmp_path / "t.db")
    await store.open()
    rng = random.Random(5)
    stored = 3000
    for i in range(stored):
        run = RunRecord(
            id=new_run_id(100.0 + i),
            task_id="abcdefghij"[i % 10],
            trigger=Trigger.MANUAL if rng.random() < 0.1 else Trigger.SCHEDULE,
            queued_at=100.0 + i,
            state=RunState.RUNNING
            if i == stored - 1
            else RunState.FAILED
            if rng.random() < 0.05
            else RunState.COMPLETED,
            started_at=100.5 + i,
            finished_at=None if i == stored - 1 else 101 + i + rng.random() * 10,
            attempts=1,
        )
        if run.state is RunState.FAILED:
            run.error = "copy: disk full"
        store.save_run(run)
    try:
        captured: list[tuple[str, Any]] = []
        reader = store._read()
        original = reader.execute

        def spy(sql: str, parameters: Any = ()) -> Any:
            captured.append((sql, parameters))
            return original(sql, parameters)

        reader.execute = spy  # type: ignore[method-assign]
        _, total = await store.list_runs(query)
        await store.list_runs(dataclasses.replace(query, offset=stored))  # a page past the end counts apart
        reader.execute = original  # type: ignore[method-assign]
    finally:
        await store.close()
    few = math.sqrt((query.offset + query.limit) * stored)
    with sqlite3.connect(tmp_path / "t.db") as db:
        for sql, parameters in captured:
            plan = [row[-1] for row in db.execute(f"EXPLAIN QUERY PLAN {sql}", parameters)]
            assert not [step for step in plan if step.startswith("SCAN runs") and "INDEX" not in step], (sql, plan)
            if "USE TEMP B-TREE FOR ORDER BY" in plan:
                assert total <= few, (total, sql, plan)


async def test_a_tasks_page_reads_at_once_through_its_index_and_falls_back_to_the_reader(tmp_path: Path) -> None:
    """What GET /task/{id} reads (the stats, the latest runs, the history, the fires) is answered on
    the loop's own thread, through the task's index; when that connection cannot answer, the
    reader's thread does, with the same answers."""
    store = SQLiteStore(tmp_path / "t.db")
    await store.open()
    try:
        for i in range(300):
            state = RunState.RUNNING if i == 299 else RunState.FAILED if i % 7 == 0 else RunState.COMPLETED
            run = RunRecord(id=new_run_id(100.0 + i), task_id="ab"[i % 2], trigger=Trigger.SCHEDULE,
                            queued_at=100.0 + i, state=state, started_at=100.0 + i,
                            finished_at=None if i == 299 else 101.0 + i)  # fmt: skip
            store.save_run(run)
        await store.flush()
        finished = RunQuery(task_ids=("b",), states=("completed", "failed", "stopped", "interrupted"),
                            limit=200, fresh=False, counted=False)  # fmt: skip
        latest = RunQuery(task_ids=("b",), limit=10, fresh=False, counted=False)

        async def page() -> tuple[Any, ...]:
            return (await store.task_stats("b"), [r.id for r in (await store.list_runs(finished))[0]],
                    [r.id for r in (await store.list_runs(latest))[0]], await store.fires("b", 10))  # fmt: skip

        captured: list[str] = []
        reader = store._read()
        original = reader.execute_fetchall

        async def spy(sql: str, parameters: Any = ()) -> Any:
            captured.append(sql)
            return await original(sql, parameters)

        reader.execute_fetchall = spy  # type: ignore[method-assign]
        at_once = await page()
        assert captured == []  # nothing went through the reader's thread
        stats, history, recent, _ = at_once
        assert stats["runs"] == 150 and len(history) == 149 and len(recent) == 10
        newest = await store.get_run(recent[0])
        assert newest is not None and newest.state is RunState.RUNNING  # the latest runs include the active
        with sqlite3.connect(tmp_path / "t.db") as db:
            sql = "SELECT * FROM runs WHERE task_id = ? AND +state IN (?, ?) ORDER BY queued_at DESC, id DESC LIMIT 9"
            plan = " ".join(row[-1] for row in db.execute(f"EXPLAIN QUERY PLAN {sql}", ("b", "failed", "completed")))
            assert "SEARCH runs USING INDEX runs_by_task (task_id=?)" in plan, plan
        store._now.close()  # type: ignore[union-attr]  # as if it could not answer: the reader does
        assert await page() == at_once and captured
    finally:
        reader.execute_fetchall = original  # type: ignore[method-assign]
        await store.close()


def test_the_partial_state_indexes_cover_every_state_but_completed() -> None:
    """A search for completed runs is counted as all runs minus those in these indexes."""
    covered = set().union(*(states for states, _ in PARTIAL_STATE_INDEXES))
    assert covered | {"completed"} == {str(state) for state in RunState}
    assert "completed" not in covered


async def test_one_store_one_daemon_the_file_is_locked_under_any_of_its_names(tmp_path: Path) -> None:
    """A second open of the same file (as a second `taskd run` would) is refused naming the holder's
    pid, through a hard link too; the lock goes with the first one's close."""
    first = SQLiteStore(tmp_path / "taskd.db")
    await first.open()
    os.link(tmp_path / "taskd.db", tmp_path / "linked.db")
    for name in ("taskd.db", "linked.db"):
        with pytest.raises(StoreLocked, match="in use by another taskd process") as refused:
            await SQLiteStore(tmp_path / name).open()
        if name == "taskd.db":
            assert f"pid {os.getpid()}" in str(refused.value) and str(tmp_path / "taskd.db") in str(refused.value)
    await first.close()
    again = SQLiteStore(tmp_path / "linked.db")
    await again.open()
    await again.close()


async def test_a_prune_that_fails_midway_rolls_back_and_deletes_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = SQLiteStore(tmp_path / "taskd.db")
    await store.open()
    old = RunRecord(new_run_id(1000.0), "t", Trigger.MANUAL, 1000.0, state=RunState.COMPLETED)
    old.finished_at = 1000.0
    store.save_run(old)
    store.append_log(LogLine(old.id, 1, 1000.0, "log", "kept"))
    await store.flush()
    calls = 0
    any_of = SQLiteStore._any

    def fails_second(self: SQLiteStore, column: str, values: Any) -> Any:
        nonlocal calls
        calls += 1
        if calls == 2:  # after the first table's DELETE ran inside the transaction
            raise sqlite3.OperationalError("database is locked")
        return any_of(self, column, values)

    monkeypatch.setattr(SQLiteStore, "_any", fails_second)
    with pytest.raises(sqlite3.OperationalError):
        await store.prune(10 * 86400.0, days=1, max_runs_per_task=0)
    monkeypatch.undo()
    assert await store.get_run(old.id) is not None
    assert [line.line for line in await store.run_log(old.id)] == ["kept"]
    assert await store.prune(10 * 86400.0, days=1, max_runs_per_task=0) == 1  # tried again later: done
    await store.close()

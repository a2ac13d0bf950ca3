"""The SQLite store against a real file: schema, WAL, batching, recovery and retention."""

from __future__ import annotations

import sqlite3
import time
from pathlib import Path

import pytest

from taskd.models import AttemptRecord, RunRecord, RunState, StepRecord, StepState, Trigger, new_run_id
from taskd.store import Fire, LogLine, RunQuery
from taskd.store.sqlite import MIGRATIONS, SQLiteStore, StoreError


def _record(task_id: str = "t", queued_at: float | None = None, state: RunState = RunState.QUEUED) -> RunRecord:
    return RunRecord(
        id=new_run_id(), task_id=task_id, trigger=Trigger.MANUAL, queued_at=queued_at or time.time(), state=state
    )


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
    finally:
        await store.close()
    with sqlite3.connect(path) as db:
        assert db.execute("PRAGMA user_version").fetchone()[0] == 2


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


async def test_thousands_of_writes_share_few_commits(tmp_path: Path) -> None:
    store = SQLiteStore(tmp_path / "t.db")
    await store.open()
    try:
        records = [_record(f"task{i % 10}") for i in range(5000)]
        for record in records:
            store.save_run(record)
            record.state = RunState.RUNNING
            store.save_run(record)
            store.save_attempt(AttemptRecord(record.id, 1, time.time()))
            store.append_log(LogLine(record.id, 1, time.time(), "stdout", "hello"))
            record.state = RunState.COMPLETED
            record.finished_at = time.time()
            store.save_run(record)
        await store.flush()
        assert store.commits <= 3
        runs, total = await store.list_runs(RunQuery(limit=10))
        assert total == 5000 and all(r.state is RunState.COMPLETED for r in runs)
        assert len(await store.run_log(records[0].id)) == 1
    finally:
        await store.close()


async def test_recover_marks_active_runs_interrupted(tmp_path: Path) -> None:
    path = tmp_path / "t.db"
    store = SQLiteStore(path)
    await store.open()
    running, done = _record(state=RunState.RUNNING), _record(state=RunState.COMPLETED)
    running.started_at = time.time()
    store.save_run(running)
    store.save_run(done)
    store.save_attempt(AttemptRecord(running.id, 1, time.time()))
    store.save_step(StepRecord(running.id, 1, 0, "shell", time.time()))
    await store.close()

    reopened = SQLiteStore(path)
    await reopened.open()
    try:
        recovered = await reopened.recover_interrupted(time.time())
        assert [r.id for r in recovered] == [running.id]
        stored = await reopened.get_run(running.id)
        assert stored is not None and stored.state is RunState.INTERRUPTED and "taskd exited" in (stored.error or "")
        assert (await reopened.attempts(running.id))[0].state is StepState.INTERRUPTED
        assert (await reopened.steps(running.id))[0].state is StepState.INTERRUPTED
        assert (await reopened.get_run(done.id)).state is RunState.COMPLETED  # type: ignore[union-attr]
    finally:
        await reopened.close()


async def test_tombstones_fires_and_last_fires(tmp_path: Path) -> None:
    store = SQLiteStore(tmp_path / "t.db")
    await store.open()
    try:
        store.add_tombstone("a", "hash1", time.time())
        store.add_tombstone("b", "hash2", time.time())
        store.remove_tombstone("b")
        store.set_last_fire("a", 200.0)
        store.set_last_fire("a", 100.0)  # never moves backwards
        store.record_fire(Fire("a", 150.0, "skipped", "busy", time.time()))
        assert await store.tombstones() == {"a": "hash1"}
        assert await store.last_fires() == {"a": 200.0}
        assert [f.reason for f in await store.fires("a")] == ["busy"]
    finally:
        await store.close()


async def test_retention_by_age_and_by_count(tmp_path: Path) -> None:
    store = SQLiteStore(tmp_path / "t.db")
    await store.open()
    try:
        now = time.time()
        old = _record("a", queued_at=now - 40 * 86400, state=RunState.COMPLETED)
        old.finished_at = now - 40 * 86400
        store.save_run(old)
        store.append_log(LogLine(old.id, 1, now, "log", "x"))
        recent = []
        for i in range(5):
            run = _record("b", queued_at=now - 100 + i, state=RunState.FAILED)
            run.finished_at = now - 50 + i
            recent.append(run)
            store.save_run(run)
        active = _record("b", queued_at=now - 1000, state=RunState.RUNNING)
        store.save_run(active)
        removed = await store.prune(now, days=30, max_runs_per_task=3)
        assert removed == 3  # the 40-day-old run, and b's two oldest finished runs
        runs, total = await store.list_runs(RunQuery(task_id="b"))
        assert total == 4 and active.id in {r.id for r in runs}
        assert await store.get_run(old.id) is None and await store.run_log(old.id) == []
    finally:
        await store.close()


async def test_stats(tmp_path: Path) -> None:
    store = SQLiteStore(tmp_path / "t.db")
    await store.open()
    try:
        for i, state in enumerate([RunState.COMPLETED] * 3 + [RunState.FAILED]):
            run = _record("a", queued_at=1000 + i, state=state)
            run.started_at, run.finished_at = 1000.0 + i, 1000.0 + i + (i + 1)
            store.save_run(run)
        await store.flush()  # stats may lag the last batch of writes
        stats = await store.task_stats("a")
        assert stats["runs"] == 4 and stats["success_rate"] == 0.75
        assert stats["mean_duration"] == 2.5 and stats["p95_duration"] == 4
    finally:
        await store.close()

"""Backpressure: when the store or the slots cannot keep up, taskd refuses new runs in a defined
way (fires skipped as `overloaded`, manual starts 503 with Retry-After), loses nothing it has
accepted, and recovers by itself once the load drops."""

from __future__ import annotations

import sqlite3
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
from conftest import Api, base_config, until
from prometheus_client.parser import text_string_to_metric_families

from taskd.engine.policy import overload
from taskd.models import RunRecord, RunState, Trigger
from taskd.store.base import LogLine, Transition
from taskd.store.buffer import Batch, BufferedStore
from taskd.store.sqlite import SQLiteStore


def metric(text: str, name: str, **labels: str) -> float | None:
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items()):
                return float(sample.value)
    return None


def test_overload_begins_at_the_limit_and_ends_at_half_of_it() -> None:
    assert overload(99, 100, 0, 10, already=False) is None
    assert "store.max_pending is 100" in (overload(100, 100, 0, 10, already=False) or "")
    assert overload(60, 100, 0, 10, already=True) is not None  # still above half
    assert overload(49, 100, 0, 10, already=True) is None
    assert "task.max_waiting_runs is 10" in (overload(0, 100, 10, 10, already=False) or "")
    assert overload(5, 100, 4, 10, already=True) is None


def test_a_failed_batch_is_staged_again_ahead_of_newer_writes() -> None:
    older, newer = Batch(), Batch()
    run = RunRecord(id="r1", task_id="t", trigger=Trigger.MANUAL, queued_at=1.0)
    older.runs["r1"] = run
    older.transitions.append(Transition("r1", 1, 1.0, "queued"))
    older.last_fires["t"] = 5.0
    later = RunRecord(id="r1", task_id="t", trigger=Trigger.MANUAL, queued_at=1.0, state=RunState.RUNNING)
    newer.runs["r1"] = later
    newer.transitions.append(Transition("r1", 2, 2.0, "running"))
    newer.last_fires["t"] = 4.0
    older.absorb(newer)
    assert older.runs["r1"] is later  # the newest state of a record wins
    assert [t.seq for t in older.transitions] == [1, 2]
    assert older.last_fires["t"] == 5.0
    assert len(older) == 4


async def test_sqlite_keeps_writes_while_the_database_is_locked_and_commits_them_after(tmp_path: Path) -> None:
    store = SQLiteStore(tmp_path / "t.db", batch_window_s=0, busy_timeout_s=0.05)
    await store.open()
    blocker = sqlite3.connect(tmp_path / "t.db", isolation_level=None)
    try:
        blocker.execute("BEGIN EXCLUSIVE")  # another process holds the database
        for i in range(20):
            store.save_run(RunRecord(id=f"r{i}", task_id="t", trigger=Trigger.MANUAL, queued_at=float(i)))
        await until(lambda: store.failed_commits >= 2, "two failed commits")
        assert store.pending_writes == 20  # kept, not dropped
        blocker.execute("COMMIT")
        await until(lambda: store.pending_writes == 0, "the kept writes to be committed")
        assert blocker.execute("SELECT count(*) FROM runs").fetchone()[0] == 20
    finally:
        blocker.close()
        await store.close()


MEMORY_CONFIG = base_config(
    "- {id: tick, pipeline: quick, schedule: '* * * * * *'}\n- {id: job, pipeline: quick, concurrency: allow}",
    "- {name: quick, processors: [{sleep: {duration: 0}}]}",
).replace("store: {path: ./var/taskd.db}", "store: {path: ':memory:', max_pending: 100}")


async def test_a_store_that_cannot_commit_refuses_manual_starts_sheds_load_and_recovers(
    api_factory: Callable[..., Awaitable[Api]], monkeypatch: pytest.MonkeyPatch
) -> None:
    api = await api_factory(MEMORY_CONFIG)
    store = api.store
    assert isinstance(store, BufferedStore)
    failing = False
    commit = type(store)._commit

    async def disk_full(self: Any, batch: Batch) -> None:
        if failing:
            raise OSError(28, "No space left on device")
        await commit(self, batch)

    monkeypatch.setattr(type(store), "_commit", disk_full)
    accepted = []
    for _ in range(5):  # answered once committed
        resp = await api.request("POST", "/task/job/_start")
        assert resp.status == 202, resp.text
        accepted.append(resp.json()["run_id"])
    failing = True
    store.append_log(LogLine(accepted[0], 10_000, 0.0, "log", "written as the disk fills"))
    await until(lambda: store.failing, "a failed commit")
    # No run is accepted that a crash could lose: a manual start is refused while commits fail.
    refused = await api.request("POST", "/task/job/_start")
    assert refused.status == 503 and refused.json()["error"]["code"] == "store_unavailable", refused.text
    # Writes keep coming (running runs, fires) and stay staged: past store.max_pending, it is overloaded.
    for seq in range(10_001, 10_101):
        store.append_log(LogLine(accepted[0], seq, 0.0, "log", "more"))
    refused = await api.request("POST", "/task/job/_start")
    assert refused.status == 503 and refused.headers["Retry-After"] == "1", refused.text
    assert refused.json()["error"]["code"] == "overloaded"
    assert "store.max_pending is 100" in refused.json()["error"]["message"]
    # The per-second task's fires are skipped as overloaded while the store is stuck.
    overloaded = lambda: [f for f in store._batch.fires.values() if f.reason.startswith("taskd is overloaded")]  # noqa: E731
    await until(lambda: bool(overloaded()), "a fire skipped as overloaded")  # staged, since nothing commits
    text = (await api.request("GET", "/metrics")).text
    assert metric(text, "taskd_overloaded") == 1
    assert (metric(text, "taskd_fires_skipped_total", task="tick", reason="overloaded") or 0) >= 1
    health = await api.request("GET", "/health")
    assert health.status == 503 and "store.max_pending" in health.json()["overloaded"]
    failing = False  # the disk has room again
    await until(lambda: store.pending_writes == 0, "the kept writes to be committed")
    resp = await api.request("POST", "/task/job/_start")
    assert resp.status == 202, resp.text  # recovered by itself
    await api.wait_run(resp.json()["run_id"])
    assert (await api.request("GET", "/health")).status == 200
    for run_id in accepted:  # nothing accepted was lost, not even a transition
        run = await api.wait_run(run_id)
        assert run["state"] == "completed"
        assert [t["state"] for t in run["transitions"]] == ["queued", "running", "completed"], run_id
    assert len(await store.run_log(accepted[0])) >= 101


async def test_too_many_runs_waiting_for_a_slot_refuses_more_until_they_drain(
    api_factory: Callable[..., Awaitable[Api]],
) -> None:
    config = base_config(
        "- {id: slow, pipeline: wait, concurrency: allow}",
        "- {name: wait, processors: [{sleep: {duration: 30}}]}",
        slots=1,
        extra="task: {max_concurrent_tasks: 1, max_waiting_runs: 3, shutdown_timeout: 5s}\n",
    ).replace("task: {max_concurrent_tasks: 1, shutdown_timeout: 5s}\n", "", 1)
    api = await api_factory(config)
    for _ in range(4):  # one running, three waiting
        await api.start_task("slow")
    resp = await api.request("POST", "/task/slow/_start")
    assert resp.status == 503, resp.text
    assert "task.max_waiting_runs is 3" in resp.json()["error"]["message"]
    assert (await api.request("POST", "/task/slow/_stop")).status == 200
    await api.start_task("slow")  # the queue drained: accepted again

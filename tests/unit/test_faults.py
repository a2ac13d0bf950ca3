"""Faults the daemon survives, in process: a run's first step waits for its start to be committed;
a failed prune is a fault shown and retried, never fatal; a side task that dies gives exit 1; a
store fault past store.max_outage gives exit 1; /health says degraded (503) with the reason."""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import fake_steps
import pytest
import structlog
from conftest import ON_POSTGRES, Api, base_config, until

from taskd.clock import FakeClock
from taskd.cluster import NodeNameInUse
from taskd.cluster.local import LocalCoordinator
from taskd.config import load_config
from taskd.daemon import RETENTION_RETRY_S, Daemon
from taskd.faults import RELOAD, RETENTION, STORE_FILE, STORE_UNREACHABLE, STORE_WRITE, Faults
from taskd.models import Trigger
from taskd.store.buffer import Batch, BufferedStore
from taskd.store.sqlite import SQLiteStore

CONFIG = base_config(
    "- {id: job, pipeline: p, concurrency: allow}",
    "- {name: p, processors: [{python: {function: 'fake_steps:note_start'}}]}",
).replace("{port}", "0")


async def test_a_runs_first_step_waits_until_its_start_is_committed(
    api_factory: Callable[..., Awaitable[Api]], monkeypatch: pytest.MonkeyPatch
) -> None:
    api = await api_factory(CONFIG.replace("store: {path: ./var/taskd.db}", "store: {path: ':memory:'}"))
    store = api.store
    assert isinstance(store, BufferedStore)
    hold = asyncio.Event()
    committed: list[str] = []
    commit = type(store)._commit

    async def held(self: Any, batch: Batch) -> None:
        await hold.wait()
        await commit(self, batch)
        committed.extend(batch.runs)

    monkeypatch.setattr(type(store), "_commit", held)
    fake_steps.STARTED.clear()
    run = api.engine.start_run("job", Trigger.MANUAL)
    await asyncio.sleep(0.2)
    assert fake_steps.STARTED == [], "the step began before the run's start was committed"
    hold.set()
    await until(lambda: fake_steps.STARTED == [run.id], "the step to begin once committed")
    assert run.id in committed


async def test_faults_are_raised_once_cleared_and_counted() -> None:
    now = [100.0]
    faults = Faults(lambda: now[0])
    faults.set(RELOAD, "bad yaml")
    faults.set(RELOAD, "bad yaml")  # the same: not raised again
    assert faults.healthy and faults.outage_since() is None
    faults.set(STORE_WRITE, "disk full")
    now[0] = 105.0
    faults.set(STORE_UNREACHABLE, "gone")
    assert not faults.healthy and faults.outage_since() == 100.0
    assert [f.kind for f in faults.current()] == [RELOAD, STORE_WRITE, STORE_UNREACHABLE]
    faults.clear(STORE_WRITE)
    faults.clear(STORE_WRITE)
    assert faults.outage_since() == 105.0
    assert faults.raised[RELOAD] == 1 and faults.raised[STORE_WRITE] == 1


async def test_health_is_degraded_with_the_reason_while_the_store_file_is_gone(
    api_factory: Callable[..., Awaitable[Api]],
) -> None:
    if ON_POSTGRES:
        pytest.skip("a SQLite file removed under the daemon")
    api = await api_factory(CONFIG)
    resp = await api.request("GET", "/health")
    assert resp.status == 200 and resp.json()["faults"] == []
    store = api.store
    assert isinstance(store, SQLiteStore)
    store.path.rename(store.path.with_suffix(".moved"))
    resp = await api.request("GET", "/health")
    body = resp.json()
    assert resp.status == 503 and body["status"] == "degraded" and body["store"] == STORE_FILE
    assert body["faults"][0]["kind"] == STORE_FILE and str(store.path) in body["faults"][0]["reason"]
    store.path.with_suffix(".moved").rename(store.path)  # put back: the same file again
    resp = await api.request("GET", "/health")
    assert resp.status == 200 and resp.json()["faults"] == []


def _daemon(tmp_path: Path, config: str, clock: FakeClock) -> Daemon:
    path = tmp_path / "taskd.yml"
    path.write_text(config)
    return Daemon(str(path), load_config(path, {}), {}, clock)


async def test_a_failed_prune_is_a_fault_retried_later_never_fatal(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls: list[float] = []
    prune = SQLiteStore.prune

    async def locked_once(self: SQLiteStore, now: float, days: int, max_runs: int) -> int:
        calls.append(now)
        if len(calls) == 1:
            raise sqlite3.OperationalError("database is locked")
        return await prune(self, now, days, max_runs)

    monkeypatch.setattr(SQLiteStore, "prune", locked_once)
    clock = FakeClock()
    daemon = _daemon(tmp_path, CONFIG, clock)
    running = asyncio.create_task(daemon.run())
    await until(lambda: daemon.engine is not None and daemon.engine.faults.get(RETENTION) is not None, "the fault")
    assert daemon.engine is not None
    fault = daemon.engine.faults.get(RETENTION)
    assert fault is not None and "database is locked" in fault.reason
    assert not running.done()
    await clock.run_for(RETENTION_RETRY_S)
    await until(lambda: len(calls) == 2, "the prune tried again")
    await until(lambda: daemon.engine is not None and daemon.engine.faults.get(RETENTION) is None, "cleared")
    daemon.request_stop("SIGTERM")
    assert await asyncio.wait_for(running, 10) == 0


async def test_a_node_that_finds_its_name_taken_stops_with_exit_1(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    beats = 0
    heartbeat = LocalCoordinator._heartbeat

    async def taken(self: LocalCoordinator, me: Any) -> Any:
        nonlocal beats
        beats += 1
        if beats > 1:
            raise NodeNameInUse("another live taskd is node 'local'")
        return await heartbeat(self, me)

    monkeypatch.setattr(LocalCoordinator, "_heartbeat", taken)
    clock = FakeClock()
    daemon = _daemon(tmp_path, CONFIG, clock)
    running = asyncio.create_task(daemon.run())
    await until(lambda: daemon.engine is not None and daemon.engine.scheduler_running, "ready")
    await clock.run_for(2)
    assert await asyncio.wait_for(running, 10) == 1


async def test_a_store_fault_past_max_outage_stops_the_daemon_with_exit_1(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    async def unreachable(self: SQLiteStore) -> tuple[str, str]:
        return STORE_UNREACHABLE, "the store does not answer"

    clock = FakeClock()
    daemon = _daemon(
        tmp_path,
        CONFIG.replace("store: {path: ./var/taskd.db}", "store: {path: ./var/taskd.db, max_outage: 1m}"),
        clock,
    )
    running = asyncio.create_task(daemon.run())
    await until(lambda: daemon.engine is not None and daemon.engine.scheduler_running, "ready")
    monkeypatch.setattr(SQLiteStore, "problem", unreachable)
    # The store watch may be in the middle of a check that waits on a thread (the real problem()):
    # move the clock a second at a time until it has seen the fault, before moving it far.
    assert daemon.engine is not None
    async with asyncio.timeout(10):
        while daemon.engine.faults.get(STORE_UNREACHABLE) is None:
            await clock.run_for(1)
            await asyncio.sleep(0.01)
    await clock.run_for(30)
    assert not running.done()
    await clock.run_for(40)
    assert await asyncio.wait_for(running, 10) == 1


async def test_a_reload_says_a_restart_is_needed_only_while_api_or_store_differ_from_the_running_ones(
    tmp_path: Path,
) -> None:
    clock = FakeClock()
    daemon = _daemon(tmp_path, CONFIG, clock)
    running = asyncio.create_task(daemon.run())
    await until(lambda: daemon.engine is not None and daemon.engine.scheduler_running, "ready")
    path = tmp_path / "taskd.yml"
    with structlog.testing.capture_logs() as logs:
        path.write_text(
            CONFIG.replace("max_concurrent_tasks: 10", "max_concurrent_tasks: 4").replace(
                "./var/taskd.db}", "./var/taskd.db, max_outage: 1s}"
            )
        )
        assert (await daemon.reload()).applied
        path.write_text(CONFIG.replace("max_concurrent_tasks: 10", "max_concurrent_tasks: 5"))  # store: as running
        assert (await daemon.reload()).applied
    assert [line["event"] for line in logs if line["event"] == "restart_needed"] == ["restart_needed"]
    assert daemon.engine is not None and daemon.engine.slots.limit == 5
    daemon.request_stop("SIGTERM")
    assert await asyncio.wait_for(running, 10) == 0

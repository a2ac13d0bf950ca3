"""The runner and slot pool in-process, against a real SQLite store in a temp dir."""

from __future__ import annotations

import asyncio
import random
import time
from pathlib import Path

import pytest

from taskd.chain import Step
from taskd.clock import SystemClock
from taskd.config import RetryPolicy, TaskConfig
from taskd.models import RunRecord, RunState, Trigger, new_run_id
from taskd.processor import Context, StepPolicy
from taskd.retry import backoff_delay
from taskd.runner import Run, RunPlan
from taskd.slots import SlotPool
from taskd.store.sqlite import SQLiteStore


class Nap:
    def __init__(self, seconds: float) -> None:
        self.seconds = seconds

    async def run(self, ctx: Context) -> dict[str, int]:
        await asyncio.sleep(self.seconds)
        return {"napped": 1}


def _run(store: SQLiteStore, slots: SlotPool, tmp_path: Path, seconds: float = 0.05) -> Run:
    task = TaskConfig(id="t", pipeline="p")
    record = RunRecord(id=new_run_id(time.time()), task_id="t", trigger=Trigger.MANUAL, queued_at=time.time())
    store.save_run(record)
    steps = (Step.build(0, "nap", Nap(seconds), StepPolicy()),)
    return Run(record, RunPlan(task, steps, tmp_path, "UTC"), store, slots, SystemClock())


async def test_a_run_stopped_before_its_task_ran_is_recorded_stopped(tmp_path: Path) -> None:
    """Stopped before the loop ever ran its task: once while queued for a slot, once after it had
    taken a free slot at start. Either way it ends `stopped` and gives back what it held."""
    store = SQLiteStore(tmp_path / "t.db")
    await store.open()
    try:
        slots = SlotPool(1)
        began = _run(store, slots, tmp_path)
        began.start()  # takes the free slot and opens attempt 1 right away
        queued = _run(store, slots, tmp_path)
        queued.start()  # no slot left: waits
        assert slots.held == 1 and began.state is RunState.RUNNING and queued.state is RunState.QUEUED
        assert queued.stop("changed my mind") and began.stop("changed my mind")
        await asyncio.wait_for(asyncio.gather(began.done.wait(), queued.done.wait()), 2)
        await asyncio.sleep(0)
        assert slots.held == 0
        stored_queued = await store.get_run(queued.id)
        assert stored_queued is not None and stored_queued.state is RunState.STOPPED
        assert stored_queued.started_at is None and "changed my mind" in (stored_queued.error or "")
        stored_began = await store.get_run(began.id)
        assert stored_began is not None and stored_began.state is RunState.STOPPED
        assert [a.state.value for a in await store.attempts(began.id)] == ["stopped"]
    finally:
        await store.close()


async def test_slot_pool_orders_by_priority_then_fifo_and_survives_cancelled_waiters() -> None:
    pool = SlotPool(1)
    await pool.acquire()
    order: list[str] = []

    async def waiter(name: str, priority: int) -> None:
        await pool.acquire(priority)
        order.append(name)
        pool.release()

    tasks = {name: asyncio.create_task(waiter(name, prio)) for name, prio in [("a", 0), ("b", 5), ("c", 5), ("d", 9)]}
    gone = asyncio.create_task(waiter("cancelled", 100))
    await asyncio.sleep(0.01)
    gone.cancel()
    await asyncio.sleep(0.01)
    assert pool.waiting == 4
    pool.release()
    await asyncio.gather(*tasks.values())
    assert order == ["d", "b", "c", "a"]
    assert pool.held == 0
    # Only cancelled waiters left in the heap must not block a new acquirer.
    await pool.acquire()
    blocked = asyncio.create_task(pool.acquire(1))
    await asyncio.sleep(0.01)
    blocked.cancel()
    pool.release()
    await asyncio.wait_for(pool.acquire(), 1)
    assert pool.held == 1


async def test_raising_the_limit_releases_waiters() -> None:
    pool = SlotPool(1)
    await pool.acquire()
    waiting = asyncio.create_task(pool.acquire())
    await asyncio.sleep(0.01)
    assert not waiting.done()
    pool.set_limit(2)
    await asyncio.wait_for(waiting, 1)
    assert pool.held == 2


@pytest.mark.parametrize(
    ("policy", "expected"),
    [
        (RetryPolicy(count=5, backoff=1, max_backoff=100), [1, 2, 4, 8, 16]),
        (RetryPolicy(count=5, backoff=10, max_backoff=25), [10, 20, 25, 25, 25]),
        (RetryPolicy(count=2, backoff=0, max_backoff=10), [0, 0]),
    ],
)
def test_backoff_doubles_and_caps(policy: RetryPolicy, expected: list[float]) -> None:
    assert [
        backoff_delay(policy.backoff, k, policy.max_backoff, policy.jitter) for k in range(1, len(expected) + 1)
    ] == expected


def test_full_jitter_stays_within_the_computed_backoff() -> None:
    policy = RetryPolicy(count=3, backoff=4, max_backoff=100, jitter=True)
    rng = random.Random(7)
    samples = [backoff_delay(policy.backoff, 2, policy.max_backoff, policy.jitter, rng) for _ in range(2000)]
    assert all(0 <= s <= 8 for s in samples)
    assert min(samples) < 1 and max(samples) > 7  # spread over the whole range


def test_missed_fires_report_the_latest_instant_even_after_a_long_outage() -> None:
    """A per-second task down for two hours missed 7,200 fires; the catch-up concerns the last one."""
    from datetime import UTC, datetime, timedelta

    from taskd.engine.policy import missed_fires
    from taskd.schedule import parse

    now = datetime(2026, 11, 23, 12, 0, 0, 500000, tzinfo=UTC)
    count, capped, latest = missed_fires(parse("* * * * * *"), now - timedelta(hours=2), now)
    assert latest == datetime(2026, 11, 23, 12, 0, 0, tzinfo=UTC)
    assert (count, capped) == (1000, True)
    found = missed_fires(parse("0 * * * *"), now - timedelta(hours=3, minutes=30), now)
    assert found == (4, False, datetime(2026, 11, 23, 12, 0, tzinfo=UTC))  # 9, 10, 11 and 12 o'clock
    assert missed_fires(parse("0 0 1 1 *"), now - timedelta(hours=1), now) == (0, False, None)

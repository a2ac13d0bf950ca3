"""The fake clock: sleeps and deadlines on it end when the test moves it, as asyncio's would when
that much time had passed, and never on their own."""

from __future__ import annotations

import asyncio

import pytest

from taskd.clock import FakeClock, settle


async def test_a_sleep_ends_when_the_clock_is_moved_past_it() -> None:
    clock = FakeClock(100)
    slept = asyncio.create_task(clock.sleep(5))
    await settle()
    clock.advance(4.9)
    await settle()
    assert not slept.done()
    clock.advance(0.1)
    await settle()
    assert slept.done() and clock.next_wakeup is None


async def test_run_for_stops_at_each_waiter_so_that_chained_waits_add_up() -> None:
    clock = FakeClock(0)
    woke: list[float] = []

    async def three_naps() -> None:
        for nap in (1, 2, 3):
            await clock.sleep(nap)
            woke.append(clock.time())

    task = asyncio.create_task(three_naps())
    await clock.run_for(10)
    assert woke == [1, 3, 6] and task.done() and clock.time() == 10


async def test_a_deadline_expires_on_the_clock_and_only_there() -> None:
    clock = FakeClock(0)

    async def long_wait() -> bool:
        async with clock.timeout(3) as deadline:
            await asyncio.sleep(3600)  # real time: only the fake deadline can end it
        return deadline.expired()

    task = asyncio.create_task(long_wait())
    await clock.run_for(2.9)
    assert not task.done()
    await clock.run_for(0.1)
    with pytest.raises(TimeoutError):
        await task


async def test_no_time_at_all_expires_at_once_and_an_ended_block_leaves_no_waiter() -> None:
    clock = FakeClock(0)
    with pytest.raises(TimeoutError):
        async with clock.timeout(0):
            await asyncio.sleep(1)
    async with clock.timeout(60) as deadline:
        await asyncio.sleep(0)
    assert not deadline.expired() and clock.next_wakeup is None  # nothing left for run_for to stop at
    async with clock.timeout(None):
        await asyncio.sleep(0)


def test_a_fake_clock_never_goes_backwards() -> None:
    clock = FakeClock(10)
    assert clock.advance(5) == 15
    with pytest.raises(ValueError, match="backwards"):
        clock.advance(-1)
    with pytest.raises(ValueError, match="backwards"):
        clock.set(5)

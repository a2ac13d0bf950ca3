"""The taskd trigger drives a real APScheduler 3 AsyncIOScheduler with crontab(5) semantics."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime

from apscheduler.schedulers.asyncio import AsyncIOScheduler

from taskd.engine.timer import ScheduleTrigger
from taskd.schedule import parse


def test_trigger_follows_taskd_semantics_not_apschedulers() -> None:
    """Day-of-week 1 is Monday and 7 is Sunday, and both day fields are ORed."""
    trigger = ScheduleTrigger(parse("0 9 * * 1"))
    sunday = datetime(2026, 11, 22, 12, 0, tzinfo=UTC)
    assert trigger.get_next_fire_time(None, sunday) == datetime(2026, 11, 23, 9, 0, tzinfo=UTC)
    ored = ScheduleTrigger(parse("0 0 1,15 * 5"))
    first = ored.get_next_fire_time(None, datetime(2026, 11, 1, tzinfo=UTC))
    assert first == datetime(2026, 11, 6, tzinfo=UTC)
    assert ored.get_next_fire_time(first, first) == datetime(2026, 11, 13, tzinfo=UTC)
    assert "0 0 1,15 * 5" in str(ored)


async def test_per_second_schedule_fires_under_asyncioscheduler() -> None:
    fired: list[datetime] = []
    done = asyncio.Event()

    async def job() -> None:
        fired.append(datetime.now(UTC))
        if len(fired) >= 2:
            done.set()

    scheduler = AsyncIOScheduler(timezone=UTC)
    scheduler.add_job(job, ScheduleTrigger(parse("* * * * * *")), misfire_grace_time=5)
    scheduler.start()
    try:
        await asyncio.wait_for(done.wait(), timeout=10)
    finally:
        scheduler.shutdown(wait=False)
    assert fired[1] > fired[0]

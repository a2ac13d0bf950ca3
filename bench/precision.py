"""Schedule precision: N tasks on a per-second schedule, no-op pipeline, history on, for 10 s.

Lateness is a run's start minus its scheduled instant; a missed fire is an instant in the window
for which a task has no run. The peer is APScheduler 3's AsyncIOScheduler with N no-op coroutine
jobs on CronTrigger(second='*'), measured the same way in the same run.
"""

from __future__ import annotations

import asyncio
import math
import tempfile
import time
from pathlib import Path
from typing import Any

from bench.common import Daemon, percentile, rss_mb, spread, tasks_config


def measure_taskd(count: int, seconds: float = 10.0) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="taskd-bench-") as tmp:
        daemon = Daemon(Path(tmp), tasks_config(0, count, "* * * * * *", slots=max(count, 1)))
        daemon.config = tasks_config(daemon.port, count, "* * * * * *", slots=max(count, 1))
        daemon.start()
        try:
            # The window: whole seconds, starting 2 s after ready (warm-up), `seconds` long.
            first = math.floor(time.time()) + 2
            last = first + int(seconds) - 1
            time.sleep(max(0.0, last + 1.5 - time.time()))
            rss = rss_mb(daemon.pid)
        finally:
            daemon.stop()
        with daemon.db() as db:
            rows = db.execute(
                "SELECT task_id, scheduled_at, started_at FROM runs WHERE trigger = 'schedule' "
                "AND scheduled_at BETWEEN ? AND ?",
                (first, last),
            ).fetchall()
    lateness = [started - scheduled for _, scheduled, started in rows if started is not None]
    expected = count * (last - first + 1)
    per_second: dict[float, list[float]] = {}
    for _, scheduled, started in rows:
        if started is not None:
            per_second.setdefault(scheduled, []).append(started - scheduled)
    return _summary(lateness, expected, per_second) | {"rss_mb": rss, "ready_s": daemon.ready_after}


def measure_apscheduler(count: int, seconds: float = 10.0) -> dict[str, Any]:
    return asyncio.run(_apscheduler(count, seconds))


async def _apscheduler(count: int, seconds: float) -> dict[str, Any]:
    from datetime import UTC

    from apscheduler.events import EVENT_JOB_EXECUTED, EVENT_JOB_MAX_INSTANCES, EVENT_JOB_MISSED
    from apscheduler.schedulers.asyncio import AsyncIOScheduler
    from apscheduler.triggers.cron import CronTrigger

    first = math.floor(time.time()) + 2
    last = first + int(seconds) - 1
    ran: list[tuple[float, float]] = []

    async def noop() -> None:
        return None

    def listener(event: Any) -> None:
        scheduled = event.scheduled_run_time.timestamp()
        if first <= scheduled <= last:
            ran.append((scheduled, time.time() if event.code == EVENT_JOB_EXECUTED else math.nan))

    scheduler = AsyncIOScheduler(timezone=UTC)
    scheduler.add_listener(listener, EVENT_JOB_EXECUTED | EVENT_JOB_MISSED | EVENT_JOB_MAX_INSTANCES)
    for i in range(count):
        scheduler.add_job(noop, CronTrigger(second="*", timezone=UTC), id=f"j{i}")
    scheduler.start()
    await asyncio.sleep(max(0.0, last + 1.5 - time.time()))
    scheduler.shutdown(wait=False)
    lateness = [done - scheduled for scheduled, done in ran if not math.isnan(done)]
    per_second: dict[float, list[float]] = {}
    for scheduled, done in ran:
        if not math.isnan(done):
            per_second.setdefault(scheduled, []).append(done - scheduled)
    return _summary(lateness, count * (last - first + 1), per_second)


def _summary(lateness: list[float], expected: int, per_second: dict[float, list[float]]) -> dict[str, Any]:
    ms = [x * 1000 for x in lateness]
    return {
        "fires_expected": expected,
        "runs": len(ms),
        "missed": expected - len(ms),
        "p50_ms": percentile(ms, 50),
        "p99_ms": percentile(ms, 99),
        "max_ms": max(ms) if ms else math.nan,
        "p99_per_second_ms": spread([percentile([x * 1000 for x in v], 99) for v in per_second.values()]),
    }


if __name__ == "__main__":
    import json
    import sys

    n = int(sys.argv[1]) if len(sys.argv) > 1 else 1000
    print(json.dumps({"taskd": measure_taskd(n), "apscheduler": measure_apscheduler(n)}, indent=2))

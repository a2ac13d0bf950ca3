"""Schedule precision: N tasks on a per-second schedule, for 10 s, default config, every run persisted.

Lateness is measured where the work starts: the pipeline's only step is `log`, and the time it
stamps on its line (read back from the store) is the moment the step's code ran. Lateness is that
time minus the scheduled instant. A missed fire is an instant in the window for which a task has
no run that reached its step. The peer is APScheduler 3's AsyncIOScheduler with N coroutine jobs
on CronTrigger(second='*') whose body stamps `time.time()`, measured the same way in the same run;
the ceiling, a bare asyncio loop that starts N coroutines at each second, each stamping its start.
"""

from __future__ import annotations

import asyncio
import math
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from bench.common import Daemon, percentile, rss_mb, spread, tasks_config

PIPELINE = "[{log: {message: started}}]"
ZONES = (
    "UTC Europe/Paris Europe/London Europe/Berlin Europe/Madrid Europe/Rome Europe/Oslo Europe/Vienna "
    "Europe/Warsaw Europe/Prague Europe/Athens Europe/Helsinki Europe/Kyiv Europe/Lisbon Europe/Dublin "
    "Europe/Zurich Europe/Brussels Europe/Amsterdam Europe/Stockholm Europe/Copenhagen Europe/Budapest "
    "Europe/Bucharest Europe/Sofia Europe/Istanbul Europe/Moscow Asia/Tokyo Asia/Seoul Asia/Shanghai "
    "Asia/Hong_Kong Asia/Singapore Asia/Kolkata Asia/Dubai Asia/Karachi Asia/Dhaka Asia/Bangkok "
    "Asia/Jakarta Asia/Manila Asia/Taipei Asia/Tehran Asia/Jerusalem Asia/Riyadh Asia/Baghdad "
    "Asia/Kathmandu Asia/Colombo Asia/Yangon Asia/Ho_Chi_Minh Asia/Kuala_Lumpur Asia/Almaty "
    "Asia/Tashkent Asia/Yerevan Asia/Tbilisi Asia/Baku Asia/Vladivostok Asia/Novosibirsk "
    "Asia/Yekaterinburg Asia/Irkutsk Asia/Ulaanbaatar Asia/Kabul Australia/Sydney Australia/Perth "
    "Australia/Adelaide Australia/Brisbane Australia/Darwin Australia/Hobart Pacific/Auckland "
    "Pacific/Fiji Pacific/Honolulu Pacific/Guam Pacific/Port_Moresby Pacific/Tongatapu "
    "America/New_York America/Chicago America/Denver America/Los_Angeles America/Anchorage "
    "America/Phoenix America/Toronto America/Vancouver America/Mexico_City America/Bogota "
    "America/Lima America/Santiago America/Sao_Paulo America/Argentina/Buenos_Aires America/Caracas "
    "America/Halifax America/St_Johns America/Havana America/Panama America/Montevideo "
    "America/La_Paz America/Asuncion America/Guatemala Africa/Cairo Africa/Johannesburg "
    "Africa/Lagos Africa/Nairobi Africa/Casablanca Africa/Algiers Africa/Accra Atlantic/Reykjavik "
    "Atlantic/Azores"
).split()


def measure_taskd(count: int, seconds: float = 10.0, schedules: int = 1) -> dict[str, Any]:
    """`schedules` > 1 spreads the tasks over that many different schedules (one per time zone)."""
    zones = ZONES[:schedules] if schedules > 1 else ()
    if len(zones) < schedules and schedules > 1:
        raise ValueError(f"at most {len(ZONES)} schedules")
    with tempfile.TemporaryDirectory(prefix="taskd-bench-") as tmp:
        daemon = Daemon(Path(tmp), "")
        daemon.config = tasks_config(
            daemon.port, count, "* * * * * *", slots=max(count, 1), pipeline=PIPELINE, zones=zones
        )
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
                "SELECT r.scheduled_at, l.ts FROM runs r JOIN run_logs l ON l.run_id = r.id AND l.seq = 1 "
                "WHERE r.trigger = 'schedule' AND r.scheduled_at BETWEEN ? AND ?",
                (first, last),
            ).fetchall()
    expected = count * (last - first + 1)
    return _summary(rows, expected) | {"rss_mb": rss, "ready_s": daemon.ready_after, "schedules": schedules}


def measure_bare_loop(count: int, seconds: float = 10.0) -> dict[str, Any]:
    """The ceiling: a bare asyncio loop that wakes at each second and starts `count` coroutines,
    each stamping `time.time()` as it begins; nothing recorded, nothing checked."""
    return asyncio.run(_bare_loop(count, seconds))


async def _bare_loop(count: int, seconds: float) -> dict[str, Any]:
    first = math.floor(time.time()) + 2
    last = first + int(seconds) - 1
    rows: list[tuple[float, float]] = []

    async def body(scheduled: float) -> None:
        rows.append((scheduled, time.time()))

    loop = asyncio.get_running_loop()
    started: set[asyncio.Task[None]] = set()
    for second in range(first, last + 1):
        await asyncio.sleep(max(0.0, second - time.time()))
        for _ in range(count):
            task = loop.create_task(body(float(second)))
            started.add(task)
            task.add_done_callback(started.discard)
    await asyncio.sleep(max(0.0, last + 1.5 - time.time()))
    return _summary(rows, count * (last - first + 1))


def measure_apscheduler(count: int, seconds: float = 10.0) -> dict[str, Any]:
    return asyncio.run(_apscheduler(count, seconds))


async def _apscheduler(count: int, seconds: float) -> dict[str, Any]:
    from datetime import UTC

    from apscheduler.events import EVENT_JOB_EXECUTED
    from apscheduler.schedulers.asyncio import AsyncIOScheduler
    from apscheduler.triggers.cron import CronTrigger

    first = math.floor(time.time()) + 2
    last = first + int(seconds) - 1
    began: dict[str, float] = {}  # job id -> when its body last began (a job never overlaps itself)
    rows: list[tuple[float, float]] = []

    async def body(job_id: str) -> None:
        began[job_id] = time.time()

    def listener(event: Any) -> None:
        scheduled = event.scheduled_run_time.timestamp()
        if first <= scheduled <= last:
            rows.append((scheduled, began[event.job_id]))

    scheduler = AsyncIOScheduler(timezone=UTC)
    scheduler.add_listener(listener, EVENT_JOB_EXECUTED)
    for i in range(count):
        scheduler.add_job(body, CronTrigger(second="*", timezone=UTC), id=f"j{i}", args=[f"j{i}"])
    scheduler.start()
    await asyncio.sleep(max(0.0, last + 1.5 - time.time()))
    scheduler.shutdown(wait=False)
    return _summary(rows, count * (last - first + 1))


def _summary(rows: Sequence[tuple[float, float]], expected: int) -> dict[str, Any]:
    ms = [(started - scheduled) * 1000 for scheduled, started in rows]
    per_second: dict[float, list[float]] = {}
    for (scheduled, _), late in zip(rows, ms, strict=True):
        per_second.setdefault(scheduled, []).append(late)
    return {
        "fires_expected": expected,
        "runs": len(ms),
        "missed": expected - len(ms),
        "p50_ms": percentile(ms, 50),
        "p99_ms": percentile(ms, 99),
        "max_ms": max(ms) if ms else math.nan,
        "p99_per_second_ms": spread([percentile(v, 99) for v in per_second.values()]),
    }


if __name__ == "__main__":
    import json
    import sys

    n = int(sys.argv[1]) if len(sys.argv) > 1 else 1000
    groups = int(sys.argv[2]) if len(sys.argv) > 2 else 1
    print(json.dumps({"taskd": measure_taskd(n, schedules=groups), "apscheduler": measure_apscheduler(n)}, indent=2))

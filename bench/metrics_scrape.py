"""GET /metrics with N tasks that have all run: how long a scrape takes (request sent to last byte
received) and how large it is, with per-task series and with `metrics: {per_task: false}`."""

from __future__ import annotations

import asyncio
import tempfile
import time
from pathlib import Path
from typing import Any

import aiohttp

from bench.common import Daemon, percentile, tasks_config


def measure(count: int = 10_000, scrapes: int = 10) -> dict[str, Any]:
    return {
        "tasks": count,
        "per_task": _one(count, scrapes, per_task=True),
        "aggregated": _one(count, scrapes, per_task=False),
    }


def _one(count: int, scrapes: int, per_task: bool) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="taskd-bench-") as tmp:
        config = tasks_config(0, count, "@hourly", slots=100) + f"metrics: {{per_task: {str(per_task).lower()}}}\n"
        daemon = Daemon(Path(tmp), config)
        daemon.config = config.replace("127.0.0.1:0", "127.0.0.1:{port}")
        daemon.start()
        try:
            return asyncio.run(_scrape(daemon.port, count, scrapes))
        finally:
            daemon.stop()


async def _scrape(port: int, count: int, scrapes: int) -> dict[str, Any]:
    base = f"http://127.0.0.1:{port}"
    async with aiohttp.ClientSession() as session:
        # Every task runs once, so every per-task series exists.
        for first in range(0, count, 200):
            batch = [session.post(f"{base}/task/t{i:05d}/_start") for i in range(first, min(first + 200, count))]
            for response in await asyncio.gather(*batch):
                response.release()
        while True:
            async with session.get(f"{base}/health") as response:
                if (await response.json())["active_runs"] == 0:
                    break
            await asyncio.sleep(0.1)
        timings, size, lines = [], 0, 0
        for _ in range(scrapes):
            started = time.perf_counter()
            async with session.get(f"{base}/metrics") as response:
                body = await response.read()
            timings.append((time.perf_counter() - started) * 1000)
            size, lines = len(body), body.count(b"\n")
    return {"p50_ms": percentile(timings, 50), "max_ms": max(timings), "bytes": size, "lines": lines}

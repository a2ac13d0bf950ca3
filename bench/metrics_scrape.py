"""GET /metrics with N tasks that have all run: how long a scrape takes (request sent to last byte
received) and how large it is, with per-task series and with `metrics: {per_task: false}`; beside
the ceiling, in the same run: prometheus-client's own `generate_latest` writing the same samples
(parsed back from the answer) in-process, and the same bytes served by a bare aiohttp handler."""

from __future__ import annotations

import asyncio
import tempfile
import time
from pathlib import Path
from typing import Any

import aiohttp
from aiohttp import web
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

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
        timings, body = await _timed(session, f"{base}/metrics", scrapes)
    return {
        "p50_ms": percentile(timings, 50),
        "max_ms": max(timings),
        "bytes": len(body),
        "lines": body.count(b"\n"),
        "library_ms": _library(body, scrapes),
        "static_ms": await _static(body, scrapes),
    }


async def _timed(session: aiohttp.ClientSession, url: str, scrapes: int) -> tuple[list[float], bytes]:
    timings, body = [], b""
    for _ in range(scrapes):
        started = time.perf_counter()
        async with session.get(url) as response:
            body = await response.read()
        timings.append((time.perf_counter() - started) * 1000)
    return timings, body


class _Replay:
    """A collector that yields the families parsed from a scrape."""

    def __init__(self, body: bytes) -> None:
        self.families = list(text_string_to_metric_families(body.decode()))

    def collect(self) -> Any:
        return iter(self.families)


def _library(body: bytes, scrapes: int) -> float:
    """p50 ms of prometheus-client writing the same samples (nothing else to gather)."""
    registry = CollectorRegistry()
    registry.register(_Replay(body))
    timings = []
    for _ in range(scrapes):
        started = time.perf_counter()
        generate_latest(registry)
        timings.append((time.perf_counter() - started) * 1000)
    return percentile(timings, 50)


async def _static(body: bytes, scrapes: int) -> float:
    """p50 ms of the same bytes served by a bare aiohttp handler on loopback."""

    async def serve(request: web.Request) -> web.Response:
        return web.Response(body=body, content_type="text/plain")

    app = web.Application()
    app.router.add_get("/metrics", serve)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    try:
        async with aiohttp.ClientSession() as session:
            timings, _ = await _timed(session, f"http://127.0.0.1:{port}/metrics", scrapes)
    finally:
        await runner.cleanup()
    return percentile(timings, 50)

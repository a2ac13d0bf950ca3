"""Live followers and the run rate: N runs started at once through the real engine and SQLite store
in-process, with no follower and with F `/events`-style followers that each read every state
change as it is published (the same subscription the SSE handler uses)."""

from __future__ import annotations

import asyncio
import tempfile
import time
from pathlib import Path
from typing import Any

from bench.throughput import bench_engine


def measure(runs: int = 10_000, followers: int = 200) -> dict[str, Any]:
    return {
        "runs": runs,
        "followers": followers,
        "alone": asyncio.run(_rate(runs, 0)),
        "followed": asyncio.run(_rate(runs, followers)),
    }


async def _rate(runs: int, followers: int) -> dict[str, Any]:
    from taskd.models import Trigger

    with tempfile.TemporaryDirectory(prefix="taskd-bench-") as tmp:
        async with bench_engine(100, Path(tmp)) as (engine, store, _):
            stop = asyncio.Event()
            received = [0]
            cut_off = [0]

            async def follow() -> None:
                with engine.live.follow_all() as subscription:
                    while not stop.is_set():
                        try:
                            await asyncio.wait_for(subscription.wait(), 0.5)
                        except TimeoutError:
                            continue
                        received[0] += len(subscription.pending())
                        if subscription.overflowed:
                            cut_off[0] += 1
                            return

            tasks = [asyncio.create_task(follow()) for _ in range(followers)]
            await asyncio.sleep(0.05)
            started = time.perf_counter()
            created = [engine.start_run("noop", Trigger.MANUAL) for _ in range(runs)]
            for run in created:
                await run.done.wait()
            await store.flush()
            elapsed = time.perf_counter() - started
            stop.set()
            await asyncio.gather(*tasks)
    return {"runs_per_s": runs / elapsed, "events_received": received[0], "cut_off": cut_off[0]}

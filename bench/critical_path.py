"""The critical path of a run, in microseconds, in-process (real engine, real SQLite store).

N tasks share one per-second schedule; one fire of that schedule is handed to the engine the way
the timer hands it. Each pipeline's only step is a Python function that stamps `perf_counter()`
when its code begins. Reported per run:

- fire to first step: from the fire callback's start to each step's stamp (p50 / p99 / max), and
  the time until the last run exists (a fire creates its runs in chunks, and the runs of a chunk
  begin before the next chunk is created);
- whole run: loop time from the fire until every run has ended, divided by N, then until every
  row is committed;
- a profile (cProfile) of the same burst: where the loop's time goes, by function.
"""

from __future__ import annotations

import asyncio
import cProfile
import io
import pstats
import tempfile
import time
from pathlib import Path
from typing import Any

from bench.common import percentile

STAMPS: list[float] = []  # of the module as imported by the step (not of `__main__`)


async def stamp(ctx: Any) -> None:
    """The step: its first line is the moment the run's work starts."""
    STAMPS.append(time.perf_counter())


async def _burst(count: int, profile: bool) -> dict[str, Any]:
    from datetime import UTC, datetime

    import bench.critical_path as steps
    from taskd import __version__, logs
    from taskd.config import load_config
    from taskd.daemon import tune_gc
    from taskd.engine import Engine
    from taskd.metrics import Metrics
    from taskd.store import open_store

    logs.configure("info", "json", stream=io.StringIO())  # the default level; the lines are discarded
    with tempfile.TemporaryDirectory(prefix="taskd-bench-") as tmp:
        path = Path(tmp) / "taskd.yml"
        tasks = "\n".join(f"  - {{id: t{i:05d}, pipeline: p, schedule: '* * * * * *'}}" for i in range(count))
        path.write_text(
            f"task: {{max_concurrent_tasks: {count}}}\nstore: {{path: ./t.db}}\ntasks:\n{tasks}\n"
            "pipelines: [{name: p, processors: [{python: {function: 'bench.critical_path:stamp'}}]}]\n"
        )
        config = load_config(path, {})
        metrics = Metrics(__version__)
        store = open_store(config.store_location)
        store.commit_observer = metrics.store_committed
        await store.open()
        engine = Engine(config, store, metrics=metrics)
        await engine.start()
        engine.firing.timer.shutdown()  # the bench hands the fire over itself
        tune_gc()  # as the daemon does once it has started
        group = next(iter(engine.firing.groups))
        instant = datetime.now(UTC)
        # Warm up: one fire, so imports and caches are not counted.
        engine.firing.on_group_fire(group, [instant])
        await _until_idle(engine)
        await store.flush()
        steps.STAMPS.clear()
        profiler = cProfile.Profile() if profile else None
        if profiler is not None:
            profiler.enable()
        added: list[float] = []
        add = engine.runs.add

        def stamped(run: Any) -> None:  # when each run exists (a fire creates them in chunks)
            add(run)
            added.append(time.perf_counter())

        engine.runs.add = stamped
        fired = time.perf_counter()
        engine.firing.on_group_fire(group, [datetime.fromtimestamp(instant.timestamp() + 1, UTC)])
        await _until_idle(engine)
        callback_done = added[-1]
        ended = time.perf_counter()
        await store.flush()
        committed = time.perf_counter()
        if profiler is not None:
            profiler.disable()
        await engine.shutdown(5)
        await store.close()
    first = [(t - fired) * 1e6 for t in steps.STAMPS]
    result: dict[str, Any] = {
        "runs": count,
        "steps_started": len(first),
        "fire_callback_us": (callback_done - fired) * 1e6,
        "fire_callback_per_run_us": (callback_done - fired) * 1e6 / count,
        "first_step_p50_us": percentile(first, 50),
        "first_step_p99_us": percentile(first, 99),
        "first_step_max_us": max(first),
        "whole_run_us": (ended - fired) * 1e6 / count,
        "whole_run_committed_us": (committed - fired) * 1e6 / count,
    }
    if profiler is not None:
        result["profile"] = _top(profiler, committed - fired)
    return result


async def _until_idle(engine: Any) -> None:
    """Poll: waiting on each run would add work to the burst being measured."""
    while len(engine.runs):  # noqa: ASYNC110
        await asyncio.sleep(0.001)


def _top(profiler: cProfile.Profile, wall_s: float, limit: int = 14) -> list[dict[str, Any]]:
    """The functions with the most time spent in themselves, as a share of the burst."""
    stats = pstats.Stats(profiler)
    rows = []
    for (filename, line, name), (_, calls, own, _cumulative, _) in stats.stats.items():  # type: ignore[attr-defined]
        short = filename.split("site-packages/")[-1].split("/lib/python3")[-1]
        rows.append({"function": f"{short}:{line}({name})", "calls": calls, "own_ms": own * 1000})
    rows.sort(key=lambda r: -r["own_ms"])
    total = sum(r["own_ms"] for r in rows)
    for row in rows:
        row["share"] = row["own_ms"] / total if total else 0.0
    return rows[:limit]


def measure(count: int = 1000, repeats: int = 5) -> dict[str, Any]:
    """Median of `repeats` unprofiled bursts, and one profiled burst."""
    plain = [asyncio.run(_burst(count, profile=False)) for _ in range(repeats)]
    keys = [k for k in plain[0] if k.endswith("_us")]
    median = {k: sorted(r[k] for r in plain)[len(plain) // 2] for k in keys}
    profiled = asyncio.run(_burst(count, profile=True))
    return {"runs": count, "repeats": repeats, **median, "profile": profiled["profile"]}


if __name__ == "__main__":
    import json
    import sys

    print(json.dumps(measure(int(sys.argv[1]) if len(sys.argv) > 1 else 1000), indent=2))

"""The cost of accounting: runs/s of a one-step shell pipeline (`true`) with each way of measuring
what a run used, each in a fresh process: none (asyncio's own child watcher, no figures: the
peer), rusage (taskd's wait4 reaper) and cgroup (the reaper and a cgroup per step, where this
machine lets taskd make them).

    python -m bench.accounting MODE RUNS   # one measurement, printed as JSON
"""

from __future__ import annotations

import asyncio
import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

MODES = ("none", "rusage", "cgroup")


async def _measure(mode: str, count: int, slots: int = 20) -> dict[str, Any]:
    from taskd import cgroups, reaper
    from taskd.config import load_config
    from taskd.engine import Engine
    from taskd.models import Trigger
    from taskd.store import open_store

    tmp = Path(tempfile.mkdtemp(prefix="taskd-bench-"))
    try:
        (tmp / "taskd.yml").write_text(
            f"task: {{max_concurrent_tasks: {slots}}}\nstore: {{path: ./t.db}}\nlog: {{level: warning}}\n"
            "tasks: [{id: one, pipeline: p, concurrency: allow}]\n"
            "pipelines: [{name: p, processors: [{shell: {argv: [/bin/true]}}]}]\n"
        )
        if mode != "none":
            reaper.install(asyncio.get_running_loop())
        version = cgroups.set_up(mode == "cgroup", cgroups.instance_of(str(tmp), "bench")).version
        if mode == "cgroup" and version == "none":
            return {"skipped": "this machine lets taskd make no cgroup"}
        config = load_config(tmp / "taskd.yml", {})
        store = open_store(config.store_location)
        await store.open()
        engine = Engine(config, store)
        await engine.start()
        try:
            started = time.perf_counter()
            runs = [engine.start_run("one", Trigger.MANUAL) for _ in range(count)]
            for run in runs:
                await run.done.wait()
            await store.flush()
            elapsed = time.perf_counter() - started
            sources = {run.record.usage.source for run in runs if run.record.usage is not None}
            failed = sum(1 for run in runs if str(run.state) != "completed")
        finally:
            await engine.shutdown(5)
            await store.close()
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return {"runs": count, "runs_per_s": count / elapsed, "sources": sorted(sources), "failed": failed}


def measure(count: int, repeats: int) -> dict[str, Any]:
    """Each mode `repeats` times, interleaved, each in a process of its own."""
    found: dict[str, list[float]] = {mode: [] for mode in MODES}
    notes: dict[str, Any] = {}
    for _ in range(repeats):
        for mode in MODES:
            out = subprocess.run(
                [sys.executable, "-m", "bench.accounting", mode, str(count)],
                capture_output=True,
                text=True,
                check=True,
                cwd=Path(__file__).resolve().parents[1],
            ).stdout
            result = json.loads(out.strip().splitlines()[-1])
            if "skipped" in result:
                notes[mode] = result["skipped"]
                continue
            found[mode].append(result["runs_per_s"])
            notes[f"{mode}_sources"] = result["sources"]
    return {"runs": count, "rates": found, "notes": notes}


if __name__ == "__main__":
    print(json.dumps(asyncio.run(_measure(sys.argv[1], int(sys.argv[2])))))

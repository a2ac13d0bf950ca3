"""Memory and start-up: idle RSS and time to ready (/health 200) with N tasks; RSS growth over
many runs (a leak check), in a fresh process."""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from bench.common import Daemon, rss_mb, spread, tasks_config

FLOOR_IMPORTS = (
    "asyncio",
    "yaml",
    "pydantic",
    "structlog",
    "aiohttp.web",
    "aiosqlite",
    "apscheduler.schedulers.asyncio",
    "prometheus_client",
    "ahocorasick",
)
"""The libraries the daemon runs on: a bare interpreter importing them is the floor of its RSS."""


def floor(repeats: int = 3) -> dict[str, Any]:
    """RSS of a bare interpreter that imports the daemon's libraries and nothing of taskd."""
    code = (
        f"import {', '.join(FLOOR_IMPORTS)}\n"
        "for line in open('/proc/self/status'):\n"
        "    if line.startswith('VmRSS:'): print(int(line.split()[1]) / 1024)\n"
    )
    runs = (
        subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True) for _ in range(repeats)
    )
    rss = [float(run.stdout) for run in runs]
    return {"imports": list(FLOOR_IMPORTS), "rss_mb": spread(rss)}


def idle(count: int, repeats: int = 3) -> dict[str, Any]:
    """The daemon with `count` `@hourly` tasks (none: `tasks: []`), a second after it is ready."""
    ready, rss = [], []
    for _ in range(repeats):
        with tempfile.TemporaryDirectory(prefix="taskd-bench-") as tmp:
            daemon = Daemon(Path(tmp), "")
            daemon.config = tasks_config(daemon.port, count, "@hourly", slots=100)
            if not count:
                daemon.config = daemon.config.replace("tasks:\n", "tasks: []\n")
            daemon.start()
            try:
                time.sleep(1.0)
                ready.append(daemon.ready_after)
                rss.append(rss_mb(daemon.pid))
            finally:
                daemon.stop()
    return {"tasks": count, "ready_s": spread(ready), "rss_mb": spread(rss)}


def leak(runs: int = 100_000) -> dict[str, Any]:
    """In a fresh interpreter: 10,000 warm-up runs, then RSS before and after `runs` more."""
    code = (
        "import asyncio, json; from bench.throughput import leak_check; "
        f"print(json.dumps(asyncio.run(leak_check({runs}))))"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return dict(json.loads(result.stdout.strip().splitlines()[-1]))


if __name__ == "__main__":
    print(floor(1))
    print(idle(0, 1))
    print(idle(1000, 1))
    print(leak(20_000))

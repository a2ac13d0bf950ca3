"""Run search on a large history: N runs in a real SQLite store (the daemon's schema, migrations and
text index), and the `GET /runs` queries timed through `SQLiteStore.list_runs`, which the API calls
(the reply's JSON and HTTP add well under a millisecond for 50 runs)."""

from __future__ import annotations

import asyncio
import json
import random
import sqlite3
import tempfile
import time
from pathlib import Path
from typing import Any

from bench.common import percentile

QUERIES: dict[str, dict[str, Any]] = {
    "newest 50": {},
    "state=failed": {"states": ("failed",)},
    "state=completed,failed": {"states": ("completed", "failed")},
    "task_id=one task": {"task_ids": ("t00042",)},
    "trigger=manual": {"triggers": ("manual",)},
    "since/until, one hour": {"since_hours_ago": 100, "until_hours_ago": 99},
    "q=error text": {"text": "disk full"},
    "q=param value": {"text": "srv-0042"},
    "sort=-duration": {"sort": "duration"},
    "sort=started_at (ascending)": {"sort": "started_at", "descending": False},
    "state=failed, sort=-finished_at": {"states": ("failed",), "sort": "finished_at"},
    "page 100 (offset 5,000)": {"offset": 5000},
}
ERRORS = ["copy: disk full on /srv", "exit code 2", "timed out after 30s", "HTTP 503 from upstream"]


def measure(runs: int = 1_000_000, repeats: int = 20) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="taskd-bench-") as tmp:
        path = Path(tmp) / "taskd.db"
        began = time.perf_counter()
        now = _fill(path, runs)
        fill_s = time.perf_counter() - began
        results = asyncio.run(_time(path, now, repeats))
    return {"runs": runs, "fill_s": round(fill_s, 1), "queries": results}


def _fill(path: Path, count: int) -> float:
    from taskd.store.sqlite import SQLiteStore

    async def create() -> None:
        store = SQLiteStore(path)
        await store.open()
        await store.close()

    asyncio.run(create())
    rng = random.Random(7)
    now = time.time()
    span = 30 * 86400
    db = sqlite3.connect(path)
    db.execute("PRAGMA synchronous = OFF")
    rows = []
    for i in range(count):
        queued = now - span + span * i / count
        failed = rng.random() < 0.05
        started = queued + rng.random() * 0.1
        finished = started + rng.expovariate(1 / 5)
        task = f"t{rng.randrange(1000):05d}"
        params = json.dumps({"target": f"/srv-{rng.randrange(10_000):04d}"}) if rng.random() < 0.3 else "{}"
        rows.append(
            (
                f"{int(queued * 1000):012x}{i:08x}",
                task,
                "manual" if rng.random() < 0.1 else "schedule",
                "failed" if failed else "completed",
                queued,
                queued,
                started,
                finished,
                1,
                rng.choice(ERRORS) if failed else None,
                params,
                0,
            )
        )
        if len(rows) == 50_000:
            _insert(db, rows)
            rows = []
    _insert(db, rows)
    db.execute("ANALYZE")
    db.close()
    return now


def _insert(db: sqlite3.Connection, rows: list[tuple[Any, ...]]) -> None:
    with db:
        db.executemany(
            "INSERT INTO runs (id, task_id, trigger, state, scheduled_at, queued_at, started_at, finished_at,"
            " attempts, error, params, priority) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            rows,
        )


async def _time(path: Path, now: float, repeats: int) -> dict[str, Any]:
    from taskd.store import RunQuery
    from taskd.store.sqlite import SQLiteStore

    store = SQLiteStore(path)
    await store.open()
    out: dict[str, Any] = {}
    try:
        for name, spec in QUERIES.items():
            spec = dict(spec)
            if "since_hours_ago" in spec:
                spec["since"] = now - 3600 * spec.pop("since_hours_ago")
                spec["until"] = now - 3600 * spec.pop("until_hours_ago")
            query = RunQuery(**spec)
            timings, total = [], 0
            for _ in range(repeats):
                started = time.perf_counter()
                _, total = await store.list_runs(query)
                timings.append((time.perf_counter() - started) * 1000)
            out[name] = {"p50_ms": percentile(timings, 50), "p99_ms": percentile(timings, 99), "total": total}
    finally:
        await store.close()
    return out

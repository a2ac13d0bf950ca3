"""Run search on a large history: N runs in a real SQLite store (the daemon's schema, migrations and
text index), and the `GET /runs` queries timed through the store's `list_runs`, which the API calls
(the reply's JSON and HTTP add well under a millisecond for 50 runs). The same history is then
written to the PostgreSQL store, if the server is reachable, and the same queries timed there."""

from __future__ import annotations

import asyncio
import random
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from bench.cluster import POSTGRES, schema
from bench.common import percentile

if TYPE_CHECKING:
    from taskd.store import Store

QUERIES: dict[str, dict[str, Any]] = {
    "newest 50": {},
    "state=failed": {"states": ("failed",)},
    "state=completed,failed": {"states": ("completed", "failed")},
    "task_id=one task": {"task_ids": ("t00042",)},
    "trigger=manual": {"triggers": ("manual",)},
    "trigger=schedule": {"triggers": ("schedule",)},
    "task_id=two tasks": {"task_ids": ("t00042", "t00043")},
    "state=failed, sort=-duration": {"states": ("failed",), "sort": "duration"},
    "since/until, one hour": {"since_hours_ago": 100, "until_hours_ago": 99},
    "q=error text": {"text": "disk full"},
    "q=param value": {"text": "srv-0042"},
    "q=a word in 30% of runs": {"text": "srv"},
    "q=error text, state=failed, sort=-duration": {"text": "disk full", "states": ("failed",), "sort": "duration"},
    "sort=-duration": {"sort": "duration"},
    "sort=started_at (ascending)": {"sort": "started_at", "descending": False},
    "sort=-started_at": {"sort": "started_at"},
    "sort=-finished_at": {"sort": "finished_at"},
    "sort=state": {"sort": "state", "descending": False},
    "sort=-task_id": {"sort": "task_id"},
    "sort=queued_at (ascending)": {"sort": "queued_at", "descending": False},
    "state=failed, sort=-finished_at": {"states": ("failed",), "sort": "finished_at"},
    "page 100 (offset 5,000)": {"offset": 5000},
}
ERRORS = ["copy: disk full on /srv", "exit code 2", "timed out after 30s", "HTTP 503 from upstream"]


def measure(runs: int = 1_000_000, repeats: int = 20, postgres_repeats: int = 5) -> dict[str, Any]:
    from taskd.store.postgres import PostgresStore
    from taskd.store.sqlite import SQLiteStore

    with tempfile.TemporaryDirectory(prefix="taskd-bench-") as tmp:
        path = Path(tmp) / "taskd.db"
        began = time.perf_counter()
        now = asyncio.run(_fill(SQLiteStore(path), runs))
        fill_s = time.perf_counter() - began
        results = asyncio.run(_time(SQLiteStore(path), now, repeats))
    out: dict[str, Any] = {"runs": runs, "fill_s": round(fill_s, 1), "queries": results}
    try:
        with schema() as url:
            now = asyncio.run(_fill(PostgresStore(url), runs))
            asyncio.run(_vacuum(url))
            out["postgres"] = asyncio.run(_time(PostgresStore(url), now, postgres_repeats))
    except OSError as exc:  # no PostgreSQL server here: the section says so
        out["postgres"] = {"skipped": f"PostgreSQL at {POSTGRES} is not reachable: {exc}"}
    return out


async def _vacuum(url: str) -> None:
    """What autovacuum does to a table that has grown for a while: statistics and the visibility map."""
    import asyncpg

    db = await asyncpg.connect(POSTGRES)
    try:
        await db.execute(f'VACUUM ANALYZE "{url.rsplit("search_path=", 1)[1]}".runs')
    finally:
        await db.close()


async def _fill(store: Store, count: int) -> float:
    """`count` finished runs over the last 30 days, written through the store's own writer (so the
    text index is kept as the daemon keeps it): 1,000 tasks, 5% failed, 10% manual, 30% with params.
    SQLite gets no ANALYZE: the daemon never runs it, so the planner works without statistics here too."""
    from taskd.models import RunRecord, RunState, Trigger

    rng = random.Random(7)
    now = time.time()
    span = 30 * 86400
    await store.open()
    try:
        for i in range(count):
            queued = now - span + span * i / count
            failed = rng.random() < 0.05
            started = queued + rng.random() * 0.1
            run = RunRecord(
                id=f"{int(queued * 1000):012x}{i:08x}",
                task_id=f"t{rng.randrange(1000):05d}",
                trigger=Trigger.MANUAL if rng.random() < 0.1 else Trigger.SCHEDULE,
                queued_at=queued,
                state=RunState.FAILED if failed else RunState.COMPLETED,
                scheduled_at=queued,
                started_at=started,
                finished_at=started + rng.expovariate(1 / 5),
                attempts=1,
                error=rng.choice(ERRORS) if failed else None,
                params={"target": f"/srv-{rng.randrange(10_000):04d}"} if rng.random() < 0.3 else {},
            )
            store.save_run(run)
            if i % 20_000 == 19_999:
                await store.flush()
    finally:
        await store.close()
    return now


async def _time(store: Store, now: float, repeats: int) -> dict[str, Any]:
    from taskd.store import RunQuery

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

"""Run search on a large history: N runs in a real SQLite store (the daemon's schema, migrations and
text index), then a `taskd run` on that store and the `GET /runs` queries timed over HTTP, to the
reply's last byte. The same history is then written to the PostgreSQL store, if the server is
reachable, and the same queries timed against a daemon on it; then once more in a database where
pg_trgm cannot be had (the store's own trigram index)."""

from __future__ import annotations

import asyncio
import contextlib
import http.client
import json
import random
import sys
import tempfile
import time
import urllib.parse
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from bench.cluster import POSTGRES, schema
from bench.common import Daemon, percentile, tasks_config

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


def measure(runs: int = 1_000_000, repeats: int = 20) -> dict[str, Any]:
    from taskd.store.postgres import PostgresStore
    from taskd.store.sqlite import SQLiteStore

    with tempfile.TemporaryDirectory(prefix="taskd-bench-") as tmp:
        directory = Path(tmp)
        began = time.perf_counter()
        now = asyncio.run(_fill(SQLiteStore(directory / "var" / "taskd.db"), runs))
        fill_s = time.perf_counter() - began
        results = _time(directory, "{path: ./var/taskd.db, retention: {days: 0, max_runs_per_task: 0}}", now, repeats)
    out: dict[str, Any] = {"runs": runs, "repeats": repeats, "fill_s": round(fill_s, 1), "queries": results}
    try:
        with schema() as url, tempfile.TemporaryDirectory(prefix="taskd-bench-") as tmp:
            now = asyncio.run(_fill(PostgresStore(url), runs))
            asyncio.run(_text_index(url))
            asyncio.run(_vacuum(url))
            store = f"{{url: '{url}', retention: {{days: 0, max_runs_per_task: 0}}}}"
            out["postgres"] = _time(Path(tmp), store, now, repeats)
            with _without_pg_trgm() as plain:
                asyncio.run(_copy(url, plain))
                plain_store = f"{{url: '{plain}', retention: {{days: 0, max_runs_per_task: 0}}}}"
                out["postgres_plain"] = _time(Path(tmp), plain_store, now, repeats)
    except OSError as exc:  # no PostgreSQL server here: the section says so
        out["postgres"] = {"skipped": f"PostgreSQL at {POSTGRES} is not reachable: {exc}"}
    return out


@contextlib.contextmanager
def _without_pg_trgm() -> Iterator[str]:
    """A database of its own without pg_trgm, and a role that owns its schema there but may not
    create extensions: the store falls back on its own trigram index. Yields the store URL (the
    schema on its search path); the database and the role are dropped afterwards."""
    import asyncpg

    name = f"taskd_bench_plain_{uuid.uuid4().hex[:8]}"
    server = POSTGRES.rsplit("/", 1)[0]

    async def admin(database: str, *statements: str) -> None:
        db = await asyncpg.connect(f"{server}/{database}")
        try:
            for sql in statements:
                await db.execute(sql)
        finally:
            await db.close()

    test = POSTGRES.rsplit("/", 1)[1]
    asyncio.run(admin(test, f'CREATE ROLE "{name}" LOGIN', f'CREATE DATABASE "{name}"'))
    try:
        asyncio.run(admin(name, f'CREATE SCHEMA taskd AUTHORIZATION "{name}"'))
        user = server.split("//", 1)[1].split("@", 1)[0]
        yield f"{server.replace(f'//{user}@', f'//{name}@')}/{name}?search_path=taskd"
    finally:
        asyncio.run(admin(test, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)', f'DROP ROLE IF EXISTS "{name}"'))


async def _copy(source: str, target: str) -> None:
    """The history of `source` copied into `target` (COPY, both stores' schema made by the store),
    then what a daemon does at its first start there (the text index, its statistics) and what
    autovacuum would do."""
    import io

    import asyncpg

    from taskd.store.postgres import PostgresStore

    store = PostgresStore(target)
    await store.open()  # the schema, and the own trigram index (on no runs yet)
    await store.close()
    buffer = io.BytesIO()
    reader = await asyncpg.connect(source)
    try:
        await reader.copy_from_table("runs", output=buffer, format="binary")
    finally:
        await reader.close()
    buffer.seek(0)
    schema = target.rsplit("search_path=", 1)[1]
    database = target.split("?", 1)[0].rsplit("/", 1)[1]
    writer = await asyncpg.connect(f"{POSTGRES.rsplit('/', 1)[0]}/{database}")  # as the server's admin
    try:
        await writer.copy_to_table("runs", source=buffer, schema_name=schema, format="binary")
    finally:
        await writer.close()
    await _text_index(target)
    await _vacuum(target, database)


async def _text_index(url: str) -> None:
    """What a daemon builds in the background at its first start on the store: the trigram index
    text searches read (built here first, so that the queries are timed with it)."""
    from taskd.store.postgres import PostgresStore

    store = PostgresStore(url)
    await store.open()
    try:
        if store._indexing is not None:
            await store._indexing
        print(f"text index: {store.text_index}", file=sys.stderr, flush=True)
    finally:
        await store.close()


async def _vacuum(url: str, database: str | None = None) -> None:
    """What autovacuum does to a table that has grown for a while: statistics and the visibility map."""
    import asyncpg

    db = await asyncpg.connect(POSTGRES if database is None else f"{POSTGRES.rsplit('/', 1)[0]}/{database}")
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


def _time(directory: Path, store: str, now: float, repeats: int) -> dict[str, Any]:
    """Each query as `GET /runs` to a `taskd run` on that store (1,000 manual tasks t00000...), on
    one kept-alive connection, from the request sent to the last byte of the reply read."""
    daemon = Daemon(directory, "")
    daemon.config = tasks_config(daemon.port, 1000, None, 10).replace(
        "store: {path: ./var/taskd.db, retention: {days: 0, max_runs_per_task: 0}}", f"store: {store}"
    )
    daemon.start()
    out: dict[str, Any] = {}
    connection = http.client.HTTPConnection("127.0.0.1", daemon.port, timeout=60)
    try:
        for name, spec in QUERIES.items():
            path = "/runs?" + urllib.parse.urlencode(_parameters(spec, now))
            timings, total = [], 0
            for _ in range(repeats):
                started = time.perf_counter()
                connection.request("GET", path)
                response = connection.getresponse()
                body = response.read()
                timings.append((time.perf_counter() - started) * 1000)
                if response.status != 200:
                    raise RuntimeError(f"GET {path}: {response.status} {body[:500]!r}")
                total = json.loads(body)["total"]
            out[name] = {"p50_ms": percentile(timings, 50), "p99_ms": percentile(timings, 99), "total": total}
    finally:
        connection.close()
        daemon.stop()
    return out


def _parameters(spec: dict[str, Any], now: float) -> dict[str, Any]:
    """A query of QUERIES as the API's parameters."""
    names = {"states": "state", "task_ids": "task_id", "triggers": "trigger", "text": "q"}
    parameters: dict[str, Any] = {}
    for key, value in spec.items():
        if key in names:
            parameters[names[key]] = ",".join(value) if isinstance(value, tuple) else value
        elif key.endswith("_hours_ago"):
            parameters[key.removesuffix("_hours_ago")] = round(now - 3600 * value, 3)
        elif key == "offset":
            parameters[key] = value
    if "sort" in spec:
        parameters["sort"] = ("-" if spec.get("descending", True) else "") + spec["sort"]
    elif spec.get("descending") is False:
        parameters["sort"] = "queued_at"
    return parameters

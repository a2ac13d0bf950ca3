"""Throughput: 20,000 manual runs of a no-op pipeline, max_concurrent_tasks 100, every run persisted.

Runs per second from the first queued to the last recorded (committed to SQLite). The ceiling is the
same work as bare asyncio: a semaphore of 100 and the same coroutine, nothing persisted. The peer is
Celery with the Redis broker on 127.0.0.1:6379 and one worker, if celery is installed.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import io
import os
import shutil
import sqlite3
import subprocess
import sys
import tempfile
import textwrap
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from bench.common import rss_mb


@contextlib.asynccontextmanager
async def bench_engine(slots: int, directory: Path | None = None) -> AsyncIterator[tuple[Any, Any, Path]]:
    """The real engine and SQLite store in-process, on one task with `concurrency: allow` and a
    no-op pipeline; yields (engine, store, store path)."""
    from taskd import __version__, logs
    from taskd.config import load_config
    from taskd.engine import Engine
    from taskd.metrics import Metrics
    from taskd.store import open_store

    logs.configure("info", "json", stream=io.StringIO())  # the default level; nothing is logged per run
    tmp = Path(directory or tempfile.mkdtemp(prefix="taskd-bench-"))
    (tmp / "taskd.yml").write_text(
        f"task: {{max_concurrent_tasks: {slots}}}\nstore: {{path: ./t.db}}\n"
        "tasks: [{id: noop, pipeline: p, concurrency: allow}]\n"
        "pipelines: [{name: p, processors: [{sleep: {duration: 0}}]}]\n"
    )
    config = load_config(tmp / "taskd.yml", {})
    metrics = Metrics(__version__)  # as the daemon runs it: every run is counted
    store = open_store(config.store_location)
    store.commit_observer = metrics.store_committed
    await store.open()
    engine = Engine(config, store, metrics=metrics)
    await engine.start()
    try:
        yield engine, store, Path(config.store_location)
    finally:
        await engine.shutdown(5)
        await store.close()
        if directory is None:
            shutil.rmtree(tmp, ignore_errors=True)


async def taskd_runs(count: int = 20_000, slots: int = 100) -> dict[str, Any]:
    """Start `count` runs at once through the real engine (no HTTP); wait until every one is
    finished and committed."""
    from taskd.models import Trigger

    with tempfile.TemporaryDirectory(prefix="taskd-bench-") as tmp:
        async with bench_engine(slots, Path(tmp)) as (engine, store, path):
            started = time.perf_counter()
            runs = [engine.start_run("noop", Trigger.MANUAL) for _ in range(count)]
            for run in runs:
                await run.done.wait()
            await store.flush()
            elapsed = time.perf_counter() - started
        with sqlite3.connect(path) as db:
            stored = db.execute("SELECT count(*) FROM runs WHERE state = 'completed'").fetchone()[0]
    return {"runs": count, "stored_completed": stored, "seconds": elapsed, "runs_per_s": count / elapsed}


async def bare_asyncio(count: int = 20_000, slots: int = 100) -> dict[str, Any]:
    """The ceiling: the same no-op coroutine under a semaphore, nothing recorded."""
    semaphore = asyncio.Semaphore(slots)

    async def one() -> None:
        async with semaphore:
            await asyncio.sleep(0)

    started = time.perf_counter()
    await asyncio.gather(*(one() for _ in range(count)))
    elapsed = time.perf_counter() - started
    return {"runs": count, "seconds": elapsed, "runs_per_s": count / elapsed}


CELERY_APP = textwrap.dedent(
    """
    from celery import Celery
    app = Celery("bench", broker="redis://127.0.0.1:6379/15", backend="redis://127.0.0.1:6379/15")
    app.conf.update(task_ignore_result=False, worker_prefetch_multiplier=64, broker_connection_retry_on_startup=True)

    @app.task
    def noop():
        return None
    """
)


def celery_runs(count: int = 20_000) -> dict[str, Any]:
    """Celery with the Redis broker: enqueue `count` no-op tasks, one worker (prefork, one process
    per core), time until every result is stored in Redis."""
    try:
        import celery  # noqa: F401
        import redis
    except ImportError as exc:
        return {"skipped": f"celery is not installed ({exc}); pip install '.[bench]'"}
    client = redis.Redis(host="127.0.0.1", port=6379, db=15)
    try:
        client.ping()
    except redis.RedisError as exc:
        return {"skipped": f"no Redis on 127.0.0.1:6379 ({exc})"}
    client.flushdb()
    tmp = Path(tempfile.mkdtemp(prefix="celery-bench-"))
    (tmp / "bench_app.py").write_text(CELERY_APP)
    env = {**os.environ, "PYTHONPATH": str(tmp)}
    worker = subprocess.Popen(
        [sys.executable, "-m", "celery", "-A", "bench_app", "worker", "--loglevel=WARNING",
         f"--concurrency={os.cpu_count() or 2}", "--without-gossip", "--without-mingle", "--without-heartbeat"],
        cwd=tmp, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        sys.path.insert(0, str(tmp))
        import bench_app  # type: ignore[import-not-found]

        bench_app.noop.delay().get(timeout=60)  # the worker is up
        started = time.perf_counter()
        results = [bench_app.noop.delay() for _ in range(count)]
        for result in results:
            result.get(timeout=300)
        elapsed = time.perf_counter() - started
    finally:
        worker.terminate()
        worker.wait(30)
        sys.path.remove(str(tmp))
        client.flushdb()
        shutil.rmtree(tmp, ignore_errors=True)
    return {"runs": count, "seconds": elapsed, "runs_per_s": count / elapsed}


async def leak_check(runs: int = 100_000, batch: int = 1_000, slots: int = 100) -> dict[str, Any]:
    """RSS of one engine in steady state: batches of `batch` runs, measured after a warm-up of
    10,000 runs and again after `runs` more."""
    from taskd.models import Trigger

    async with bench_engine(slots) as (engine, store, _):

        async def run_batches(total: int) -> None:
            for _ in range(total // batch):
                started = [engine.start_run("noop", Trigger.MANUAL) for _ in range(batch)]
                for run in started:
                    await run.done.wait()
                await store.flush()

        await run_batches(10_000)
        gc.collect()
        before = rss_mb(os.getpid())
        began = time.perf_counter()
        await run_batches(runs)
        elapsed = time.perf_counter() - began
        gc.collect()
        after = rss_mb(os.getpid())
    return {
        "runs": runs,
        "rss_before_mb": before,
        "rss_after_mb": after,
        "growth_mb": after - before,
        "runs_per_s": runs / elapsed,
    }


if __name__ == "__main__":
    print(asyncio.run(taskd_runs()))
    print(asyncio.run(bare_asyncio()))

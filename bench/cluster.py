"""Several nodes on PostgreSQL (the local server, database `test`, a schema per measurement).

- Persisted runs/s: 20,000 manual runs of a no-op pipeline through the real engine and the
  PostgreSQL store, in one process (1 node), and in three processes at once on the same schema
  (3 nodes; runs/s = all runs / the wall time of the slowest), beside SQLite in the same run.
- Lateness with 3 nodes: 3 daemons, 300 per-second tasks (each fire claimed by one node), a `log`
  step whose stamp is read back: first-step start minus the scheduled instant, p50/p99, missed.
- Sharing and capacity: per-second tasks whose runs sleep 1 s, the same `max_concurrent_tasks` on
  every node. Each fire's runs per node (their share of 1/N, fire by fire), with one node already
  holding long runs (the less loaded nodes should take more), and the completed runs per second of
  1 node and of 3 nodes (the ceiling is N x the slots: a run holds a slot for a second).
- Failover: 3 daemons, 3 per-second tasks and a long run on the victim; kill -9 one node at a time,
  20 times. Per kill: time until a surviving node runs the next fire of a task (the dead node's
  share of the work goes on), and until the dead node's active run is marked interrupted.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import os
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

from bench.common import Daemon, percentile, tasks_config

POSTGRES = os.environ.get("TASKD_BENCH_POSTGRES", "postgresql://postgres@127.0.0.1:5432/test")


@contextlib.contextmanager
def schema() -> Iterator[str]:
    """A fresh schema for one measurement, dropped afterwards; yields the store URL using it."""
    import asyncpg

    name = f"taskd_bench_{uuid.uuid4().hex[:10]}"

    async def run(sql: str) -> None:
        db = await asyncpg.connect(POSTGRES)
        try:
            await db.execute(sql)
        finally:
            await db.close()

    asyncio.run(run(f'CREATE SCHEMA "{name}"'))
    try:
        yield f"{POSTGRES}?search_path={name}"
    finally:
        asyncio.run(run(f'DROP SCHEMA "{name}" CASCADE'))


@contextlib.asynccontextmanager
async def engine_on(url: str, node: str) -> AsyncIterator[Any]:
    from taskd import __version__, logs
    from taskd.config import load_config
    from taskd.engine import Engine
    from taskd.metrics import Metrics
    from taskd.store import open_store

    logs.configure("warning", "json")
    with tempfile.TemporaryDirectory(prefix="taskd-bench-") as tmp:
        (Path(tmp) / "taskd.yml").write_text(
            f"task: {{max_concurrent_tasks: 100}}\nstore: {{url: '{url}'}}\nnode: {{name: {node}}}\n"
            "tasks: [{id: noop, pipeline: p, concurrency: allow}]\n"
            "pipelines: [{name: p, processors: [{sleep: {duration: 0}}]}]\n"
        )
        config = load_config(Path(tmp) / "taskd.yml", {})
        store = open_store(config.store_location)
        store.commit_observer = Metrics(__version__).store_committed
        await store.open()
        engine = Engine(config, store, metrics=Metrics(__version__))
        await engine.start()
        try:
            yield engine
        finally:
            await engine.shutdown(5)
            await store.close()


async def _runs(url: str, node: str, count: int) -> float:
    """Start `count` runs at once on one node; seconds until every one is committed."""
    from taskd.models import Trigger

    async with engine_on(url, node) as engine:
        started = time.perf_counter()
        runs = [engine.start_run("noop", Trigger.MANUAL) for _ in range(count)]
        for run in runs:
            await run.done.wait()
        await engine.store.flush()
        return time.perf_counter() - started


def throughput(count: int = 20_000) -> dict[str, Any]:
    with schema() as url:
        one = count / asyncio.run(_runs(url, "n1", count))
    with schema() as url:
        script = (
            "import asyncio, sys; from bench.cluster import _runs; "
            "print(asyncio.run(_runs(sys.argv[1], sys.argv[2], int(sys.argv[3]))))"
        )
        procs = [
            subprocess.Popen(
                [sys.executable, "-c", script, url, f"n{i}", str(count)], stdout=subprocess.PIPE, text=True
            )
            for i in range(3)
        ]
        seconds = [float(p.communicate()[0].strip().splitlines()[-1]) for p in procs]
        three = 3 * count / max(seconds)
    return {"runs_per_node": count, "one_node_runs_per_s": one, "three_nodes_runs_per_s": three}


def _nodes(url: str, directory: Path, tasks: str) -> list[Daemon]:
    daemons = []
    for name in ("a", "b", "c"):
        text = tasks.replace("store: {path: ./var/taskd.db, retention: {days: 0, max_runs_per_task: 0}}", "")
        text = f"store: {{url: '{url}', retention: {{days: 0, max_runs_per_task: 0}}}}\nnode: {{name: {name}}}\n" + text
        daemon = Daemon(directory / name, "")
        daemon.config = text.replace("{port}", str(daemon.port))
        daemons.append(daemon)
    return daemons


async def _fetch(url: str, sql: str, *args: Any) -> list[Any]:
    import asyncpg

    db = await asyncpg.connect(url)
    try:
        return list(await db.fetch(sql, *args))
    finally:
        await db.close()


SLEEPING = "[{sleep: {duration: 1s}}]"


def _sleepers(url: str, tmp: Path, names: tuple[str, ...], tasks: int, slots: int, schedule: str) -> list[Daemon]:
    config = tasks_config(0, tasks, schedule, slots=slots, pipeline=SLEEPING, log_level="warning")
    config = config.replace("api: {listen: '127.0.0.1:0'", "api: {listen: '127.0.0.1:{port}'")
    config += "  - {name: hold, processors: [{sleep: {duration: 600s}}]}\n"
    config = config.replace("tasks:\n", "tasks:\n  - {id: holder, pipeline: hold, concurrency: allow}\n", 1)
    return _nodes(url, tmp, config)[: len(names)]


def sharing(tasks: int = 900, fires: int = 3, slots: int = 900) -> dict[str, Any]:
    """Fires every 5 s of `tasks` tasks (1 s runs): each node's share of each fire, idle and with
    node a holding a third of its slots with long runs."""
    found: dict[str, Any] = {}
    for case in ("idle", "a_busy"):
        with schema() as url, tempfile.TemporaryDirectory(prefix="taskd-bench-") as tmp:
            daemons = _sleepers(url, Path(tmp), ("a", "b", "c"), tasks, slots, "*/5 * * * * *")
            for daemon in daemons:
                daemon.start()
            try:
                if case == "a_busy":
                    for _ in range(slots // 3):
                        daemons[0].post("/task/holder/_start")
                first = math.ceil((time.time() + 2) / 5) * 5
                last = first + 5 * (fires - 1)
                time.sleep(max(0.0, last + 3 - time.time()))
            finally:
                for daemon in daemons:
                    daemon.stop()
            rows = asyncio.run(
                _fetch(
                    url,
                    "SELECT scheduled_at, node, count(*) AS n FROM runs WHERE trigger = 'schedule' "
                    "AND scheduled_at BETWEEN $1 AND $2 GROUP BY 1, 2",
                    float(first),
                    float(last),
                )
            )
        per_fire: dict[float, dict[str, int]] = {}
        for r in rows:
            per_fire.setdefault(r["scheduled_at"], {})[r["node"]] = r["n"]
        shares = [{name: n / sum(nodes.values()) for name, n in nodes.items()} for nodes in per_fire.values()]
        found[case] = {
            "fires": len(per_fire),
            "runs": sum(sum(nodes.values()) for nodes in per_fire.values()),
            "per_fire": [dict(sorted(nodes.items())) for _, nodes in sorted(per_fire.items())],
            "max_off_share": max((abs(v - 1 / 3) * 3 for share in shares for v in share.values()), default=math.nan),
            "mean_share": {n: sum(s.get(n, 0.0) for s in shares) / max(len(shares), 1) for n in ("a", "b", "c")},
        }
    return {"tasks": tasks, "slots_per_node": slots, **found}


def capacity(slots: int = 100, seconds: int = 10) -> dict[str, Any]:
    """Completed runs per second with 1 and 3 nodes: 4 x `slots` per-second tasks whose runs take
    1 s, so each node can complete at most `slots` runs a second, and more are due than 3 nodes
    can run (capacity is what the cluster completes when work is waiting)."""
    found: dict[str, float] = {}
    for count in (1, 3):
        with schema() as url, tempfile.TemporaryDirectory(prefix="taskd-bench-") as tmp:
            names = ("a", "b", "c")[:count]
            daemons = _sleepers(url, Path(tmp), names, 4 * slots, slots, "* * * * * *")
            for daemon in daemons:
                daemon.start()
            try:
                start = math.floor(time.time()) + 3
                end = start + seconds
                time.sleep(max(0.0, end + 2 - time.time()))
            finally:
                for daemon in daemons:
                    daemon.stop()
            rows = asyncio.run(
                _fetch(
                    url,
                    "SELECT count(*) AS n FROM runs WHERE state = 'completed'"
                    " AND finished_at >= $1 AND finished_at < $2",
                    float(start),
                    float(end),
                )
            )
        found[f"nodes_{count}_runs_per_s"] = rows[0]["n"] / seconds
    one, three = found["nodes_1_runs_per_s"], found["nodes_3_runs_per_s"]
    return {
        "slots_per_node": slots,
        "seconds": seconds,
        **found,
        "ceiling_1_runs_per_s": float(slots),
        "ceiling_3_runs_per_s": float(3 * slots),
        "ratio_3_to_1": three / one if one else math.nan,
    }


def lateness(tasks: int = 300, seconds: int = 10) -> dict[str, Any]:

    with schema() as url, tempfile.TemporaryDirectory(prefix="taskd-bench-") as tmp:
        config = tasks_config(0, tasks, "* * * * * *", slots=tasks, pipeline="[{log: {message: started}}]")
        config = config.replace("api: {listen: '127.0.0.1:0'", "api: {listen: '127.0.0.1:{port}'")
        daemons = _nodes(url, Path(tmp), config)
        for daemon in daemons:
            daemon.start()
        try:
            first = math.floor(time.time()) + 3
            last = first + seconds - 1
            time.sleep(max(0.0, last + 1.5 - time.time()))
        finally:
            for daemon in daemons:
                daemon.stop()

        rows = asyncio.run(
            _fetch(
                url,
                "SELECT r.scheduled_at, l.ts, r.node FROM runs r JOIN run_logs l ON l.run_id = r.id "
                "AND l.seq = 1 WHERE r.trigger = 'schedule' AND r.scheduled_at BETWEEN $1 AND $2",
                float(first),
                float(last),
            )
        )
    ms = [(r["ts"] - r["scheduled_at"]) * 1000 for r in rows]
    by_node: dict[str, int] = {}
    for r in rows:
        by_node[r["node"]] = by_node.get(r["node"], 0) + 1
    expected = tasks * seconds
    return {
        "tasks": tasks,
        "fires_expected": expected,
        "runs": len(rows),
        "missed": expected - len(rows),
        "p50_ms": percentile(ms, 50),
        "p99_ms": percentile(ms, 99),
        "max_ms": max(ms) if ms else math.nan,
        "runs_by_node": by_node,
    }


FAILOVER_TASKS = """task: {{max_concurrent_tasks: 10, shutdown_timeout: 5s}}
api: {{listen: '127.0.0.1:{{port}}'}}
log: {{level: warning, format: json}}
tasks:
  - {{id: f1, pipeline: note, schedule: '* * * * * *'}}
  - {{id: f2, pipeline: note, schedule: '* * * * * *'}}
  - {{id: f3, pipeline: note, schedule: '* * * * * *'}}
  - {{id: long, pipeline: wait}}
pipelines:
  - {{name: note, processors: [{{sleep: {{duration: 0}}}}]}}
  - {{name: wait, processors: [{{sleep: {{duration: 600}}}}]}}
"""


def failover(kills: int = 20) -> dict[str, Any]:
    """kill -9 one node at a time; measure the next fire a survivor runs, and the interruption."""
    with schema() as url, tempfile.TemporaryDirectory(prefix="taskd-bench-") as tmp:
        daemons = _nodes(url, Path(tmp), FAILOVER_TASKS.format())
        for daemon in daemons:
            daemon.start()
        next_fire: list[float] = []
        interrupted: list[float] = []
        try:
            for i in range(kills):
                victim, survivor = daemons[i % 3], daemons[(i + 1) % 3]
                _, started = victim.post("/task/long/_start")
                run_id = started["run_id"]
                time.sleep(1.2)
                victim.proc.send_signal(signal.SIGKILL)  # type: ignore[union-attr]
                victim.proc.wait()  # type: ignore[union-attr]
                killed = time.time()
                fire_seen = interrupt_seen = math.nan
                while time.time() - killed < 20 and (math.isnan(fire_seen) or math.isnan(interrupt_seen)):
                    if math.isnan(fire_seen):
                        _, body = survivor.get("/runs?task_id=f1,f2,f3&limit=5")
                        for run in body["runs"]:
                            if run["node"] != victim.directory.name and run["started_at"]:
                                started_at = _epoch(run["started_at"])
                                if started_at > killed:
                                    fire_seen = started_at - killed
                                    break
                    if math.isnan(interrupt_seen) and survivor.get(f"/run/{run_id}")[1]["state"] == "interrupted":
                        interrupt_seen = time.time() - killed
                    time.sleep(0.05)
                next_fire.append(fire_seen)
                interrupted.append(interrupt_seen)
                victim.start()  # joins once the dead process's lease has run out
        finally:
            for daemon in daemons:
                daemon.stop()
    return {
        "kills": kills,
        "next_fire_s": _stats(next_fire),
        "interrupted_s": _stats(interrupted),
    }


def _stats(values: list[float]) -> dict[str, float]:
    seen = [v for v in values if not math.isnan(v)]
    return {
        "p50": percentile(seen, 50),
        "max": max(seen) if seen else math.nan,
        "missing": float(len(values) - len(seen)),
    }


def _epoch(iso: str) -> float:
    from datetime import datetime

    return datetime.fromisoformat(iso.replace("Z", "+00:00")).timestamp()


def measure(quick: bool = False) -> dict[str, Any]:
    return {
        "throughput": throughput(5_000 if quick else 20_000),
        "lateness": lateness(300, 4 if quick else 10),
        "sharing": sharing(900, 2 if quick else 3),
        "capacity": capacity(100, 5 if quick else 10),
        "failover": failover(3 if quick else 20),
    }


if __name__ == "__main__":
    import json

    print(json.dumps(measure(quick="--quick" in sys.argv), indent=2, default=str))

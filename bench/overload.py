"""Backpressure: load offered at 3x what the daemon can run, for 60 s, then dropped to 0.3x.

Capacity is set by the config: 50 slots and a pipeline that sleeps 50 ms make at most 1,000 runs
a second. 3,000 tasks with `concurrency: allow` fire every second (3,000 runs offered a second).
Sampled each second: RSS, runs waiting, whether the daemon says it is overloaded, and a manual
start (202 or 503). After the window the config is reloaded with 300 tasks; recovery is the time
from the reload until `/health` no longer reports an overload and a manual start is accepted,
and the backlog is drained when no run waits any more.
Fires run and skipped are counted from the store afterwards.
"""

from __future__ import annotations

import math
import signal
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

from bench.common import Daemon, rss_mb, tasks_config

SLOTS = 50
PIPELINE = "[{sleep: {duration: 0.05}}]"


MAX_WAITING = 10_000


def _config(port: int, tasks: int) -> str:
    text = tasks_config(port, tasks, "* * * * * *", slots=SLOTS, pipeline=PIPELINE, concurrency="allow")
    return text.replace("task: {", f"task: {{max_waiting_runs: {MAX_WAITING}, ", 1)


def _start(daemon: Daemon, task: str) -> int:
    request = urllib.request.Request(f"http://127.0.0.1:{daemon.port}/task/{task}/_start", data=b"", method="POST")
    try:
        with urllib.request.urlopen(request, timeout=10) as resp:
            return int(resp.status)
    except urllib.error.HTTPError as exc:
        return int(exc.code)


def measure(offered_tasks: int = 3_000, seconds: int = 60) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="taskd-bench-") as tmp:
        daemon = Daemon(Path(tmp), "")
        daemon.config = _config(daemon.port, offered_tasks)
        daemon.start()
        samples: list[dict[str, Any]] = []
        try:
            began = time.time()
            while time.time() - began < seconds:
                _, health = daemon.get("/health")
                samples.append(
                    {
                        "t": round(time.time() - began, 1),
                        "rss_mb": round(rss_mb(daemon.pid), 1),
                        "waiting": health["active_runs"] - health["slots"]["held"],
                        "pending_writes": health["pending_writes"],
                        "overloaded": health["overloaded"] is not None,
                        "manual_start": _start(daemon, "t00000"),
                    }
                )
                time.sleep(max(0.0, 1.0 - (time.time() - began) % 1.0))
            ended = time.time()
            (daemon.directory / "taskd.yml").write_text(_config(daemon.port, offered_tasks // 10))
            daemon.proc.send_signal(signal.SIGHUP)  # type: ignore[union-attr]
            recovered = drained = math.nan
            while time.time() - ended < 120:
                _, health = daemon.get("/health")
                if math.isnan(recovered) and health["overloaded"] is None and _start(daemon, "t00000") == 202:
                    recovered = time.time() - ended
                if health["active_runs"] - health["slots"]["held"] == 0:
                    drained = time.time() - ended
                    break
                time.sleep(0.1)
            rss_after = rss_mb(daemon.pid)
        finally:
            daemon.stop()
        with daemon.db() as db:
            window = (began, ended)
            run = db.execute(
                "SELECT count(*) FROM runs WHERE trigger = 'schedule' AND scheduled_at BETWEEN ? AND ?", window
            ).fetchone()[0]
            completed = db.execute(
                "SELECT count(*) FROM runs WHERE trigger = 'schedule' AND state = 'completed' "
                "AND scheduled_at BETWEEN ? AND ?",
                window,
            ).fetchone()[0]
            skipped = dict(
                db.execute(
                    "SELECT CASE WHEN reason LIKE 'taskd is overloaded%' THEN 'overloaded' ELSE reason END, "
                    "count(*) FROM fires WHERE instant BETWEEN ? AND ? GROUP BY 1",
                    window,
                ).fetchall()
            )
    span = ended - began
    rss = [s["rss_mb"] for s in samples]
    return {
        "seconds": round(span, 1),
        "capacity_runs_per_s": SLOTS / 0.05,
        "max_waiting_runs": MAX_WAITING,
        "offered_per_s": offered_tasks,
        "fires_offered": offered_tasks * math.floor(span),
        "fires_run": run,
        "runs_completed": completed,
        "runs_per_s": run / span,
        "fires_skipped": skipped,
        "rss_start_mb": rss[0],
        "rss_max_mb": max(rss),
        "rss_last_mb": rss[-1],
        "rss_after_recovery_mb": rss_after,
        "waiting_max": max(s["waiting"] for s in samples),
        "pending_writes_max": max(s["pending_writes"] for s in samples),
        "seconds_overloaded": sum(1 for s in samples if s["overloaded"]),
        "manual_starts": {str(code): sum(1 for s in samples if s["manual_start"] == code) for code in (202, 503)},
        "recovery_s": recovered,
        "backlog_drained_s": drained,
        "samples": samples,
    }


if __name__ == "__main__":
    import json
    import sys

    result = measure(seconds=int(sys.argv[1]) if len(sys.argv) > 1 else 60)
    result.pop("samples")
    print(json.dumps(result, indent=2))

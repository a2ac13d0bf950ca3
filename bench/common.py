"""Shared pieces of the benchmarks: a daemon subprocess, configs with N tasks, statistics, RSS."""

from __future__ import annotations

import json
import math
import os
import signal
import socket
import sqlite3
import subprocess
import sys
import time
import urllib.request
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def percentile(values: Sequence[float], q: float) -> float:
    """Nearest-rank percentile (q in 0..100); NaN for no values."""
    if not values:
        return math.nan
    ordered = sorted(values)
    rank = max(0, math.ceil(q / 100 * len(ordered)) - 1)
    return ordered[rank]


def spread(values: Sequence[float]) -> dict[str, float]:
    """min / median / max of repeated measurements."""
    ordered = sorted(values)
    if not ordered:
        return {"min": math.nan, "median": math.nan, "max": math.nan}
    middle = len(ordered) // 2
    median = ordered[middle] if len(ordered) % 2 else (ordered[middle - 1] + ordered[middle]) / 2
    return {"min": ordered[0], "median": median, "max": ordered[-1]}


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return math.nan


def tasks_config(
    port: int,
    count: int,
    schedule: str | None,
    slots: int,
    pipeline: str = "[{sleep: {duration: 0}}]",
    concurrency: str = "forbid",
    scheduled_count: int | None = None,
    zones: Sequence[str] = (),
    log_level: str = "info",
) -> str:
    """A taskd.yml with `count` tasks on one no-op pipeline; the first `scheduled_count` (default:
    all) have `schedule`, the rest are manual-only. With `zones`, task i's schedule is in zone
    i mod len(zones): as many different schedules (timer jobs) as zones. Logging is the default
    (info, JSON) unless `log_level` says otherwise."""
    lines = [
        f"task: {{max_concurrent_tasks: {slots}, shutdown_timeout: 10s}}",
        f"api: {{listen: '127.0.0.1:{port}', max_body_bytes: 1048576}}",
        "store: {path: ./var/taskd.db, retention: {days: 0, max_runs_per_task: 0}}",
        f"log: {{level: {log_level}, format: json}}",
        "tasks:",
    ]
    scheduled = count if scheduled_count is None else scheduled_count
    for i in range(count):
        when = f", schedule: '{schedule}'" if schedule and i < scheduled else ""
        if when and zones:
            when += f", time_zone: {zones[i % len(zones)]}"
        lines.append(f"  - {{id: t{i:05d}, pipeline: noop, concurrency: {concurrency}{when}}}")
    lines += ["pipelines:", f"  - {{name: noop, processors: {pipeline}}}"]
    return "\n".join(lines) + "\n"


@dataclass
class Daemon:
    """A `taskd run` subprocess in its own directory."""

    directory: Path
    config: str
    port: int = field(default_factory=free_port)
    proc: subprocess.Popen[bytes] | None = None
    started: float = 0.0
    ready_after: float = math.nan

    def start(self, timeout: float = 120) -> Daemon:
        self.directory.mkdir(parents=True, exist_ok=True)
        (self.directory / "taskd.yml").write_text(self.config.replace("{port}", str(self.port)))
        log = (self.directory / "daemon.log").open("ab")
        self.started = time.perf_counter()
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "taskd", "run", "-c", "taskd.yml"],
            cwd=self.directory,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        log.close()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"taskd exited: {(self.directory / 'daemon.log').read_text()[-2000:]}")
            try:
                if self.get("/health")[0] == 200:
                    self.ready_after = time.perf_counter() - self.started
                    return self
            except OSError:
                pass
            time.sleep(0.01)
        raise RuntimeError("taskd did not become ready")

    def get(self, path: str) -> tuple[int, Any]:
        with urllib.request.urlopen(f"http://127.0.0.1:{self.port}{path}", timeout=30) as resp:
            return resp.status, json.loads(resp.read())

    def post(self, path: str) -> tuple[int, Any]:
        req = urllib.request.Request(f"http://127.0.0.1:{self.port}{path}", data=b"", method="POST")
        with urllib.request.urlopen(req, timeout=30) as resp:
            return resp.status, json.loads(resp.read())

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(60)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()

    def db(self) -> sqlite3.Connection:
        return sqlite3.connect(self.directory / "var" / "taskd.db")


def versions() -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    out = {"python": sys.version.split()[0]}
    for name in ("taskd", "APScheduler", "aiohttp", "aiosqlite", "pydantic", "structlog", "celery", "redis"):
        try:
            out[name] = version(name)
        except PackageNotFoundError:
            out[name] = "not installed"
    return out


def machine() -> dict[str, Any]:
    cpu = "unknown"
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            cpu = line.split(":", 1)[1].strip()
            break
    mem = Path("/proc/meminfo").read_text().splitlines()[0].split()[1]
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "memory_gib": round(int(mem) / 1024 / 1024, 1),
        "kernel": os.uname().release,
    }

"""Stop latency: POST /task/{id}/_stop on a running `shell` task, until the run is `stopped` and
its process group is gone; beside the ceiling, the same process group stopped with a bare
killpg and waited for the same way."""

from __future__ import annotations

import os
import signal
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

from bench.common import Daemon, free_port, percentile


def _group_alive(pgid: int) -> bool:
    """True while the group has a member that is not a zombie. (An orphaned zombie waits for
    PID 1 to reap it, which in a container may take seconds; it holds nothing but its pid.)"""
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[2]) == pgid and fields[0] != "Z":
                return True
    return False


def _find_group(marker: str) -> int | None:
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if marker in (entry / "cmdline").read_bytes().decode(errors="replace"):
                    return os.getpgid(int(entry.name))
            except OSError:
                continue
    return None


def measure(count: int = 50) -> dict[str, Any]:
    marker = f"9{os.getpid() % 1000}.{free_port()}"
    config = (
        "task: {max_concurrent_tasks: 4}\napi: {listen: '127.0.0.1:{port}'}\n"
        "store: {path: ./var/taskd.db}\nlog: {level: warning, format: json}\n"
        "tasks: [{id: long, pipeline: p}]\n"
        f"pipelines: [{{name: p, processors: [{{shell: {{command: 'sleep {marker} & sleep {marker}'}}}}]}}]\n"
    )
    samples: list[float] = []
    with tempfile.TemporaryDirectory(prefix="taskd-bench-") as tmp:
        daemon = Daemon(Path(tmp), config).start()
        try:
            for _ in range(count):
                run_id = daemon.post("/task/long/_start")[1]["run_id"]
                deadline = time.monotonic() + 10
                pgid = None
                while pgid is None and time.monotonic() < deadline:
                    pgid = _find_group(f"sleep {marker}")
                    time.sleep(0.005)
                assert pgid is not None, "the child never started"
                began = time.perf_counter()
                daemon.post("/task/long/_stop")
                while daemon.get(f"/run/{run_id}")[1]["state"] != "stopped" or _group_alive(pgid):
                    time.sleep(0.001)
                samples.append((time.perf_counter() - began) * 1000)
        finally:
            daemon.stop()
    return _figures(samples)


def bare(count: int = 50) -> dict[str, Any]:
    """The ceiling: the same `sleep & sleep` group, started by a plain Popen in its own session,
    stopped with killpg(SIGTERM) and watched until no member is left (and the shell reaped)."""
    marker = f"8{os.getpid() % 1000}.{free_port()}"
    samples: list[float] = []
    for _ in range(count):
        child = subprocess.Popen(["/bin/sh", "-c", f"sleep {marker} & sleep {marker}"], start_new_session=True)
        deadline = time.monotonic() + 10
        while _find_group(f"sleep {marker}") is None and time.monotonic() < deadline:
            time.sleep(0.005)
        began = time.perf_counter()
        os.killpg(child.pid, signal.SIGTERM)
        while child.poll() is None or _group_alive(child.pid):
            time.sleep(0.001)
        samples.append((time.perf_counter() - began) * 1000)
    return _figures(samples)


def _figures(samples: list[float]) -> dict[str, Any]:
    return {"runs": len(samples), "p50_ms": percentile(samples, 50), "p99_ms": percentile(samples, 99),
            "max_ms": max(samples)}  # fmt: skip


if __name__ == "__main__":
    print(measure(10), bare(10))

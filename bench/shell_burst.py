"""Shell bursts at the spawn limit: N `shell` tasks due at the same instant, as many slots as tasks.

Each process records the time its own code begins: a tiny C program compiled here with `cc` (its
first instruction reads CLOCK_REALTIME; when it ends, one write(2) with O_APPEND adds a line with
its id, that start and its end to a file), the same program with the same arguments for every
system. Lateness is that start minus the due instant.

- taskd, argv form: a `taskd run` subprocess (default config, every run persisted) with N tasks,
  each with its own one-step pipeline `shell: {argv: [stamp, ID, OUT, HOLD]}`, on one schedule
  that fires once, at a whole second chosen ahead of the start; the due instant is that second.
- taskd, command form: the same with `shell: {command: "stamp ID OUT HOLD"}` (through /bin/sh -c).
- The spawn loop (the ceiling): a plain Python loop of `subprocess.Popen` with the same argv,
  started at a whole second, which is its due instant.
- Debian's cron (the peer): `cron -f` with an `/etc/cron.d` file of N lines `* * * * * root
  stamp ...` (each run by /bin/sh -c, as cron runs every job); the due instant is the minute
  boundary. Only as root, with cron installed and no other cron daemon running.

Each process lives HOLD seconds after it began, so the processes of a burst overlap: the most
alive at once (from the stamps' start and end) is set beside the slot limit.

    python -m bench.shell_burst [N]   # every system once, printed as JSON
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from bench.common import Daemon, percentile

HOLD_S = 0.5
"""How long each process lives after its first instruction."""
CRON = Path("/usr/sbin/cron")
CRON_FILE = Path("/etc/cron.d/taskd-bench")
TARGET = 1.2
"""taskd's p99 at most this many times the spawn loop's."""

STAMP_C = r"""
#define _GNU_SOURCE
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>
#include <unistd.h>

int main(int argc, char **argv) {
    struct timespec start, end;
    clock_gettime(CLOCK_REALTIME, &start);
    if (argc < 4) return 2;
    double hold = atof(argv[3]);
    struct timespec pause = {(time_t)hold, (long)((hold - (double)(time_t)hold) * 1e9)};
    nanosleep(&pause, NULL);
    clock_gettime(CLOCK_REALTIME, &end);
    char line[256];
    int n = snprintf(line, sizeof line, "%s %lld.%09ld %lld.%09ld\n", argv[1], (long long)start.tv_sec,
                     start.tv_nsec, (long long)end.tv_sec, end.tv_nsec);
    int fd = open(argv[2], O_WRONLY | O_APPEND | O_CREAT, 0644);
    if (fd < 0 || write(fd, line, (size_t)n) != n) return 1;
    return 0;
}
"""

STAMP_SH = """#!/bin/sh
start=$(date +%s.%N)
sleep "$3"
echo "$1 $start $(date +%s.%N)" >> "$2"
"""


def build_stamp(directory: Path) -> tuple[Path, str]:
    """The stamp program and how it was made: compiled with `cc` (static when the C library allows),
    else a shell script whose start is `date`'s, later than a first instruction (said in the result)."""
    cc = shutil.which("cc") or shutil.which("gcc")
    if cc is not None:
        source, program = directory / "stamp.c", directory / "stamp"
        source.write_text(STAMP_C)
        for flags in (["-O2", "-static"], ["-O2"]):
            made = subprocess.run([cc, *flags, "-o", str(program), str(source)], capture_output=True, check=False)
            if made.returncode == 0:
                return program, f"C, {' '.join(['cc', *flags])}"
    program = directory / "stamp.sh"
    program.write_text(STAMP_SH)
    program.chmod(0o755)
    return program, "no C compiler: a /bin/sh script, its start read by date(1)"


def read_stamps(out: Path) -> dict[str, tuple[float, float]]:
    """id -> (start, end) of each process that wrote its line."""
    found: dict[str, tuple[float, float]] = {}
    with contextlib.suppress(FileNotFoundError):
        for line in out.read_text().splitlines():
            parts = line.split()
            if len(parts) == 3:
                found[parts[0]] = (float(parts[1]), float(parts[2]))
    return found


def max_alive(intervals: Sequence[tuple[float, float]]) -> int:
    """The most intervals open at any instant."""
    edges = sorted([(start, 1) for start, _ in intervals] + [(end, -1) for _, end in intervals])
    alive = most = 0
    for _, step in edges:
        alive += step
        most = max(most, alive)
    return most


def summary(stamps: dict[str, tuple[float, float]], due: float, expected: int, slots: int | None) -> dict[str, Any]:
    ms = [(start - due) * 1000 for start, _ in stamps.values()]
    return {
        "expected": expected,
        "started": len(stamps),
        "missed": expected - len(stamps),
        "p50_ms": percentile(ms, 50),
        "p99_ms": percentile(ms, 99),
        "max_ms": max(ms) if ms else math.nan,
        "max_concurrent": max_alive(list(stamps.values())),
        "slots": slots,
    }


def wait_for(out: Path, count: int, deadline: float, pause_s: float = 0.2) -> dict[str, tuple[float, float]]:
    """The stamps once `count` are in, or at `deadline` (wall clock)."""
    while True:
        stamps = read_stamps(out)
        if len(stamps) >= count or time.time() >= deadline:
            return stamps
        time.sleep(pause_s)


def task_ids(count: int) -> list[str]:
    return [f"t{i:05d}" for i in range(count)]


# -- taskd -----------------------------------------------------------------------------------------
def burst_config(count: int, stamp: Path, out: Path, form: str, due: int, hold_s: float, cgroups: bool = True) -> str:
    """N tasks due once, at the whole second `due` (UTC), each with its own one-step shell pipeline."""
    at = time.gmtime(due)
    schedule = f"{at.tm_sec} {at.tm_min} {at.tm_hour} {at.tm_mday} {at.tm_mon} *"
    lines = [
        f"task: {{max_concurrent_tasks: {count}, shutdown_timeout: 10s, time_zone: UTC, "
        f"cgroups: {str(cgroups).lower()}}}",
        "api: {listen: '127.0.0.1:{port}'}",
        "store: {path: ./var/taskd.db, retention: {days: 0, max_runs_per_task: 0}}",
        "log: {level: info, format: json}",
        "tasks:",
        *(f"  - {{id: {i}, pipeline: {i}, schedule: '{schedule}'}}" for i in task_ids(count)),
        "pipelines:",
    ]
    for i in task_ids(count):
        args = [str(stamp), i, str(out), f"{hold_s:g}"]
        step = f"{{argv: {json.dumps(args)}}}" if form == "argv" else f"{{command: {json.dumps(' '.join(args))}}}"
        lines.append(f"  - {{name: {i}, processors: [{{shell: {step}}}]}}")
    return "\n".join(lines) + "\n"


def measure_taskd(count: int, stamp: Path, form: str, hold_s: float = HOLD_S, cgroups: bool = True) -> dict[str, Any]:
    """One burst of `count` shell tasks in a `taskd run` subprocess, in the argv or command form."""
    lead = 3 + math.ceil(count / 1000)  # seconds from now to the due instant: start-up and a margin
    with tempfile.TemporaryDirectory(prefix="taskd-bench-") as tmp:
        out = Path(tmp) / "stamps"
        due = math.ceil(time.time()) + lead
        daemon = Daemon(Path(tmp) / "daemon", "")
        daemon.config = burst_config(count, stamp, out, form, due, hold_s, cgroups)
        daemon.start()
        try:
            if time.time() > due - 0.5:
                return {"skipped": f"the daemon was ready {time.time() - due:+.1f} s from the due instant"}
            cgroups = daemon.get("/health")[1].get("resources", {}).get("cgroups", "unknown")
            stamps = wait_for(out, count, due + hold_s + 30)
            time.sleep(0.5)  # the last runs' ends are committed
        finally:
            daemon.stop()
        return summary(stamps, due, count, count) | {
            "cgroups": cgroups,
            "ready_s": daemon.ready_after,
            "runs": _runs_by_state(daemon),
            **({"log_tail": (daemon.directory / "daemon.log").read_text()[-3000:]} if len(stamps) < count else {}),
        }


def _runs_by_state(daemon: Daemon) -> dict[str, int]:
    """What the store holds of the burst: runs by state, and fires skipped by reason."""
    with contextlib.closing(daemon.db()) as db:
        runs = dict(db.execute("SELECT state, count(*) FROM runs GROUP BY state").fetchall())
        skipped = db.execute("SELECT reason, count(*) FROM fires GROUP BY reason").fetchall()
    return runs | {f"skipped: {reason}": n for reason, n in skipped}


# -- the spawn loop --------------------------------------------------------------------------------
def measure_spawn_loop(count: int, stamp: Path, hold_s: float = HOLD_S) -> dict[str, Any]:
    """The ceiling: a plain loop of subprocess.Popen with the same argv, begun at a whole second."""
    with tempfile.TemporaryDirectory(prefix="taskd-bench-") as tmp:
        out = Path(tmp) / "stamps"
        argvs = [[str(stamp), i, str(out), f"{hold_s:g}"] for i in task_ids(count)]
        due = math.ceil(time.time()) + 1
        time.sleep(max(0.0, due - time.time()))
        children = [subprocess.Popen(argv) for argv in argvs]
        for child in children:
            child.wait()
        return summary(read_stamps(out), due, count, None)


# -- cron ------------------------------------------------------------------------------------------
def cron_missing() -> str | None:
    """Why cron cannot be the peer here, or None."""
    if os.geteuid() != 0:
        return "not measured: the bench is not running as root (cron.d jobs run as root)"
    if not CRON.exists():
        return f"not measured: {CRON} is not installed (apt-get install cron)"
    running = [pid for pid, name in _processes() if name in ("cron", "crond", "anacron")]
    if running:
        return f"not measured: a cron daemon is already running (pid {', '.join(map(str, running))})"
    if CRON_FILE.exists():
        return f"not measured: {CRON_FILE} exists already"
    return None


def _processes() -> list[tuple[int, str]]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with contextlib.suppress(OSError):
                found.append((int(entry.name), (entry / "comm").read_text().strip()))
    return found


def measure_cron(count: int, stamp: Path, hold_s: float = HOLD_S) -> dict[str, Any]:
    """Debian's cron running N cron.d lines due at the next minute boundary (at least 5 s away)."""
    missing = cron_missing()
    if missing is not None:
        return {"skipped": missing}
    with tempfile.TemporaryDirectory(prefix="taskd-bench-") as tmp:
        out = Path(tmp) / "stamps"
        Path(tmp).chmod(0o755)
        lines = [f"* * * * * root {stamp} {i} {out} {hold_s:g}" for i in task_ids(count)]
        CRON_FILE.write_text("\n".join(lines) + "\n")
        CRON_FILE.chmod(0o644)
        cron: subprocess.Popen[bytes] | None = None
        try:
            cron = subprocess.Popen([str(CRON), "-f"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            due = (math.floor(time.time() / 60) + 1) * 60
            if due - time.time() < 5:
                due += 60
            # Jobs of the minute before the due one would stamp too: cron runs none before it
            # reads the file, and the stamps of an earlier minute are dropped here.
            time.sleep(max(0.0, due - time.time() - 2))
            out.unlink(missing_ok=True)
            stamps = wait_for(out, count, due + hold_s + 50)
            stamps = {i: span for i, span in stamps.items() if due <= span[0] < due + 60}
        finally:
            CRON_FILE.unlink(missing_ok=True)
            if cron is not None:
                _stop(cron)
        return summary(stamps, due, count, None) | {"version": _cron_version()}


def _stop(proc: subprocess.Popen[bytes]) -> None:
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def _cron_version() -> str:
    with contextlib.suppress(OSError, subprocess.SubprocessError):
        shown = subprocess.run(["dpkg-query", "-W", "-f=${Version}", "cron"], capture_output=True, text=True)
        if shown.returncode == 0:
            return f"Debian cron {shown.stdout.strip()}"
    return "cron"


# -- all of them -----------------------------------------------------------------------------------
def measure(count: int, hold_s: float = HOLD_S, with_cron: bool = True) -> dict[str, Any]:
    """Every system once, in turn, with one stamp program; cron last (it waits for a minute)."""
    with tempfile.TemporaryDirectory(prefix="taskd-bench-stamp-") as tmp:
        Path(tmp).chmod(0o755)
        stamp, how = build_stamp(Path(tmp))
        systems: dict[str, Callable[[], dict[str, Any]]] = {
            "taskd argv": lambda: measure_taskd(count, stamp, "argv", hold_s),
            "taskd command": lambda: measure_taskd(count, stamp, "command", hold_s),
            "spawn loop": lambda: measure_spawn_loop(count, stamp, hold_s),
        }
        if with_cron:
            systems["cron"] = lambda: measure_cron(count, stamp, hold_s)
        results = {name: run() for name, run in systems.items()}
    return {"tasks": count, "hold_s": hold_s, "stamp": how, "systems": results}


if __name__ == "__main__":
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 1000
    print(json.dumps(measure(n, with_cron="--no-cron" not in sys.argv), indent=2))

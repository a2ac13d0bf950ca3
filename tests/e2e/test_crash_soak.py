"""The kill -9 soak: under 50 shell runs a second, the daemon is killed 20 times (at random
instants and right after fires) and started again each time. Every run whose first step began
(its command wrote its run id to a ledger) must be in the store afterwards, and no process of the
killed daemon's runs may outlive the restart, recorded or not."""

from __future__ import annotations

import os
import random
import signal
import sqlite3
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from conftest import ON_POSTGRES, Daemon, base_config, kill_matching, processes_matching, wait_for

pytestmark = pytest.mark.skipif(ON_POSTGRES, reason="the SQLite file's soak; the cluster has its own kill -9 test")

TASKS = 50
KILLS = 20
MARKER = f"0.7{os.getpid() % 1000:03d}1"  # each run's `sleep`: alive at a kill, gone within a second


@pytest.fixture(autouse=True)
def no_leftovers() -> Iterator[None]:
    yield
    kill_matching(f"sleep {MARKER}")


def run_of(pid: int) -> str | None:
    try:
        environ = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
    except OSError:
        return None
    for entry in environ:
        if entry.startswith(b"TASKD_RUN_ID="):
            return entry.split(b"=", 1)[1].decode()
    return None


def stored_runs(db: Path) -> dict[str, str]:
    with sqlite3.connect(f"file:{db}?mode=ro", uri=True) as conn:
        return dict(conn.execute("SELECT id, state FROM runs").fetchall())


def test_kill_9_twenty_times_under_50_shell_runs_a_second_loses_no_started_run_and_leaves_no_process(
    daemon_factory: Callable[..., Daemon], tmp_path: Path
) -> None:
    ledger = tmp_path / "started.txt"
    tasks = "\n".join(f"- {{id: t{i:02d}, pipeline: work, schedule: '* * * * * *'}}" for i in range(TASKS))
    command = f'echo "$TASKD_RUN_ID" >> {ledger}; sleep {MARKER}'
    work = f"- {{name: work, processors: [{{shell: {{command: '{command}'}}}}]}}"
    daemon = daemon_factory(base_config(tasks, work, slots=200))
    db = daemon.dir / "var" / "taskd.db"
    rng = random.Random(18)
    leftovers: list[str] = []
    daemon.start()
    for kill in range(KILLS):
        if kill % 2:  # right after a fire: just past a second's boundary
            time.sleep(1.0 - time.time() % 1.0 + rng.uniform(0.005, 0.06))
        else:  # at a random instant
            time.sleep(rng.uniform(0.2, 1.5))
        daemon.stop(signal.SIGKILL)
        orphans = {pid: run_of(pid) for pid in processes_matching(f"sleep {MARKER}")}
        daemon.start()  # answers once recovery has interrupted the runs and killed their processes
        still = [pid for pid in orphans if run_of(pid) is not None and run_of(pid) == orphans[pid]]
        leftovers.extend(f"kill {kill + 1}: pid {pid} of run {orphans[pid]}" for pid in still)
    assert daemon.stop() == 0
    wait_for(lambda: not processes_matching(f"sleep {MARKER}"), timeout=10, what="no run's process left")
    assert not leftovers, f"processes of killed runs outlived the restart: {leftovers[:10]}"
    started = set(ledger.read_text().split())
    stored = stored_runs(db)
    missing = sorted(started - stored.keys())
    # 50 runs a second for the ~15 s the daemon is up: about 700 alone, fewer beside the other tests.
    assert len(started) > KILLS * TASKS // 4, f"only {len(started)} runs started: the soak did not load the daemon"
    assert not missing, f"{len(missing)} of {len(started)} started runs are not in the store: {missing[:10]}"
    assert not [run for run, state in stored.items() if state in ("queued", "running", "retrying")]
    interrupted = sum(1 for state in stored.values() if state == "interrupted")
    assert interrupted > 0, "no kill hit a running run: the soak tested nothing"
    print(f"soak: {KILLS} kills, {len(started)} runs began, {interrupted} interrupted, 0 missing, 0 left")

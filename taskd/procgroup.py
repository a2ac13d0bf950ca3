"""Process groups: signalling a child's whole group, terminating it with a grace period, and
killing every process a run started (at the end of a shell step, and for the runs of a dead
taskd process at start-up)."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
from collections.abc import Iterable
from pathlib import Path

KILL_WAIT_S = 5.0
"""After SIGKILL, how long to wait for the group leader to be reaped."""


def kill_run_processes(run_ids: Iterable[str], proc_root: Path = Path("/proc"), rounds: int = 3) -> list[int]:
    """Kill every process started by the given runs, and its process group.

    A process is recognised by TASKD_RUN_ID in its environment, which every child inherits: that
    finds the ones that left the step's process group (setsid, double forks), and never hits a
    reused pid. Scans again while the last scan found something, so a process forked during a
    scan is caught by the next one. Returns the process groups that were killed.
    """
    wanted = {f"TASKD_RUN_ID={run_id}".encode() for run_id in run_ids}
    if not wanted:
        return []
    own = os.getpgid(0)
    killed: list[int] = []
    for _ in range(rounds):
        groups = sorted(_groups_with(wanted, proc_root) - {own})
        hit = [pgid for pgid in groups if signal_group(pgid, signal.SIGKILL)]
        killed.extend(pgid for pgid in hit if pgid not in killed)
        if not hit:
            break
    return killed


def runs_with_processes(proc_root: Path = Path("/proc")) -> set[str]:
    """The run ids (TASKD_RUN_ID) of every process that carries one, of any taskd on this host."""
    prefix = b"TASKD_RUN_ID="
    found: set[str] = set()
    for entry in proc_root.iterdir():
        if not entry.name.isdigit():
            continue
        try:
            environ = (entry / "environ").read_bytes().split(b"\0")
        except OSError:
            continue
        found.update(item[len(prefix) :].decode(errors="replace") for item in environ if item.startswith(prefix))
    return found


def _groups_with(wanted: set[bytes], proc_root: Path) -> set[int]:
    """The process groups of the processes whose environment holds one of `wanted`."""
    groups: set[int] = set()
    for entry in proc_root.iterdir():
        if not entry.name.isdigit():
            continue
        try:
            environ = set((entry / "environ").read_bytes().split(b"\0"))
        except OSError:
            continue
        if environ & wanted:
            with contextlib.suppress(OSError):
                groups.add(os.getpgid(int(entry.name)))
    return groups


def signal_group(pgid: int, sig: signal.Signals) -> bool:
    try:
        os.killpg(pgid, sig)
        return True
    except (ProcessLookupError, PermissionError):
        return False


async def terminate_group(pgid: int, exited: asyncio.Future[int], grace: float) -> None:
    """SIGTERM the process group, then SIGKILL it if the leader has not exited within `grace`."""
    signal_group(pgid, signal.SIGTERM)
    try:
        await asyncio.wait_for(asyncio.shield(exited), timeout=grace)
    except BaseException:  # the grace ran out, or we were cancelled again while waiting
        signal_group(pgid, signal.SIGKILL)
        with contextlib.suppress(BaseException):
            await asyncio.wait_for(asyncio.shield(exited), timeout=KILL_WAIT_S)

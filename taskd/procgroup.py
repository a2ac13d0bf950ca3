"""Process groups: signalling a child's whole group, terminating it with a grace period, and
killing every process a run started (at the end of a shell step, and for the runs of a dead
taskd process at start-up)."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import weakref
from collections.abc import Iterable
from pathlib import Path

_MARK = b"TASKD_RUN_ID="

KILL_WAIT_S = 5.0
"""After SIGKILL, how long to wait for the group leader to be reaped."""


def kill_run_processes(run_ids: Iterable[str], proc_root: Path = Path("/proc"), rounds: int = 3) -> list[int]:
    """Kill every process started by the given runs, and its process group.

    A process is recognised by TASKD_RUN_ID in its environment, which every child inherits: that
    finds the ones that left the step's process group (setsid, double forks), and never hits a
    reused pid. Scans again while the last scan found something, so a process forked during a
    scan is caught by the next one. Returns the process groups that were killed.
    """
    wanted = {_MARK + run_id.encode() for run_id in run_ids}
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


class Sweeps:
    """`kill_run_processes` off the event loop, shared by the steps that end at about the same time.

    A step asks once its main process has exited; the scan that serves it begins after it asked.
    Steps that ask while a scan is under way are all served by the next one, so a burst of N steps
    ending together costs a few scans of /proc rather than N (each reads every process on the host).
    """

    def __init__(self) -> None:
        self._waiting: dict[str, list[asyncio.Future[None]]] = {}
        self._worker: asyncio.Task[None] | None = None

    async def kill(self, run_id: str) -> None:
        """Kill what the run started (see `kill_run_processes`); the scan finishes even if the
        caller is cancelled meanwhile."""
        loop = asyncio.get_running_loop()
        done: asyncio.Future[None] = loop.create_future()
        self._waiting.setdefault(run_id, []).append(done)
        if self._worker is None:
            self._worker = loop.create_task(self._work(), name="kill-run-processes")
        await asyncio.shield(done)

    async def _work(self) -> None:
        batch: dict[str, list[asyncio.Future[None]]] = {}
        try:
            while self._waiting:
                batch, self._waiting = self._waiting, {}
                try:
                    await asyncio.to_thread(kill_run_processes, sorted(batch))
                except Exception as exc:
                    _settle(batch, exc)
                else:
                    _settle(batch, None)
        except BaseException:  # the loop is going away: nobody is left hanging
            _settle(batch, asyncio.CancelledError())
            _settle(self._waiting, asyncio.CancelledError())
            self._waiting = {}
            raise
        finally:
            self._worker = None


def _settle(batch: dict[str, list[asyncio.Future[None]]], error: BaseException | None) -> None:
    for futures in batch.values():
        for future in futures:
            if future.done():
                continue
            if error is None:
                future.set_result(None)
            elif isinstance(error, asyncio.CancelledError):
                future.cancel()
            else:
                future.set_exception(error)


_SWEEPS: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, Sweeps] = weakref.WeakKeyDictionary()


async def kill_run_processes_soon(run_id: str) -> None:
    """Kill what the run started, off the event loop, in a scan shared with other runs (`Sweeps`)."""
    loop = asyncio.get_running_loop()
    sweeps = _SWEEPS.get(loop)
    if sweeps is None:
        sweeps = _SWEEPS[loop] = Sweeps()
    await sweeps.kill(run_id)


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
    root = str(proc_root)
    for name in os.listdir(root):
        if not name.isdigit():
            continue
        environ = _read(f"{root}/{name}/environ")
        # Every entry wanted starts with the marker: a process without it is none of them.
        if environ is None or _MARK not in environ or wanted.isdisjoint(environ.split(b"\0")):
            continue
        with contextlib.suppress(OSError):
            groups.add(os.getpgid(int(name)))
    return groups


def _read(path: str) -> bytes | None:
    """A /proc file's bytes (None: gone, or not readable); os calls, as a scan reads every process's."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return None
    try:
        chunks = []
        while chunk := os.read(fd, 65536):
            chunks.append(chunk)
    except OSError:
        return None
    finally:
        os.close(fd)
    return b"".join(chunks)


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

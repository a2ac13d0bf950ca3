"""The reaper: asyncio's child watcher, replaced by one that waits for each step process with
wait4(2), which also answers what the process and every descendant it waited for used (CPU
seconds, the largest resident set). Shell steps take their process's figures from here.

It watches each child with a pidfd (Linux 5.3+), as asyncio's own PidfdChildWatcher does: no
thread per child and no SIGCHLD handler. Where pidfds are missing, asyncio's default watcher stays
and usage is unknown.
"""

from __future__ import annotations

import asyncio
import os
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import structlog

log = structlog.get_logger("taskd.reaper")

KEPT = 10_000
"""Figures of reaped processes kept for their steps to take, at most (the oldest go first)."""


@dataclass(frozen=True)
class ProcessUsage:
    """What a reaped process and the descendants it waited for used."""

    cpu_s: float
    """User and system CPU seconds."""
    peak_memory_bytes: int
    """The largest resident set of any one of them (wait4's ru_maxrss)."""


class Reaper(asyncio.AbstractChildWatcher):
    """A child watcher on pidfds that reaps with wait4 and keeps each process's usage."""

    def __init__(self) -> None:
        self._loop: asyncio.AbstractEventLoop | None = None
        self._callbacks: dict[int, tuple[int, Callable[..., Any], tuple[Any, ...]]] = {}
        self._usage: dict[int, ProcessUsage] = {}
        self.previous: asyncio.AbstractChildWatcher | None = None
        """The watcher it replaced, given back by `uninstall`."""

    def __enter__(self) -> Reaper:
        return self

    def __exit__(self, *exc: object) -> None:
        return None

    def is_active(self) -> bool:
        return self._loop is not None and self._loop.is_running()

    def close(self) -> None:
        self.attach_loop(None)

    def attach_loop(self, loop: asyncio.AbstractEventLoop | None) -> None:
        if self._loop is not None:
            for pidfd, _, _ in self._callbacks.values():
                self._loop.remove_reader(pidfd)
                os.close(pidfd)
            self._callbacks.clear()
        self._loop = loop

    def add_child_handler(self, pid: int, callback: Callable[..., Any], *args: Any) -> None:  # type: ignore[override]
        assert self._loop is not None, "the reaper is not attached to a loop"
        existing = self._callbacks.get(pid)
        if existing is not None:
            self._callbacks[pid] = (existing[0], callback, args)
            return
        pidfd = os.pidfd_open(pid)
        self._loop.add_reader(pidfd, self._reap, pid)
        self._callbacks[pid] = (pidfd, callback, args)

    def remove_child_handler(self, pid: int) -> bool:
        entry = self._callbacks.pop(pid, None)
        if entry is None:
            return False
        if self._loop is not None:
            self._loop.remove_reader(entry[0])
        os.close(entry[0])
        return True

    def _reap(self, pid: int) -> None:
        pidfd, callback, args = self._callbacks.pop(pid)
        if self._loop is not None:
            self._loop.remove_reader(pidfd)
        os.close(pidfd)
        try:
            _, status, usage = os.wait4(pid, 0)
        except ChildProcessError:  # reaped elsewhere: its status and usage are lost
            log.warning("child_already_reaped", pid=pid)
            returncode = 255
        else:
            returncode = os.waitstatus_to_exitcode(status)
            if len(self._usage) >= KEPT:
                del self._usage[next(iter(self._usage))]
            self._usage[pid] = ProcessUsage(usage.ru_utime + usage.ru_stime, usage.ru_maxrss * 1024)
        callback(pid, returncode, *args)

    def take(self, pid: int) -> ProcessUsage | None:
        """The usage of the reaped process `pid`, once (None: not reaped here, or taken already)."""
        return self._usage.pop(pid, None)


_REAPER: Reaper | None = None


def current(loop: asyncio.AbstractEventLoop) -> Reaper | None:
    """The reaper watching `loop`'s children, if the daemon installed one for it."""
    reaper = _REAPER
    return reaper if reaper is not None and reaper._loop is loop else None


def install(loop: asyncio.AbstractEventLoop) -> Reaper | None:
    """Make the reaper the child watcher of `loop`, the daemon's only loop (it watches that loop's
    children only: a process with other loops keeps asyncio's watcher); None where pidfds are
    missing."""
    global _REAPER
    reaper = _REAPER
    if reaper is not None and reaper._loop is loop:
        return reaper
    if not hasattr(os, "pidfd_open") or not hasattr(os, "wait4"):
        return None
    try:
        probe = os.pidfd_open(os.getpid())
    except OSError:
        return None
    os.close(probe)
    reaper = Reaper()
    reaper.attach_loop(loop)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # child watchers are deprecated from 3.12
        policy = asyncio.get_event_loop_policy()
        reaper.previous = policy.get_child_watcher()
        policy.set_child_watcher(reaper)
    _REAPER = reaper
    return reaper


def uninstall() -> None:
    """Give the child watcher back (the daemon's loop is ending: another loop of this process must
    not find a watcher of a closed loop)."""
    global _REAPER
    reaper, _REAPER = _REAPER, None
    if reaper is None:
        return
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        policy = asyncio.get_event_loop_policy()
        if policy.get_child_watcher() is reaper and reaper.previous is not None:
            policy.set_child_watcher(reaper.previous)
    reaper.close()


def own_peak_memory(status: str = "/proc/self/status") -> int:
    """taskd's own peak resident set (VmHWM), which the rusage of a process it starts begins from;
    0 where /proc cannot tell."""
    try:
        with open(status, "rb") as lines:
            for line in lines:
                if line.startswith(b"VmHWM:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        return 0
    return 0

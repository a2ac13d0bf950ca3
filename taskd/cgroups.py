"""A cgroup per step process tree, where this system lets taskd make them: the limits of its task
(memory, CPU, processes) are the cgroup's, its figures (peak memory, CPU time) come from it, a run
past its memory limit is told from any other failure, and what is left of the tree is killed with
it. Without cgroups, the closest rlimits stand in (see `wrapper`).

cgroup v2 first: the daemon's own cgroup, delegated to it (systemd's `Delegate=yes`), with the
memory, cpu and pids controllers; taskd moves itself into a leaf of it (`taskd`) and makes the
steps' cgroups beside it. Else cgroup v1: the memory, cpu, cpuacct and pids hierarchies, a
directory under taskd's own cgroup in each. Else none.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import shlex
import signal
import time
from dataclasses import dataclass
from pathlib import Path

import structlog

from taskd.durations import format_size
from taskd.models import RunLimits

log = structlog.get_logger("taskd.cgroups")

ROOT = Path("/sys/fs/cgroup")
CPU_PERIOD_US = 100_000
V1_CONTROLLERS = ("memory", "cpu", "cpuacct", "pids")


@dataclass(frozen=True)
class StepFigures:
    cpu_s: float | None
    peak_memory_bytes: int | None
    oom_killed: bool


PREFIX = "taskd-step-"


class Hierarchy:
    """Where step cgroups are made on this system, and how they are read."""

    version: str = "none"

    def make(self, name: str, limits: RunLimits) -> StepGroup | None:
        return None

    def parents(self) -> dict[str, Path]:
        return {}

    def sweep(self) -> None:
        """Kill what is left in step cgroups of a previous process and remove them."""
        for controller, parent in self.parents().items():
            with contextlib.suppress(OSError):
                for directory in parent.iterdir():
                    if directory.is_dir() and directory.name.startswith(PREFIX):
                        group = StepGroup(self.version, {controller: directory})
                        left = [pid for procs in group.procs_files for pid in _pids(procs)]
                        if left:
                            log.warning("cgroup_leftovers_killed", cgroup=str(directory), pids=left)
                        group.end()


class StepGroup:
    """One step's cgroup (in each v1 hierarchy, or the one v2 directory)."""

    def __init__(self, version: str, directories: dict[str, Path]) -> None:
        self.version = version
        self.directories = directories  # controller ("" for v2) -> its directory

    @property
    def procs_files(self) -> list[Path]:
        return [directory / "cgroup.procs" for directory in self.directories.values()]

    def figures(self) -> StepFigures:
        if self.version == "v2":
            directory = self.directories[""]
            usage = _stat(directory / "cpu.stat").get("usage_usec")
            peak = _int(directory / "memory.peak")
            oom = _stat(directory / "memory.events").get("oom_kill", 0) > 0
            return StepFigures(None if usage is None else usage / 1e6, peak, oom)
        memory, cpuacct = self.directories.get("memory"), self.directories.get("cpuacct")
        usage_ns = _int(cpuacct / "cpuacct.usage") if cpuacct is not None else None
        peak = _int(memory / "memory.max_usage_in_bytes") if memory is not None else None
        oom = False
        if memory is not None:
            control = _stat(memory / "memory.oom_control")
            oom = control.get("oom_kill", 0) > 0 or (control.get("under_oom", 0) > 0)
        return StepFigures(None if usage_ns is None else usage_ns / 1e9, peak, oom)

    def kill_all(self) -> None:
        """SIGKILL every process still in the cgroup (a tree that outlived its step)."""
        for _ in range(3):
            found = False
            for procs in self.procs_files:
                for pid in _pids(procs):
                    found = True
                    with contextlib.suppress(ProcessLookupError, PermissionError):
                        os.kill(pid, signal.SIGKILL)
            if not found:
                return

    def remove(self) -> bool:
        """Remove the cgroup's directories; False when one is still busy (a process in it has not
        finished exiting yet)."""
        removed = True
        for directory in self.directories.values():
            try:
                directory.rmdir()
            except FileNotFoundError:
                pass
            except OSError:
                removed = False
        return removed

    def end(self, tries: int = 40, pause_s: float = 0.025) -> None:
        """Kill what is left in the cgroup and remove it, trying again while a killed process is
        still on its way out (blocking: run it off the event loop)."""
        for _ in range(tries):
            self.kill_all()
            if self.remove():
                return
            time.sleep(pause_s)
        log.warning("cgroup_not_removed", cgroups=[str(d) for d in self.directories.values()])


class V2(Hierarchy):
    version = "v2"

    def __init__(self, parent: Path) -> None:
        self.parent = parent

    def parents(self) -> dict[str, Path]:
        return {"": self.parent}

    def make(self, name: str, limits: RunLimits) -> StepGroup | None:
        directory = self.parent / name
        try:
            directory.mkdir()
            if limits.memory is not None:
                (directory / "memory.max").write_text(str(limits.memory))
                if (directory / "memory.swap.max").exists():
                    (directory / "memory.swap.max").write_text("0")
            if limits.cpu is not None:
                (directory / "cpu.max").write_text(f"{int(limits.cpu * CPU_PERIOD_US)} {CPU_PERIOD_US}")
            if limits.processes is not None:
                (directory / "pids.max").write_text(str(limits.processes))
        except OSError as exc:
            log.warning("cgroup_not_made", cgroup=str(directory), error=str(exc))
            with contextlib.suppress(OSError):
                directory.rmdir()
            return None
        return StepGroup("v2", {"": directory})


class V1(Hierarchy):
    version = "v1"

    def __init__(self, parents: dict[str, Path]) -> None:
        self._parents = parents

    def parents(self) -> dict[str, Path]:
        return self._parents

    def make(self, name: str, limits: RunLimits) -> StepGroup | None:
        made: dict[str, Path] = {}
        try:
            for controller, parent in self._parents.items():
                directory = parent / name
                directory.mkdir()
                made[controller] = directory
            if limits.memory is not None and "memory" in made:
                (made["memory"] / "memory.limit_in_bytes").write_text(str(limits.memory))
                swap = made["memory"] / "memory.memsw.limit_in_bytes"
                if swap.exists():
                    swap.write_text(str(limits.memory))
            if limits.cpu is not None and "cpu" in made:
                (made["cpu"] / "cpu.cfs_period_us").write_text(str(CPU_PERIOD_US))
                (made["cpu"] / "cpu.cfs_quota_us").write_text(str(int(limits.cpu * CPU_PERIOD_US)))
            if limits.processes is not None and "pids" in made:
                (made["pids"] / "pids.max").write_text(str(limits.processes))
        except OSError as exc:
            log.warning("cgroup_not_made", cgroup=name, error=str(exc))
            StepGroup("v1", made).remove()
            return None
        return StepGroup("v1", made)


_DETECTED: Hierarchy | None = None


def set_up(
    enabled: bool = True,
    instance: str = "",
    root: Path = ROOT,
    proc_cgroup: Path = Path("/proc/self/cgroup"),
) -> Hierarchy:
    """At the daemon's start: where this system lets it make step cgroups (with `enabled` false,
    nowhere: rlimits stand in). With v1, whose hierarchies other processes share (other taskd
    daemons among them), the steps' cgroups go in a directory of this daemon's own, named after
    `instance` (the same at every start of this daemon, different for another one). Leftovers of
    a previous process of this daemon (a kill -9 mid-step) are killed and removed."""
    global _DETECTED
    _DETECTED = _detect(root, proc_cgroup, instance) if enabled else Hierarchy()
    _DETECTED.sweep()
    log.info("cgroups", version=_DETECTED.version)
    return _DETECTED


def instance_of(store: str, node: str) -> str:
    """A daemon's name among the cgroups: one per store and node (no two live daemons share both)."""
    return hashlib.sha256(f"{store}\0{node}".encode()).hexdigest()[:12]


def tear_down() -> None:
    """At the daemon's end: its own directory of step cgroups goes (v1), when nothing is left in it."""
    global _DETECTED
    found, _DETECTED = _DETECTED, None
    if isinstance(found, V1):
        for directory in found.parents().values():
            with contextlib.suppress(OSError):
                directory.rmdir()


def current() -> Hierarchy:
    """The hierarchy the daemon set up; none in a process that did not (a test's engine)."""
    return _DETECTED if _DETECTED is not None else Hierarchy()


def _detect(root: Path, proc_cgroup: Path, instance: str) -> Hierarchy:
    try:
        lines = proc_cgroup.read_text().splitlines()
    except OSError:
        return Hierarchy()
    own: dict[str, str] = {}
    for line in lines:
        parts = line.split(":", 2)
        if len(parts) == 3:
            for controller in parts[1].split(",") if parts[1] else [""]:
                own[controller] = parts[2].lstrip("/")
    unified = root if (root / "cgroup.controllers").exists() else None
    if unified is not None and "" in own:
        found = _v2(unified / own[""])
        if found is not None:
            return found
    parents = {c: root / c / own[c] for c in V1_CONTROLLERS if c in own and (root / c / own[c]).is_dir()}
    if "memory" not in parents or not all(os.access(p, os.W_OK) for p in parents.values()):
        return Hierarchy()
    mine = {c: parent / f"taskd-{instance}" if instance else parent / "taskd" for c, parent in parents.items()}
    try:
        for directory in mine.values():
            directory.mkdir(exist_ok=True)
    except OSError as exc:
        log.info("cgroup_v1_not_writable", error=str(exc))
        return Hierarchy()
    return V1(mine)


def _v2(own: Path) -> V2 | None:
    """The daemon's delegated cgroup, with itself moved into a leaf so that its steps' cgroups may
    sit beside it (the "no internal processes" rule); None when the cgroup is not ours to use."""
    wanted = {"memory", "cpu", "pids"}
    try:
        available = set((own / "cgroup.controllers").read_text().split())
        if not wanted <= available or not os.access(own, os.W_OK):
            return None
        leaf = own / "taskd"
        leaf.mkdir(exist_ok=True)
        (leaf / "cgroup.procs").write_text(str(os.getpid()))
        (own / "cgroup.subtree_control").write_text(" ".join(f"+{c}" for c in sorted(wanted)))
    except OSError as exc:
        log.info("cgroup_v2_not_delegated", cgroup=str(own), reason=str(exc))
        return None
    return V2(own)


def wrapper(group: StepGroup | None, limits: RunLimits, argv: list[str]) -> list[str]:
    """`argv` started by a shell that first joins the step's cgroup (so nothing it forks escapes
    it) or, without one, sets the closest rlimit (memory's), then execs it."""
    script: list[str] = []
    if group is not None:
        script += [f"echo $$ > {shlex.quote(str(path))} || exit 125" for path in group.procs_files]
    else:
        # The address space, not the resident set (see the README). `cpu` has no rlimit (RLIMIT_CPU
        # is a total, not a rate), nor `processes` (RLIMIT_NPROC counts every process of the user).
        if limits.memory is not None:
            script.append(f"ulimit -v {max(1, limits.memory // 1024)} || exit 125")
    if not script:
        return argv
    return ["/bin/sh", "-c", "; ".join(script) + '; exec "$@"', "taskd-step", *argv]


def memory_message(limit: int) -> str:
    return f"memory limit {format_size(limit)} exceeded"


def _int(path: Path) -> int | None:
    try:
        return int(path.read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return None


def _stat(path: Path) -> dict[str, int]:
    found: dict[str, int] = {}
    try:
        for line in path.read_text().splitlines():
            key, _, value = line.partition(" ")
            with contextlib.suppress(ValueError):
                found[key] = int(value)
    except OSError:
        pass
    return found


def _pids(procs: Path) -> list[int]:
    try:
        return [int(line) for line in procs.read_text().split()]
    except (OSError, ValueError):
        return []

"""This node's capacity for runs' requests: memory and CPU as its cgroup limits them (v2, else v1),
else as the host has them; `node.capacity` overrides either."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from taskd.durations import format_size

CGROUP_ROOT = Path("/sys/fs/cgroup")
UNLIMITED = 2**62
"""cgroup v1 writes "no limit" as a huge number (a page-aligned LONG_MAX); anything above is none."""


@dataclass(frozen=True)
class Capacity:
    memory: int
    """Bytes."""
    cpu: int
    """Millicores."""
    memory_from: str
    cpu_from: str

    def sizes(self) -> dict[str, int]:
        return {"memory": self.memory, "cpu": self.cpu}

    def describe(self) -> str:
        return (
            f"memory {format_size(self.memory)} ({self.memory_from}), cpu {self.cpu / 1000:g} cores ({self.cpu_from})"
        )


def detect(
    memory: int | None = None,
    cpu: float | None = None,
    proc: Path = Path("/proc"),
    cgroups: Path = CGROUP_ROOT,
) -> Capacity:
    """The capacity, each of `memory` (bytes) and `cpu` (cores) as given, else detected."""
    groups = _own_cgroups(proc / "self" / "cgroup")
    if memory is not None:
        mem, mem_from = memory, "node.capacity"
    else:
        limit = _cgroup_memory(cgroups, groups)
        host = _meminfo(proc / "meminfo")
        mem, mem_from = (limit, "cgroup limit") if limit is not None and limit < host else (host, "host")
    if cpu is not None:
        cores, cores_from = round(cpu * 1000), "node.capacity"
    else:
        quota = _cgroup_cpu(cgroups, groups)
        host_cores = len(os.sched_getaffinity(0)) * 1000
        cores, cores_from = (
            (quota, "cgroup limit") if quota is not None and quota < host_cores else (host_cores, "host")
        )
    return Capacity(mem, cores, mem_from, cores_from)


def _own_cgroups(path: Path) -> dict[str, str]:
    """controller -> this process's cgroup path ("" for the unified v2 hierarchy)."""
    found: dict[str, str] = {}
    try:
        lines = path.read_text().splitlines()
    except OSError:
        return found
    for line in lines:
        parts = line.split(":", 2)
        if len(parts) == 3:
            for controller in parts[1].split(",") if parts[1] else [""]:
                found[controller] = parts[2]
    return found


def _read_int(path: Path) -> int | None:
    try:
        text = path.read_text().strip()
    except OSError:
        return None
    if not text or text == "max":
        return None
    try:
        value = int(text)
    except ValueError:
        return None
    return value if value < UNLIMITED else None


def _cgroup_memory(root: Path, groups: dict[str, str]) -> int | None:
    if "" in groups and (root / "cgroup.controllers").exists():
        return _read_int(root / groups[""].lstrip("/") / "memory.max")
    if "memory" in groups:
        return _read_int(root / "memory" / groups["memory"].lstrip("/") / "memory.limit_in_bytes")
    return None


def _cgroup_cpu(root: Path, groups: dict[str, str]) -> int | None:
    """The cgroup's CPU quota in millicores, or None without one."""
    if "" in groups and (root / "cgroup.controllers").exists():
        try:
            quota, period = (root / groups[""].lstrip("/") / "cpu.max").read_text().split()
        except (OSError, ValueError):
            return None
        return None if quota == "max" else int(int(quota) * 1000 / int(period))
    if "cpu" in groups:
        directory = root / "cpu" / groups["cpu"].lstrip("/")
        quota_us, period_us = _read_int(directory / "cpu.cfs_quota_us"), _read_int(directory / "cpu.cfs_period_us")
        if quota_us is None or quota_us <= 0 or not period_us:
            return None
        return int(quota_us * 1000 / period_us)
    return None


def _meminfo(path: Path) -> int:
    try:
        for line in path.read_text().splitlines():
            if line.startswith("MemTotal:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return 0

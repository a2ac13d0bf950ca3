"""The cgroup layout taskd makes, on fake /sys/fs/cgroup trees (what this machine cannot give: a
delegated v2 subtree): which hierarchy is used, the limit files each step's cgroup gets, what is
read back, the wrapper that joins it or sets the rlimit, and leftovers swept at start-up."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from taskd import cgroups
from taskd.models import RunLimits

LIMITS = RunLimits(memory=512 * 2**20, cpu=1.5, processes=200)


@pytest.fixture(autouse=True)
def forget_the_fake_tree() -> Iterator[None]:
    """set_up() remembers the hierarchy for the process: the other tests' engines must not see it."""
    yield
    cgroups._DETECTED = None


def fake_v2(tmp_path: Path, controllers: str = "cpu memory pids io") -> tuple[Path, Path]:
    root = tmp_path / "cg"
    service = root / "system.slice" / "taskd.service"
    service.mkdir(parents=True)
    (root / "cgroup.controllers").write_text("cpu memory pids io\n")
    (service / "cgroup.controllers").write_text(controllers + "\n")
    (service / "cgroup.subtree_control").write_text("")
    proc = tmp_path / "cgroup"
    proc.write_text("0::/system.slice/taskd.service\n")
    return root, proc


def test_a_delegated_v2_cgroup_gets_a_leaf_for_taskd_and_a_cgroup_per_step_with_its_limits(tmp_path: Path) -> None:
    root, proc = fake_v2(tmp_path)
    service = root / "system.slice" / "taskd.service"
    (service / f"{cgroups.PREFIX}old-1").mkdir()  # left by a process killed mid-step
    found = cgroups.set_up(True, "abc", root, proc)
    assert found.version == "v2"
    assert (service / "taskd" / "cgroup.procs").read_text() == str(os.getpid())  # taskd moved into its leaf
    assert (service / "cgroup.subtree_control").read_text() == "+cpu +memory +pids"
    assert not (service / f"{cgroups.PREFIX}old-1").exists()
    group = found.make(f"{cgroups.PREFIX}r1-1", LIMITS)
    assert group is not None
    step = service / f"{cgroups.PREFIX}r1-1"
    assert (step / "memory.max").read_text() == str(512 * 2**20)
    assert (step / "cpu.max").read_text() == "150000 100000"
    assert (step / "pids.max").read_text() == "200"
    (step / "cpu.stat").write_text("usage_usec 1250000\nuser_usec 1000000\n")
    (step / "memory.peak").write_text("123456789\n")
    (step / "memory.events").write_text("low 0\nhigh 0\nmax 3\noom 1\noom_kill 1\n")
    figures = group.figures()
    assert (figures.cpu_s, figures.peak_memory_bytes, figures.oom_killed) == (1.25, 123456789, True)
    wrapped = cgroups.wrapper(group, LIMITS, ["/bin/true", "a b"])
    assert wrapped[:2] == ["/bin/sh", "-c"] and wrapped[3:] == ["taskd-step", "/bin/true", "a b"]
    assert f"echo $$ > {step / 'cgroup.procs'} || exit 125" in wrapped[2]


def test_a_v2_cgroup_without_the_controllers_is_not_used_and_v1_is_next(tmp_path: Path) -> None:
    root, proc = fake_v2(tmp_path, controllers="io")
    assert cgroups.set_up(True, "abc", root, proc).version == "none"
    proc.write_text("4:memory:/box\n3:pids:/\n2:cpu:/\n1:cpuacct:/\n0::/\n")
    for path in ("memory/box", "pids", "cpu", "cpuacct"):
        (root / path).mkdir(parents=True, exist_ok=True)
    (root / "cgroup.controllers").unlink()
    (root / "memory" / "box" / "taskd-abc" / f"{cgroups.PREFIX}old-2").mkdir(parents=True)
    (root / "memory" / "box" / "taskd-other" / f"{cgroups.PREFIX}theirs-1").mkdir(parents=True)
    found = cgroups.set_up(True, "abc", root, proc)
    assert found.version == "v1"
    assert not (root / "memory" / "box" / "taskd-abc" / f"{cgroups.PREFIX}old-2").exists()  # its own leftover
    assert (root / "memory" / "box" / "taskd-other" / f"{cgroups.PREFIX}theirs-1").exists()  # another daemon's
    group = found.make(f"{cgroups.PREFIX}r2-1", LIMITS)
    assert group is not None
    step = f"taskd-abc/{cgroups.PREFIX}r2-1"
    assert (root / "memory" / "box" / step / "memory.limit_in_bytes").read_text() == str(512 * 2**20)
    assert (root / "cpu" / step / "cpu.cfs_quota_us").read_text() == "150000"
    assert (root / "pids" / step / "pids.max").read_text() == "200"
    assert cgroups.set_up(False, "abc", root, proc).version == "none"  # task: {cgroups: false}


def test_without_a_cgroup_the_memory_limit_becomes_the_address_space_rlimit() -> None:
    wrapped = cgroups.wrapper(None, LIMITS, ["/bin/true"])
    assert wrapped[2] == 'ulimit -v 524288 || exit 125; exec "$@"'
    assert cgroups.wrapper(None, RunLimits(cpu=2), ["/bin/true"]) == ["/bin/true"]  # nothing to set
    assert cgroups.memory_message(512 * 2**20) == "memory limit 512 MiB exceeded"

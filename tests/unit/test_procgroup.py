"""Finding a run's processes by the TASKD_RUN_ID in their environment, and the scans shared by steps
that end at the same time (a fake /proc and a fake scan: no process is started)."""

from __future__ import annotations

import asyncio
import os
import threading
from collections.abc import Iterable
from pathlib import Path

import pytest

from taskd import procgroup
from taskd.procgroup import Sweeps


def fake_proc(root: Path, environs: dict[str, bytes]) -> Path:
    for name, environ in environs.items():
        (root / name).mkdir()
        (root / name / "environ").write_bytes(environ)
    return root


def test_a_process_is_found_by_a_whole_environment_entry_only(tmp_path: Path) -> None:
    """The entry must match whole: a longer run id that starts with the wanted one is another run."""
    me = str(os.getpid())
    root = fake_proc(tmp_path, {me: b"HOME=/root\0TASKD_RUN_ID=abc\0PATH=/bin\0", "self": b"", "net": b""})
    assert procgroup._groups_with({b"TASKD_RUN_ID=abc"}, root) == {os.getpgid(0)}
    assert procgroup._groups_with({b"TASKD_RUN_ID=ab"}, root) == set()
    assert procgroup._groups_with({b"TASKD_RUN_ID=abcd"}, root) == set()


def test_processes_without_the_marker_or_gone_are_skipped(tmp_path: Path) -> None:
    root = fake_proc(tmp_path, {"1": b"HOME=/root\0", "2": b"TASKD_RUN_ID=other\0"})
    (root / "3").mkdir()  # exited between the listing and the read: no environ file
    assert procgroup._groups_with({b"TASKD_RUN_ID=abc"}, root) == set()


class FakeScan:
    """kill_run_processes that records each scan's runs and blocks until released."""

    def __init__(self) -> None:
        self.scans: list[list[str]] = []
        self.release = threading.Event()
        self.error: Exception | None = None

    def __call__(self, run_ids: Iterable[str]) -> list[int]:
        self.scans.append(list(run_ids))
        self.release.wait(5)
        if self.error is not None:
            raise self.error
        return []


@pytest.fixture
def scan(monkeypatch: pytest.MonkeyPatch) -> FakeScan:
    fake = FakeScan()
    monkeypatch.setattr(procgroup, "kill_run_processes", fake)
    return fake


async def wait_for_scans(scan: FakeScan, count: int) -> None:
    async with asyncio.timeout(5):
        while len(scan.scans) < count:  # noqa: ASYNC110
            await asyncio.sleep(0.005)


async def test_steps_that_ask_during_a_scan_share_the_next_one(scan: FakeScan) -> None:
    """The scan under way began before they asked, so it cannot serve them; one more serves them all."""
    sweeps = Sweeps()
    first = asyncio.create_task(sweeps.kill("r1"))
    await wait_for_scans(scan, 1)
    later = [asyncio.create_task(sweeps.kill(run_id)) for run_id in ("r2", "r3", "r4")]
    await asyncio.sleep(0.01)
    assert not any(task.done() for task in [first, *later])
    scan.release.set()
    await asyncio.gather(first, *later)
    assert scan.scans == [["r1"], ["r2", "r3", "r4"]]


async def test_a_failed_scan_fails_every_step_it_served(scan: FakeScan) -> None:
    scan.error = PermissionError("no /proc")
    scan.release.set()
    sweeps = Sweeps()
    results = await asyncio.gather(sweeps.kill("r1"), sweeps.kill("r2"), return_exceptions=True)
    assert [type(result) for result in results] == [PermissionError, PermissionError]
    assert scan.scans == [["r1", "r2"]]


async def test_a_cancelled_step_does_not_stop_the_scan_the_others_wait_for(scan: FakeScan) -> None:
    sweeps = Sweeps()
    cancelled = asyncio.create_task(sweeps.kill("r1"))
    waiting = asyncio.create_task(sweeps.kill("r2"))
    await wait_for_scans(scan, 1)
    cancelled.cancel()
    scan.release.set()
    await waiting
    assert cancelled.cancelled()
    assert scan.scans == [["r1", "r2"]]

"""End to end: every way the daemon stops has the exit code systemd acts on (0 only after SIGTERM
or SIGINT, 2 for a configuration that cannot start, 1 for the rest), a reload never stops it, one
daemon holds a store, and store faults show in /health, the log and the metrics."""

from __future__ import annotations

import contextlib
import os
import random
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from conftest import ON_POSTGRES, Daemon, base_config, kill_matching, processes_matching, wait_for
from support.cli import taskd
from support.disks import tmpfs
from support.metrics import parse, value

LONG = f"sleep {611 + os.getpid() % 97}.25"  # this worker's own: tests on other workers kill theirs
TASKS = "- {id: long, pipeline: long}\n- {id: quick, pipeline: quick}"
PIPELINES = f"""
- {{name: long, processors: [{{shell: {{command: '{LONG}'}}}}]}}
- {{name: quick, processors: [{{shell: {{command: 'echo hi'}}}}]}}
"""


@pytest.fixture(autouse=True)
def no_leftovers() -> Iterator[None]:
    yield
    kill_matching(LONG)


def exited(daemon: Daemon, timeout: float = 20) -> int:
    assert daemon.proc is not None
    try:
        return daemon.proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        raise AssertionError(f"taskd did not exit within {timeout}s:\n{daemon.output()[-3000:]}") from None


def health(daemon: Daemon) -> tuple[int, dict[str, object]]:
    resp = daemon.request("GET", "/health")
    return resp.status, resp.json()


def test_sigterm_and_sigint_exit_0(daemon_factory: Callable[..., Daemon]) -> None:
    for sig in (signal.SIGTERM, signal.SIGINT):
        daemon = daemon_factory(base_config(TASKS, PIPELINES), subdir=sig.name).start()
        assert daemon.stop(sig) == 0


def test_a_configuration_that_cannot_start_exits_2(daemon_factory: Callable[..., Daemon]) -> None:
    daemon = daemon_factory(base_config("- {id: a, pipeline: missing}", PIPELINES))
    daemon.start(ready=False)
    assert exited(daemon) == 2
    assert "missing" in daemon.output()


@pytest.mark.parametrize(
    "bad",
    [
        pytest.param("tasks:\n  - id: a\n    pipeline: !include other.yml\n", id="unknown-tag"),
        pytest.param("base: &b [1, 2]\ntasks:\n  - <<: *b\n    id: a\n", id="bad-merge-key"),
        pytest.param(
            "".join(
                f"{name}: &{name} [" + ",".join([f"*{prev}" if prev else "lol"] * 9) + "]\n"
                for prev, name in zip(["", *"abcdefgh"], "abcdefghi", strict=True)
            ),
            id="alias-bomb",
        ),
        pytest.param("tasks: [\n", id="syntax-error"),
        pytest.param("x: &r [*r]\n", id="self-alias"),
    ],
)
def test_a_reload_of_bad_yaml_is_refused_and_the_daemon_keeps_running(
    daemon_factory: Callable[..., Daemon], bad: str
) -> None:
    daemon = daemon_factory(base_config(TASKS, PIPELINES)).start()
    good = daemon.config_path.read_text()
    daemon.config_path.write_text(bad)
    daemon.send(signal.SIGHUP)
    wait_for(lambda: "config_reload_failed" in daemon.output(), timeout=15, what="the refusal logged")
    status, body = health(daemon)
    assert status == 200 and body["status"] == "ok", body  # still serving, on the old configuration
    faults = body["faults"]
    assert isinstance(faults, list) and [f["kind"] for f in faults] == ["reload"], body
    assert "reload refused" in faults[0]["reason"]
    assert daemon.wait_run(daemon.start_task("quick"))["state"] == "completed"
    metrics = parse(daemon.request("GET", "/metrics").text)
    assert value(metrics, "taskd_fault", kind="reload") == 1
    daemon.config_path.write_text(good)  # fixed: the next reload clears the fault
    daemon.send(signal.SIGHUP)
    wait_for(lambda: health(daemon)[1]["faults"] == [], timeout=15, what="the reload fault cleared")
    assert daemon.stop() == 0


def test_a_second_daemon_on_the_same_store_exits_1_before_touching_anything(
    daemon_factory: Callable[..., Daemon],
) -> None:
    if ON_POSTGRES:
        pytest.skip("one daemon per SQLite file; on PostgreSQL the node name is the lock (test below)")
    first = daemon_factory(base_config(TASKS, PIPELINES), subdir="first").start()
    run_id = first.start_task("long")
    wait_for(lambda: processes_matching(LONG), what="the first daemon's run to start its process")
    # The same configuration in another directory would be another store: share the file itself.
    second = daemon_factory(
        base_config(TASKS, PIPELINES).replace("./var/taskd.db", str(first.dir / "var" / "taskd.db")), subdir="second"
    )
    started = time.monotonic()
    second.start(ready=False)
    assert exited(second) == 1
    assert time.monotonic() - started < 10
    out = second.output()
    assert "in use by another taskd process" in out and f"pid {first.proc.pid}" in out  # type: ignore[union-attr]
    assert str(first.dir / "var" / "taskd.db") in out
    assert "run_interrupted" not in out and "orphans_killed" not in out
    # The first daemon's run was not touched: still running, its process alive.
    assert first.run(run_id)["state"] == "running"
    assert processes_matching(LONG)
    first.request("POST", "/task/long/_stop")
    assert first.stop() == 0


def test_a_taken_port_fails_the_start_before_recovery_kills_or_fires_anything(
    daemon_factory: Callable[..., Daemon],
) -> None:
    daemon = daemon_factory(base_config(TASKS, PIPELINES)).start()
    run_id = daemon.start_task("long")
    wait_for(lambda: processes_matching(LONG), what="the run's process")
    daemon.stop(signal.SIGKILL)  # its child lives on, its run is left `running` in the store
    with socket.socket() as squatter:
        squatter.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        squatter.bind(("127.0.0.1", daemon.port))
        squatter.listen()
        daemon.start(ready=False)
        assert exited(daemon) == 1
    out = daemon.output()
    assert "cannot listen on" in out
    assert "run_interrupted" not in out and "orphans_killed" not in out
    assert processes_matching(LONG), "the start that failed killed the previous process's children"
    daemon.start()  # the port is free again: now recovery runs
    assert daemon.run(run_id)["state"] == "interrupted"
    wait_for(lambda: not processes_matching(LONG), what="the orphan killed by recovery")
    assert daemon.stop() == 0


def test_a_store_directory_removed_under_the_daemon_is_degraded_then_exit_1_after_max_outage(
    daemon_factory: Callable[..., Daemon],
) -> None:
    if ON_POSTGRES:
        pytest.skip("a SQLite file removed under the daemon")
    config = base_config(TASKS, PIPELINES).replace(
        "store: {path: ./var/taskd.db}", "store: {path: ./var/taskd.db, max_outage: 3s}"
    )
    daemon = daemon_factory(config).start()
    assert health(daemon)[0] == 200
    for leftover in (daemon.dir / "var").iterdir():
        leftover.unlink()
    (daemon.dir / "var").rmdir()
    status, body = health(daemon)
    assert status == 503 and body["status"] == "degraded", body
    faults = body["faults"]
    assert isinstance(faults, list) and faults[0]["kind"] == "store_file" and "removed" in faults[0]["reason"]
    assert exited(daemon, timeout=20) == 1
    out = daemon.output()
    assert '"event": "fault"' in out and "store.max_outage" in out


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    with tmpfs(tmp_path / "disk", "6m") as mount:
        yield mount


def fill(directory: Path) -> Path:
    """Fill the filesystem of `directory` to the last byte."""
    filler = directory / "filler"
    with filler.open("wb") as out:
        with contextlib.suppress(OSError):
            while True:
                out.write(b"\0" * 65536)
                out.flush()
    with contextlib.suppress(OSError), filler.open("ab") as out:  # the last partial block
        while True:
            out.write(b"\0")
            out.flush()
    return filler


def test_a_full_disk_is_degraded_loses_nothing_and_recovers(
    daemon_factory: Callable[..., Daemon], small_disk: Path
) -> None:
    if ON_POSTGRES:
        pytest.skip("the SQLite file on a full disk")
    tasks = "- {id: quick, pipeline: quick, concurrency: allow}"
    config = base_config(tasks, PIPELINES).replace("./var/taskd.db", str(small_disk / "taskd.db"))
    daemon = daemon_factory(config).start()
    accepted = [daemon.start_task("quick") for _ in range(5)]
    filler = fill(small_disk)
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline and health(daemon)[0] == 200:
        resp = daemon.request("POST", "/task/quick/_start", {"params": {"note": "x" * 2000}})
        if resp.status == 202:  # committed before the answer
            accepted.append(resp.json()["run_id"])
    status, body = health(daemon)
    assert status == 503 and body["status"] == "degraded", body
    faults = body["faults"]
    assert isinstance(faults, list) and faults[0]["kind"] == "store_write", body
    assert "full" in faults[0]["reason"] or "space" in faults[0]["reason"], faults
    assert daemon.request("GET", "/runs").status == 503  # a read that must wait for commits says why
    refused = daemon.request("POST", "/task/quick/_start")  # no run accepted that a crash could lose
    assert refused.status == 503 and refused.json()["error"]["code"] == "store_unavailable", refused.text
    filler.unlink()
    wait_for(lambda: health(daemon)[0] == 200, timeout=30, what="healthy once the disk has room")
    for run_id in accepted:
        assert daemon.wait_run(run_id)["state"] == "completed", run_id
    metrics = parse(daemon.request("GET", "/metrics").text)
    assert value(metrics, "taskd_faults_total", kind="store_write") >= 1
    assert value(metrics, "taskd_fault", kind="store_write") == 0
    assert daemon.stop() == 0


@pytest.mark.parametrize("damage", ["header", "pages"])
def test_a_damaged_store_gives_one_clear_error_and_exit_1(daemon_factory: Callable[..., Daemon], damage: str) -> None:
    if ON_POSTGRES:
        pytest.skip("a damaged SQLite file")
    daemon = daemon_factory(base_config("- {id: quick, pipeline: quick, concurrency: allow}", PIPELINES)).start()
    for run_id in [daemon.start_task("quick", {"padding": "x" * 3000}) for _ in range(30)]:
        daemon.wait_run(run_id)
    copy = daemon.dir / "backup.db"
    backed = taskd("backup", str(copy), "-c", str(daemon.config_path))  # while the daemon runs
    assert backed.returncode == 0 and backed.stdout.endswith(": 30 runs, integrity_check ok\n"), backed
    assert daemon.stop() == 0
    db = daemon.dir / "var" / "taskd.db"
    with db.open("r+b") as out:
        if damage == "header":
            out.write(b"this is no database at all" * 4)
        else:  # every page but the first (the schema stays readable, the tables do not)
            size = db.stat().st_size
            out.seek(4096)
            out.write(bytes(random.Random(7).getrandbits(8) for _ in range(size - 4096)))
    daemon.start(ready=False)
    assert exited(daemon) == 1
    out = daemon.output()
    assert "Traceback" not in out
    (error,) = [e for e in daemon.events() if e.get("level") == "error"]
    message = error["error"]
    assert str(db) in message and "integrity_check" in message and "taskd backup" in message, message
    # The copy `taskd backup` made brings the history back.
    db.unlink()
    copy.rename(db)
    daemon.start()
    assert len(daemon.runs("quick")) == 30
    assert daemon.stop() == 0


@pytest.mark.parametrize("how", ["sigterm", "max_outage"])
def test_a_daemon_stopping_on_a_full_disk_exits_1_and_says_what_was_lost(
    daemon_factory: Callable[..., Daemon], small_disk: Path, how: str
) -> None:
    """The last commit fails: the connections still close (no thread keeps the process alive), the
    writes lost are logged, and the exit code is 1 even after SIGTERM."""
    if ON_POSTGRES:
        pytest.skip("the SQLite file on a full disk")
    outage = ", max_outage: 2s" if how == "max_outage" else ""
    config = base_config(
        "- {id: nap, pipeline: nap}", "- {name: nap, processors: [{shell: {command: 'sleep 0.5'}}]}"
    ).replace("{path: ./var/taskd.db}", f"{{path: {small_disk / 'taskd.db'}{outage}}}")
    daemon = daemon_factory(config).start()
    daemon.start_task("nap")
    fill(small_disk)  # the nap's end cannot be committed
    wait_for(lambda: health(daemon)[0] == 503, timeout=15, what="degraded")
    if how == "sigterm":
        daemon.send(signal.SIGTERM)
    assert exited(daemon, timeout=30) == 1
    assert "store_writes_lost" in daemon.output()


def test_a_backup_taken_under_load_restores_every_run_committed_before_it(
    daemon_factory: Callable[..., Daemon],
) -> None:
    if ON_POSTGRES:
        pytest.skip("taskd backup copies a SQLite store (PostgreSQL: pg_dump)")
    tasks = "- {id: tick, pipeline: quick, schedule: '* * * * * *', concurrency: allow}\n" + TASKS.replace(
        "{id: quick, pipeline: quick}", "{id: quick, pipeline: quick, concurrency: allow}"
    )
    daemon = daemon_factory(base_config(tasks, PIPELINES)).start()
    for _ in range(3):  # a burst of manual runs beside the ticking task, still going during the backup
        for _ in range(20):
            daemon.start_task("quick", {"padding": "y" * 2000})
    wait_for(lambda: len(daemon.runs("tick")) >= 2, what="ticks")
    before = {r["id"] for r in daemon.request("GET", "/runs?limit=1000").json()["runs"]}
    copy = daemon.dir / "backup.db"
    backed = taskd("backup", str(copy), "-c", str(daemon.config_path))
    assert backed.returncode == 0 and "integrity_check ok" in backed.stdout, backed
    for _ in range(10):
        daemon.start_task("quick")  # after the backup: not in it
    assert daemon.stop() == 0
    db = daemon.dir / "var" / "taskd.db"
    for leftover in db.parent.glob("taskd.db*"):
        leftover.unlink()
    copy.rename(db)
    daemon.start()
    after = {r["id"] for r in daemon.request("GET", "/runs?limit=1000").json()["runs"]}
    assert before <= after and len(before) >= 62
    assert daemon.stop() == 0

"""End to end on PostgreSQL: a restart and a 20 s outage of a server the test starts itself (never
the shared one) are survived, shown by /health and counted, and the fires due meanwhile are
recorded as skipped (`store_unavailable`) once it is back; two processes given one node name
never both join, and a node that finds its name taken exits 1."""

from __future__ import annotations

import asyncio
import signal
import time
from collections.abc import Callable
from datetime import datetime

import asyncpg
import pytest
from conftest import ON_POSTGRES, POSTGRES_URL, Daemon, base_config, postgres_schema, wait_for
from support.metrics import parse, value
from support.pgserver import Server, own_postgres  # noqa: F401  # a fixture

pytestmark = pytest.mark.skipif(ON_POSTGRES, reason="runs once, in the SQLite pass: these tests bring their own server")

TICK = "- {id: tick, pipeline: note, schedule: '* * * * * *'}\n- {id: quick, pipeline: note}"
NOTE = "- {name: note, processors: [{shell: {command: 'echo tick'}}]}"


def on(url: str, name: str = "n1", extra: str = "") -> str:
    return base_config(TICK, NOTE).replace(
        "store: {path: ./var/taskd.db}", f"store: {{url: '{url}'{extra}}}\nnode: {{name: {name}}}"
    )


def health(daemon: Daemon) -> tuple[int, dict[str, object]]:
    resp = daemon.request("GET", "/health", timeout=10)
    return resp.status, resp.json()


def fault_kinds(daemon: Daemon) -> list[str]:
    faults = health(daemon)[1]["faults"]
    assert isinstance(faults, list)
    return [f["kind"] for f in faults]


def epoch(text: str) -> float:
    return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()


async def _fires(url: str) -> list[tuple[float, str]]:
    db = await asyncpg.connect(url)
    try:
        rows = await db.fetch("SELECT instant, last_instant, refusals, reason FROM fires WHERE task_id = 'tick'")
        runs = await db.fetch("SELECT scheduled_at FROM runs WHERE task_id = 'tick'")
    finally:
        await db.close()
    # A summary of refused fires stands for every second from its first instant to its last (the
    # task fires each second): its count says as much.
    covered = []
    for r in rows:
        seconds = range(round(r["instant"]), round(r["last_instant"] or r["instant"]) + 1)
        assert r["refusals"] == len(seconds), dict(r)
        covered += [(float(second), r["reason"]) for second in seconds]
    return covered + [(r["scheduled_at"], "run") for r in runs]


def test_a_restart_and_a_20s_outage_are_survived_shown_and_every_fire_accounted_for(
    daemon_factory: Callable[..., Daemon],
    own_postgres: Server,  # noqa: F811
) -> None:
    daemon = daemon_factory(on(own_postgres.url)).start()
    wait_for(lambda: len(daemon.runs("tick")) >= 2, timeout=15, what="a few scheduled runs")
    # A restart: the daemon reconnects by itself.
    own_postgres.stop()
    own_postgres.start()
    wait_for(lambda: health(daemon)[0] == 200, timeout=20, what="healthy after the restart")
    assert daemon.wait_run(daemon.start_task("quick"))["state"] == "completed"
    # An outage of 20 s.
    down_at = time.time()
    own_postgres.stop()
    wait_for(lambda: health(daemon)[0] == 503, timeout=10, what="/health degraded while the server is down")
    body = health(daemon)[1]
    assert body["status"] == "degraded" and "store_unreachable" in fault_kinds(daemon), body
    unread = daemon.request("GET", "/runs", timeout=20)
    assert unread.status == 503 and unread.json()["error"]["code"] == "store_unavailable", unread.text
    time.sleep(max(0.0, down_at + 20 - time.time()))
    up_at = time.time()
    own_postgres.start()
    wait_for(lambda: health(daemon)[0] == 200, timeout=30, what="healthy again once the server is back")
    assert daemon.proc is not None and daemon.proc.poll() is None
    wait_for(lambda: daemon.request("GET", "/runs?limit=1").status == 200, timeout=20, what="reads answer again")
    # Every second of the outage has a run (its claim got through before the server went) or a
    # skip record saying why, written once the server was back; none is silently gone.
    found = wait_for(
        lambda: (
            (f := asyncio.run(_fires(own_postgres.url)))
            and sum(1 for _, why in f if why.startswith("store_unavailable")) >= 15
            and f
        ),
        timeout=30,
        what="the skipped fires recorded",
    )
    instants = {round(instant) for instant, _ in found}
    missing = [s for s in range(int(down_at) + 2, int(up_at) - 1) if s not in instants]
    assert not missing, f"fires due during the outage left no trace: {missing}"
    metrics = parse(daemon.request("GET", "/metrics").text)
    assert value(metrics, "taskd_fires_skipped_total", task="tick", reason="store_unavailable") >= 15
    assert value(metrics, "taskd_faults_total", kind="store_unreachable") >= 1
    assert daemon.stop() == 0


async def _terminate_others(url: str) -> int:
    db = await asyncpg.connect(url)
    try:
        return len(
            await db.fetch(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
                " WHERE datname = current_database() AND pid <> pg_backend_pid()"
            )
        )
    finally:
        await db.close()


def test_killed_connections_and_a_run_that_ends_during_an_outage_lose_nothing(
    daemon_factory: Callable[..., Daemon],
    own_postgres: Server,  # noqa: F811
) -> None:
    """The daemon's connections are terminated by the server (an administrator, a failover
    proxy); then a run ends while the server is down: its end is recorded once the server is back,
    and no fire ran twice."""
    config = (
        on(own_postgres.url).replace("tasks:\n", "tasks:\n  - {id: pause, pipeline: pause}\n", 1)
        + "  - {name: pause, processors: [{shell: {command: 'sleep 3'}}]}\n"
    )
    daemon = daemon_factory(config).start()
    wait_for(lambda: len(daemon.runs("tick")) >= 2, timeout=15, what="a few scheduled runs")
    assert asyncio.run(_terminate_others(own_postgres.url)) >= 1
    killed_at = time.time()

    def recorded_again() -> bool:
        # Reads answer 503 (store_unavailable) until the pool has connected again.
        answer = daemon.request("GET", "/task/tick/runs?limit=1000")
        return answer.status == 200 and any(epoch(r["queued_at"]) > killed_at + 1 for r in answer.json()["runs"])

    wait_for(
        recorded_again,
        timeout=15,
        what="fires recorded again after the connections were killed",
    )
    assert health(daemon)[0] == 200 and daemon.proc is not None and daemon.proc.poll() is None
    long_run = daemon.start_task("pause")
    daemon.wait_run(long_run, states=("running",))
    own_postgres.stop()  # the run ends (about 3 s) while the server is down
    wait_for(lambda: health(daemon)[0] == 503, timeout=10, what="/health degraded")
    time.sleep(5)
    own_postgres.start()
    wait_for(lambda: health(daemon)[0] == 200, timeout=30, what="healthy again")

    def ended() -> dict[str, object] | None:  # a pooled connection the restart broke answers 503 once
        answer = daemon.request("GET", f"/run/{long_run}")
        body = answer.json() if answer.status == 200 else None
        return body if body is not None and body["state"] != "running" else None

    run = wait_for(ended, timeout=20, what="the run's end recorded")
    assert run["state"] == "completed" and run["duration"] >= 2.5, run  # type: ignore[operator]
    listed = wait_for(
        lambda: (r := daemon.request("GET", "/task/tick/runs?limit=1000")).status == 200 and r.json()["runs"],
        timeout=10,
        what="the runs listed",
    )
    scheduled = [r["scheduled_at"] for r in listed]
    assert len(scheduled) == len(set(scheduled)), "a fire ran twice"
    assert daemon.stop() == 0


def test_an_outage_longer_than_max_outage_exits_1(
    daemon_factory: Callable[..., Daemon],
    own_postgres: Server,  # noqa: F811
) -> None:
    daemon = daemon_factory(on(own_postgres.url, extra=", max_outage: 3s")).start()
    own_postgres.stop()
    assert daemon.proc is not None
    assert daemon.proc.wait(timeout=30) == 1
    assert "store.max_outage" in daemon.output()


@pytest.fixture
async def shared_url(request: pytest.FixtureRequest) -> str:
    return f"{POSTGRES_URL}?search_path={await postgres_schema(request)}"


def test_processes_started_at_once_with_one_node_name_never_both_join(
    daemon_factory: Callable[..., Daemon], shared_url: str
) -> None:
    pairs = [
        [daemon_factory(on(shared_url, name=f"twin{i}"), subdir=f"twin{i}{side}") for side in "ab"] for i in range(3)
    ]
    for pair in pairs:
        for daemon in pair:
            daemon.start(ready=False)
    for pair in pairs:
        loser = wait_for(lambda p=pair: next((d for d in p if _exited(d)), None), timeout=20, what="one refused")
        winner = next(d for d in pair if d is not loser)
        assert loser.proc is not None and loser.proc.returncode == 1, loser.output()[-2000:]
        assert "another live taskd is node" in loser.output()
        assert "taskd_ready" not in loser.output() and "lease_lost" not in loser.output()  # it never joined
        wait_for(lambda w=winner: health(w)[0] == 200, timeout=20, what="the other one serving")
        assert not _exited(winner), "both processes given one name were refused"
        assert winner.stop() == 0


def _exited(daemon: Daemon) -> bool:
    return daemon.proc is not None and daemon.proc.poll() is not None


def test_a_node_paused_past_its_lease_that_finds_its_name_taken_exits_1(
    daemon_factory: Callable[..., Daemon], shared_url: str
) -> None:
    first = daemon_factory(on(shared_url, name="same"), subdir="first").start()
    first.send(signal.SIGSTOP)
    try:
        second = daemon_factory(on(shared_url, name="same"), subdir="second").start()  # after the lease
    finally:
        first.send(signal.SIGCONT)
    assert first.proc is not None
    assert first.proc.wait(timeout=20) == 1
    assert "another live taskd is node" in first.output()
    assert health(second)[0] == 200
    assert second.stop() == 0

"""`POST /task/{id}/_stop` tells the truth: 200 only once every run it stopped has ended, else 202
with the runs still stopping after a bounded wait; `taskd stop` waits for those. On a fake clock:
the bound passes when the test moves the clock. A run that overruns its stop grace is a `python`
step that ignores its first stop until the test lets it go (`fake_steps.stop_when_let`)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, MutableMapping
from pathlib import Path
from typing import Any

import fake_steps
import pytest
import structlog
from conftest import Api, base_config, until
from support.cli import taskd

from taskd.clock import FakeClock
from taskd.cluster import LEASE_S, Hub, LocalCoordinator
from taskd.config import load_config
from taskd.engine import STOP_WAIT_S, Engine
from taskd.engine.timer import ManualTimer
from taskd.models import Trigger
from taskd.store import MemoryStore, StoreError

ApiFactory = Callable[..., Awaitable[Api]]
T0 = 1_800_000_000.0
GRACE_S = 1.0  # a python step's stop grace (none of its own) plus the second every run gets

TASKS = """
- {id: job, pipeline: stubborn, concurrency: allow}
- {id: nap, pipeline: nap}
"""
PIPELINES = """
- {name: stubborn, processors: [{python: {function: 'fake_steps:stop_when_let', kwargs: {key: held}}}]}
- {name: nap, processors: [{sleep: {duration: 1h}}]}
"""


async def started(api_factory: ApiFactory) -> tuple[Api, FakeClock]:
    clock = FakeClock(T0)
    return await api_factory(base_config(TASKS, PIPELINES), clock=clock), clock


async def test_a_stop_is_200_once_every_run_it_stopped_has_ended(api_factory: ApiFactory) -> None:
    api, _ = await started(api_factory)
    run_id = await api.start_task("nap")
    await until(lambda: (run := api.engine.live_run(run_id)) is not None and str(run.state) == "running", "the nap")
    resp = await api.request("POST", "/task/nap/_stop")
    assert resp.status == 200, resp.text
    assert resp.json() == {"task_id": "nap", "stopped": [run_id], "stopping": []}
    assert await api.run_state(run_id) == "stopped"


async def test_a_run_that_overruns_its_stop_grace_is_answered_202_as_still_stopping(
    api_factory: ApiFactory, daemon_logs: list[MutableMapping[str, Any]]
) -> None:
    api, clock = await started(api_factory)
    held = fake_steps.gate("held")
    run_id = await api.start_task("job")
    await asyncio.wait_for(held.entered.wait(), 10)
    asking = asyncio.create_task(api.request("POST", "/task/job/_stop"))
    await until(held.stopping.is_set, "the step told to stop")
    await clock.run_for(GRACE_S - 0.1)
    assert not asking.done()  # the answer waits for the run, up to its stop grace
    await clock.run_for(0.1)
    resp = await asyncio.wait_for(asking, 10)
    assert resp.status == 202, resp.text
    assert resp.json() == {"task_id": "job", "stopped": [], "stopping": [run_id]}
    assert await api.run_state(run_id) == "running"  # the truth: it has not stopped yet
    (logged,) = [line for line in daemon_logs if line["event"] == "runs_still_stopping"]
    assert logged["run_ids"] == [run_id] and logged["log_level"] == "warning"
    held.opened.set()
    run = await api.wait_run(run_id)
    assert run["state"] == "stopped" and run["error"] == "stopped: stopped through the API"
    assert (await api.request("POST", "/task/job/_stop")).status == 409  # nothing left to stop


async def test_the_answer_lists_the_runs_that_ended_apart_from_those_still_stopping(api_factory: ApiFactory) -> None:
    api, clock = await started(api_factory)
    held, quick = fake_steps.gate("held"), fake_steps.gate("quick")
    quick.opened.set()  # stops as soon as it is told to
    first = await api.start_task("job", {"gate": "quick"})
    second = await api.start_task("job")
    await asyncio.wait_for(asyncio.gather(held.entered.wait(), quick.entered.wait()), 10)
    asking = asyncio.create_task(api.request("POST", "/task/job/_stop"))
    await until(held.stopping.is_set, "the stubborn step told to stop")
    await clock.run_for(GRACE_S)
    resp = await asyncio.wait_for(asking, 10)
    assert resp.status == 202 and resp.json() == {"task_id": "job", "stopped": [first], "stopping": [second]}
    held.opened.set()
    assert (await api.wait_run(second))["state"] == "stopped"


# -- another node's runs ------------------------------------------------------------------------------


class Pair:
    """Two engines (nodes a and b) of one process on a hub, one memory store and one fake clock."""

    def __init__(self, tmp_path: Path) -> None:
        self.tmp_path = tmp_path
        self.clock = FakeClock(T0)
        self.store = MemoryStore(clock=self.clock)
        self.clock.waits_for(self.store.settled)
        self.hub = Hub()
        self.engines: list[Engine] = []

    async def node(self, name: str) -> Engine:
        directory = self.tmp_path / name
        directory.mkdir()
        text = f"store: {{path: ':memory:'}}\nnode: {{name: {name}}}\ntasks:\n{TASKS}\npipelines:\n{PIPELINES}"
        (directory / "taskd.yml").write_text(text.replace("\n- ", "\n  - "))
        config = load_config(directory / "taskd.yml", {})
        if not self.store.writer:
            await self.store.open()
        coordinator = LocalCoordinator(self.store, name, {}, self.clock, self.hub)

        def timer(callback: Any) -> ManualTimer:
            return ManualTimer(callback, self.clock)

        engine = Engine(config, self.store, clock=self.clock, timer=timer, coordinator=coordinator)
        await engine.start()
        self.engines.append(engine)
        return engine

    async def close(self) -> None:
        for held in fake_steps.GATES.values():
            held.opened.set()
        for engine in reversed(self.engines):
            await engine.shutdown(1)
        await self.store.close()


@pytest.fixture
async def pair(tmp_path: Path) -> AsyncIterator[Pair]:
    made = Pair(tmp_path)
    yield made
    await made.close()


async def test_another_nodes_run_counts_as_stopped_once_the_store_shows_it_ended(pair: Pair) -> None:
    a, b = await pair.node("a"), await pair.node("b")
    quick = fake_steps.gate("quick")
    quick.opened.set()
    run = b.start_run("job", Trigger.MANUAL, {"gate": "quick"})
    await asyncio.wait_for(quick.entered.wait(), 10)
    stopping = asyncio.create_task(a.stop_task("job", "stopped from a"))
    await pair.clock.run_for(1.0)
    outcome = await asyncio.wait_for(stopping, 10)
    assert (outcome.stopped, outcome.stopping) == ([run.id], [])
    assert run.finished and str(run.state) == "stopped"


async def test_another_nodes_run_still_going_at_the_bound_is_stopping(pair: Pair) -> None:
    a, b = await pair.node("a"), await pair.node("b")
    held = fake_steps.gate("held")
    run = b.start_run("job", Trigger.MANUAL)
    await asyncio.wait_for(held.entered.wait(), 10)
    stopping = asyncio.create_task(a.stop_task("job", "stopped from a"))
    await until(held.stopping.is_set, "b told to stop its run")
    bound = min(GRACE_S + LEASE_S, STOP_WAIT_S)  # its stop grace and a lease (a dead holder's runs end then)
    await pair.clock.run_for(bound - 0.5)
    assert not stopping.done()
    await pair.clock.run_for(0.5)
    outcome = await asyncio.wait_for(stopping, 10)
    assert (outcome.stopped, outcome.stopping) == ([], [run.id])
    held.opened.set()
    await asyncio.wait_for(run.done.wait(), 10)


async def test_a_run_whose_end_cannot_be_read_from_the_store_is_not_called_stopped(
    pair: Pair, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The store answers nothing (a PostgreSQL connection dropped): the holder's stop is unconfirmed."""
    a, b = await pair.node("a"), await pair.node("b")
    held = fake_steps.gate("held")
    run = b.start_run("job", Trigger.MANUAL)
    await asyncio.wait_for(held.entered.wait(), 10)

    async def unreachable(run_id: str) -> None:
        raise StoreError("connection lost")

    stopping = asyncio.create_task(a.stop_task("job", "stopped from a"))
    await until(held.stopping.is_set, "b told to stop its run")
    monkeypatch.setattr(pair.store, "get_run", unreachable)
    held.opened.set()  # b's run does end; a cannot see it
    await asyncio.wait_for(run.done.wait(), 10)
    await pair.clock.run_for(STOP_WAIT_S)
    outcome = await asyncio.wait_for(stopping, 10)
    assert (outcome.stopped, outcome.stopping) == ([], [run.id])


# -- taskd stop ------------------------------------------------------------------------------------------


@pytest.fixture(autouse=True)
def daemon_logs() -> Iterator[list[MutableMapping[str, Any]]]:
    """The daemon's log lines, kept apart from the output of the CLI, which runs in this process."""
    with structlog.testing.capture_logs() as logs:
        yield logs


async def stop_with_the_cli(api: Api, clock: FakeClock, held: fake_steps.Gate, *args: str) -> asyncio.Task[Any]:
    """`taskd stop job ARGS` in a thread; returns once the daemon has answered it 202."""
    url = f"http://127.0.0.1:{api.client.port}"
    cli = asyncio.create_task(asyncio.to_thread(taskd, "stop", "job", "--url", url, *args))
    await until(held.stopping.is_set, "the step told to stop")
    await clock.run_for(GRACE_S)  # the daemon's bound passes: it answers 202
    return cli


async def test_taskd_stop_waits_for_the_runs_still_stopping(api_factory: ApiFactory) -> None:
    api, clock = await started(api_factory)
    held = fake_steps.gate("held")
    run_id = await api.start_task("job")
    await asyncio.wait_for(held.entered.wait(), 10)
    cli = await stop_with_the_cli(api, clock, held, "--timeout", "30")
    await asyncio.sleep(0.5)
    assert not cli.done()  # polling the run, which is still running
    held.opened.set()
    result = await asyncio.wait_for(cli, 20)
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == [f"stopped {run_id}"]
    assert f"still stopping: {run_id}" in result.stderr


async def test_taskd_stop_fails_when_runs_are_still_not_stopped_at_its_deadline(api_factory: ApiFactory) -> None:
    api, clock = await started(api_factory)
    held = fake_steps.gate("held")
    run_id = await api.start_task("job")
    await asyncio.wait_for(held.entered.wait(), 10)
    cli = await stop_with_the_cli(api, clock, held, "--timeout", "0.5")
    result = await asyncio.wait_for(cli, 20)
    assert result.returncode == 1
    assert result.stdout == ""
    assert (
        "not stopped 0.5s after the daemon answered" in result.stderr
        and f"s in all: {run_id} (running)" in result.stderr
    )
    held.opened.set()
    assert (await api.wait_run(run_id))["state"] == "stopped"


async def test_taskd_stop_json_prints_the_outcome_in_the_apis_shape(api_factory: ApiFactory) -> None:
    api, clock = await started(api_factory)
    held = fake_steps.gate("held")
    run_id = await api.start_task("job")
    await asyncio.wait_for(held.entered.wait(), 10)
    cli = await stop_with_the_cli(api, clock, held, "--timeout", "0.3", "--json")
    result = await asyncio.wait_for(cli, 20)
    assert result.returncode == 1
    assert json.loads(result.stdout) == {"task_id": "job", "stopped": [], "stopping": [run_id]}
    held.opened.set()
    await api.wait_run(run_id)

"""No process a run started outlives it: not the step's process group, and not the descendants
that left it (setsid, double forks). Each way a run can end is tried with real processes."""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path

import pytest
from conftest import Api, base_config, kill_matching, processes_matching

from taskd.procgroup import kill_run_processes


@pytest.fixture
def marker(request: pytest.FixtureRequest) -> Iterator[str]:
    """A unique `sleep` duration that names this test's escaped processes."""
    value = f"{700 + (os.getpid() % 50)}.{abs(hash(request.node.name)) % 10**6:06d}"
    yield value
    kill_matching(f"sleep {value}")


def escaping(marker: str, then: str) -> str:
    """A command that starts two processes outside its own process group, then runs `then`."""
    return (
        f"setsid sh -c 'sleep {marker}' & "  # its own session and group
        f"( sh -c 'sleep {marker} & exit 0' & ) ; "  # double fork: reparented, in a subshell's group
        f"sleep 0.1; {then}"
    )


def sleepers(marker: str) -> list[int]:
    """The `sleep MARKER` processes themselves (not the shells whose command line names them)."""
    wanted = f"sleep\0{marker}\0".encode()
    found = []
    for pid in processes_matching(f"sleep {marker}"):
        with contextlib.suppress(OSError):
            if Path(f"/proc/{pid}/cmdline").read_bytes() == wanted:
                found.append(pid)
    return found


async def escaped(marker: str) -> list[int]:
    """Wait (5 s at most) until both escaped `sleep`s run; return them."""
    async with asyncio.timeout(5):
        while len(found := sleepers(marker)) < 2:  # noqa: ASYNC110
            await asyncio.sleep(0.02)
    return found


def of_run(run_id: str) -> list[int]:
    """The processes that carry the run's id in their environment."""
    wanted = f"TASKD_RUN_ID={run_id}".encode()
    found = []
    for entry in Path("/proc").iterdir():
        with contextlib.suppress(OSError, ValueError):
            if wanted in (entry / "environ").read_bytes().split(b"\0"):
                found.append(int(entry.name))
    return found


async def gone(marker: str, run_id: str | None = None) -> bool:
    """Whether every process of the test (or of `run_id`) has gone, allowing 2 s to be reaped."""

    def left() -> list[int]:
        return of_run(run_id) if run_id else processes_matching(f"sleep {marker}")

    try:
        async with asyncio.timeout(2):
            while left():  # noqa: ASYNC110
                await asyncio.sleep(0.02)
    except TimeoutError:
        raise AssertionError(
            f"still running: {[Path(f'/proc/{pid}/cmdline').read_bytes() for pid in left()]}"
        ) from None
    return True


def config(marker: str, then: str, task: str = "{id: job, pipeline: p}") -> str:
    command = escaping(marker, then).replace('"', '\\"')
    return base_config(f"- {task}", f'- {{name: p, processors: [{{shell: {{command: "{command}"}}}}]}}')


async def test_a_step_that_succeeds_leaves_nothing_behind(
    api_factory: Callable[..., Awaitable[Api]], marker: str
) -> None:
    api = await api_factory(config(marker, "exit 0"))
    run_id = await api.start_task("job")
    run = await api.wait_run(run_id)
    assert run["state"] == "completed", run["error"]
    assert await gone(marker)


@pytest.mark.parametrize("how", ["timeout", "stop", "replace", "delete", "shutdown"])
async def test_nothing_survives_a_run_however_it_ends(
    api_factory: Callable[..., Awaitable[Api]], marker: str, how: str
) -> None:
    task = {
        "timeout": "{id: job, pipeline: p, timeout: 0.5s}",
        "replace": "{id: job, pipeline: p, concurrency: replace}",
    }.get(how, "{id: job, pipeline: p}")
    api = await api_factory(config(marker, "sleep 30", task))
    run_id = await api.start_task("job")
    assert len(await escaped(marker)) == 2
    if how == "stop":
        assert (await api.request("POST", "/task/job/_stop")).status == 200
    elif how == "replace":
        await api.start_task("job")
    elif how == "delete":
        assert (await api.request("DELETE", "/task/job")).status == 200
    elif how == "shutdown":
        await api.engine.shutdown(0.1)
    run = await api.wait_run(run_id)
    assert run["state"] == ("failed" if how == "timeout" else "stopped"), run
    assert await gone(marker, run_id)
    if how == "replace":  # the newer run is still going: its processes are its own
        (newer,) = api.engine.active_runs("job")
        assert of_run(newer.id)
        assert (await api.request("POST", "/task/job/_stop")).status == 200
    assert await gone(marker)


async def test_a_stop_while_the_child_is_being_started_leaves_nothing(
    api_factory: Callable[..., Awaitable[Api]], marker: str
) -> None:
    """Stopped as soon as the step's shell exists: possibly before asyncio has finished starting it."""
    api = await api_factory(config(marker, "sleep 30"))
    for _ in range(5):
        run_id = await api.start_task("job")
        async with asyncio.timeout(5):
            while not processes_matching(f"sleep {marker}"):  # noqa: ASYNC110
                await asyncio.sleep(0)
        assert (await api.request("POST", "/task/job/_stop")).status == 200
        assert (await api.wait_run(run_id))["state"] == "stopped"
        assert await gone(marker)


async def test_start_up_kills_what_the_runs_of_a_dead_process_left(tmp_path: Path, marker: str) -> None:
    """kill -9 leaves a run's processes behind, setsid ones included; they carry the run's id."""
    run_id = "0123456789abcdef0123"
    env = {**os.environ, "TASKD_RUN_ID": run_id}
    process = await asyncio.create_subprocess_shell(escaping(marker, "exit 0"), env=env, start_new_session=True)
    await process.wait()
    assert len(await escaped(marker)) == 2
    other = await asyncio.create_subprocess_exec(
        "sleep", marker, env={**env, "TASKD_RUN_ID": "another-run"}, start_new_session=True
    )
    killed = await asyncio.to_thread(kill_run_processes, [run_id])
    assert len(killed) == 2
    async with asyncio.timeout(2):  # SIGKILL is delivered at once, but the exit takes a moment
        while processes_matching(f"sleep {marker}") != [other.pid]:  # noqa: ASYNC110
            await asyncio.sleep(0.02)
    await asyncio.sleep(0.1)
    assert processes_matching(f"sleep {marker}") == [other.pid]  # another run's process is left alone
    other.kill()
    await other.wait()

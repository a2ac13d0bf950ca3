"""Retries, backoff and timeouts on a fake clock, through the real app, engine and store: a backoff
of minutes or a step's timeout passes when the test moves the clock, in no wall time. The steps
fail or succeed in-process (`fake_steps`)."""

from __future__ import annotations

import itertools
import time
from collections.abc import Awaitable, Callable

from conftest import Api, base_config, ts, until

from taskd.clock import FakeClock

ApiFactory = Callable[..., Awaitable[Api]]
T0 = 1_800_000_000.0


async def started(api_factory: ApiFactory, tasks: str, pipelines: str) -> tuple[Api, FakeClock]:
    clock = FakeClock(T0)
    return await api_factory(base_config(tasks, pipelines), clock=clock), clock


def state_of(api: Api, run_id: str) -> str | None:
    live = api.engine.live_run(run_id)
    return None if live is None else str(live.state)


async def test_failed_attempts_back_off_exponentially_up_to_the_cap_then_the_run_fails(api_factory: ApiFactory) -> None:
    api, clock = await started(
        api_factory,
        "- {id: flaky, pipeline: fail, retry: {count: 3, backoff: 20s, max_backoff: 50s}}",
        "- {name: fail, processors: [{python: {function: 'fake_steps:fail', kwargs: {message: boom}}}]}",
    )
    began = time.monotonic()
    run_id = await api.start_task("flaky")
    await until(lambda: state_of(api, run_id) == "retrying", "the first backoff")
    await clock.run_for(110)  # 20 s, 40 s, then 50 s (80 capped) of backoff
    run = await api.wait_run(run_id)
    assert time.monotonic() - began < 5  # two minutes of backoff in no wall time
    assert run["state"] == "failed" and run["attempts"] == 4
    assert run["error"] == "step 1 (python): failed on purpose: boom"
    attempts = run["attempt_list"]
    assert [a["state"] for a in attempts] == ["failed"] * 4
    gaps = [ts(b["started_at"]) - ts(a["finished_at"]) for a, b in itertools.pairwise(attempts)]
    assert gaps == [20.0, 40.0, 50.0]  # backoff * 2**k, capped at max_backoff, to the clock's second
    log = (await api.request("GET", f"/run/{run_id}/log")).text
    assert log.count("[stderr] boom") == 4 and "attempt 1 of 4 failed; retrying in 20s" in log
    transitions = run["transitions"]
    assert [t["state"] for t in transitions] == ["queued"] + ["running", "retrying"] * 3 + ["running", "failed"]
    assert [t["detail"] for t in transitions if t["state"] == "retrying"] == [
        "retry 1 of 3 in 20s",
        "retry 2 of 3 in 40s",
        "retry 3 of 3 in 50s",
    ]


async def test_retry_count_is_a_shorthand_and_a_retry_may_succeed(api_factory: ApiFactory) -> None:
    api, clock = await started(
        api_factory,
        "- {id: second_time, pipeline: p, retry_count: 2, retry: {backoff: 10m}}",
        "- {name: p, processors: [{python: {function: 'fake_steps:fail_until_attempt', kwargs: {attempt: 2}}}]}",
    )
    run_id = await api.start_task("second_time")
    await until(lambda: state_of(api, run_id) == "retrying", "the backoff")
    await clock.run_for(600)
    run = await api.wait_run(run_id)
    assert run["state"] == "completed" and run["attempts"] == 2 and run["error"] is None
    assert ts(run["finished_at"]) - ts(run["queued_at"]) == 600.0


async def test_a_steps_own_retries_back_off_with_the_shared_backoff_capped_at_max_backoff(
    api_factory: ApiFactory,
) -> None:
    api, clock = await started(
        api_factory,
        "- {id: t, pipeline: p}",
        "- {name: p, processors: [{python: {function: 'fake_steps:fail', retry: {count: 3, backoff: 20s, "
        "max_backoff: 30s}}}]}",
    )
    run_id = await api.start_task("t")
    await clock.run_for(100)
    run = await api.wait_run(run_id)
    assert run["state"] == "failed" and run["attempts"] == 1
    lines = (await api.request("GET", f"/run/{run_id}/log")).text.splitlines()
    tries = [line for line in lines if "; try " in line]
    assert [line.rsplit(" in ", 1)[1] for line in tries] == ["20s", "30s", "30s"]  # 20, then 40 and 80 capped
    assert [line.split(" ", 1)[0] for line in tries] == [
        "2027-01-15T08:00:00.000Z",
        "2027-01-15T08:00:20.000Z",
        "2027-01-15T08:00:50.000Z",
    ]


async def test_a_step_times_out_on_the_clock_and_a_step_retry_may_succeed(api_factory: ApiFactory) -> None:
    api, clock = await started(
        api_factory,
        "- {id: t, pipeline: p}",
        """
        - name: p
          processors:
            - python: {function: 'fake_steps:fail_first', kwargs: {times: 2}, retry: {count: 3, backoff: 5s}}
            - sleep: {duration: 1h, timeout: 2m, on_error: continue}
        """,
    )
    began = time.monotonic()
    run_id = await api.start_task("t")
    await clock.run_for(200)
    run = await api.wait_run(run_id)
    assert time.monotonic() - began < 5
    assert run["state"] == "completed"
    steps = run["attempt_list"][0]["steps"]
    assert [s["state"] for s in steps] == ["completed", "failed"]
    assert steps[1]["error"] == "timed out after 120s" and steps[1]["duration"] == 120.0
    assert ts(steps[0]["finished_at"]) - ts(steps[0]["started_at"]) == 15.0  # backoff 5 s, then 10 s


async def test_an_attempt_past_the_task_timeout_times_out_and_is_retried(api_factory: ApiFactory) -> None:
    api, clock = await started(
        api_factory,
        "- {id: slow, pipeline: p, timeout: 10m, retry: {count: 1, backoff: 1m}}",
        "- {name: p, processors: [{sleep: {duration: 1d}}]}",
    )
    run_id = await api.start_task("slow")
    await clock.run_for(21 * 60 + 1)
    run = await api.wait_run(run_id)
    assert run["state"] == "failed" and run["error"] == "attempt 2 timed out after 10m"
    assert [a["state"] for a in run["attempt_list"]] == ["timed_out", "timed_out"]
    assert [a["duration"] for a in run["attempt_list"]] == [600.0, 600.0]


async def test_a_run_stopped_during_its_backoff_ends_at_once(api_factory: ApiFactory) -> None:
    api, _ = await started(
        api_factory,
        "- {id: flaky, pipeline: fail, retry: {count: 5, backoff: 1h}}",
        "- {name: fail, processors: [{python: {function: 'fake_steps:fail'}}]}",
    )
    run_id = await api.start_task("flaky")
    await until(lambda: state_of(api, run_id) == "retrying", "the backoff")
    stopped = await api.request("POST", "/task/flaky/_stop")
    assert stopped.status == 200 and stopped.json()["stopped"] == [run_id]
    run = await api.wait_run(run_id)
    assert run["state"] == "stopped" and run["attempts"] == 1
    assert run["error"] == "stopped: stopped through the API"

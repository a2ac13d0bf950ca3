"""Fires through `taskd run`; the slot limit, priority order, concurrency policies, retries and params
through the real app, engine, SQLite store and processes in-process."""

from __future__ import annotations

import itertools
from collections.abc import Awaitable, Callable
from pathlib import Path

from conftest import Api, Daemon, base_config, ts, until, wait_for

ApiFactory = Callable[..., Awaitable[Api]]

SLEEPERS = "\n".join(f"- {{id: s{i}, pipeline: nap}}" for i in range(6))


def test_a_per_second_task_fires_on_time(daemon_factory: Callable[..., Daemon]) -> None:
    daemon = daemon_factory(
        base_config(
            "- {id: tick, schedule: '* * * * * *', pipeline: note}",
            "- {name: note, processors: [{log: {message: 'tick {run.id}'}}]}",
        )
    ).start()
    runs = wait_for(
        lambda: (
            [r for r in daemon.runs("tick") if r["state"] == "completed"][:2]
            if len([r for r in daemon.runs("tick") if r["state"] == "completed"]) >= 2
            else None
        ),
        timeout=10,
        what="2 runs",
    )
    runs = sorted(runs, key=lambda r: r["scheduled_at"])
    instants = [ts(r["scheduled_at"]) for r in runs]
    assert all(r["trigger"] == "schedule" for r in runs)
    assert all(float(i).is_integer() for i in instants), instants
    assert [b - a for a, b in itertools.pairwise(instants)] == [1.0]
    for run in runs:
        lateness = ts(run["started_at"]) - ts(run["scheduled_at"])
        assert 0 <= lateness < 0.5, lateness  # a generous sanity bound; bench/ measures precision


def _overlap(runs: list[dict]) -> int:
    events = sorted(
        [(ts(r["started_at"]), 1) for r in runs] + [(ts(r["finished_at"]), -1) for r in runs],
        key=lambda e: (e[0], e[1]),
    )
    current = peak = 0
    for _, delta in events:
        current += delta
        peak = max(peak, current)
    return peak


async def test_at_most_max_concurrent_tasks_run_at_once(api_factory: ApiFactory) -> None:
    api = await api_factory(base_config(SLEEPERS, "- {name: nap, processors: [{sleep: {duration: 0.4s}}]}", slots=2))
    run_ids = [await api.start_task(f"s{i}") for i in range(6)]
    health = (await api.request("GET", "/health")).json()
    assert health["slots"]["held"] <= 2 and health["slots"]["waiting"] == 4
    runs = [await api.wait_run(r) for r in run_ids]
    assert all(r["state"] == "completed" for r in runs)
    assert _overlap(runs) == 2
    waited = [r for r in runs if ts(r["started_at"]) - ts(r["queued_at"]) > 0.3]
    assert len(waited) >= 4, "the runs beyond the limit should have waited in `queued`"


async def test_queued_runs_start_by_priority_then_fifo(api_factory: ApiFactory) -> None:
    api = await api_factory(
        base_config(
            """
            - {id: blocker, pipeline: long}
            - {id: low, pipeline: short, priority: 0}
            - {id: mid_a, pipeline: short, priority: 5}
            - {id: high, pipeline: short, priority: 10}
            - {id: mid_b, pipeline: short, priority: 5}
            """,
            """
            - {name: long, processors: [{sleep: {duration: 0.3s}}]}
            - {name: short, processors: [{sleep: {duration: 0.02s}}]}
            """,
            slots=1,
        )
    )
    blocker = await api.start_task("blocker")
    await until(lambda: api.engine.load().slots_in_use == 1)
    order = ["low", "mid_a", "high", "mid_b"]
    ids = {name: await api.start_task(name) for name in order}
    assert [await api.run_state(i) for i in ids.values()] == ["queued"] * 4
    await api.wait_run(blocker)
    runs = {name: await api.wait_run(i) for name, i in ids.items()}
    started = sorted(runs, key=lambda name: ts(runs[name]["started_at"]))
    assert started == ["high", "mid_a", "mid_b", "low"]


async def _policy_api(factory: ApiFactory, policy: str, seconds: str = "0.3s") -> Api:
    return await factory(
        base_config(
            f"- {{id: job, pipeline: nap, concurrency: {policy}}}",
            f"- {{name: nap, processors: [{{shell: {{command: 'sleep {seconds.rstrip('s')}'}}}}]}}",
        )
    )


async def test_forbid_refuses_a_second_manual_run(api_factory: ApiFactory) -> None:
    api = await _policy_api(api_factory, "forbid")
    first = await api.start_task("job")
    second = await api.request("POST", "/task/job/_start")
    assert second.status == 409
    assert second.json()["error"]["code"] == "conflict" and first in second.json()["error"]["message"]
    assert (await api.wait_run(first))["state"] == "completed"


async def test_allow_runs_side_by_side(api_factory: ApiFactory) -> None:
    api = await _policy_api(api_factory, "allow")
    ids = [await api.start_task("job"), await api.start_task("job")]
    runs = [await api.wait_run(r) for r in ids]
    assert _overlap(runs) == 2


async def test_replace_stops_the_active_run(api_factory: ApiFactory) -> None:
    api = await _policy_api(api_factory, "replace", "30s")
    first = await api.start_task("job")
    await until(lambda: bool(api.engine.active_runs("job")) and api.engine.active_runs("job")[0].state == "running")
    second = await api.start_task("job")
    old = await api.wait_run(first)
    assert old["state"] == "stopped" and "replaced" in old["error"]
    await until(lambda: api.engine.active_runs("job")[0].state == "running")
    new = (await api.request("GET", f"/run/{second}")).json()
    assert ts(new["started_at"]) >= ts(old["finished_at"])
    assert (await api.request("POST", "/task/job/_stop")).status == 200


async def test_queue_runs_after_the_active_one(api_factory: ApiFactory) -> None:
    api = await _policy_api(api_factory, "queue", "0.2s")
    first, second = await api.start_task("job"), await api.start_task("job")
    assert await api.run_state(second) == "queued"
    a, b = await api.wait_run(first), await api.wait_run(second)
    assert a["state"] == b["state"] == "completed"
    assert ts(b["started_at"]) >= ts(a["finished_at"])


async def test_retries_with_exponential_backoff_then_fail(api_factory: ApiFactory) -> None:
    api = await api_factory(
        base_config(
            "- {id: flaky, pipeline: fail, retry: {count: 3, backoff: 0.2s, max_backoff: 0.5s}}",
            "- {name: fail, processors: [{shell: {command: 'echo boom >&2; exit 3'}}]}",
        )
    )
    run_id = await api.start_task("flaky")
    await until(lambda: (live := api.engine.live_run(run_id)) is not None and live.state == "retrying")
    run = await api.wait_run(run_id)
    assert run["state"] == "failed" and run["attempts"] == 4
    assert "exit code 3" in run["error"] and "boom" in run["error"]
    attempts = run["attempt_list"]
    assert [a["state"] for a in attempts] == ["failed"] * 4
    gaps = [ts(b["started_at"]) - ts(a["finished_at"]) for a, b in itertools.pairwise(attempts)]
    for gap, expected in zip(gaps, [0.2, 0.4, 0.5], strict=True):  # 0.2 * 2**k, capped at 0.5
        assert expected - 0.02 <= gap <= expected + 0.4, gaps
    log = (await api.request("GET", f"/run/{run_id}/log")).text
    assert log.count("[stderr] boom") == 4 and "retrying in" in log
    transitions = run["transitions"]
    assert [t["state"] for t in transitions] == ["queued"] + ["running", "retrying"] * 3 + ["running", "failed"]
    assert [ts(t["at"]) for t in transitions] == sorted(ts(t["at"]) for t in transitions)
    assert transitions[2]["detail"] == "retry 1 of 3 in 200ms"


async def test_retry_count_shorthand_and_success_on_retry(api_factory: ApiFactory, tmp_path: Path) -> None:
    marker = tmp_path / "seen"
    api = await api_factory(
        base_config(
            "- {id: second_time, pipeline: p, retry_count: 2, retry: {backoff: 0.1s}}",
            f"- {{name: p, processors: [{{shell: {{command: 'test -e {marker} || {{ touch {marker}; exit 1; }}'}}}}]}}",
        )
    )
    run = await api.wait_run(await api.start_task("second_time"))
    assert run["state"] == "completed" and run["attempts"] == 2 and run["error"] is None


async def test_manual_params_override_defaults_and_reach_shell_as_data(api_factory: ApiFactory, tmp_path: Path) -> None:
    victim = tmp_path / "victim"
    victim.write_text("still here")
    api = await api_factory(
        base_config(
            "- {id: greet, pipeline: p, params: {greeting: hello, name: world}}",
            """
            - name: p
              processors:
                - shell: {command: 'echo "$TASKD_PARAM_GREETING, $TASKD_PARAM_NAME"'}
                - log: {message: 'said {params.greeting} to {params.name}'}
            """,
        )
    )
    run_id = await api.start_task("greet", {"name": f"x; rm -f {victim}; $(rm -f {victim})"})
    run = await api.wait_run(run_id)
    assert run["state"] == "completed" and run["params"]["greeting"] == "hello"
    log = (await api.request("GET", f"/run/{run_id}/log")).text
    assert f"hello, x; rm -f {victim}; $(rm -f {victim})" in log
    assert "said hello to x;" in log
    assert victim.read_text() == "still here"

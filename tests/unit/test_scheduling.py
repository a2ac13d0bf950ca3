"""The slot limit, priority order and concurrency policies through the real app, engine and
SQLite store in-process."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from conftest import Api, base_config, ts, until

ApiFactory = Callable[..., Awaitable[Api]]

SLEEPERS = "\n".join(f"- {{id: s{i}, pipeline: nap}}" for i in range(6))


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
            f"- {{name: nap, processors: [{{sleep: {{duration: {seconds}}}}}]}}",
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

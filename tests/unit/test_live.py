"""Run events over server-sent events, and the live hub's channels, in-process."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

from conftest import Api, base_config
from support.live import PIPELINES, TASKS, sse

from taskd.live import LiveHub
from taskd.store.base import LogLine

ApiFactory = Callable[..., Awaitable[Api]]


async def test_events_stream_run_states_with_a_heartbeat(api_factory: ApiFactory) -> None:
    api = await api_factory(base_config(TASKS, PIPELINES), heartbeat_s=0.2)
    seen: list[dict[str, Any]] = []
    async with api.client.get("/events") as response:
        assert response.headers["Content-Type"] == "text/event-stream"
        run_id = await api.start_task("quiet")
        async for event in sse(response):
            seen.append(event)
            states = [e["data"]["state"] for e in seen if e.get("event") == "run"]
            if "completed" in states and any("comment" in e for e in seen):
                break
    runs = [e["data"] for e in seen if e.get("event") == "run"]
    assert [(r["run_id"], r["task_id"], r["state"]) for r in runs] == [
        (run_id, "quiet", "queued"),
        (run_id, "quiet", "running"),
        (run_id, "quiet", "completed"),
    ]
    assert all(r["at"].endswith("Z") for r in runs)
    assert {"comment": "heartbeat"} in seen


async def test_a_follower_a_whole_channel_behind_is_cut_off_and_the_others_are_not() -> None:
    hub = LiveHub(limit=10, all_runs_limit=10)
    with hub.follow_all() as slow, hub.follow_all() as keeping_up:
        for i in range(8):
            hub.state_entered(f"r{i}", "t", "queued", float(i), None)
        assert [e.run_id for e in keeping_up.pending()] == [f"r{i}" for i in range(8)]
        for i in range(8, 16):
            hub.state_entered(f"r{i}", "t", "queued", float(i), None)
        assert [e.run_id for e in keeping_up.pending()] == [f"r{i}" for i in range(8, 16)]
        assert slow.pending() == [] and slow.overflowed  # 16 events, 10 kept: it missed some
        await asyncio.wait_for(slow.wait(), 1)  # and waiting returns at once: it must leave
        assert hub.followers == 2
    assert hub.followers == 0
    hub.state_entered("r", "t", "queued", 1.0, None)  # nobody follows: nothing is kept


async def test_one_publish_wakes_every_waiting_follower() -> None:
    hub = LiveHub()
    with hub.follow_run("r1") as a, hub.follow_run("r1") as b, hub.follow_run("r2") as other:
        waits = [asyncio.create_task(s.wait()) for s in (a, b)]
        await asyncio.sleep(0)
        hub.line_written(LogLine("r1", 1, 1.0, "stdout", "hello"))
        await asyncio.wait_for(asyncio.gather(*waits), 1)
        assert [e.line for e in a.pending()] == [e.line for e in b.pending()] == ["hello"]  # type: ignore[union-attr]
        assert other.pending() == []

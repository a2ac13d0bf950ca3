"""Run events over server-sent events, and the live hub's channels, in-process."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import aiohttp
from conftest import Api, base_config

from taskd.live import LiveHub
from taskd.store.base import LogLine

ApiFactory = Callable[..., Awaitable[Api]]

TASKS = """
- {id: talk, pipeline: talk, concurrency: allow}
- {id: quiet, pipeline: quiet}
"""
PIPELINES = """
- {name: talk, processors: [{shell: {command: 'echo one; sleep 0.4; echo two; echo oops >&2; sleep 0.2'}}]}
- {name: quiet, processors: [{log: {message: done}}]}
"""


async def sse(response: aiohttp.ClientResponse) -> AsyncIterator[dict[str, Any]]:
    """The events of a stream as {event, id, data, received}; comments come as {"comment": text}."""
    event: dict[str, Any] = {}
    async for raw in response.content:
        line = raw.decode().rstrip("\n")
        if not line:
            if event:
                event["received"] = time.time()
                yield event
            event = {}
        elif line.startswith(":"):
            yield {"comment": line[1:].strip()}
        else:
            name, _, value = line.partition(": ")
            event[name] = json.loads(value) if name == "data" else value


async def follow(api: Api, run_id: str, headers: dict[str, str] | None = None) -> list[dict[str, Any]]:
    async with api.client.get(
        f"/run/{run_id}/log?follow=1", headers={"Accept": "text/event-stream", **(headers or {})}
    ) as response:
        assert response.status == 200
        assert response.headers["Content-Type"] == "text/event-stream"
        return [event async for event in sse(response) if "comment" not in event]


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
